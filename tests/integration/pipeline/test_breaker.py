"""Circuit breakers (issue 21): a 30 s provider outage under steady load opens the breaker, the
provider then sees only its half-open probes, and the backlog completes after recovery."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from schemas.keys import limit_key
from schemas.models import DeadLetterEvent, RequestEvent, now_ms
from streams.sdk import CallstreamClient
from streams.settings import BreakerSettings, ProviderSettings, Settings
from tests.integration.limits.test_no_stall import sample, scrape
from tests.integration.pipeline.outcomes import Outcomes, collect, run

pytestmark = pytest.mark.integration

RATE_PER_S, TICK_S = 50, 0.1  # offered load, published every TICK_S
PER_TICK = round(RATE_PER_S * TICK_S)
HEALTHY_BEFORE_S, OUTAGE_S, HEALTHY_AFTER_S = 10.0, 30.0, 10.0
DEADLINE_S = 8.0  # half of the requests; the other half have none
# Shorter than the default 30 s, so that half-open rounds happen during the outage; the rest of
# the policy keeps its defaults (10 s time window, 20 calls, 50 % failures, 3 probes).
BREAKER = BreakerSettings(wait_in_open_s=5.0)
# One shard: the fake provider's limit has one key, hence one breaker (with N shards each
# shard's key has a breaker of its own, and the provider would see N times the probes).
KEY = limit_key("fake")
# Attempts per request, the first call included. The default 7 can all be spent before the
# breaker opens: full-jitter backoff from 0.2 s let one request make 7 calls in 1.3 s of the
# outage while the breaker took ~2.5 s to outweigh its window's 10 s of successes (1 such
# retries_exhausted dead letter in 2 of 6 runs). That is the retry policy's doing, not the
# breaker's; with room for more, only the breaker and the deadlines decide the outcomes.
MAX_ATTEMPTS = 20
# After the breaker is seen open, wait this long before counting the provider's calls: calls
# the worker let through before it opened (the fake answers in 5 ms) have landed by then, and
# no half-open round can start that soon (wait_in_open_s later at the earliest).
SETTLE_S = 1.0
POLL_S = 0.2
# Outcomes a request with a short deadline may end with when the outage catches it: its wait for
# the breaker would outlast its deadline; its deadline passed while it waited; its retry
# (planned, or deferred by the retry budget) would start past its deadline.
SHORT_DEADLINE_ENDS = {
    ("result", "ok", None),
    ("result", "expired", "deadline_passed"),
    ("dead_letter", "circuit_open", "breaker"),
    ("dead_letter", "retries_exhausted", "retry"),
    ("dead_letter", "retry_budget_exceeded", "retry"),
}
TRANSITIONS = "callstream_breaker_transitions_total"


def one_shard(settings: Settings) -> Settings:
    return settings.model_copy(update={"providers": {"fake": ProviderSettings(shards=1)}})


def get_item(n: int, *, with_deadline: bool) -> RequestEvent:
    created = now_ms()
    deadline = created + int(DEADLINE_S * 1000) if with_deadline else None
    return RequestEvent(
        provider="fake",
        operation="get_item",
        params={"item_id": f"b{n}"},
        created_at_ms=created,
        deadline_at_ms=deadline,
    )


async def offer_load(client: CallstreamClient, duration_s: float, sent: list[RequestEvent]):
    """PER_TICK requests every TICK_S on a fixed schedule, every other one with a deadline."""
    start = time.monotonic()
    for tick in range(round(duration_s / TICK_S)):
        await asyncio.sleep(max(0.0, start + tick * TICK_S - time.monotonic()))
        base = tick * PER_TICK
        batch = [get_item(base + i, with_deadline=(base + i) % 2 == 0) for i in range(PER_TICK)]
        await client.publish_many(batch)
        sent.extend(batch)


@dataclass
class Timeline:
    """What the scenario saw, on the test's monotonic clock unless named ``_ms`` (epoch)."""

    outage_at: float = 0.0
    outage_at_ms: int = 0
    opened_seen_at: float = 0.0
    counted_from: float = 0.0
    recovered_at: float = 0.0
    recovered_at_ms: int = 0
    stats_seen_open: dict[str, Any] = field(default_factory=dict)
    stats_after_open: dict[str, Any] = field(default_factory=dict)
    stats_at_recovery: dict[str, Any] = field(default_factory=dict)
    metrics_at_recovery: str = ""
    sent: list[RequestEvent] = field(default_factory=list)


async def set_error_mix(http: httpx.AsyncClient, fake_url: str, **mix: float) -> None:
    response = await http.post(f"{fake_url}/_fake/config", json={"error_mix": mix})
    assert response.status_code == 200, response.text


async def fake_stats(http: httpx.AsyncClient, fake_url: str) -> dict[str, Any]:
    return (await http.get(f"{fake_url}/_fake/stats")).json()


async def metrics_of(http: httpx.AsyncClient, worker_url: str) -> str:
    return (await http.get(f"{worker_url}/metrics")).text


