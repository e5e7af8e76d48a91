"""Fair share among tenants in the waiting room (issue 20): shares, no credit for idle time,
bands before fairness, no starvation, FIFO within a tenant, and a flood beside a trickle."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.rate_limiter.book import LimitBook, ProviderLimit
from agents.rate_limiter.bucket import LimitPolicy
from agents.rate_limiter.gate import BucketGate
from agents.rate_limiter.waiting_room import WaitingRoom
from streams.settings import TenantSettings

NOW = 1_700_000_000.0
CHECK = settings(database=None, deadline=None, max_examples=150)


class Tokens:
    """A hand-fed gate: `left` tokens for any key, else wait 1 s."""

    def __init__(self, left: int = 0) -> None:
        self.left = left

    def try_take(self, key: str, cost: int, now: float) -> float:
        if self.left >= cost:
            self.left -= cost
            return 0.0
        return 1.0


@dataclass(frozen=True)
class Call:
    seq: int
    tenant: str
    priority: int = 5
    key: str = "k"
    enqueued_at: float = NOW
    not_before: float | None = None

    def eligible(self, now: float) -> bool:
        return self.not_before is None or self.not_before <= now


class Run:
    """Pushes calls and releases them one token at a time, recording who went and whether the
    tenants in `watch` were all backlogged just before."""

    def __init__(self, weights: dict[str, float] | None = None, watch: tuple[str, ...] = ()):
        self.room: WaitingRoom[Call] = WaitingRoom(weights.__getitem__ if weights else None)
        self.waiting: Counter[str] = Counter()
        self.sent: list[tuple[str, bool]] = []  # (tenant, all watched tenants were waiting)
        self.watch, self.seq, self.now = watch, 0, NOW

    def push(self, tenant: str, n: int = 1) -> list[Call]:
        calls = []
        for _ in range(n):
            call = Call(self.seq, tenant, enqueued_at=self.now)
            self.seq += 1
            self.room.push(
                call, key="k", priority=5, deadline_at=None, enqueued_at=self.now, tenant=tenant
            )
            self.waiting[tenant] += 1
            calls.append(call)
        return calls

    def release(self, n: int = 1) -> list[Call]:
        sent = []
        for _ in range(n):
            self.now += 1.0
            both = all(self.waiting[t] for t in self.watch)
            ready = self.room.release(self.now, Tokens(1)).ready
            for call in ready:
                self.waiting[call.tenant] -= 1
                self.sent.append((call.tenant, both))
            sent += ready
        return sent


def worst_lead(run: Run, tenant: str, share: float) -> float:
    """The largest |calls of `tenant` - share * calls| over every window of releases made while
    all watched tenants were backlogged."""
    worst, lo, hi, lead = 0.0, 0.0, 0.0, 0.0
    for who, backlogged in run.sent:
        if not backlogged:  # a new run of backlogged releases starts after this one
            lo = hi = lead = 0.0
            continue
        lead += (who == tenant) - share
        lo, hi = min(lo, lead), max(hi, lead)
        worst = max(worst, hi - lead, lead - lo)
    return worst


ops = st.lists(
    st.tuples(st.sampled_from(["push a", "push b", "release"]), st.integers(1, 30)),
    max_size=40,
)


@CHECK
@pytest.mark.parametrize(("weight_a", "weight_b"), [(1.0, 1.0), (3.0, 1.0), (1.0, 4.0)])
@given(ops=ops)
def test_backlogged_tenants_share_by_weight_within_one_call(weight_a, weight_b, ops):
    """Equal weights: 50% +-1 call over any window while both wait; 3:1: 75/25 +-1."""
    run = Run({"a": weight_a, "b": weight_b}, watch=("a", "b"))
    for op, n in ops:
        if op == "release":
            run.release(n)
        else:
            run.push(op[-1], n)
    run.release(len(run.room))
    assert worst_lead(run, "a", weight_a / (weight_a + weight_b)) <= 1.0 + 1e-9


@CHECK
@given(
    weights=st.tuples(st.floats(0.1, 10.0), st.floats(0.1, 10.0)),
    pushes=st.tuples(st.integers(1, 80), st.integers(1, 80)),
)
def test_any_weights_share_within_one_call(weights, pushes):
    run = Run(dict(zip("ab", weights, strict=True)), watch=("a", "b"))
    run.push("a", pushes[0])
    run.push("b", pushes[1])
    run.release(sum(pushes))
    assert worst_lead(run, "a", weights[0] / sum(weights)) <= 1.0 + 1e-6


@CHECK
@pytest.mark.parametrize("weight_b", [1.0, 3.0])
@given(alone=st.integers(0, 60), early=st.integers(0, 3), flood=st.integers(1, 40))
def test_a_tenant_back_from_idle_gets_no_credit_for_it(weight_b, alone, early, flood):
    """B sent `early` calls, then was idle while A sent `alone` calls by itself: once B floods,
    it leads its share by at most one call, in every window from its return."""
    run = Run({"a": 1.0, "b": weight_b})
    run.push("a", 200)
    run.push("b", early)
    run.release(early * 2)
    run.release(alone)
    assert run.waiting["b"] == 0
    back = len(run.sent)
    run.push("b", flood)
    run.release(flood * 2)
    share = weight_b / (1.0 + weight_b)
    for n in range(1, flood + 1):  # the first n releases since B came back
        got = sum(who == "b" for who, _ in run.sent[back : back + n])
        assert got <= share * n + 1.0 + 1e-9, (n, got)


@CHECK
@given(
    weights=st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0]), min_size=2, max_size=4),
    ops=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), max_size=80),
)
def test_no_call_starves_while_its_band_is_served(weights, ops):
    """A call that is p-th in its tenant's queue goes within p - 1 + sum over the other
    tenants f of (p * w_f / w_own + 1) of its band's calls (the SFQ bound)."""
    tenants = {f"t{i}": w for i, w in enumerate(weights)}
    run = Run(tenants)
    pushed_at: dict[int, tuple[int, int]] = {}  # seq -> (releases so far, place in its queue)
    for who, releases in ops:
        tenant = f"t{who % len(weights)}"
        (call,) = run.push(tenant)
        pushed_at[call.seq] = (len(run.sent), run.waiting[tenant])
        first = len(run.sent)
        for at, call in enumerate(run.release(releases), start=first):
            before, place = pushed_at.pop(call.seq)
            own = tenants[call.tenant]
            others = (place * w / own + 1 for t, w in tenants.items() if t != call.tenant)
            assert at - before <= place - 1 + sum(others) + 1e-9


