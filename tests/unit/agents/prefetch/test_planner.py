"""The predictive cache's bookkeeping: access events, due steps, decisions, labels, dedupe."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.prefetch import rule
from agents.prefetch.features import KeyFeatures
from agents.prefetch.planner import (
    Due,
    DueHeap,
    DueKind,
    KeyState,
    Label,
    PlannerConfig,
    Verdict,
    fire,
    observe,
    pending,
    prefetch_key,
    prefetch_request,
    schedule,
)
from schemas.codec import Codecs
from schemas.keys import request_limit_key
from schemas.models import AccessEvent, AccessKind, RequestEvent

CONFIG = PlannerConfig(lead_ms=2_000, label_grace_ms=1_000, forget_after_ms=3_600_000)
KEY = b"acme/get_item/default/\x01\x02"
TTL = 60_000
T0 = 1_700_000_000_000
TEMPLATE = Codecs().request.encode(
    RequestEvent(provider="acme", operation="get_item", params={"id": "7"}, tenant="shop")
)


def access(
    kind: AccessKind, at_ms: int, expires_ms: int, request: bytes | None = None
) -> AccessEvent:
    return AccessEvent(key=KEY, at_ms=at_ms, kind=kind, expires_at_ms=expires_ms, request=request)


def fill(at_ms: int = T0, ttl: int = TTL) -> AccessEvent:
    return access(AccessKind.FILL, at_ms, at_ms + ttl, TEMPLATE)


def hit(at_ms: int, expires_ms: int = T0 + TTL) -> AccessEvent:
    return access(AccessKind.HIT, at_ms, expires_ms)


def replay(*events: AccessEvent, state: KeyState | None = None) -> KeyState:
    state = state or KeyState()
    for event in events:
        state, _ = observe(state, event)
    return state


def by_rule(features: KeyFeatures, inputs: tuple[float, ...]) -> bool:
    return rule.should_refresh(features)


def decide_step(state: KeyState) -> Due:
    return Due(state.expires_ms - CONFIG.lead_ms, KEY, DueKind.DECIDE, state.expires_ms)


# --- access events -------------------------------------------------------------------------


def test_a_fill_keeps_the_template_expiry_and_lifetime() -> None:
    state = replay(fill())
    assert state.template == TEMPLATE
    assert (state.expires_ms, state.ttl_ms, state.seen_ms) == (T0 + TTL, TTL, T0)
    assert state.features.fetches == 1
    assert state.features.reads == 0


def test_hits_count_reads_and_keep_the_template() -> None:
    state = replay(fill(), hit(T0 + 1_000), hit(T0 + 2_000))
    assert state.features.reads == 2
    assert state.template == TEMPLATE
    assert state.expires_ms == T0 + TTL


def test_a_prefetch_refresh_moves_the_expiry_and_restarts_reads() -> None:
    refreshed_at = T0 + TTL - 1_500
    state = replay(
        fill(),
        hit(T0 + 1_000),
        access(AccessKind.PREFETCH, refreshed_at, refreshed_at + TTL),
    )
    assert state.expires_ms == refreshed_at + TTL
    assert state.features.reads == 0
    assert state.features.requests == 2  # a refresh is not a request
    assert state.template == TEMPLATE


def test_an_older_duplicate_never_moves_the_expiry_back() -> None:
    state = replay(fill(), fill(T0 + TTL + 5_000), fill())
    assert state.expires_ms == T0 + 2 * TTL + 5_000


# --- scheduling -----------------------------------------------------------------------------


def test_a_new_key_schedules_its_decision_and_its_forgetting() -> None:
    after = replay(fill())
    steps = schedule(KEY, None, after, CONFIG)
    assert Due(T0 + TTL - 2_000, KEY, DueKind.DECIDE, T0 + TTL) in steps
    assert Due(T0 + CONFIG.forget_after_ms, KEY, DueKind.FORGET, 0) in steps


def test_a_hit_on_the_same_entry_schedules_nothing() -> None:
    before = replay(fill())
    assert schedule(KEY, before, replay(hit(T0 + 1), state=before), CONFIG) == []


def test_an_expiry_already_decided_is_not_scheduled_again() -> None:
    before = KeyState(expires_ms=T0, decided_ms=T0 + TTL)
    after = replay(hit(T0 + 1, T0 + TTL), state=before)
    assert schedule(KEY, before, after, CONFIG) == []


def test_pending_rebuilds_every_live_step() -> None:
    label = Label(T0, T0 + TTL, True, (0.0,))
    state = KeyState(expires_ms=T0 + 2 * TTL, decided_ms=T0, seen_ms=T0, label=label)
    kinds = {step.kind: step for step in pending(KEY, state, CONFIG)}
    assert kinds[DueKind.DECIDE].mark_ms == T0 + 2 * TTL
    assert kinds[DueKind.CLOSE] == Due(T0 + TTL + 1_000, KEY, DueKind.CLOSE, T0 + TTL)
    assert kinds[DueKind.FORGET].at_ms == T0 + CONFIG.forget_after_ms
    decided = KeyState(expires_ms=T0, decided_ms=T0, seen_ms=T0)
    assert [step.kind for step in pending(KEY, decided, CONFIG)] == [DueKind.FORGET]


def test_the_heap_gives_due_steps_in_time_order() -> None:
    heap = DueHeap()
    for at in (30, 10, 20):
        heap.push(Due(at, KEY, DueKind.DECIDE, at))
    assert heap.next_at() == 10
    assert [step.at_ms for step in heap.pop_due(20)] == [10, 20]
    assert heap.pop_due(29) == []
    assert len(heap) == 1


# --- decisions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "verdict"),
    [
        pytest.param((fill(), hit(T0 + 5_000)), Verdict.REFRESH, id="read since fill"),
        pytest.param((fill(),), Verdict.SKIP, id="not read since fill"),
        pytest.param((hit(T0 + 5_000),), Verdict.NO_TEMPLATE, id="read, no fill seen"),
    ],
)
def test_the_rule_decides_shortly_before_expiry(
    events: tuple[AccessEvent, ...], verdict: Verdict
) -> None:
    state = replay(*events)
    step = decide_step(state)
    fired = fire(state, step, now_ms=step.at_ms, decide=by_rule, config=CONFIG)
    assert fired.verdict is verdict
    assert fired.state is not None
    assert fired.state.decided_ms == state.expires_ms


def test_a_decision_after_the_expiry_is_late_and_sends_nothing() -> None:
    state = replay(fill(), hit(T0 + 1))
    fired = fire(state, decide_step(state), now_ms=T0 + TTL, decide=by_rule, config=CONFIG)
    assert fired.verdict is Verdict.LATE
    assert fired.state is not None
    assert fired.state.label is None


def test_an_expiry_is_decided_once_however_often_its_step_fires() -> None:
    state = replay(fill(), hit(T0 + 1))
    step = decide_step(state)
    first = fire(state, step, now_ms=step.at_ms, decide=by_rule, config=CONFIG)
    assert first.verdict is Verdict.REFRESH
    assert first.state is not None
    # The same step again (a duplicate event rescheduled it, or a rebuilt heap holds it).
    again = fire(first.state, step, now_ms=step.at_ms + 10, decide=by_rule, config=CONFIG)
    assert again.verdict is None
    assert again.state is first.state


def test_a_step_for_a_superseded_expiry_does_nothing() -> None:
    state = replay(fill(), hit(T0 + 1), fill(T0 + TTL + 1))
    stale = Due(T0 + TTL - 2_000, KEY, DueKind.DECIDE, T0 + TTL)
    fired = fire(state, stale, now_ms=stale.at_ms, decide=by_rule, config=CONFIG)
    assert fired == (state, None, None, ())


def test_the_model_decider_sees_the_features_vector_at_decision_time() -> None:
    state = replay(fill(), hit(T0 + 1))
    step = decide_step(state)
    seen: list[tuple[float, ...]] = []

    def decide(features: KeyFeatures, inputs: tuple[float, ...]) -> bool:
        seen.append(inputs)
        return False

    fired = fire(state, step, now_ms=step.at_ms, decide=decide, config=CONFIG)
    assert seen == [state.features.vector(step.at_ms / 1000)]
    assert fired.state is not None
    assert fired.state.label is not None
    assert fired.state.label.inputs == seen[0]


# --- labels ---------------------------------------------------------------------------------


def decided(*events: AccessEvent) -> KeyState:
    """The state right after the rule refreshed the entry of ``events``."""
    state = replay(*events)
    step = decide_step(state)
    fired = fire(state, step, now_ms=step.at_ms, decide=by_rule, config=CONFIG)
    assert fired.state is not None
    assert fired.follow == (Due(T0 + 2 * TTL + 1_000, KEY, DueKind.CLOSE, T0 + 2 * TTL),)
    return fired.state


def test_a_request_inside_the_window_labels_the_decision_requested() -> None:
    state = decided(fill(), hit(T0 + 1))
    assert state.label is not None
    assert state.label == Label(T0 + TTL, T0 + 2 * TTL, True, state.label.inputs)
    # A read before the window opens (the refreshed entry, before the old expiry) settles
    # nothing; the first inside it does.
    early, resolved = observe(state, hit(T0 + TTL - 500, T0 + 2 * TTL))
    assert resolved is None
    _, resolved = observe(early, hit(T0 + TTL + 500, T0 + 2 * TTL))
    assert resolved is not None
    assert resolved.requested
    assert resolved.label.refreshed


def test_a_request_after_the_window_labels_it_idle() -> None:
    state = decided(fill(), hit(T0 + 1))
    _, resolved = observe(state, fill(T0 + 2 * TTL + 1))
    assert resolved is not None
    assert not resolved.requested


def test_a_refresh_is_not_a_request() -> None:
    state = decided(fill(), hit(T0 + 1))
    at = T0 + TTL + 10
    after, resolved = observe(state, access(AccessKind.PREFETCH, at, at + TTL))
    assert resolved is None
    assert after.label == state.label


def test_a_window_closing_without_a_request_labels_it_idle() -> None:
    state = decided(fill(), hit(T0 + 1))
    close = Due(T0 + 2 * TTL + 1_000, KEY, DueKind.CLOSE, T0 + 2 * TTL)
    fired = fire(state, close, now_ms=close.at_ms, decide=by_rule, config=CONFIG)
    assert fired.resolved is not None
    assert not fired.resolved.requested
    assert fired.state is not None
    assert fired.state.label is None
    # Once settled, the close step (again) does nothing.
    again = fire(fired.state, close, now_ms=close.at_ms, decide=by_rule, config=CONFIG)
    assert again.resolved is None


def test_the_next_decision_settles_a_pending_label() -> None:
    state = decided(fill(), hit(T0 + 1))
    refreshed_at = T0 + TTL - 1_900
    state = replay(access(AccessKind.PREFETCH, refreshed_at, refreshed_at + TTL), state=state)
    step = decide_step(state)
    fired = fire(state, step, now_ms=step.at_ms, decide=by_rule, config=CONFIG)
    assert fired.resolved is not None
    assert not fired.resolved.requested
    assert fired.verdict is Verdict.SKIP  # nothing read since the refresh


def test_no_label_without_a_known_lifetime() -> None:
    state = replay(hit(T0 + 1))
    fired = fire(state, decide_step(state), now_ms=T0, decide=by_rule, config=CONFIG)
    assert fired.state is not None
    assert fired.state.label is None
    assert fired.follow == ()


# --- forgetting -----------------------------------------------------------------------------


def test_an_idle_key_is_forgotten_and_a_read_one_looked_at_again() -> None:
    state = replay(fill())
    forget = Due(T0 + CONFIG.forget_after_ms, KEY, DueKind.FORGET, 0)
    assert fire(state, forget, now_ms=forget.at_ms, decide=by_rule, config=CONFIG).state is None
    read = replay(hit(T0 + 10_000), state=state)
    fired = fire(read, forget, now_ms=forget.at_ms, decide=by_rule, config=CONFIG)
    assert fired.state is read
    assert fired.follow == (Due(T0 + 10_000 + CONFIG.forget_after_ms, KEY, DueKind.FORGET, 0),)


# --- the prefetch request -------------------------------------------------------------------


def test_a_prefetch_copies_the_call_at_priority_zero_with_a_new_id() -> None:
    template = Codecs().request.decode(TEMPLATE)
    request = prefetch_request(template, expiry_ms=T0 + TTL, now_ms=T0, lead_ms=2_000)
    assert request.prefetch
    assert request.priority == 0
    assert request.request_id != template.request_id
    assert (request.provider, request.operation, request.params, request.tenant) == (
        "acme",
        "get_item",
        {"id": "7"},
        "shop",
    )
    assert request.deadline_at_ms == T0 + TTL + 2_000
    assert request.reply_to is None


def test_a_prefetch_is_keyed_by_the_shard_of_its_cache_key() -> None:
    assert prefetch_key("acme", KEY, 1) == b"acme"
    assert prefetch_key("acme", KEY, 8) == request_limit_key("acme", KEY.hex(), 8).encode()


# --- the table encoding ---------------------------------------------------------------------


def test_the_encoding_round_trips_a_state_with_a_label() -> None:
    state = decided(fill(), hit(T0 + 1))
    assert KeyState.from_bytes(state.to_bytes()) == state
    assert "label=" in repr(state)


@pytest.mark.parametrize("data", [b"", b"\x02" + bytes(200), bytes(10)])
def test_bytes_that_are_not_a_state_decode_to_none(data: bytes) -> None:
    assert KeyState.from_bytes(data) is None


def test_a_truncated_label_decodes_to_none() -> None:
    encoded = decided(fill(), hit(T0 + 1)).to_bytes()
    cut = encoded[: len(encoded) - len(TEMPLATE) - 10]
    assert KeyState.from_bytes(cut) is None


times = st.integers(min_value=T0, max_value=T0 + 10 * TTL)
events = st.lists(
    st.tuples(st.sampled_from(list(AccessKind)), times, st.integers(1, 3 * TTL)), max_size=30
)


@given(events)
def test_any_event_sequence_round_trips_and_never_moves_the_expiry_back(
    sequence: list[tuple[AccessKind, int, int]],
) -> None:
    state = KeyState()
    for kind, at, ttl in sequence:
        request = TEMPLATE if kind is AccessKind.FILL else None
        new, _ = observe(state, access(kind, at, at + ttl, request))
        assert new.expires_ms >= state.expires_ms
        assert new.seen_ms >= state.seen_ms
        state = new
    assert KeyState.from_bytes(state.to_bytes()) == state


@given(events, st.lists(times, min_size=1, max_size=10))
def test_each_expiry_is_decided_at_most_once(
    sequence: list[tuple[AccessKind, int, int]], fire_times: list[int]
) -> None:
    """However often and whenever steps fire (duplicates after a rebalance), at most one
    decision per expiry."""
    state, heap, decisions = KeyState(), DueHeap(), []
    for kind, at, ttl in sequence:
        before = state
        state, _ = observe(state, access(kind, at, at + ttl, TEMPLATE))
        for step in schedule(KEY, before, state, CONFIG) + pending(KEY, state, CONFIG):
            heap.push(step)
    for now in sorted(fire_times):
        for step in heap.pop_due(now) * 2:  # every step twice
            fired = fire(state, step, now_ms=now, decide=by_rule, config=CONFIG)
            if fired.verdict is not None:
                decisions.append(step.mark_ms)
            if fired.state is None:
                return
            state = fired.state
    assert len(decisions) == len(set(decisions))
