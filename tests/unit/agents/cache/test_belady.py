"""Belady's optimum: equal to an exhaustive search on short sequences, and never beaten by an
online policy."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cache.belady import belady_hits, next_uses
from agents.cache.policy import POLICIES
from agents.cache.simulate import policy_hits

CHECK = settings(database=None, deadline=None, max_examples=200)
sequences = st.lists(st.integers(0, 30) | st.integers(0, 4), max_size=300)


def _exhaustive(keys: tuple[int, ...], capacity: int) -> int:
    """The most hits over every admission and eviction choice (a search over cache states)."""

    @cache
    def best(i: int, held: frozenset[int]) -> int:
        if i == len(keys):
            return 0
        key = keys[i]
        if key in held:
            return 1 + best(i + 1, held)
        options = [best(i + 1, held)]  # not admitted
        if len(held) < capacity:
            options.append(best(i + 1, held | {key}))
        else:
            options.extend(best(i + 1, (held - {out}) | {key}) for out in held)
        return max(options)

    return best(0, frozenset())


@settings(database=None, deadline=None, max_examples=150)
@given(keys=st.lists(st.integers(0, 5), max_size=11), capacity=st.integers(1, 3))
def test_belady_is_the_optimum(keys, capacity):
    assert belady_hits(keys, capacity) == _exhaustive(tuple(keys), capacity)


@pytest.mark.parametrize("policy", list(POLICIES))
@CHECK
@given(keys=sequences, capacity=st.integers(1, 12))
def test_no_online_policy_beats_belady(policy, keys, capacity):
    assert policy_hits(keys, policy, capacity) <= belady_hits(keys, capacity)


@CHECK
@given(keys=sequences, capacity=st.integers(1, 40))
def test_belady_bounds(keys, capacity):
    hits = belady_hits(keys, capacity)
    repeats = len(keys) - len(set(keys))
    assert 0 <= hits <= repeats  # every first request is a miss
    if capacity >= len(set(keys)):
        assert hits == repeats  # room for everything: every repeat hits


def test_next_uses_and_capacity():
    assert next_uses(["a", "b", "a", "c", "b"]) == [2, 4, 7, 8, 9]
    assert belady_hits(["a", "b", "c", "a", "b", "c"], 2) == 2
    with pytest.raises(ValueError, match="capacity"):
        belady_hits(["a"], 0)