# ---- bands, FIFO and expiry with tenants ------------------------------------------------------

tenant_op = st.one_of(
    st.tuples(
        st.just("push"),
        st.sampled_from(["a", "b", "c", ""]),
        st.sampled_from(["k", "j"]),
        st.integers(0, 2),  # priority
        st.none() | st.floats(0.0, 3.0),  # deadline, from now
        st.none() | st.floats(0.0, 2.0),  # not_before, from now
    ),
    st.tuples(st.just("release"), st.integers(0, 4), st.floats(0.0, 1.0)),
)


@CHECK
@given(st.lists(tenant_op, max_size=100))
def test_bands_come_first_and_each_tenant_is_fifo(ops):
    room: WaitingRoom[Call] = WaitingRoom({"a": 1.0, "b": 2.0, "c": 0.5, "": 1.0}.__getitem__)
    waiting: dict[int, Call] = {}
    now, seq = NOW, 0
    gate = Tokens()

    def release() -> None:
        got = room.release(now, gate)
        for call in got.expired:
            del waiting[call.seq]
        for call in got.ready:
            del waiting[call.seq]
            assert call.eligible(now)
            for other in waiting.values():
                if other.key != call.key or not other.eligible(now):
                    continue
                assert other.priority <= call.priority, "a higher band was left waiting"
                if (other.tenant, other.priority) == (call.tenant, call.priority):
                    assert other.seq > call.seq, "a tenant's older call was left waiting"
        assert len(room) == len(waiting)

    for op in ops:
        if op[0] == "push":
            _, tenant, key, priority, deadline, not_before = op
            call = Call(
                seq, tenant, priority, key, now, None if not_before is None else now + not_before
            )
            seq += 1
            waiting[call.seq] = call
            room.push(
                call, key=key, priority=priority, enqueued_at=now, tenant=tenant,
                deadline_at=None if deadline is None else now + deadline,
                not_before=call.not_before,
            )  # fmt: skip
        else:
            gate.left += op[1]
            now += op[2]
        release()
    gate.left = math.inf  # type: ignore[assignment]  # drain
    now += 10.0
    release()
    assert not waiting
    assert room.next_due(now) is None


def test_a_call_that_comes_back_keeps_its_place_in_its_tenant():
    room: WaitingRoom[str] = WaitingRoom()
    for item, at in [("a2", NOW + 2), ("a3", NOW + 3)]:
        room.push(item, key="k", priority=5, deadline_at=None, enqueued_at=at, tenant="a")
    room.push("back", key="k", priority=5, deadline_at=None, enqueued_at=NOW, tenant="a")
    assert room.release(NOW + 5, Tokens(3)).ready == ["back", "a2", "a3"]


def test_unservable_calls_are_not_charged_to_their_tenant():
    room: WaitingRoom[str] = WaitingRoom()
    room.push("huge", key="k", priority=5, deadline_at=None, enqueued_at=NOW, tenant="a", cost=99)
    for item, tenant in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b")]:
        room.push(item, key="k", priority=5, deadline_at=None, enqueued_at=NOW, tenant=tenant)

    class Never(Tokens):
        def try_take(self, key: str, cost: int, now: float) -> float:
            return math.inf if cost > 1 else super().try_take(key, cost, now)

    got = room.release(NOW, Never(4))
    assert got.unservable == ["huge"]
    assert got.ready == ["a1", "b1", "a2", "b2"]