async def wait_opened(http: httpx.AsyncClient, worker_url: str, since: float) -> float:
    """Poll the worker's metrics until its breaker has opened; return when it was seen open."""
    limit_s = BREAKER.window_size + 2 * POLL_S  # its window, plus our polling's lag
    while sample(await metrics_of(http, worker_url), TRANSITIONS, breaker=KEY, to="open") < 1:
        waited = time.monotonic() - since
        assert waited < limit_s, f"the breaker did not open {waited:.1f} s into the outage"
        await asyncio.sleep(POLL_S)
    return time.monotonic()


async def outage(settings: Settings, fake_url: str, worker_url: str) -> Timeline:
    """Offer the load; 10 s in, every call answered 503 for 30 s; then healthy again."""
    t = Timeline()
    async with httpx.AsyncClient(timeout=5) as http, CallstreamClient(settings) as client:
        load_s = HEALTHY_BEFORE_S + OUTAGE_S + HEALTHY_AFTER_S
        publisher = asyncio.create_task(offer_load(client, load_s, t.sent))
        await asyncio.sleep(HEALTHY_BEFORE_S)
        await set_error_mix(http, fake_url, status_503=1.0)
        t.outage_at, t.outage_at_ms = time.monotonic(), now_ms()
        t.opened_seen_at = await wait_opened(http, worker_url, t.outage_at)
        t.stats_seen_open = await fake_stats(http, fake_url)
        await asyncio.sleep(max(0.0, t.opened_seen_at + SETTLE_S - time.monotonic()))
        t.stats_after_open = await fake_stats(http, fake_url)
        t.counted_from = time.monotonic()
        await asyncio.sleep(max(0.0, t.outage_at + OUTAGE_S - time.monotonic()))
        t.stats_at_recovery = await fake_stats(http, fake_url)
        t.metrics_at_recovery = await metrics_of(http, worker_url)
        t.recovered_at, t.recovered_at_ms = time.monotonic(), now_ms()
        await set_error_mix(http, fake_url)
        await publisher
    return t


def ends_by_id(outcomes: Outcomes) -> dict[str, list[tuple[str, str, str | None]]]:
    """Every outcome record of each request: (kind, status or reason, reason or stage)."""
    ends: dict[str, list[tuple[str, str, str | None]]] = {}
    for r in outcomes.results:
        ends.setdefault(r.request_id, []).append(("result", r.status, r.reason))
    for d in outcomes.dead_letters:
        ends.setdefault(d.request_id or "", []).append(("dead_letter", d.reason, d.stage))
    return ends


def drained_at_ms(outcomes: Outcomes, before_ms: int) -> int:
    """When the last outcome of a request created before ``before_ms`` was made (epoch ms)."""
    done = [r.completed_at_ms for r in outcomes.results if r.created_at_ms < before_ms]
    done += [
        d.last_failure_at_ms
        for d in outcomes.dead_letters
        if d.original is not None and d.original.created_at_ms < before_ms
    ]
    return max(done)


def history(letter: DeadLetterEvent, since_ms: int) -> str:
    """A dead letter's attempts: when each started (s after ``since_ms``) and its status."""
    created_s = ((letter.original.created_at_ms if letter.original else 0) - since_ms) / 1000
    tries = [f"{(a.started_at_ms - since_ms) / 1000:.2f}s:{a.http_status}" for a in letter.attempts]
    return f"created {created_s:.2f}s, attempts {' '.join(tries)}"


def probe_bound(t: Timeline) -> tuple[int, int]:
    """The most calls the provider may get from ``counted_from`` to recovery: the half-open
    probes. The breaker opened before ``counted_from``, so its first round starts at most
    wait_in_open_s after that, and each next round at least wait_in_open_s after the last
    reopened: at most floor(span / wait) + 1 rounds start in the span, half_open_calls each."""
    rounds = math.floor((t.recovered_at - t.counted_from) / BREAKER.wait_in_open_s) + 1
    return rounds, rounds * BREAKER.half_open_calls


