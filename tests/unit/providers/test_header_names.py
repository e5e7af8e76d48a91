"""Every header name a declaration gives is an RFC 9110 token; static ones avoid reserved names."""

from __future__ import annotations

from typing import Any

import pytest

from providers.auth.config import parse_auth_config
from providers.header_names import RESERVED_HEADERS, check_header_name, is_token
from providers.spec_file import SpecError, parse_spec

BAD_NAMES = ["X-Id\r\nX-Injected: 1", "X-Id\n", "X Id", "X-Id:", "", "X-Ïd", "X-Id\0"]


def spec(**fields: Any) -> None:
    data = {"name": "acme", "base_url": "https://api.acme.test",
            "operations": {"get": {"path": "/x"}}, **fields}  # fmt: skip
    parse_spec(data, source="acme.toml")


@pytest.mark.parametrize("name", ["X-Request-Id", "Idempotency-Key", "a!#$%&'*+.^_`|~-9"])
def test_tokens(name: str) -> None:
    assert is_token(name)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_not_tokens(name: str) -> None:
    assert not is_token(name)
    with pytest.raises(ValueError, match="is not an RFC 9110 token"):
        check_header_name(name)


@pytest.mark.parametrize("name", [*sorted(RESERVED_HEADERS), "HOST", "Transfer-Encoding"])
def test_static_headers_may_not_use_reserved_names(name: str) -> None:
    with pytest.raises(SpecError, match=r"headers: .* is set by the pipeline"):
        spec(headers={name: "x"})


@pytest.mark.parametrize("name", BAD_NAMES[:-1])
def test_static_header_names_are_tokens(name: str) -> None:
    with pytest.raises(SpecError, match="not an RFC 9110 token"):
        spec(headers={name: "x"})


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\n", "a\0"])
def test_static_header_values_have_no_line_breaks(value: str) -> None:
    with pytest.raises(SpecError, match="value contains CR, LF or NUL"):
        spec(headers={"X-Ok": value})


@pytest.mark.parametrize(
    "fields",
    [
        {"request_id_header": "X-Request-Id\r\nX-Injected: 1"},
        {"idempotency_header": "Idem Key"},
        {"error_shape": {"retry_header": "Stripe-Should-Retry\n"}},
        {"rate_limit_headers": {"requests": {"remaining": "X-RateLimit-Remaining\r\n"}}},
        {"rate_limit_headers": {"requests": {"limit": "X:Limit"}}},
        {"rate_limit_headers": {"requests": {"reset": ""}}},
    ],
)
def test_header_name_fields_are_tokens(fields: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match="not an RFC 9110 token"):
        spec(**fields)


@pytest.mark.parametrize("field", ["request_id_header", "idempotency_header"])
@pytest.mark.parametrize("name", ["Host", "content-length", "Authorization"])
def test_sent_header_fields_may_not_be_reserved(field: str, name: str) -> None:
    with pytest.raises(SpecError, match="is set by the pipeline"):
        spec(**{field: name})


def test_valid_names_still_load() -> None:
    spec(
        headers={"Accept": "application/json", "X-GitHub-Api-Version": "2022-11-28"},
        request_id_header=None,
        idempotency_header="Idempotency-Key",
        error_shape={"retry_header": "Stripe-Should-Retry"},
        rate_limit_headers={"r": {"limit": "X-RateLimit-Limit", "reset": "X-RateLimit-Reset"}},
    )


@pytest.mark.parametrize("header", ["signature_header", "timestamp_header", "key_id_header"])
@pytest.mark.parametrize(("name", "problem"), [("X-Sig\r\nX-I: 1", "token"),
                                               ("Host", "set by the pipeline")])  # fmt: skip
def test_hmac_header_names(header: str, name: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_auth_config({"type": "hmac", "key_id": "k", "secret": "s", header: name})


def test_hmac_may_sign_into_authorization() -> None:
    parse_auth_config({"type": "hmac", "key_id": "k", "secret": "s",
                       "signature_header": "Authorization"})  # fmt: skip


def test_api_key_header_name_is_a_token_but_a_query_name_need_not_be() -> None:
    with pytest.raises(ValueError, match="not an RFC 9110 token"):
        parse_auth_config({"type": "api_key", "name": "X-Key\r\n", "key": "k"})
    with pytest.raises(ValueError, match="set by the pipeline"):
        parse_auth_config({"type": "api_key", "name": "Cookie", "key": "k"})
    parse_auth_config({"type": "api_key", "name": "Authorization", "key": "k"})
    parse_auth_config({"type": "api_key", "in": "query", "name": "app id", "key": "k"})
