"""Tests for limit keys and the stable shard hash."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.keys import LimitKey, limit_key, parse_limit_key, shard_for

CHECK = settings(database=None, deadline=None, max_examples=200)


@pytest.mark.parametrize(
    ("parts", "key"),
    [
        (("open_meteo", None, None), "open_meteo"),
        (("open_meteo", "eu-key.2", None), "open_meteo/eu-key.2"),
        (("open_meteo", None, 3), "open_meteo#3"),
        (("open_meteo", "eu", 0), "open_meteo/eu#0"),
    ],
)
def test_limit_key_round_trip(parts, key):
    assert limit_key(*parts) == key
    assert parse_limit_key(key) == LimitKey(*parts)
    assert str(LimitKey(*parts)) == key


@pytest.mark.parametrize(
    "parts",
    [("", None, None), ("a b", None, None), ("a/b", None, None), ("a", "x#1", None),
     ("a", "", None), ("a", None, -1), ("x" * 129, None, None)],
)  # fmt: skip
def test_limit_key_rejects_bad_parts(parts):
    with pytest.raises(ValueError, match="must"):
        limit_key(*parts)


@pytest.mark.parametrize(
    "key", ["", "a/", "/b", "a#", "a#-1", "a#01", "a#+1", "a#1#2", "a/b/c", "a b", "a#\u0661"]
)
def test_parse_rejects_non_canonical_keys(key):
    with pytest.raises(ValueError, match=r"must|canonical"):
        parse_limit_key(key)


names = st.from_regex(r"[A-Za-z0-9_.\-]{1,20}", fullmatch=True)


@CHECK
@given(names, st.none() | names, st.none() | st.integers(0, 10_000))
def test_any_key_round_trips(provider, credential, shard):
    assert parse_limit_key(limit_key(provider, credential, shard)) == (provider, credential, shard)


# Pinned values: routing must not change between processes or releases (Python's hash would).
@pytest.mark.parametrize(
    ("cache_key", "n", "expected"),
    [
        ("weather:berlin", 8, 3),
        ("weather:berlin", 100, 70),
        ("weather:rome", 8, 4),
        ("maps:geocode:1", 8, 6),
        ("", 3, 2),
        ("x", 1, 0),
    ],
)
def test_shard_for_is_stable(cache_key, n, expected):
    assert shard_for(cache_key, n) == expected
    assert shard_for(cache_key.encode(), n) == expected


def test_shard_for_spreads_keys_evenly():
    spread = Counter(shard_for(f"key-{i}", 8) for i in range(16_000))
    assert set(spread) == set(range(8))
    assert all(1_700 <= c <= 2_300 for c in spread.values())


def test_shard_for_rejects_zero_shards():
    with pytest.raises(ValueError, match="at least 1"):
        shard_for("k", 0)


@CHECK
@given(st.text(), st.integers(1, 200))
def test_growing_the_shard_count_moves_a_key_only_to_the_new_shard(cache_key, n):
    before, after = shard_for(cache_key, n), shard_for(cache_key, n + 1)
    assert 0 <= before < n
    assert after in (before, n)
