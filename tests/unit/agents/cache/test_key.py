"""The cache key: what makes two requests one entry (order, defaults, case, JSON bodies),
what keeps them apart (tenants, any difference in what is sent), and its layout."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cache.key import DIGEST_BYTES, cache_key, key_scope
from providers.declaration import CacheSpec, OperationSpec
from schemas.models import RequestEvent

CHECK = settings(database=None, deadline=None, max_examples=300)

OPERATION = OperationSpec.model_validate(
    {
        "path": "/users/{user}",
        "path_params": {"user": {}},
        "query_params": {"units": {"default": "metric"}, "lang": {}, "q": {}},
        "allowed_headers": ["Accept-Language"],
        "cache": {"ttl_s": 60, "case_insensitive_params": ["user"]},
    }
)
SEARCH = OperationSpec.model_validate(
    {"method": "POST", "path": "/search", "body": {}, "cache": {"ttl_s": 60, "safe": True}}
)
PRIVATE = CacheSpec(ttl_s=60, case_insensitive_params=("user",))
SHARED = CacheSpec(ttl_s=60, shared=True, case_insensitive_params=("user",))


def request(**fields: Any) -> RequestEvent:
    return RequestEvent(**{"provider": "acme", "operation": "get_user", **fields})


def key(req: RequestEvent, op: OperationSpec = OPERATION, cache: CacheSpec = PRIVATE) -> bytes:
    return cache_key(req, op, cache)


def test_layout_is_provider_operation_scope_and_a_16_byte_digest():
    k = key(request(tenant="t1", params={"user": "x"}))
    assert k.startswith(b"acme\x1fget_user\x1ft1\x1f")
    assert len(k) == len(b"acme\x1fget_user\x1ft1\x1f") + DIGEST_BYTES
    assert key_scope(k) == ("acme", "get_user", "t1")


def test_shared_scope_is_a_star_and_the_same_for_every_tenant():
    a = key(request(tenant="a", params={"user": "x"}), cache=SHARED)
    b = key(request(tenant="b", params={"user": "x"}), cache=SHARED)
    assert a == b
    assert key_scope(a) == ("acme", "get_user", "*")


def test_tenants_never_share_a_private_entry():
    assert key(request(tenant="a", params={"user": "x"})) != key(
        request(tenant="b", params={"user": "x"})
    )


def test_the_request_id_trace_and_priority_do_not_count():
    a = request(params={"user": "x"}, request_id="r1", priority=1, trace={"traceparent": "1"})
    b = request(params={"user": "x"}, request_id="r2", priority=9)
    assert key(a) == key(b)


def test_parameter_order_does_not_count():
    a = request(params={"user": "x", "lang": "en", "q": "z"})
    b = request(params={"q": "z", "lang": "en", "user": "x"})
    assert key(a) == key(b)


def test_a_missing_parameter_is_its_declared_default():
    assert key(request(params={"user": "x"})) == key(
        request(params={"user": "x", "units": "metric"})
    )
    assert key(request(params={"user": "x"})) != key(request(params={"user": "x", "units": "si"}))


def test_a_missing_parameter_without_default_is_not_an_empty_one():
    assert key(request(params={"user": "x"})) != key(request(params={"user": "x", "lang": ""}))


def test_case_insensitive_parameters_are_folded_and_others_are_not():
    assert key(request(params={"user": "OctoCat"})) == key(request(params={"user": "octocat"}))
    assert key(request(params={"user": "x", "q": "A"})) != key(
        request(params={"user": "x", "q": "a"})
    )


def test_header_names_are_case_insensitive_and_values_count():
    a = request(params={"user": "x"}, headers={"Accept-Language": "fr"})
    assert key(a) == key(request(params={"user": "x"}, headers={"accept-language": "fr"}))
    assert key(a) != key(request(params={"user": "x"}, headers={"Accept-Language": "de"}))
    assert key(a) != key(request(params={"user": "x"}))


def test_json_body_key_order_and_spacing_do_not_count():
    a = request(operation="search", body=b'{"q": "x", "limit": 10, "f": {"b": 1, "a": 2}}')
    b = request(operation="search", body=b'{"f":{"a":2,"b":1},"limit":10,"q":"x"}')
    assert key(a, SEARCH) == key(b, SEARCH)
    assert key(a, SEARCH) != key(request(operation="search", body=b'{"q":"y"}'), SEARCH)


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/vnd.api+json", "Application/JSON; charset=utf-8"],
)
def test_json_media_types_are_canonicalized(content_type):
    a = request(operation="search", body=b'{"b":1,"a":2}', content_type=content_type)
    b = request(operation="search", body=b'{"a":2, "b":1}', content_type=content_type)
    assert key(a, SEARCH) == key(b, SEARCH)


def test_other_bodies_are_their_bytes():
    def form(body: bytes) -> RequestEvent:
        return request(operation="search", body=body, content_type="text/plain")

    assert key(form(b'{"b":1,"a":2}'), SEARCH) != key(form(b'{"a":2,"b":1}'), SEARCH)
    assert key(form(b"x"), SEARCH) == key(form(b"x"), SEARCH)


def test_a_body_without_content_type_is_read_as_the_operations_first():
    a = request(operation="search", body=b'{"b":1,"a":2}')
    b = request(operation="search", body=b'{"a":2,"b":1}', content_type="application/json")
    assert key(a, SEARCH) == key(b, SEARCH)


def test_the_content_type_counts():
    a = request(operation="search", body=b"{}", content_type="application/json")
    b = request(operation="search", body=b"{}", content_type="application/merge-patch+json")
    assert key(a, SEARCH) != key(b, SEARCH)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (b"not json", b"not  json"),
        (b'{"a":1,"a":2}', b'{"a":2}'),  # a repeated key: providers differ on which wins
        (b"[" * 100_000, b"[" * 100_001),  # too deep to parse: raw, and no RecursionError
        (b"\xff", b"\xfe"),
    ],
)
def test_bodies_that_do_not_parse_are_raw_and_kept_apart(one, other):
    a = request(operation="search", body=one, content_type="application/json")
    b = request(operation="search", body=other, content_type="application/json")
    assert key(a, SEARCH) != key(b, SEARCH)


def test_no_body_is_not_an_empty_body():
    assert key(request(operation="search"), SEARCH) != key(
        request(operation="search", body=b"", content_type="text/plain"), SEARCH
    )


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"a": "b\x1fc"}, {"a": "b", "c": ""}),
        ({"a": "b", "c": "d"}, {"a": "b1:c1:d"}),
        ({"a": "1:b"}, {"a1": ":b"}),
        ({"a": ""}, {}),
        ({"ab": "c"}, {"a": "bc"}),
        ({"a": "h0;"}, {"a": ""}),
    ],
)
def test_values_with_any_characters_never_merge_two_requests(one, other):
    op = OperationSpec.model_validate({"path": "/x", "query_params": ["a", "a1", "ab", "c"]})
    cache = CacheSpec(ttl_s=1)
    assert key(request(params=one), op, cache) != key(request(params=other), op, cache)


def test_undeclared_parameters_still_count():
    assert key(request(params={"user": "x", "zzz": "1"})) != key(request(params={"user": "x"}))


# Any two requests of an operation with no defaults, case rules or JSON: keys are equal exactly
# when what would be sent is.
# Any character a request can hold (pydantic refuses lone surrogates), often the ones that
# delimit the canonical form.
texts = st.text(st.sampled_from("a1:;pch-\x1f") | st.characters(codec="utf-8"), max_size=8)
requests = st.fixed_dictionaries(
    {
        "tenant": st.sampled_from(["a", "b"]),
        "params": st.dictionaries(texts, texts, max_size=3),
        "headers": st.dictionaries(st.sampled_from(["x-a", "X-A", "x-b"]), texts, max_size=2),
        "body": st.none() | st.binary(max_size=8),
    }
)
PLAIN = OperationSpec.model_validate(
    {
        "path": "/x",
        "method": "POST",
        "body": {"content_types": ["text/plain"]},
        "cache": {"ttl_s": 1, "safe": True},
    }
)


def _sent(fields: dict[str, Any]) -> tuple[object, ...]:
    headers = sorted((n.lower(), v) for n, v in fields["headers"].items())
    return fields["tenant"], sorted(fields["params"].items()), headers, fields["body"]


@CHECK
@given(one=requests, other=requests)
def test_keys_are_equal_exactly_when_the_requests_are(one, other):
    a = key(request(**one), PLAIN, CacheSpec(ttl_s=1))
    b = key(request(**other), PLAIN, CacheSpec(ttl_s=1))
    assert (a == b) == (_sent(one) == _sent(other))


@CHECK
@given(
    params=st.dictionaries(st.sampled_from(["user", "lang", "q", "units"]), texts, max_size=4),
    tenant=st.sampled_from(["a", "b"]),
)
def test_the_scope_reads_back_from_any_key(params, tenant):
    k = key(request(params=params, tenant=tenant))
    assert key_scope(k) == ("acme", "get_user", tenant)


@pytest.mark.parametrize(
    "bad", [b"", b"acme\x1fop", b"a\x1fb\x1fc\x1fshort", b"a\x1fb\x1f\xff\x1f" + bytes(16)]
)
def test_key_scope_refuses_what_is_not_a_key(bad):
    with pytest.raises(ValueError):  # noqa: PT011 - UnicodeDecodeError is a ValueError too
        key_scope(bad)