def test_expired_calls_cost_their_tenant_nothing_and_leave_no_credit():
    room: WaitingRoom[str] = WaitingRoom()
    room.push("a-late", key="k", priority=5, deadline_at=NOW + 1, enqueued_at=NOW, tenant="a")
    for i in range(4):
        room.push(f"b{i}", key="k", priority=5, deadline_at=None, enqueued_at=NOW, tenant="b")
    assert room.release(NOW + 1, Tokens(2)).ready == ["b0", "b1"]
    for i in range(3):
        room.push(f"a{i}", key="k", priority=5, deadline_at=None, enqueued_at=NOW + 1, tenant="a")
    assert room.release(NOW + 2, Tokens(4)).ready == ["a0", "b2", "a1", "b3"]


def test_weights_are_asked_once_per_tenant_that_starts_waiting():
    asked: list[str] = []

    def weight(tenant: str) -> float:
        asked.append(tenant)
        return 2.0

    room: WaitingRoom[int] = WaitingRoom(weight)
    for i in range(5):
        room.push(i, key="k", priority=5, deadline_at=None, enqueued_at=NOW, tenant="a")
    assert asked == ["a"]


@pytest.mark.parametrize("weight", [0.0, -1.0, math.inf, math.nan])
def test_a_weight_must_be_positive_and_finite(weight):
    room: WaitingRoom[int] = WaitingRoom(lambda tenant: weight)
    with pytest.raises(ValueError, match="tenant 'a': weight must be positive and finite"):
        room.push(1, key="k", priority=5, deadline_at=None, enqueued_at=NOW, tenant="a")


def test_idle_tenants_are_forgotten_once_they_carry_no_credit():
    """Names are free without a tenant table: memory must follow calls, not names seen."""
    run = Run()
    run.push("flood", 3000)
    for i in range(1000):
        run.push(f"once-{i}")
        run.release(2)
    flows = run.room._queues["k"].bands[5].flows
    assert len(flows) <= 3
    run.release(len(run.room))
    assert run.room._queues == {}


def test_garbage_stays_bounded_with_many_tenants():
    """A blocked head, and short-lived calls from ever new tenants behind it."""
    room: WaitingRoom[int] = WaitingRoom()
    room.push(-1, key="k", priority=9, deadline_at=None, enqueued_at=NOW)
    gate = Tokens()
    for i in range(5000):
        now = NOW + i * 0.01
        room.push(i, key="k", priority=1, deadline_at=now + 0.05, enqueued_at=now, tenant=f"t{i}")
        room.release(now, gate)
    rows = len(room._queues["k"]) + len(room._deadlines) + len(room._wakes)
    assert len(room) <= 7
    assert rows < 300
    assert sum(len(band.flows) for band in room._queues["k"].bands.values()) < 300


# ---- a flood beside a trickle -----------------------------------------------------------------


def flood_and_trickle(tenant_of: dict[str, str], until_s: float) -> list[tuple[float, str]]:
    """Tenant A pushes 20,000 calls, then B 100, on one key a gate releases at 20/s; run the
    room like the runtime (release at each next_due) for `until_s` simulated seconds."""
    gate = BucketGate({}, lambda key: LimitPolicy(20.0, 20, jitter_s=0.0))
    room: WaitingRoom[str] = WaitingRoom()
    for tenant, n in [("a", 20_000), ("b", 100)]:
        for _ in range(n):
            room.push(tenant, key="p", priority=5, deadline_at=None, enqueued_at=NOW,
                      tenant=tenant_of[tenant])  # fmt: skip
    sent: list[tuple[float, str]] = []
    now: float | None = NOW
    while now is not None and now <= NOW + until_s:
        got = room.release(now, gate)
        sent += [(now - NOW, who) for who in got.ready]
        now = got.next_due_at
    return sent


def test_a_flood_delays_only_its_own_tenant():
    sent = flood_and_trickle({"a": "a", "b": "b"}, until_s=10.5)
    b_times = [at for at, who in sent if who == "b"]
    assert len(b_times) == 100
    assert b_times[-1] <= 10.5  # 200 calls at 20/s, shared half and half
    last_b = sent.index((b_times[-1], "b"))
    both = [who for _, who in sent[: last_b + 1]]
    assert both.count("b") / len(both) >= 0.4


def test_without_tenants_the_same_flood_holds_everyone_back():
    sent = flood_and_trickle({"a": "", "b": ""}, until_s=10.5)
    assert [who for _, who in sent].count("b") == 0  # B is behind 20,000 calls: 1,000 s


# ---- weights from settings --------------------------------------------------------------------


def test_the_book_gives_each_tenant_its_weight_and_others_one():
    book = LimitBook({"p": ProviderLimit(20, 20)}, weights={"shop-eu": 3.0})
    assert book.weight_for("shop-eu") == 3.0
    assert book.weight_for("anyone") == 1.0
    assert LimitBook({}).weight_for("anyone") == 1.0


@pytest.mark.parametrize(("weight", "ok"), [(1.0, True), (0.25, True), (0.0, False), (-1, False)])
def test_tenant_weight_setting(weight, ok):
    if ok:
        assert TenantSettings(weight=weight).weight == weight
    else:
        with pytest.raises(ValueError, match="weight"):
            TenantSettings(weight=weight)
