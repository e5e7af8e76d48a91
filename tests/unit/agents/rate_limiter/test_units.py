"""Units limits: the declaration, reserve and settle on a GCRA bucket, the estimator, the reader."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agents.rate_limiter.bucket import (
    Bucket,
    LimitPolicy,
    available,
    observe_provider_headers,
    take,
)
from agents.rate_limiter.units import (
    Reservation,
    UnitEstimator,
    UnitsBucket,
    UnitsReader,
    UnitsSeen,
    reserve,
    settle,
    units_policy,
)
from providers.declaration import OperationSpec, UnitLimitSpec
from providers.response import ProviderReply
from providers.spec_file import SpecError, load_spec_file, parse_spec
from streams.cli.dev.llm_trace import AZURE_CONV_TRACE, read_llm_trace

NOW = 1_700_000_000.0
CHECK = settings(database=None, deadline=None, max_examples=300)
CATALOG = Path(__file__).resolve().parents[4] / "providers" / "catalog"
# Float slack of conformance checks at epoch scale: seconds, as in conformance.py.
TOLERANCE_S = 3e-6
KEY = ("openai", "create_chat_completion")


def exact(rate: float, burst: int) -> LimitPolicy:
    return LimitPolicy(rate, burst, jitter_s=0.0)


def spec(**limits_units: object) -> dict[str, object]:
    return {
        "name": "llm",
        "base_url": "https://llm.example",
        "limits": {"units": limits_units} if limits_units else {},
        "operations": {"chat": {"method": "POST", "path": "/chat", "units_from": "usage.n"}},
    }


# ---- declaration ----------------------------------------------------------------------------


def test_a_units_limit_defaults_its_burst_to_a_minute():
    tpm = UnitLimitSpec(name="tokens", per_minute=30_000)
    assert (tpm.per_s, tpm.capacity) == (500.0, 30_000)
    per_s = UnitLimitSpec(name="records", rate_per_s=2.5, burst=10)
    assert (per_s.per_s, per_s.capacity) == (2.5, 10)
    assert UnitLimitSpec(name="tokens", rate_per_s=0.001).capacity == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "tokens"}, "per_minute or rate_per_s, exactly one"),
        ({"name": "tokens", "per_minute": 60, "rate_per_s": 1}, "exactly one"),
        ({"name": "tokens", "per_minute": 0}, "greater than 0"),
        ({"name": "tokens", "per_minute": math.inf}, "finite"),
        ({"name": "tokens", "per_minute": 60, "burst": 0}, "greater than or equal to 1"),
        ({"name": "Tokens!", "per_minute": 60}, "should match pattern"),
    ],
)
def test_a_units_limit_rejects_nonsense(fields, message):
    with pytest.raises(ValidationError, match=message):
        UnitLimitSpec.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"units_from": "usage..total"}, "not a dotted JSON path"),
        ({"units_from": ""}, "not a dotted JSON path"),
        ({"units_from": "usage total"}, "not a dotted JSON path"),
        ({"units_from_request": "max_tokens"}, "units_from_request needs units_from"),
        (
            {"units_from": "usage.total_tokens", "units_unbounded_from": "usage.prompt_tokens"},
            "units_unbounded_from needs units_from_request",
        ),
        ({"units_estimate": -1}, "greater than or equal to 0"),
    ],
)
def test_operation_units_are_checked(fields, message):
    with pytest.raises(ValidationError, match=message):
        OperationSpec.model_validate({"path": "/x", **fields})


def test_an_operation_spends_units_when_it_declares_an_estimate_or_where_to_read_them():
    assert not OperationSpec(path="/x").spends_units
    assert OperationSpec(path="/x", units_estimate=0).spends_units
    assert OperationSpec(path="/x", units_from="usage.0.n").spends_units


def test_provider_errors_are_one_line():
    with pytest.raises(SpecError) as info:
        parse_spec(spec(), source="llm.toml")
    assert str(info.value) == "llm.toml: operation 'chat' spends units, but limits.units is absent"
    with pytest.raises(SpecError) as info:
        parse_spec(spec(name="tokens"), source="llm.toml")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("llm.toml: limits.units: ")
    assert parse_spec(spec(name="tokens", per_minute=600), source="llm.toml").limits.units


def test_the_openai_catalog_limits_tokens_per_minute():
    openai = load_spec_file(CATALOG / "openai.toml")
    units = openai.limits.units
    assert units is not None and (units.name, units.per_s, units.capacity) == (
        "tokens", 500.0, 30_000,
    )  # fmt: skip
    chat = openai.operations["create_chat_completion"]
    assert (chat.units_from, chat.units_from_request, chat.units_unbounded_from) == (
        "usage.total_tokens", "max_tokens", "usage.prompt_tokens",
    )  # fmt: skip
    assert not openai.operations["list_models"].spends_units


def test_a_units_policy_runs_a_little_below_the_declared_rate():
    policy = units_policy(UnitLimitSpec(name="tokens", per_minute=30_000))
    assert (policy.rate_per_s, policy.burst, policy.jitter_s) == (490.0, 30_000, 0.05)
    assert policy.effective_burst == 30_000 - 25  # 0.05 s of jitter at 490/s
    assert units_policy(UnitLimitSpec(name="t", rate_per_s=2), margin=0).rate_per_s == 2
    with pytest.raises(ValueError, match="margin"):
        units_policy(UnitLimitSpec(name="t", rate_per_s=2), margin=1)


# ---- reserve --------------------------------------------------------------------------------


def test_reserve_spends_units_and_refuses_what_does_not_fit_now():
    policy, b = exact(10, 100), UnitsBucket()
    b, wait, held = reserve(b, now=NOW, policy=policy, units=60.5)
    assert wait == 0.0 and held is not None and not held.clamped
    assert (held.units, held.ends_at, held.requested) == (60.5, pytest.approx(NOW + 6.05), 60.5)
    assert available(b.bucket, now=NOW, policy=policy) == pytest.approx(39.5)
    same, wait, held = reserve(b, now=NOW, policy=policy, units=50)
    assert same is b and held is None and wait == pytest.approx(1.05)


@pytest.mark.parametrize("units", [150.0, math.inf])
def test_an_estimate_beyond_the_burst_reserves_a_full_bucket(units):
    policy = exact(10, 100)
    b, wait, held = reserve(UnitsBucket(), now=NOW, policy=policy, units=units)
    assert wait == 0.0 and held is not None and held.units == 100 and held.clamped
    assert available(b.bucket, now=NOW, policy=policy) == 0.0
    _, wait, _ = reserve(UnitsBucket(NOW + 5), now=NOW, policy=policy, units=units)
    assert wait == pytest.approx(5.0)  # the whole bucket must refill first


def test_reserving_nothing_still_waits_out_a_debt():
    policy = exact(10, 100)
    assert reserve(UnitsBucket(NOW + 10), now=NOW, policy=policy, units=0)[1] == 0.0
    assert reserve(UnitsBucket(NOW + 12), now=NOW, policy=policy, units=0)[1] == pytest.approx(2.0)


@pytest.mark.parametrize("units", [-1.0, math.nan])
def test_reserve_rejects_nonsense(units):
    with pytest.raises(ValueError, match="units must be >= 0"):
        reserve(UnitsBucket(), now=NOW, policy=exact(1, 1), units=units)


@CHECK
@given(
    st.floats(0.1, 1000.0),
    st.integers(1, 50),
    st.floats(-20.0, 20.0),
    st.integers(1, 60),
)
def test_whole_units_reserve_exactly_as_take_does(rate, burst, offset, cost):
    policy, b = exact(rate, burst), UnitsBucket(NOW + offset)
    taken, took_wait = take(b.bucket, now=NOW, policy=policy, cost=cost, max_wait_s=0.0)
    reserved, wait, held = reserve(b, now=NOW, policy=policy, units=cost)
    if cost <= policy.effective_burst:
        assert (reserved.bucket, wait) == (taken, took_wait)
        assert (held is not None) == (took_wait == 0.0)


# ---- settle ---------------------------------------------------------------------------------


def test_settle_charges_what_was_spent_beyond_the_reservation_as_a_debt():
    policy = exact(10, 100)
    b, _, held = reserve(UnitsBucket(), now=NOW, policy=policy, units=90)
    assert held is not None
    b = settle(b, held, actual=130, now=NOW + 1, policy=policy)
    assert b.full_at == pytest.approx(NOW + 13)  # 130 units: 3 s beyond a whole bucket
    assert reserve(b, now=NOW + 1, policy=policy, units=10)[1] == pytest.approx(3.0)


def test_settle_refunds_the_unspent_part_of_the_slot_still_ahead():
    policy = exact(10, 100)
    b, _, held = reserve(UnitsBucket(NOW + 5), now=NOW, policy=policy, units=40)  # 50 used before
    assert held is not None and held.ends_at == NOW + 9
    assert settle(b, held, actual=10, now=NOW + 1, policy=policy).full_at == pytest.approx(NOW + 6)
    # Late: 3 of the 4 s of the slot are behind us, so at most 1 s (10 units) comes back.
    assert settle(b, held, actual=10, now=NOW + 8, policy=policy).full_at == pytest.approx(NOW + 8)
    assert settle(b, held, actual=40, now=NOW + 1, policy=policy) is b
    assert settle(b, held, actual=10, now=NOW + 9, policy=policy) is b


def test_a_refund_never_fills_the_bucket_beyond_full():
    policy = exact(10, 100)
    b, _, held = reserve(UnitsBucket(), now=NOW, policy=policy, units=100)
    assert held is not None
    b = UnitsBucket(NOW + 2)  # since then, other refunds brought it back near full
    assert settle(b, held, actual=0, now=NOW + 1, policy=policy).full_at == NOW + 1
    assert settle(UnitsBucket(NOW - 1), held, actual=0, now=NOW, policy=policy).full_at == NOW - 1


def test_a_refund_whose_slot_has_refilled_comes_too_late():
    """Burst 1: A's unit refilled while C took the next; refunding it would let D go with C."""
    policy = exact(1, 1)
    b, _, a = reserve(UnitsBucket(), now=NOW, policy=policy, units=1)
    b, _, c = reserve(b, now=NOW + 1, policy=policy, units=1)
    assert a is not None and c is not None
    b = settle(b, a, actual=0, now=NOW + 1, policy=policy)
    assert reserve(b, now=NOW + 1, policy=policy, units=1)[2] is None


