"""The adaptive rate controller: pure state changes, their bounds, and a simulated provider."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.rate_limiter.adaptive import (
    Mode,
    RateControl,
    RateState,
    grow,
    learned_rate,
    limit_from_headers,
    throttled,
)
from agents.rate_limiter.bucket import LimitPolicy
from agents.rate_limiter.rates import KeyRates
from tests.unit.agents.rate_limiter.simulated_provider import Phase, default_control, simulate

CUBIC = RateControl(Mode.CUBIC, 100.0, decrease=0.9, recovery_s=8.0)
AIMD = RateControl(Mode.AIMD, 100.0, decrease=0.9, recovery_s=8.0)
OFF = RateControl(Mode.OFF, 100.0)


def test_a_429_cuts_the_rate_once_per_cut() -> None:
    state = throttled(CUBIC.start(), CUBIC, now=10.0, sent_at=9.9)
    assert state.rate_per_s == pytest.approx(90.0)
    assert state.refused_per_s == pytest.approx(100.0)
    # Refusals of calls sent before the cut were the old rate's: no second cut.
    assert throttled(state, CUBIC, now=10.05, sent_at=9.95) is state
    again = throttled(state, CUBIC, now=10.2, sent_at=10.1)
    assert again.rate_per_s == pytest.approx(81.0)


def test_a_lower_refusal_aims_the_probe_between_the_two_rates() -> None:
    first = throttled(CUBIC.start(), CUBIC, now=10.0, sent_at=9.9)  # refused at 100
    second = throttled(first, CUBIC, now=11.0, sent_at=10.5)  # refused again at 90
    assert second.refused_per_s == pytest.approx(90 * 1.9 / 2)  # below 90: the limit fell


def test_off_never_moves() -> None:
    state = OFF.start()
    assert throttled(state, OFF, now=1.0, sent_at=1.0) is state
    assert grow(state, OFF, backlogged_s=5.0) is state


@pytest.mark.parametrize("control", [CUBIC, AIMD], ids=["cubic", "aimd"])
def test_backlogged_time_climbs_back_to_the_refused_rate_in_recovery_s(
    control: RateControl,
) -> None:
    state = throttled(control.start(), control, now=0.0, sent_at=0.0)
    for _ in range(int(control.recovery_s / 0.25)):
        state = grow(state, control, backlogged_s=0.25)
    assert state.rate_per_s == pytest.approx(100.0, rel=1e-6)


def test_idle_time_does_not_grow_the_rate() -> None:
    state = throttled(CUBIC.start(), CUBIC, now=0.0, sent_at=0.0)
    assert grow(state, CUBIC, backlogged_s=0.0) is state


def test_cubic_is_flat_near_the_refused_rate_and_fast_far_from_it() -> None:
    state = throttled(CUBIC.start(), CUBIC, now=0.0, sent_at=0.0)
    rates = [state.rate_per_s]
    for _ in range(32):  # 8 s
        state = grow(state, CUBIC, backlogged_s=0.25)
        rates.append(state.rate_per_s)
    steps = [b - a for a, b in itertools.pairwise(rates)]
    assert steps[0] > steps[-1] >= 0  # concave: slows as it nears the refused rate


def test_headers_set_the_ceiling_within_bounds() -> None:
    lower = limit_from_headers(CUBIC.start(), CUBIC, limit=3000, window_s=60)  # 50/s
    assert (lower.ceiling_per_s, lower.rate_per_s) == (50.0, 50.0)
    higher = limit_from_headers(CUBIC.start(), CUBIC, limit=9000, window_s=60)  # 150/s
    assert higher.ceiling_per_s == 150.0
    assert higher.rate_per_s == 100.0  # probed towards, not jumped to
    capped = limit_from_headers(CUBIC.start(), CUBIC, limit=10**9, window_s=1)
    assert capped.ceiling_per_s == CUBIC.highest_per_s
    assert learned_rate(lower) == 50.0


def test_a_raised_ceiling_is_probed_when_backlogged() -> None:
    state = limit_from_headers(CUBIC.start(), CUBIC, limit=9000, window_s=60)
    for _ in range(80):  # 20 s backlogged
        state = grow(state, CUBIC, backlogged_s=0.25)
    assert state.rate_per_s == 150.0


events = st.lists(
    st.one_of(
        st.tuples(st.just("429"), st.floats(0, 2)),
        st.tuples(st.just("grow"), st.floats(0, 3)),
        st.tuples(st.just("headers"), st.integers(0, 100_000)),
    ),
    max_size=60,
)


@given(events, st.sampled_from([CUBIC, AIMD]))
def test_the_rate_stays_between_floor_and_ceiling(
    steps: list[tuple[str, float]], control: RateControl
) -> None:
    state, now = control.start(), 0.0
    for kind, value in steps:
        now += 0.1
        if kind == "429":
            state = throttled(state, control, now=now, sent_at=now - value)
        elif kind == "grow":
            state = grow(state, control, backlogged_s=value)
        else:
            state = limit_from_headers(state, control, limit=int(value), window_s=60)
        assert control.floor_per_s - 1e-9 <= state.rate_per_s <= state.ceiling_per_s + 1e-9
        assert state.ceiling_per_s <= control.highest_per_s + 1e-9
        assert RateState.from_bytes(state.to_bytes()) == state


@pytest.mark.parametrize(
    "data", [b"", b"\x02" + bytes(40), b"\x01" + b"\xff" * 40], ids=["empty", "version", "nan"]
)
def test_unreadable_state_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="RateState"):
        RateState.from_bytes(data)


def _rates(control: RateControl, restored: RateState | None = None) -> KeyRates:
    base = LimitPolicy(100.0, 10)
    return KeyRates(lambda key: base, lambda key: control, lambda key: restored)


def test_key_rates_enforce_the_cut_rate_with_a_scaled_burst() -> None:
    rates = _rates(CUBIC)
    assert rates.policy_for("p").rate_per_s == 100.0
    assert rates.throttled("p", now=1.0, sent_at=0.9)
    policy = rates.policy_for("p")
    assert (policy.rate_per_s, policy.burst) == (pytest.approx(90.0), 9)


def test_key_rates_off_use_the_declared_policy_and_keep_no_state() -> None:
    rates = _rates(OFF)
    assert rates.policy_for("p").rate_per_s == 100.0
    assert not rates.throttled("p", now=1.0, sent_at=0.9)
    assert rates.states() == {}


def test_key_rates_start_from_a_restored_state_and_persist_moves() -> None:
    restored = RateState(40.0, 45.0, 100.0, 5.0, 1.0)
    rates = _rates(CUBIC, restored)
    assert rates.policy_for("p").rate_per_s == 40.0
    assert rates.to_persist() == []  # what was loaded is what is written
    rates.throttled("p", now=10.0, sent_at=9.0)
    [(key, state)] = rates.to_persist()
    assert key == "p" and state.rate_per_s == pytest.approx(36.0)
    assert rates.to_persist() == []


def test_a_restored_state_is_brought_within_todays_bounds() -> None:
    rates = _rates(CUBIC, RateState(1000.0, 1000.0, 1000.0, 5.0, 1.0))
    assert rates.policy_for("p").rate_per_s == CUBIC.highest_per_s


# The must-show, on the simulated provider (bench adaptive measures the real pipeline).
CHANGING = [Phase(60, 40), Phase(80, 40), Phase(40, 40)]


def test_cubic_defaults_settle_within_20_s_of_each_change() -> None:
    run = simulate(default_control(), CHANGING)
    assert all(s is not None and s <= 20 for s in run.settle_s), run
    assert run.refused_share <= 0.02
    assert run.utilization >= 0.9


@pytest.mark.parametrize("mode", [Mode.CUBIC, Mode.AIMD])
def test_both_shapes_hold_the_bounds_at_a_slow_providers_latency(mode: Mode) -> None:
    run = simulate(default_control(mode), CHANGING, latency_s=0.2)  # more calls in flight
    assert run.refused_share <= 0.02
    assert run.utilization >= 0.9
    assert all(s is not None and s <= 20 for s in run.settle_s), run


def test_a_static_rate_over_the_real_limit_is_mostly_refused() -> None:
    run = simulate(default_control(Mode.OFF), [Phase(50, 20)])
    assert run.refused_share > 0.1  # a 429 per few calls: what adaptation is for
    assert math.isclose(run.utilization, 1.0, rel_tol=0.05)  # the provider still takes 50/s