@pytest.mark.slow
def test_an_outage_opens_the_breaker_and_the_backlog_completes_after_recovery(
    settings, fake_provider_factory, worker_factory
):
    settings = one_shard(settings)
    fake = fake_provider_factory("--latency-ms", "5")
    worker = worker_factory(
        fake.url,
        CALLSTREAM_PROVIDERS__FAKE__SHARDS="1",
        CALLSTREAM_BREAKER__WAIT_IN_OPEN_S=str(BREAKER.wait_in_open_s),
        CALLSTREAM_RETRY__MAX_ATTEMPTS=str(MAX_ATTEMPTS),
    )
    t = run(outage(settings, fake.url, worker.url))
    ids = {r.request_id for r in t.sent}
    outcomes = run(collect(settings, until_ids=ids, timeout_s=35))
    after = scrape(worker.url)
    after_stats = httpx.get(f"{fake.url}/_fake/stats").json()

    # The breaker opened within its window of the outage's start.
    opened_s = t.opened_seen_at - t.outage_at
    print(f"\n{len(t.sent)} requests offered; breaker seen open {opened_s:.1f} s into the outage")
    assert opened_s <= BREAKER.window_size + 2 * POLL_S

    # During the outage the provider got at most the half-open probes, every one a 503.
    before, at_recovery = t.stats_after_open, t.stats_at_recovery
    calls = at_recovery["calls_total"] - before["calls_total"]
    failed = at_recovery["status_counts"].get("503", 0) - before["status_counts"].get("503", 0)
    # probe_bound's premise: counting began before the breaker's first half-open round could.
    assert t.counted_from - t.opened_seen_at < BREAKER.wait_in_open_s - POLL_S
    rounds, bound = probe_bound(t)
    at = t.metrics_at_recovery
    half_opened = sample(at, TRANSITIONS, breaker=KEY, to="half_open")
    opened = sample(at, TRANSITIONS, breaker=KEY, to="open")
    span_s = t.recovered_at - t.counted_from
    late = before["calls_total"] - t.stats_seen_open["calls_total"]
    print(
        f"outage: {calls} provider calls in the {span_s:.1f} s from {SETTLE_S:g} s after the "
        f"breaker opened to recovery (bound: {rounds} rounds x {BREAKER.half_open_calls} probes "
        f"= {bound}); {half_opened:g} half-open rounds, {opened:g} openings so far; "
        f"{before['calls_total']} calls before that ({late} in the {SETTLE_S:g} s after it "
        f"was seen open), {before['status_counts']} by status; "
        f"{sample(at, 'callstream_delayed_requests', kind='breaker'):g} requests waiting for it"
    )
    assert calls == failed, "every call during the outage was answered 503"
    assert calls <= bound
    assert half_opened >= 1, "no half-open round in a 30 s outage with a 5 s wait in open"
    assert sample(at, TRANSITIONS, breaker=KEY, to="closed") == 0, "closed during the outage"

    # Every request has exactly one outcome, none lost.
    ends = ends_by_id(outcomes)
    missing = ids - ends.keys()
    repeated = {rid: e for rid, e in ends.items() if len(e) > 1}
    print(f"outcomes: {outcomes.total} records for {len(ids)} requests, {len(missing)} lost")
    assert not missing, f"{len(missing)} requests lost"
    assert ends.keys() == ids, "outcomes of requests never offered"
    assert all(len(set(e)) == 1 for e in repeated.values()), "two different outcomes of one request"
    assert not repeated, f"{len(repeated)} requests with repeated outcomes (no crash, no rebalance)"

    # Without a deadline, every request completed ok; with a short one, it ended as expected.
    no_deadline = Counter(ends[r.request_id][0] for r in t.sent if r.deadline_at_ms is None)
    short = Counter(ends[r.request_id][0] for r in t.sent if r.deadline_at_ms is not None)
    print(f"without a deadline: {dict(no_deadline)}")
    print(f"with a {DEADLINE_S:g} s deadline: {dict(short)}")
    deadline_of = {r.request_id: r.deadline_at_ms for r in t.sent}
    for label, has in (("without a deadline", False), ("with a deadline", True)):
        attempts = Counter(
            r.attempts
            for r in outcomes.results
            if r.status == "ok" and (deadline_of[r.request_id] is not None) == has
        )
        print(f"ok {label}, by attempts: {dict(sorted(attempts.items()))}")
    for letter in outcomes.dead_letters:
        if letter.original is not None and letter.original.deadline_at_ms is None:
            print(f"no deadline, dead letter {letter.reason}: {history(letter, t.outage_at_ms)}")
    assert set(no_deadline) == {("result", "ok", None)}
    assert set(short) <= SHORT_DEADLINE_ENDS
    assert short[("dead_letter", "circuit_open", "breaker")] > 0

    # The breaker closed after recovery, and nothing waits for it any more.
    drained_s = (drained_at_ms(outcomes, t.recovered_at_ms) - t.recovered_at_ms) / 1000
    print(
        f"after recovery: backlog drained in {drained_s:.1f} s; breaker state "
        f"{sample(after, 'callstream_breaker_state', breaker=KEY):g}, transitions to closed "
        f"{sample(after, TRANSITIONS, breaker=KEY, to='closed'):g}, refusals "
        f"{sample(after, 'callstream_breaker_refusals_total', breaker=KEY):g}, waits for it "
        f"taken up {sample(after, 'callstream_delays_fired_total', kind='breaker'):g}; "
        f"the provider's peak rate {after_stats['max_rate_1s']}/s"
    )
    assert sample(after, "callstream_breaker_state", breaker=KEY) == 0
    assert sample(after, TRANSITIONS, breaker=KEY, to="closed") >= 1
    assert sample(after, "callstream_delayed_requests", kind="breaker") == 0