def test_a_refund_counts_the_refunds_made_since_its_reservation():
    """The module's example: C's slot moved 22 s earlier when A refunded, so by the time C
    settles it is behind us, and D took the bucket full: refunding C would let E go early."""
    policy = exact(1, 87)
    b, _, a = reserve(UnitsBucket(), now=NOW + 1, policy=policy, units=87)
    b, _, c = reserve(b, now=NOW + 47, policy=policy, units=45)
    assert a is not None and c is not None
    b = settle(b, a, actual=13, now=NOW + 66, policy=policy)
    assert b.refunded_s == pytest.approx(22) and b.full_at == pytest.approx(NOW + 111)
    b, _, d = reserve(b, now=NOW + 111, policy=policy, units=87)
    assert d is not None
    assert settle(b, c, actual=18, now=NOW + 117, policy=policy) is b  # 133 - 22 < 117


def test_a_units_bucket_round_trips_and_takes_header_observations():
    state = UnitsBucket(NOW + 1.5, 42.25)
    assert UnitsBucket.from_bytes(state.to_bytes()) == state
    assert len(state.to_bytes()) == 17
    with pytest.raises(ValueError, match="not a v1 UnitsBucket"):
        UnitsBucket.from_bytes(Bucket(NOW).to_bytes())
    with pytest.raises(ValueError, match="not a units bucket"):
        UnitsBucket(math.nan)
    policy = exact(500, 30_000)
    seen = observe_provider_headers(state.bucket, remaining=0, now=NOW, policy=policy)
    assert state.with_bucket(seen) == UnitsBucket(NOW + 60, 42.25)
    assert state.with_bucket(state.bucket) is state
    assert repr(state) == "UnitsBucket(full_at=1700000001.500000, refunded_s=42.250000)"


