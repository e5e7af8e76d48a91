"""Bulkheads (issue 21): a provider whose latency balloons from 50 ms to 5 s holds at most its
bulkhead's calls, so a second provider served by the same worker keeps its throughput; without
the bulkhead (one as large as ``max_in_flight``) the second provider's throughput collapses."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from schemas.models import RequestEvent, ResultEvent, now_ms
from streams.cli.dev.processes import wait_worker_ready
from streams.routing import partition_for
from streams.sdk import CallstreamClient
from streams.settings import ProviderSettings, Settings, TopicSettings
from tests.integration.conftest import API_KEY
from tests.integration.limits.test_no_stall import sample
from tests.integration.pipeline.outcomes import collect
from tests.integration.pipeline.test_breaker import fake_stats, metrics_of

pytestmark = pytest.mark.integration

P, Q = "fake", "quail"  # P's latency balloons; Q, declared in a provider file, stays at 50 ms
MAX_IN_FLIGHT, P_BULKHEAD = 40, 10
FAST_MS, SLOW_MS = 50, 5000
RATE_PER_S, TICK_S = 100, 0.1  # offered to each provider, published every TICK_S
PER_TICK = round(RATE_PER_S * TICK_S)
# Load before the first window, the two measured windows, the pause between the switch to
# SLOW_MS and the second window, and how long results are still read after the load stops.
WARMUP_S, WINDOW_S, SETTLE_S, TAIL_S = 3.0, 6.0, 2.0, 2.0
CONTROL_WINDOW_S = 5.0  # the control's windows: shorter, its effect is a collapse
POLL_S = 0.1
WAITS = "callstream_bulkhead_waits_total"

Q_SPEC = f"""
name = "{Q}"
base_url = "{{url}}"
auth = {{{{ type = "api_key", in = "header", name = "X-API-Key", key = "env:QUAIL_KEY" }}}}
[limits]
rate_per_s = 50000
burst = 5000
[operations.get_item]
path = "/v1/items/{{{{item_id}}}}"
path_params.item_id = {{{{ pattern = "[A-Za-z0-9._~-]{{{{1,128}}}}" }}}}
"""


@dataclass
class Figures:
    """What one run saw: Q's completions per second in each window, P's calls at once."""

    q_before_per_s: float = 0.0
    q_during_per_s: float = 0.0
    # The most calls P's fake had in progress, sampled every POLL_S. At FAST_MS each tick's
    # PER_TICK requests reach it together, so even the first window sees up to PER_TICK.
    p_at_once_before: int = 0
    p_at_once_during: int = 0
    p_calls_during: int = 0  # calls P's fake received in the second window
    in_flight_during: float = 0.0  # the most `callstream_calls_in_flight` showed (all providers)
    waits_before: float = 0.0
    waits_during: float = 0.0  # at the second window's end
    offered: int = 0
    q_not_ok: int = 0


def both_providers(settings: Settings, app_id: str | None = None) -> Settings:
    update: dict[str, object] = {
        "providers": {P: ProviderSettings(shards=1), Q: ProviderSettings()}
    }
    if app_id is not None:
        update["app_id"] = app_id
        update["topics"] = TopicSettings(
            requests=f"{app_id}.requests",
            results=f"{app_id}.results",
            dead_letters=f"{app_id}.dlq",
            partitions=settings.topics.partitions,
        )
    return settings.model_copy(update=update)


def get_item(provider: str, n: int) -> RequestEvent:
    return RequestEvent(provider=provider, operation="get_item", params={"item_id": f"i{n}"})


async def offer_load(client: CallstreamClient, duration_s: float, sent: list[RequestEvent]):
    """PER_TICK requests for each provider every TICK_S, on a fixed schedule."""
    start = time.monotonic()
    for tick in range(round(duration_s / TICK_S)):
        await asyncio.sleep(max(0.0, start + tick * TICK_S - time.monotonic()))
        batch = [get_item(p, tick * PER_TICK + i) for p in (P, Q) for i in range(PER_TICK)]
        await client.publish_many(batch)
        sent.extend(batch)


async def in_progress(http: httpx.AsyncClient, fake_url: str) -> tuple[int, int]:
    """Calls a fake has received, and how many of them it has not answered yet: a call is
    counted on arrival and its status when answered (refusals by rate or auth count a status
    but no call; this test has neither)."""
    stats = await fake_stats(http, fake_url)
    refused = stats["rate_limited"] + stats["auth_failures"]
    answered = sum(stats["status_counts"].values()) - refused
    return stats["calls_total"], stats["calls_total"] - answered


async def watch(
    http: httpx.AsyncClient, p_url: str, worker_url: str, stop: asyncio.Event
) -> tuple[int, float]:
    """Sample P's calls in progress every POLL_S until ``stop``; return the most seen, and the
    most calls in flight the worker reported meanwhile (every fifth poll). At SLOW_MS a call
    lasts 5 s, fifty polls: no call of the second window comes and goes between two samples."""
    most_p, most_in_flight, polls = 0, 0.0, 0
    while not stop.is_set():
        most_p = max(most_p, (await in_progress(http, p_url))[1])
        if polls % 5 == 0:
            metrics = await metrics_of(http, worker_url)
            most_in_flight = max(most_in_flight, sample(metrics, "callstream_calls_in_flight"))
        polls += 1
        await asyncio.sleep(POLL_S)
    return most_p, most_in_flight


async def balloon(settings: Settings, p_url: str, worker_url: str, window_s: float) -> Figures:
    """Offer the load; measure a window at FAST_MS, switch P to SLOW_MS, measure another."""
    f = Figures()
    sent: list[RequestEvent] = []
    load_s = WARMUP_S + window_s + SETTLE_S + window_s
    # No request id matches: this reads every outcome until its timeout, after the load.
    reader = asyncio.create_task(
        collect(settings, until_ids={"(none)"}, timeout_s=load_s + TAIL_S + 1)
    )
    async with httpx.AsyncClient(timeout=5) as http, CallstreamClient(settings) as client:
        publisher = asyncio.create_task(offer_load(client, load_s, sent))
        await asyncio.sleep(WARMUP_S)
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(http, p_url, worker_url, stop))
        first = now_ms()
        await asyncio.sleep(window_s)
        f.waits_before = sample(await metrics_of(http, worker_url), WAITS, bulkhead=P)
        stop.set()
        f.p_at_once_before, _ = await watcher

        response = await http.post(f"{p_url}/_fake/config", json={"latency_ms": SLOW_MS})
        assert response.status_code == 200, response.text
        await asyncio.sleep(SETTLE_S)
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(http, p_url, worker_url, stop))
        p_calls_at, _ = await in_progress(http, p_url)
        second = now_ms()
        await asyncio.sleep(window_s)
        p_calls_after, _ = await in_progress(http, p_url)
        f.waits_during = sample(await metrics_of(http, worker_url), WAITS, bulkhead=P)
        stop.set()
        f.p_at_once_during, f.in_flight_during = await watcher
        f.p_calls_during = p_calls_after - p_calls_at
        await publisher
    outcomes = await reader
    f.offered = len(sent)
    q_results = [r for r in outcomes.results if r.provider == Q]
    f.q_not_ok = sum(1 for r in q_results if r.status != "ok")
    f.q_before_per_s = completed(q_results, first, first + int(window_s * 1000)) / window_s
    f.q_during_per_s = completed(q_results, second, second + int(window_s * 1000)) / window_s
    return f


def completed(results: list[ResultEvent], from_ms: int, to_ms: int) -> int:
    return sum(1 for r in results if from_ms <= r.completed_at_ms < to_ms)


def start(
    fake_provider_factory,
    worker_factory,
    tmp_path: Path,
    settings: Settings,
    p_bulkhead: int,
    *,
    wait: bool = True,
):
    """Two fakes at FAST_MS and a worker serving P (on the first) and Q (on the second),
    ready on return if ``wait``."""
    with ThreadPoolExecutor(2) as pool:  # each start waits for its fake to answer: overlap them
        p_fake, q_fake = pool.map(fake_provider_factory, ["--latency-ms"] * 2, [str(FAST_MS)] * 2)
    spec_dir = tmp_path / f"provider_files_{settings.app_id}"
    spec_dir.mkdir()
    (spec_dir / f"{Q}.toml").write_text(Q_SPEC.format(url=q_fake.url))
    worker = worker_factory(
        p_fake.url,
        name=f"worker-{settings.app_id}",
        wait=wait,
        CALLSTREAM_APP_ID=settings.app_id,
        CALLSTREAM_TOPICS__REQUESTS=settings.topics.requests,
        CALLSTREAM_TOPICS__RESULTS=settings.topics.results,
        CALLSTREAM_TOPICS__DEAD_LETTERS=settings.topics.dead_letters,
        CALLSTREAM_PROVIDER_DIRS=f'["{spec_dir}"]',
        CALLSTREAM_PROVIDERS__FAKE__SHARDS="1",
        CALLSTREAM_PROVIDERS__QUAIL__ENABLED="true",
        QUAIL_KEY=API_KEY,
        CALLSTREAM_CALLER__MAX_IN_FLIGHT=str(MAX_IN_FLIGHT),
        CALLSTREAM_PROVIDERS__FAKE__MAX_CONCURRENT_CALLS=str(p_bulkhead),
        # Adaptive concurrency would shrink P's calls in flight as its latency balloons and
        # protect Q by itself (it did: Q kept 98% without a bulkhead), leaving no control.
        CALLSTREAM_LIMITER__ADAPTIVE__CONCURRENCY="false",
        # The bulkhead alone is under test. At SLOW_MS every call of P is slow (the default
        # slow_call_threshold_s is 5 s), so P's breaker would open once 20 had finished in its
        # 10 s window and stop P's calls: it would hide what the bulkhead does by itself.
        CALLSTREAM_BREAKER__ENABLED="false",
    )
    return p_fake, worker


def report(label: str, f: Figures, bulkhead: int) -> None:
    drop = 1 - f.q_during_per_s / f.q_before_per_s if f.q_before_per_s else float("nan")
    print(
        f"\n{label} (P's bulkhead {bulkhead} of max_in_flight {MAX_IN_FLIGHT}): Q completed "
        f"{f.q_before_per_s:.1f}/s at {FAST_MS} ms, {f.q_during_per_s:.1f}/s with P at "
        f"{SLOW_MS} ms ({drop:+.1%} drop); P's calls at once, most seen: {f.p_at_once_before} "
        f"before, {f.p_at_once_during} during; P's calls in the second window "
        f"{f.p_calls_during}; calls in flight (all providers) at most {f.in_flight_during:g}; "
        f"bulkhead waits {f.waits_before:g} before, {f.waits_during:g} at the end; "
        f"{f.offered} requests offered, {f.q_not_ok} of Q's results not ok"
    )


@pytest.mark.slow
def test_a_provider_whose_latency_balloons_holds_only_its_bulkhead(
    settings, fake_provider_factory, worker_factory, tmp_path: Path
):
    settings = both_providers(settings)
    partitions = list(range(settings.topics.partitions))
    # Apart, so that P's backlog can pause only its own partition (issue 20), never Q's.
    assert partition_for(P.encode(), partitions) != partition_for(Q.encode(), partitions)

    control_settings = both_providers(settings, app_id=f"{settings.app_id}-control")
    # The control's fakes and worker start with the first run's, for the suite's time; that
    # worker then idles on its own topics until its turn.
    p_fake, worker = start(
        fake_provider_factory, worker_factory, tmp_path, settings, P_BULKHEAD, wait=False
    )
    control_p_fake, control_worker = start(
        fake_provider_factory, worker_factory, tmp_path, control_settings, MAX_IN_FLIGHT, wait=False
    )
    wait_worker_ready(worker, timeout_s=90)
    wait_worker_ready(control_worker, timeout_s=90)

    f = asyncio.run(balloon(settings, p_fake.url, worker.url, WINDOW_S))
    report("with the bulkhead", f, P_BULKHEAD)
    # Q kept its throughput, within 10% of the first window, every result ok.
    assert f.q_not_ok == 0
    assert f.q_before_per_s >= 0.9 * RATE_PER_S, "the worker did not keep up before the switch"
    assert abs(f.q_during_per_s - f.q_before_per_s) <= 0.1 * f.q_before_per_s
    # P never had more than its bulkhead's calls at once: P's fake, polled every POLL_S (see
    # `watch`), and the calls it received, at most P_BULKHEAD every SLOW_MS (plus those
    # already running when the window began).
    assert f.p_at_once_during == P_BULKHEAD, "P's bulkhead was not full: nothing was tested"
    assert f.p_calls_during <= P_BULKHEAD * (WINDOW_S * 1000 / SLOW_MS + 1)
    assert f.waits_during > f.waits_before
    # P's fake first: its calls in flight then fail at once instead of lasting SLOW_MS, and the
    # worker stops without waiting for them (those still waiting are dropped).
    p_fake.kill()
    worker.stop()

    # The control: the same run, with P's bulkhead as large as max_in_flight (none, in effect).
    control = asyncio.run(
        balloon(control_settings, control_p_fake.url, control_worker.url, CONTROL_WINDOW_S)
    )
    control_p_fake.kill()  # as above, for the teardown's stop of this worker
    report("control, without a bulkhead", control, MAX_IN_FLIGHT)

    # Without it, P takes (nearly) every slot and Q's throughput collapses.
    assert control.p_at_once_during >= 0.9 * MAX_IN_FLIGHT
    assert control.q_during_per_s < 0.5 * control.q_before_per_s
