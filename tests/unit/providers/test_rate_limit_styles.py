"""Rate-limit header styles: presets, the IETF structured fields, clamping and bad values."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.auth.signer import NoAuthSigner
from providers.base import Provider
from providers.declaration import RateLimitHeaders, rate_limit_dimensions
from providers.errors import RateLimited
from providers.fake.config import FakeProviderConfig
from providers.fake.flavors import flavor_for
from providers.fake.flavors.base import RateState
from providers.rate_limit_styles import (
    IetfObservation,
    InnerList,
    Item,
    parse_list,
    preset_for,
    read_ietf,
)
from providers.registry import ProviderRegistry
from providers.response import RateLimitInfo, RateLimitReader, WaitCeiling
from providers.spec_file import SpecError, parse_spec

NOW = 1_700_000_000.0


def reader(style: Any = None, ceiling_s: float | None = None, **declared: Any) -> RateLimitReader:
    headers = {name: RateLimitHeaders.model_validate(fields) for name, fields in declared.items()}
    ceiling = WaitCeiling("acme", ceiling_s) if ceiling_s is not None else None
    return RateLimitReader(headers, style=style, ceiling=ceiling)


def read(r: RateLimitReader, headers: dict[str, str]) -> dict[str, RateLimitInfo]:
    return dict(r.read({k.lower(): v for k, v in headers.items()}, now=NOW))


def spec(**fields: Any) -> Any:
    data = {"name": "acme", "base_url": "https://api.acme.test",
            "operations": {"get": {"path": "/x"}}, **fields}  # fmt: skip
    return parse_spec(data, source="acme.toml")


@pytest.fixture(scope="module")
def catalog() -> dict[str, Provider]:
    registry = ProviderRegistry(use_entry_points=False)
    return {
        name: Provider(registry.spec(name), signer=NoAuthSigner())
        for name in ("github", "openai", "stripe", "slack")
    }


# -- RateLimitInfo --------------------------------------------------------------------------


def test_info_keeps_its_positional_order_and_the_window_is_optional() -> None:
    info = RateLimitInfo(10, 3, 5.0)
    assert RateLimitInfo._fields == ("limit", "remaining", "reset_after_s", "window_s")
    assert info == (10, 3, 5.0, None)
    assert RateLimitInfo(10, 0, 5.0, 60.0).exhausted


# -- GitHub ---------------------------------------------------------------------------------

GITHUB = {
    "X-RateLimit-Limit": "5000",
    "X-RateLimit-Remaining": "4987",
    "X-RateLimit-Used": "13",
    "X-RateLimit-Reset": str(int(NOW) + 1800),
    "X-RateLimit-Resource": "core",
}


def test_github_style() -> None:
    assert read(reader("github"), GITHUB) == {"core": RateLimitInfo(5000, 4987, 1800.0, 3600.0)}


def test_github_search_resource_has_a_minute_window() -> None:
    headers = {**GITHUB, "X-RateLimit-Limit": "30", "X-RateLimit-Resource": "search"}
    assert read(reader("github"), headers)["core"].window_s == 60.0


def test_github_catalog_reads_the_primary_limit_as_a_rate_limit(
    catalog: dict[str, Provider],
) -> None:
    github = catalog["github"]
    reply = github.classify(200, GITHUB, b"{}", operation="get_repo", now=NOW)
    assert reply.rate_limits == {"core": RateLimitInfo(5000, 4987, 1800.0, 3600.0)}
    assert reply.headers["x-ratelimit-resource"] == "core"  # kept with the others
    exhausted = {**GITHUB, "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 60)}
    with pytest.raises(RateLimited) as info:
        github.classify(403, exhausted, b'{"message": "API rate limit exceeded"}',
                        operation="get_repo", now=NOW)  # fmt: skip
    assert info.value.retry_after_s == 60.0


# -- OpenAI ---------------------------------------------------------------------------------

OPENAI = {
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-remaining-requests": "499",
    "x-ratelimit-reset-requests": "120ms",
    "x-ratelimit-limit-tokens": "200000",
    "x-ratelimit-remaining-tokens": "199950",
    "x-ratelimit-reset-tokens": "6m0s",
}


def test_openai_style_reads_requests_then_tokens() -> None:
    limits = read(reader("openai"), OPENAI)
    assert list(limits) == ["requests", "tokens"]
    assert limits["requests"] == RateLimitInfo(500, 499, 0.12, None)
    assert limits["tokens"] == RateLimitInfo(200000, 199950, 360.0, None)


def test_openai_catalog_declares_a_minute_window(catalog: dict[str, Provider]) -> None:
    reply = catalog["openai"].classify(200, OPENAI, b"{}", operation="list_models", now=NOW)
    assert reply.rate_limits["tokens"] == RateLimitInfo(200000, 199950, 360.0, 60.0)
    assert reply.rate_limits["requests"].window_s == 60.0


# -- IETF -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # The current draft: the policy of the same name gives quota and window.
        ({"RateLimit": '"default";r=50;t=30', "RateLimit-Policy": '"default";q=100;w=60'},
         RateLimitInfo(100, 50, 30.0, 60.0)),
        # Several policies: the current item names the one it counts against.
        ({"RateLimit": '"daily";r=900;t=3600',
          "RateLimit-Policy": '"burst";q=100;w=60, "daily";q=1000;w=86400'},
         RateLimitInfo(1000, 900, 3600.0, 86400.0)),
        # Several current items: the first wins; unknown parameters are ignored.
        ({"RateLimit": '"burst";r=7;t=2;pk=:AbC=:;x-extra, "daily";r=1;t=9',
          "RateLimit-Policy": '"burst";q=10;qu="requests";w=1'},
         RateLimitInfo(10, 7, 2.0, 1.0)),
        # A policy no current item names: unused.
        ({"RateLimit": '"a";r=5', "RateLimit-Policy": '"b";q=10;w=1'},
         RateLimitInfo(None, 5, None, None)),
        # Only the policy: the quota and window, nothing remaining.
        ({"RateLimit-Policy": '"default";q=100;w=60'}, RateLimitInfo(100, None, None, 60.0)),
        # The older draft's separate fields, delta seconds.
        ({"RateLimit-Limit": "100", "RateLimit-Remaining": "64", "RateLimit-Reset": "25"},
         RateLimitInfo(100, 64, 25.0, None)),
        # The older draft's policy item is the quota itself.
        ({"RateLimit-Limit": "100", "RateLimit-Remaining": "64", "RateLimit-Reset": "25",
          "RateLimit-Policy": "100;w=60"},
         RateLimitInfo(100, 64, 25.0, 60.0)),
        # Both drafts: the structured field wins, the separate ones fill its gaps.
        ({"RateLimit": '"default";r=50', "RateLimit-Remaining": "64", "RateLimit-Reset": "25",
          "RateLimit-Limit": "100"},
         RateLimitInfo(100, 50, 25.0, None)),
        # A malformed structured field is ignored as a whole; the separate ones still count.
        ({"RateLimit": '"default";r=50;t=30,', "RateLimit-Remaining": "64"},
         RateLimitInfo(None, 64, None, None)),
    ],
)  # fmt: skip
def test_ietf_style(headers: dict[str, str], expected: RateLimitInfo) -> None:
    assert read(reader("ietf"), headers) == {"requests": expected}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"RateLimit": "garbage ;;; here"},
        {"RateLimit": '"default";r=-1;t=-5', "RateLimit-Policy": '"default";q=?1;w=0'},
        {"RateLimit": '("a" "b");r=5', "RateLimit-Policy": "(1 2)"},
        {"RateLimit": '"default";r=5.5;t="soon"'},
        {"RateLimit-Remaining": "-3", "RateLimit-Limit": "nan", "RateLimit-Reset": "soon"},
    ],
)
def test_ietf_style_says_nothing_for_unusable_headers(headers: dict[str, str]) -> None:
    assert read(reader("ietf"), headers) == {}


def test_ietf_reader_keeps_the_structured_fields_on_replies() -> None:
    assert {"ratelimit", "ratelimit-policy", "ratelimit-remaining"} <= reader("ietf").names


# -- stripe and slack: no headers ---------------------------------------------------------


@pytest.mark.parametrize("style", ["stripe", "slack"])
def test_header_less_styles_read_nothing(style: str) -> None:
    r = reader(style)
    assert r.names == frozenset()
    assert read(r, {**GITHUB, **OPENAI, "Retry-After": "3"}) == {}


def test_slack_429_waits_its_retry_after(catalog: dict[str, Provider]) -> None:
    body = b'{"ok": false, "error": "ratelimited"}'
    with pytest.raises(RateLimited) as info:
        catalog["slack"].classify(429, {"Retry-After": "7"}, body, operation="auth_test", now=NOW)
    assert info.value.retry_after_s == 7.0


def test_stripe_429_waits_the_declared_default(catalog: dict[str, Provider]) -> None:
    body = b'{"error": {"code": "rate_limit", "message": "Too many requests"}}'
    with pytest.raises(RateLimited) as info:
        catalog["stripe"].classify(429, {}, body, operation="get_balance", now=NOW)
    assert info.value.retry_after_s == 1.0  # limits.retry_after_s
    assert catalog["stripe"].spec.rate_limit_style == "stripe"


# -- clamping (WaitCeiling) applies to every style -------------------------------------------


@pytest.mark.parametrize(
    ("style", "headers", "dimension"),
    [
        ("github", {**GITHUB, "X-RateLimit-Reset": str(int(NOW) + 10**9)}, "core"),
        ("openai", {**OPENAI, "x-ratelimit-reset-tokens": "99999h"}, "tokens"),
        ("ietf", {"RateLimit": '"default";r=0;t=999999999999'}, "requests"),
        ("ietf", {"RateLimit-Remaining": "0", "RateLimit-Reset": "999999999"}, "requests"),
    ],
)
def test_reset_waits_are_clamped_in_every_style(
    style: str, headers: dict[str, str], dimension: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="providers.response"):
        info = read(reader(style, ceiling_s=600.0), headers)[dimension]
    assert info.reset_after_s == 600.0
    assert "clamped to 600 s" in caplog.text


# -- malformed values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "reset"),
    # A negative reset is a moment already past: no wait, as for Retry-After.
    [("", None), ("abc", None), ("-5", 0.0), ("nan", None), ("inf", None), ("1e400", None),
     ("0x10", None), ("5 s", None)],
)  # fmt: skip
def test_malformed_counts_and_resets_are_ignored(bad: str, reset: float | None) -> None:
    headers = {"X-RateLimit-Limit": bad, "X-RateLimit-Remaining": bad, "X-RateLimit-Reset": bad}
    assert read(reader("github"), headers) == {"core": RateLimitInfo(None, None, reset, 3600.0)}
    assert read(reader("openai"), {"x-ratelimit-reset-requests": bad})["requests"] == (
        RateLimitInfo(None, None, reset, None)
    )


# -- declarations ---------------------------------------------------------------------------


def test_explicit_headers_keep_working_without_a_style() -> None:
    declared = {"r": RateLimitHeaders(remaining="X-Left", reset="X-Reset", window_s=10)}
    r = RateLimitReader(declared)
    assert read(r, {"X-Left": "4", "X-Reset": "2"}) == {"r": RateLimitInfo(None, 4, 2.0, 10.0)}


def test_explicit_fields_override_the_style_field_by_field() -> None:
    dims = rate_limit_dimensions(
        "github",
        {"core": RateLimitHeaders(reset="X-Reset-In", reset_kind="delta_s", window_s=60),
         "extra": RateLimitHeaders(remaining="X-Extra-Left")},
    )  # fmt: skip
    assert list(dims) == ["core", "extra"]
    core = dims["core"]
    assert (core.style, core.limit, core.reset, core.reset_kind, core.window_s) == (
        "github",
        "X-RateLimit-Limit",
        "X-Reset-In",
        "delta_s",
        60.0,
    )
    assert dims["extra"] == RateLimitHeaders(remaining="X-Extra-Left")
    assert rate_limit_dimensions("github", dims) == dims  # resolving again changes nothing


def test_per_dimension_presets() -> None:
    s = spec(rate_limit_headers={"tokens": {"style": "openai"}, "search": {"style": "github"}})
    r = RateLimitReader(s.rate_limit_headers, style=s.rate_limit_style)
    headers = {**OPENAI, **GITHUB, "X-RateLimit-Resource": "search"}
    assert read(r, headers) == {
        "tokens": RateLimitInfo(200000, 199950, 360.0, None),
        "search": RateLimitInfo(5000, 4987, 1800.0, 60.0),
    }


def test_the_style_comes_first_and_is_primary() -> None:
    s = spec(rate_limit_style="openai", rate_limit_headers={"tokens": {"window_s": 60}})
    dims = rate_limit_dimensions(s.rate_limit_style, s.rate_limit_headers)
    assert list(dims) == ["requests", "tokens"]
    assert dims["tokens"].window_s == 60.0
    assert dims["tokens"].limit == "x-ratelimit-limit-tokens"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rate_limit_style": "gitlab"},
         "rate_limit_style: Input should be 'github', 'openai', 'ietf', 'stripe' or 'slack'"),
        ({"rate_limit_headers": {"search": {"style": "openai"}}},
         "rate_limit_headers: search: style 'openai' has dimensions requests, tokens; "
         "name the entry after one of them"),
        ({"rate_limit_headers": {"r": {"style": "slack"}}},
         "rate_limit_headers: r: style 'slack' reads no rate-limit headers"),
        ({"rate_limit_headers": {"r": {"style": "github", "window_s": 0}}},
         "rate_limit_headers.r.window_s: Input should be greater than 0"),
        ({"rate_limit_headers": {"r": {"style": "ietf", "window_s": "inf"}}},
         "rate_limit_headers.r.window_s: Input should be a finite number"),
    ],
)  # fmt: skip
def test_validation_errors_are_one_line(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        spec(**fields)
    assert str(info.value).startswith(f"acme.toml: {message}")
    assert "\n" not in str(info.value)


def test_preset_for_a_single_dimension_style_takes_the_entry_name() -> None:
    assert preset_for("ietf", "quota")["remaining"] == "RateLimit-Remaining"


# -- catalog against the fake provider's flavors -------------------------------------------


@pytest.mark.parametrize(
    ("name", "operation", "dimensions"),
    [("github", "get_repo", {"core"}), ("openai", "list_models", {"requests"}),
     ("stripe", "get_balance", set()), ("slack", "auth_test", set())],
)  # fmt: skip
def test_flavors_send_what_the_catalog_reads(
    catalog: dict[str, Provider], name: str, operation: str, dimensions: set[str]
) -> None:
    flavor = flavor_for(FakeProviderConfig(flavor=name))  # type: ignore[arg-type]
    headers = flavor.rate_headers(RateState(limit=50, remaining=49, reset_s=1.2, retry_after_s=0))
    reply = catalog[name].classify(200, headers, b"{}", operation=operation, now=NOW)
    assert set(reply.rate_limits) == dimensions
    for info in reply.rate_limits.values():
        assert (info.limit, info.remaining) == (50, 49)
        assert info.reset_after_s is not None


# -- the structured-field parser ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "members"),
    [
        ("", ()),
        ('"default";r=50;t=30', (Item("default", {"r": 50, "t": 30}),)),
        ("  tok/en:1 , -12;a;b=?0 ,\t4.250", (Item("tok/en:1", {}),
                                              Item(-12, {"a": True, "b": False}),
                                              Item(4.25, {}))),
        (r'"say \"hi\" \\ there"', (Item('say "hi" \\ there', {}),)),
        (":cHJldGVuZA==:;k=@1659578233", (Item(b"cHJldGVuZA==", {"k": 1659578233}),)),
        ('("a" b);w=1, ()', (InnerList((Item("a", {}), Item("b", {})), {"w": 1}),
                             InnerList((), {}))),
        ("a;x=1;x=2", (Item("a", {"x": 2}),)),  # a repeated key: the last wins
    ],
)  # fmt: skip
def test_parse_list(text: str, members: tuple[Any, ...]) -> None:
    assert parse_list(text) == members


@pytest.mark.parametrize(
    "text",
    ["a,", ",a", "a,,b", "a b", '"open', '"bad\\q"', '"tab\t"', "1.2345", "1.", "1234567890123456",
     "1234567890123.5", "a;X=1", "a;=1", "?2", "(a", "(a,b)", ":not base64!:", "é", "@1.5",
     "%\"display\"", "a;b=", "-", "a)"],
)  # fmt: skip
def test_malformed_lists_are_none(text: str) -> None:
    assert parse_list(text) is None


# Characters that steer the parser, so random text reaches deep into it.
_SF_TEXT = st.text(alphabet=st.sampled_from(list('"\\;=,() \t:?@*.-_/%abqrtwz019é\x7f')))


@given(st.one_of(st.text(), _SF_TEXT))
def test_parser_never_raises(text: str) -> None:
    members = parse_list(text)
    assert members is None or isinstance(members, tuple)


@given(st.one_of(st.none(), st.text(), _SF_TEXT), st.one_of(st.none(), st.text(), _SF_TEXT))
def test_ietf_reading_never_raises(field: str | None, policy: str | None) -> None:
    seen = read_ietf(field, policy)
    assert isinstance(seen, IetfObservation)
    assert all(v is None or v >= 0 for v in seen)


_NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True)
_COUNTS = st.integers(min_value=0, max_value=10**15 - 1)


@given(_NAMES, _COUNTS, _COUNTS, _COUNTS, st.integers(min_value=1, max_value=10**9))
def test_ietf_fields_read_back(
    name: str, remaining: int, reset: int, quota: int, window: int
) -> None:
    field = f'"{name}";r={remaining};t={reset};future=?1'
    policy = f'"other";q=1;w=1, "{name}";q={quota};qu="requests";w={window}'
    assert read_ietf(field, policy) == (quota, remaining, float(reset), float(window))