@pytest.mark.parametrize("actual", [-1.0, math.nan, math.inf])
def test_settle_rejects_nonsense(actual):
    with pytest.raises(ValueError, match="actual units"):
        settle(
            UnitsBucket(), Reservation(1, NOW, 0.0, 1), actual=actual, now=NOW, policy=exact(1, 1)
        )


# ---- invariants: a provider enforcing the limit strictly ------------------------------------

Send = tuple[float, float, float, float]  # (sent at, actual, reserved, settled at)


def unit_policies(jitter: bool = False) -> st.SearchStrategy[LimitPolicy]:
    return st.builds(
        LimitPolicy,
        rate_per_s=st.floats(1.0, 1000.0),
        burst=st.integers(1, 3000),
        jitter_s=st.floats(0.0, 0.2) if jitter else st.just(0.0),
    )


# Per call: (seconds since the previous call, estimate / burst, actual / reserved, latency / the
# bucket's capacity). Bursts of simultaneous calls, long idle gaps, estimates beyond the burst.
calls = st.lists(
    st.tuples(
        st.sampled_from([0.0]) | st.floats(0.0, 30.0),
        st.floats(0.0, 1.5),
        st.floats(0.0, 1.0),
        st.floats(0.0, 2.0),
    ),
    min_size=1,
    max_size=50,
)


