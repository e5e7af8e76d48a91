"""Freshness: Cache-Control parsing (garbage never raises), the lifetime the provider's headers
leave of an operation's TTL, the stale windows, and the validators of a revalidation."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cache.freshness import (
    MAX_PARSED_CHARS,
    Directives,
    Freshness,
    Lifetime,
    conditional_headers,
    freshness,
    lifetime,
    parse_cache_control,
)
from providers.declaration import CacheSpec

CHECK = settings(database=None, deadline=None, max_examples=500)
NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
ULP = 1e-6


# --- parse_cache_control -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, Directives()),
        ("", Directives()),
        ("max-age=60", Directives(max_age=60.0)),
        ("MAX-AGE=60", Directives(max_age=60.0)),
        ('max-age="60"', Directives(max_age=60.0)),
        ("max-age = 60", Directives(max_age=60.0)),
        ("public, max-age=300, s-maxage=30", Directives(max_age=300.0, s_maxage=30.0, public=True)),
        ("no-store", Directives(no_store=True)),
        ("No-Cache", Directives(no_cache=True)),
        ('no-cache="set-cookie, x-foo"', Directives(no_cache=True)),  # qualified: as unqualified
        ('private="x-user"', Directives(private=True)),
        ("private, max-age=0", Directives(private=True, max_age=0.0)),
        (
            "must-revalidate, proxy-revalidate",
            Directives(must_revalidate=True, proxy_revalidate=True),
        ),
        (
            "max-age=60, stale-while-revalidate=30, stale-if-error=600",
            Directives(max_age=60.0, stale_while_revalidate=30.0, stale_if_error=600.0),
        ),
        # Invalid freshness is taken as stale (RFC 9111 4.2.1).
        ("max-age=abc", Directives(max_age=0.0)),
        ("max-age=1.5", Directives(max_age=0.0)),
        ("max-age=-5", Directives(max_age=0.0)),
        ("max-age", Directives(max_age=0.0)),
        ("max-age=", Directives(max_age=0.0)),
        ("max-age=٣", Directives(max_age=0.0)),  # a non-ASCII digit
        # Repeated: the most restrictive.
        ("max-age=60, max-age=30", Directives(max_age=30.0)),
        ("max-age=30, max-age=60", Directives(max_age=30.0)),
        # Too large to represent: 2^31 (RFC 9111 1.2.2).
        ("max-age=99999999999999999999999", Directives(max_age=float(2**31))),
        ("max-age=" + "9" * 1000, Directives(max_age=float(2**31))),
        # A directive name inside a quoted argument is not a directive.
        ('x-ext="no-store, private", max-age=5', Directives(max_age=5.0)),
        ('x-ext="a \\" no-store", max-age=5', Directives(max_age=5.0)),
        # Garbage around known directives.
        (",,, ;; == max-age=10 ,,\t", Directives(max_age=10.0)),
        ("max-age=10;no-store", Directives(max_age=10.0, no_store=True)),
        ("x-unknown=1, immutable", Directives()),
        ('"', Directives()),
        ("=", Directives()),
    ],
)
def test_parse(value, expected):
    assert parse_cache_control(value) == expected


def test_past_the_cap_only_restrictive_directives_count():
    padding = "x-pad=" + "a" * MAX_PARSED_CHARS
    assert parse_cache_control(f"max-age=60, {padding}, no-store, private") == Directives(
        max_age=60.0, no_store=True, private=True
    )
    # A permissive directive past the cap is not read.
    assert parse_cache_control(f"{padding}, max-age=60") == Directives()


def test_a_restrictive_directive_across_the_cap_is_found():
    head = "x" * (MAX_PARSED_CHARS - 4)
    assert parse_cache_control(f"{head},no-store").no_store


def test_long_garbage_is_bounded_work():
    nasty = 'a="' * 200_000 + "no-cache, " * 10_000
    started = time.perf_counter()
    parsed = parse_cache_control(nasty)
    assert time.perf_counter() - started < 0.5  # ~1 ms measured; generous for shared CI cores
    assert parsed.no_cache


@CHECK
@given(
    st.text(max_size=300)
    | st.text(st.sampled_from('max-ge=0123456789",; \t\\nocstrp'), max_size=200)
)
def test_parse_never_raises_and_seconds_are_sane(value):
    parsed = parse_cache_control(value)
    for seconds in (
        parsed.max_age,
        parsed.s_maxage,
        parsed.stale_while_revalidate,
        parsed.stale_if_error,
    ):
        assert seconds is None or 0 <= seconds <= 2**31


# --- lifetime ------------------------------------------------------------------------------


TENANT = CacheSpec(ttl_s=300, stale_while_revalidate_s=60, stale_if_error_s=600)
SHARED = CacheSpec(ttl_s=300, stale_while_revalidate_s=60, stale_if_error_s=600, shared=True)


def fresh_s(cache: CacheSpec, **headers: str) -> float:
    life = lifetime(cache, {k.replace("_", "-"): v for k, v in headers.items()}, now=NOW)
    assert life is not None
    return life.fresh_until - NOW


def windows(cache: CacheSpec, **headers: str) -> tuple[float, float]:
    life = lifetime(cache, {k.replace("_", "-"): v for k, v in headers.items()}, now=NOW)
    assert life is not None
    return life.revalidate_until - life.fresh_until, life.if_error_until - life.fresh_until


def test_without_headers_the_ttl_and_the_windows():
    assert lifetime(TENANT, {}, now=NOW) == Lifetime(NOW + 300, NOW + 360, NOW + 900)


@pytest.mark.parametrize(
    ("headers", "expected_s"),
    [
        ({"cache_control": "max-age=60"}, 60),
        ({"cache_control": "max-age=6000"}, 300),  # the provider only shortens the TTL
        ({"cache_control": "max-age=0"}, 0),
        ({"cache_control": "max-age=junk"}, 0),
        ({"cache_control": "max-age=60", "age": "50"}, 10),
        ({"cache_control": "max-age=60", "age": "100"}, 0),  # clamped
        ({"cache_control": "max-age=600", "age": "100"}, 300),
        ({"cache_control": "max-age=60", "age": "50, 10"}, 10),  # a list: its first member
        ({"cache_control": "max-age=60", "age": "soon"}, 60),  # invalid: ignored
        ({"age": "50"}, 300),  # Age counts against the provider's lifetime only
        ({"cache_control": "s-maxage=10, max-age=60"}, 60),  # s-maxage binds shared entries only
        ({"cache_control": "no-cache, max-age=60"}, 0),
        ({"cache_control": "private, max-age=60"}, 60),  # a tenant's own entry may keep it
        ({"cache_control": "public"}, 300),
    ],
)
def test_fresh_time_of_a_tenant_entry(headers, expected_s):
    assert fresh_s(TENANT, **headers) == expected_s


@pytest.mark.parametrize(
    ("headers", "expected_s"),
    [
        (
            {"expires": "Tue, 14 Nov 2023 22:15:20 GMT", "date": "Tue, 14 Nov 2023 22:13:20 GMT"},
            120,
        ),
        (
            {"expires": "Tue, 14 Nov 2023 23:13:20 GMT", "date": "Tue, 14 Nov 2023 22:13:20 GMT"},
            300,
        ),
        ({"expires": "Tue, 14 Nov 2023 22:13:20 GMT", "date": "Tue, 14 Nov 2023 22:15:20 GMT"}, 0),
        ({"expires": "0", "date": "Tue, 14 Nov 2023 22:13:20 GMT"}, 0),  # invalid: expired
        (
            {"expires": "Tuesday, 14-Nov-23 22:15:20 GMT", "date": "Tue, 14 Nov 2023 22:13:20 GMT"},
            120,
        ),
        ({"expires": "Tue Nov 14 22:15:20 2023", "date": "Tue, 14 Nov 2023 22:13:20 GMT"}, 120),
        # Without a valid Date, Expires counts from now (NOW is 22:13:20 GMT).
        ({"expires": "Tue, 14 Nov 2023 22:14:20 GMT"}, 60),
        ({"expires": "Tue, 14 Nov 2023 22:14:20 GMT", "date": "garbage"}, 60),
        (
            {
                "expires": "Tue, 14 Nov 2023 22:15:20 GMT",
                "date": "Tue, 14 Nov 2023 22:13:20 GMT",
                "age": "20",
            },
            100,
        ),
        # max-age wins over Expires.
        ({"expires": "0", "cache_control": "max-age=30"}, 30),
    ],
)
def test_expires_minus_date_caps_the_ttl(headers, expected_s):
    assert fresh_s(TENANT, **headers) == expected_s


def test_no_store_is_never_stored():
    assert lifetime(TENANT, {"cache-control": "no-store"}, now=NOW) is None
    assert lifetime(SHARED, {"cache-control": "public, max-age=60, no-store"}, now=NOW) is None


def test_a_private_answer_is_not_stored_in_a_shared_entry():
    assert lifetime(SHARED, {"cache-control": "private, max-age=60"}, now=NOW) is None
    assert lifetime(TENANT, {"cache-control": "private, max-age=60"}, now=NOW) is not None


def test_a_shared_entry_takes_s_maxage_over_max_age():
    assert fresh_s(SHARED, cache_control="s-maxage=10, max-age=60") == 10
    assert fresh_s(SHARED, cache_control="max-age=60") == 60
    assert fresh_s(SHARED, cache_control="s-maxage=60, max-age=10", age="15") == 45


def test_no_cache_is_stored_but_never_fresh_and_never_stale():
    life = lifetime(TENANT, {"cache-control": "no-cache", "etag": '"v1"'}, now=NOW)
    assert life == Lifetime(NOW, NOW, NOW)
    assert freshness(life, NOW) is Freshness.EXPIRED


@pytest.mark.parametrize(
    ("cache", "cache_control", "expected"),
    [
        (TENANT, "max-age=60", (60, 600)),
        (TENANT, "must-revalidate", (0, 0)),
        (SHARED, "must-revalidate", (0, 0)),
        (TENANT, "proxy-revalidate", (60, 600)),  # binds shared caches only
        (SHARED, "proxy-revalidate", (0, 0)),
        (SHARED, "s-maxage=100", (0, 0)),  # s-maxage implies proxy-revalidate (RFC 9111 5.2.2.10)
        (TENANT, "s-maxage=100", (60, 600)),
        # The answer's own windows cap the operation's, never lengthen them.
        (TENANT, "stale-while-revalidate=10", (10, 600)),
        (TENANT, "stale-while-revalidate=1000", (60, 600)),
        (TENANT, "stale-if-error=100", (60, 100)),
        (TENANT, "stale-if-error=0", (60, 60)),  # the if-error end never precedes revalidate's
        (TENANT, "stale-while-revalidate=0, stale-if-error=0", (0, 0)),
    ],
)
def test_stale_windows(cache, cache_control, expected):
    assert windows(cache, cache_control=cache_control) == expected


def test_no_windows_when_the_operation_declares_none():
    assert lifetime(CacheSpec(ttl_s=5), {}, now=NOW) == Lifetime(NOW + 5, NOW + 5, NOW + 5)


header_values = st.text(max_size=60) | st.sampled_from(
    ["max-age=60", "no-cache", "private", "s-maxage=5", "must-revalidate", "0", "12"]
)


@CHECK
@given(
    cache=st.builds(
        CacheSpec,
        ttl_s=st.floats(0.001, 1e6),
        shared=st.booleans(),
        stale_while_revalidate_s=st.floats(0, 1e6),
        stale_if_error_s=st.floats(0, 1e6),
    ),
    headers=st.dictionaries(
        st.sampled_from(["cache-control", "age", "expires", "date", "etag"]), header_values
    ),
)
def test_lifetime_is_ordered_and_within_the_ttl(cache, headers):
    life = lifetime(cache, headers, now=NOW)
    if life is None:
        return
    assert NOW <= life.fresh_until <= NOW + cache.ttl_s
    assert life.fresh_until <= life.revalidate_until <= life.if_error_until
    # Differences of epoch seconds are exact to a ulp of 1.7e9 (2.4e-7 s).
    swr_s, if_error_s = cache.stale_while_revalidate_s, cache.stale_if_error_s
    assert life.revalidate_until - life.fresh_until <= swr_s + ULP
    assert life.if_error_until - life.fresh_until <= max(swr_s, if_error_s) + ULP


# --- freshness -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (NOW, Freshness.FRESH),
        (NOW + 9.999, Freshness.FRESH),
        (NOW + 10, Freshness.STALE_REVALIDATE),
        (NOW + 19.999, Freshness.STALE_REVALIDATE),
        (NOW + 20, Freshness.STALE_IF_ERROR),
        (NOW + 29.999, Freshness.STALE_IF_ERROR),
        (NOW + 30, Freshness.EXPIRED),
        (NOW + 1e9, Freshness.EXPIRED),
    ],
)
def test_freshness(now, expected):
    assert freshness(Lifetime(NOW + 10, NOW + 20, NOW + 30), now) is expected


def test_freshness_skips_empty_windows():
    assert freshness(Lifetime(NOW + 10, NOW + 10, NOW + 30), NOW + 10) is Freshness.STALE_IF_ERROR
    assert freshness(Lifetime(NOW + 10, NOW + 10, NOW + 10), NOW + 10) is Freshness.EXPIRED


# --- conditional_headers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, {}),
        ({"content-type": "application/json"}, {}),
        ({"etag": '"abc"'}, {"If-None-Match": '"abc"'}),
        ({"etag": 'W/"abc"'}, {"If-None-Match": 'W/"abc"'}),
        (
            {"last-modified": "Tue, 14 Nov 2023 22:13:20 GMT"},
            {"If-Modified-Since": "Tue, 14 Nov 2023 22:13:20 GMT"},
        ),
        (
            {"etag": '"abc"', "last-modified": "Tue, 14 Nov 2023 22:13:20 GMT"},
            {"If-None-Match": '"abc"', "If-Modified-Since": "Tue, 14 Nov 2023 22:13:20 GMT"},
        ),
    ],
)
def test_conditional_headers(headers, expected):
    assert conditional_headers(headers) == expected
