"""Per-key features: the decay and EWMA arithmetic, the counts an access or a refresh moves,
the inputs' shape, and the table encoding (round trips; garbage reads as None)."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.prefetch.features import (
    FEATURE_NAMES,
    FORMAT_VERSION,
    GAP_ALPHA,
    HALF_LIVES_S,
    KeyFeatures,
    decayed,
)

CHECK = settings(database=None, deadline=None, max_examples=200)
T0 = 1_700_000_000.0
FAST, SLOW = HALF_LIVES_S

# An access stream: (seconds since the previous event, hit, a refresh instead of a request).
events = st.lists(
    st.tuples(st.floats(0, 5_000, allow_nan=False), st.booleans(), st.booleans()), max_size=60
)


def play(stream: list[tuple[float, bool, bool]]) -> tuple[KeyFeatures, float]:
    state, now = KeyFeatures(), T0
    for gap, hit, refresh in stream:
        now += gap
        if refresh:
            state = state.refreshed(now, expires_s=now + 300)
        else:
            state = state.observe(now, hit=hit, expires_s=now + 300)
    return state, now


def test_one_half_life_halves_a_count():
    assert decayed(8.0, FAST, FAST) == pytest.approx(4.0)
    assert decayed(8.0, -10.0, FAST) == 8.0  # a clock gone back decays nothing


@CHECK
@given(st.floats(0, 1e6), st.floats(0, 1e5), st.floats(0, 1e5))
def test_decay_composes(count, a, b):
    assert decayed(decayed(count, a, SLOW), b, SLOW) == pytest.approx(
        decayed(count, a + b, SLOW), rel=1e-9, abs=1e-12
    )


def test_two_requests_a_fast_half_life_apart():
    state = KeyFeatures().observe(T0, hit=False, expires_s=T0 + 300)
    state = state.observe(T0 + FAST, hit=True, expires_s=T0 + 300)
    assert state.fast == pytest.approx(1.5)
    assert state.slow == pytest.approx(1 + 2 ** (-FAST / SLOW))
    assert state.gap_mean == pytest.approx(math.log1p(FAST)) and state.gap_var == 0.0
    assert state.count_at(T0 + 2 * FAST) == pytest.approx((0.75, state.slow * 2 ** (-FAST / SLOW)))


def test_the_gap_ewma_follows_finch():
    state, now = KeyFeatures(), T0
    for gap in (0.0, 10.0, 100.0, 1000.0):
        now += gap
        state = state.observe(now, hit=True, expires_s=now)
    mean, var = math.log1p(10.0), 0.0
    for gap in (100.0, 1000.0):
        delta = math.log1p(gap) - mean
        mean += GAP_ALPHA * delta
        var = (1 - GAP_ALPHA) * (var + GAP_ALPHA * delta * delta)
    assert (state.gap_mean, state.gap_var) == pytest.approx((mean, var))


def test_a_steady_key_converges_to_its_gap():
    state = KeyFeatures()
    for i in range(200):
        state = state.observe(T0 + 60.0 * i, hit=True, expires_s=T0)
    assert state.gap_mean == pytest.approx(math.log1p(60.0))
    assert state.gap_var == pytest.approx(0.0, abs=1e-12)
    # One request every 60 s: the decayed count tends to 1 / (1 - 2^(-60 / half-life)).
    assert state.fast == pytest.approx(1 / (1 - 2 ** (-60 / FAST)), rel=1e-6)


def test_misses_fetch_hits_read_and_refreshes_refetch():
    state = KeyFeatures().observe(T0, hit=False, expires_s=T0 + 300)
    assert (state.requests, state.reads, state.fetches, state.fetched_s) == (1, 0, 1, T0)
    state = state.observe(T0 + 10, hit=True, expires_s=T0 + 300)
    state = state.observe(T0 + 20, hit=True, expires_s=T0 + 300)
    assert (state.requests, state.reads, state.fetches) == (3, 2, 1)
    state = state.refreshed(T0 + 300, expires_s=T0 + 600)
    assert (state.requests, state.reads, state.fetches) == (3, 0, 2)
    assert (state.fetched_s, state.expires_s, state.last_s) == (T0 + 300, T0 + 600, T0 + 20)


def test_a_clock_gone_back_adds_one_without_decaying():
    state = KeyFeatures().observe(T0, hit=False, expires_s=T0)
    state = state.observe(T0 - 30, hit=True, expires_s=T0)
    assert state.fast == pytest.approx(2.0) and state.gap_mean == 0.0


def test_the_vector_of_a_fresh_key_and_its_hour():
    assert len(KeyFeatures().vector(T0)) == len(FEATURE_NAMES)
    assert all(math.isfinite(v) for v in KeyFeatures().vector(T0))
    six_utc = 1_700_000_000 // 86_400 * 86_400 + 6 * 3600  # a midnight, plus six hours
    state = KeyFeatures().observe(six_utc, hit=False, expires_s=six_utc + 300)
    sin, cos = state.vector(six_utc + 1_799)[-2:]
    assert (sin, cos) == pytest.approx((1.0, 0.0), abs=1e-12)  # the 06:00 bucket, a quarter


@CHECK
@given(events)
def test_every_stream_gives_finite_inputs_and_consistent_counts(stream):
    state, now = play(stream)
    vector = state.vector(now + 300)
    assert len(vector) == len(FEATURE_NAMES) and all(math.isfinite(v) for v in vector)
    assert 0 <= state.reads <= state.requests
    assert state.fetches >= sum(1 for _, hit, refresh in stream if refresh or not hit)
    assert state.fast <= state.slow + 1e-9  # the faster decay never holds more


@CHECK
@given(events)
def test_round_trip(stream):
    state, _ = play(stream)
    data = state.to_bytes()
    assert len(data) == 69 and data[0] == FORMAT_VERSION
    assert KeyFeatures.from_bytes(data) == state


def test_counts_saturate_in_bytes():
    state = KeyFeatures(requests=2**40, reads=2**40, fetches=2**33)
    back = KeyFeatures.from_bytes(state.to_bytes())
    assert back is not None and back.requests == back.reads == back.fetches == 2**32 - 1


GOOD = KeyFeatures().observe(T0, hit=False, expires_s=T0 + 300).to_bytes()
LAYOUT = struct.Struct("<B7d3I")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(GOOD[:-1], id="truncated"),
        pytest.param(GOOD + b"\0", id="too long"),
        pytest.param(bytes([FORMAT_VERSION + 1]) + GOOD[1:], id="another version"),
        pytest.param(LAYOUT.pack(1, math.nan, 0, 0, 1, 1, 0, 0, 1, 0, 1), id="nan"),
        pytest.param(LAYOUT.pack(1, 0, 0, 0, -1, 1, 0, 0, 1, 0, 1), id="negative count"),
        pytest.param(LAYOUT.pack(1, 0, 0, 0, 1, 1, 0, 0, 1, 2, 1), id="more reads than requests"),
        pytest.param(b"\x01" + b"\xff" * 68, id="garbage"),
    ],
)
def test_bytes_that_are_no_state_read_as_none(data):
    assert KeyFeatures.from_bytes(data) is None


@CHECK
@given(st.binary(max_size=100))
def test_any_bytes_decode_to_a_state_or_none(data):
    state = KeyFeatures.from_bytes(data)
    assert state is None or all(math.isfinite(v) for v in state.vector(T0))