def run(policy: LimitPolicy, plan, overrun: float = 1.0) -> list[Send]:
    """Calls waiting their turn outside the bucket (as the waiting room does) and settling
    ``latency`` after they are sent; ``actual / reserved`` is scaled by ``overrun``."""
    b, now = UnitsBucket(), NOW
    pending: list[tuple[float, Reservation, float]] = []  # (settles at, held, actual)
    sends: list[Send] = []

    def settle_until(t: float) -> None:
        nonlocal b
        pending.sort(key=lambda p: p[0])
        while pending and pending[0][0] <= t:
            at, held, actual = pending.pop(0)
            b = settle(b, held, actual=actual, now=at, policy=policy)

    for dt, share, spent, latency in plan:
        now += dt
        while True:
            settle_until(now)
            b, wait, held = reserve(b, now=now, policy=policy, units=share * policy.burst)
            if held is not None:
                break
            now = min([now + wait, *(p[0] for p in pending)])
        actual = held.units * spent * overrun
        done = now + latency * policy.capacity_s
        pending.append((done, held, actual))
        sends.append((now, actual, held.units, done))
    settle_until(math.inf)
    return sends


def refused(sends: list[Send], *, burst: float, rate_per_s: float) -> list[int]:
    """Calls a strict provider refuses, counting an earlier call's actual units once it has
    settled and its reservation (or less) before: an estimate's shortfall is the one thing
    the limiter cannot know before the answer, and the provider may refuse for it."""
    interval = 1.0 / rate_per_s
    out = []
    for k, (sent, actual, reserved, _) in enumerate(sends):
        full_at = -math.inf
        earlier = sorted([*sends[:k], (sent, min(actual, reserved), reserved, sent)])
        for t, a, r, settled in earlier:
            cost = a if settled <= sent else min(a, r)
            full_at = max(full_at, t) + cost * interval
        if full_at - burst * interval > sent + TOLERANCE_S:
            out.append(k)
    return out


@CHECK
@given(unit_policies(), calls)
def test_reservations_covering_actuals_pass_a_strict_provider(policy, plan):
    sends = run(policy, plan)
    eff = {"burst": policy.effective_burst, "rate_per_s": 1 / policy.interval_s}
    assert refused(sends, **eff) == []
    assert worst_window_excess(sends, **eff) <= 1e-6 * policy.burst


# LimitPolicy's margin: when the burst leaves none (burst <= rate * jitter) it stretches the
# interval instead, which is safe for whole calls of cost 1 only, not for fractional units.
margined = unit_policies(jitter=True).filter(lambda p: p.interval_s == 1.0 / p.rate_per_s)


@CHECK
@given(margined, calls, st.data())
def test_jitter_never_causes_a_provider_violation(policy, plan, data):
    sends = run(policy, plan)
    late = [(t + data.draw(st.floats(0.0, policy.jitter_s)), a, r, s) for t, a, r, s in sends]
    assert worst_window_excess(late, burst=policy.burst, rate_per_s=policy.rate_per_s) <= (
        1e-6 * policy.burst
    )


@CHECK
@given(unit_policies(), calls, st.floats(1.0, 3.0))
def test_a_shortfall_is_waited_out_by_every_later_call(policy, plan, overrun):
    """Actuals up to 3x the reservation: only calls sent while a shortfall was unsettled can
    be refused, and a window holds at most its calls' shortfalls beyond the limit."""
    sends = run(policy, plan, overrun)
    eff = {"burst": policy.effective_burst, "rate_per_s": 1 / policy.interval_s}
    assert refused(sends, **eff) == []
    shortfalls = [(t, max(0.0, a - r), r, s) for t, a, r, s in sends]
    for i, (start, *_) in enumerate(sends):
        for j in range(i, len(sends)):
            window = sends[j][0] - start + TOLERANCE_S
            spent = sum(a for _, a, _, _ in sends[i : j + 1])
            short = sum(a for _, a, _, _ in shortfalls[i : j + 1])
            assert spent - short <= eff["burst"] + eff["rate_per_s"] * window + 1e-6 * policy.burst


@CHECK
@given(unit_policies(), st.floats(-100.0, 100.0), st.floats(0.0, 1.5), st.floats(0.0, 1.0))
def test_settling_keeps_the_bucket_between_full_and_its_debt(policy, offset, share, spent):
    start = UnitsBucket(NOW + offset)
    b, _, held = reserve(start, now=NOW, policy=policy, units=share * policy.burst)
    if held is None:
        return
    for later in (0.0, 0.5 * policy.capacity_s, 2 * policy.capacity_s):
        refunded = settle(b, held, actual=held.units * spent, now=NOW + later, policy=policy)
        assert min(b.full_at, NOW + later) <= refunded.full_at <= b.full_at
        assert b.full_at - refunded.full_at <= held.units * policy.interval_s + TOLERANCE_S
        assert available(refunded.bucket, now=NOW + later, policy=policy) <= policy.effective_burst
        charged = settle(b, held, actual=held.units + 7, now=NOW + later, policy=policy)
        assert charged.full_at == pytest.approx(b.full_at + 7 * policy.interval_s)


def worst_window_excess(sends: list[Send], *, burst: float, rate_per_s: float) -> float:
    """Max over windows of actual units sent - (burst + rate * length); <= 0: within."""
    ordered = sorted(sends)
    worst = -math.inf
    for i, (start, *_) in enumerate(ordered):
        spent = 0.0
        for end, actual, _, _ in ordered[i:]:
            spent += actual
            worst = max(worst, spent - burst - rate_per_s * (end - start + TOLERANCE_S))
    return worst


# ---- the estimator --------------------------------------------------------------------------

CHAT = OperationSpec(
    path="/chat",
    units_from="usage.total_tokens",
    units_from_request="max_tokens",
    units_unbounded_from="usage.prompt_tokens",
)


def test_the_declared_estimate_holds_until_answers_teach_one():
    estimator = UnitEstimator()
    estimator.declare(KEY, OperationSpec(path="/x", units_estimate=500, units_from="n"))
    assert estimator.estimate(KEY) == 500
    assert estimator.learned(KEY) is None
    estimator.observe(KEY, 100)
    assert estimator.estimate(KEY) == 250  # 100 + 3 * 50: the first answer says little
    assert estimator.learned(KEY) == 250


def test_nothing_known_reserves_without_bound():
    estimator = UnitEstimator()
    assert estimator.estimate(KEY) == math.inf
    assert estimator.estimate(KEY, bound=64) == 64  # undeclared: a bound covers it all
    estimator.declare(KEY, CHAT)
    assert estimator.estimate(KEY, bound=64) == math.inf  # the prompt is still unknown


def test_a_request_bound_caps_the_estimate():
    estimator = UnitEstimator()
    estimator.declare(KEY, OperationSpec(path="/x", units_from="n", units_from_request="limit"))
    for _ in range(50):
        estimator.observe(KEY, 100)
    assert estimator.estimate(KEY) == pytest.approx(100, rel=0.01)
    assert estimator.estimate(KEY, bound=10) == 10
    assert estimator.estimate(KEY, bound=1000) == pytest.approx(100, rel=0.01)


def test_a_partial_bound_caps_at_itself_plus_the_unbounded_part():
    estimator = UnitEstimator()
    estimator.declare(KEY, CHAT)
    for _ in range(50):
        estimator.observe(KEY, 1200, unbounded=1000)  # prompts 1000, completions 200
    assert estimator.estimate(KEY) == pytest.approx(1200, rel=0.01)
    assert estimator.estimate(KEY, bound=16) == pytest.approx(1016, rel=0.01)
    assert estimator.estimate(KEY, bound=4000) == pytest.approx(1200, rel=0.01)


def test_a_known_body_size_sizes_the_unbounded_part_of_this_call():
    estimator = UnitEstimator()
    estimator.declare(KEY, CHAT)
    for prompt in (100, 1000, 4000) * 20:  # a quarter of a token per body byte, any size
        estimator.observe(KEY, prompt + 50, unbounded=prompt, body_bytes=prompt * 4)
    # A long prompt reserves for its own length, not the average prompt's.
    assert estimator.estimate(KEY, bound=50, body_bytes=16_000) == pytest.approx(4050, rel=0.01)
    assert estimator.estimate(KEY, bound=50, body_bytes=400) == pytest.approx(150, rel=0.01)


def test_nonsense_observations_are_ignored():
    estimator = UnitEstimator()
    for value in (-1.0, math.nan, math.inf):
        estimator.observe(KEY, value, unbounded=value)
    assert estimator.learned(KEY) is None


@pytest.mark.parametrize(
    "tuning", [{"mean_gain": 0}, {"deviation_gain": 1.5}, {"deviation_weight": -1}]
)
def test_estimator_rejects_nonsense_tuning(tuning):
    with pytest.raises(ValueError, match="must be"):
        UnitEstimator(**tuning)


def test_the_estimator_declares_the_operations_that_spend_units():
    openai = load_spec_file(CATALOG / "openai.toml")
    estimator = UnitEstimator.for_providers({"openai": openai})
    assert repr(estimator) == "UnitEstimator(operations=1)"
    estimator.observe(KEY, 1200, unbounded=1000)
    assert estimator.estimate(KEY, bound=16) == pytest.approx(1016 + 3 * 500)


def coverage(estimator: UnitEstimator, sizes: list[float], warmup: int) -> float:
    covered = 0
    for i, size in enumerate(sizes):
        if i >= warmup:
            covered += estimator.estimate(KEY) >= size
        estimator.observe(KEY, size)
    return covered / (len(sizes) - warmup)


@settings(database=None, deadline=None, max_examples=20)
@given(
    st.sampled_from(["exponential", "lognormal", "pareto"]),
    st.floats(10.0, 5000.0),
    st.integers(0, 2**32),
)
def test_the_estimate_covers_most_calls_of_a_skewed_distribution(kind, scale, seed):
    rng = random.Random(seed)
    draw = {
        "exponential": lambda: rng.expovariate(1 / scale),
        "lognormal": lambda: scale * rng.lognormvariate(0, 1),
        "pareto": lambda: scale * rng.paretovariate(2.5),
    }[kind]
    assert coverage(UnitEstimator(), [draw() for _ in range(3300)], warmup=300) >= 0.92


@pytest.mark.skipif(not AZURE_CONV_TRACE.exists(), reason="needs ../shared/traces")
def test_the_estimate_covers_95_percent_of_the_azure_conversation_trace():
    sizes = [float(row.total_tokens) for row in read_llm_trace()]
    assert coverage(UnitEstimator(), sizes, warmup=100) >= 0.95


# ---- reading units --------------------------------------------------------------------------


def reply(body: object) -> ProviderReply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ProviderReply(200, raw)


def test_the_reader_reads_units_from_answers_and_bounds_from_requests():
    reader = UnitsReader.for_operation(CHAT)
    usage = {"usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
    assert reader.read(reply(usage)) == UnitsSeen(15.0, 10.0)
    assert reader.bound(json.dumps({"max_tokens": 64, "messages": []}).encode()) == 64.0
    assert UnitsReader("data.1.n").read_json({"data": [{"n": 1}, {"n": 2.5}]}).actual == 2.5
    assert reader.reads_answers and not UnitsReader(None).reads_answers


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[" * 100_000,  # too deep to parse
        {"usage": None},
        {"usage": {"total_tokens": "15"}},
        {"usage": {"total_tokens": True}},
        {"usage": {"total_tokens": -3}},
        {"usage": {"total_tokens": 10**400}},
        {"usage": [1, 2]},
        [1, 2],
    ],
)
def test_the_reader_never_raises(body):
    assert UnitsReader.for_operation(CHAT).read(reply(body)) == UnitsSeen(None, None)


@pytest.mark.parametrize(
    "body", [None, b"", b"{", b'{"max_tokens": null}', b'{"max_tokens": 1e999}']
)
def test_a_missing_bound_is_none(body):
    assert UnitsReader.for_operation(CHAT).bound(body) is None


def test_a_reader_without_units_reads_nothing():
    assert UnitsReader(None).read(reply({"usage": {"total_tokens": 1}})) == UnitsSeen()
    assert UnitsReader(None, bound_from=None).bound(b'{"max_tokens": 1}') is None
