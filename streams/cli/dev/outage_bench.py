"""`callstream bench outage`: a provider outage under steady load, without and with breakers.

Issue 21. Each variant runs the real pipeline (a worker on the broker) on fresh topics and app
id, against a fake provider of its own with one shard, so one breaker. Requests without a
deadline are offered at a steady rate for before + outage + after seconds; for the outage the
fake answers every call 503 (``POST /_fake/config``, as tests/integration/pipeline/
test_breaker.py does). Measured from outside: the fake's call counts (``GET /_fake/stats``) at
the outage's start, when the worker's /metrics first shows the breaker open, and at recovery;
each request's first outcome; when the backlog (the requests created before recovery) drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas.models import DeadLetterEvent, RequestEvent, ResultEvent, now_ms
from streams.cli.common import run
from streams.cli.dev.dev_cmd import DEMO_API_KEY
from streams.cli.dev.processes import start_fake_provider, start_worker, wait_worker_ready
from streams.cli.dev.roundtrip import bench_topics, bench_worker_env, cancel_all, read_outcomes
from streams.sdk import CallstreamClient
from streams.settings import BreakerSettings, KafkaSettings, ProviderSettings, Settings

FAKE_LATENCY_MS = 5
# One shard: the fake's limit has one key, hence one breaker (with N shards the provider would
# see N breakers' probes).
SHARDS = 1
BREAKER = "fake"  # the key of that breaker, a label of the worker's breaker metrics
HALF_OPEN_CALLS = BreakerSettings().half_open_calls
PUBLISH_TICK_S = 0.05
POLL_S = 0.2  # how often the worker's /metrics is read during the outage
# Past the last publish, the longest the outcomes may take: callstream's retry.time_budget_s
# (120 s by default) and some. Requests still without an outcome then are lost.
DRAIN_TIMEOUT_S = 180.0
TRANSITIONS = "callstream_breaker_transitions_total"
STATE = "callstream_breaker_state"  # 0 closed, 1 half-open, 2 open


@dataclass(frozen=True)
class OutagePlan:
    """The load and the outage every variant gets."""

    outage_s: float
    rate_per_s: float
    before_s: float
    after_s: float
    wait_in_open_s: float

    @property
    def load_s(self) -> float:
        return self.before_s + self.outage_s + self.after_s

    @property
    def requests(self) -> int:
        return max(1, round(self.load_s * self.rate_per_s))

    @property
    def probes_bound(self) -> int:
        """The most calls a breaker lets through an outage: a half-open round at most every
        wait_in_open_s, plus one, of half_open_calls probes each."""
        return (math.floor(self.outage_s / self.wait_in_open_s) + 1) * HALF_OPEN_CALLS


@dataclass(frozen=True)
class Variant:
    name: str
    env: Mapping[str, str]
    breaker: bool


def variants(plan: OutagePlan) -> tuple[Variant, ...]:
    """Without breakers, and with the default breaker but for its wait in open."""
    return (
        Variant("no_breaker", {"CALLSTREAM_BREAKER__ENABLED": "false"}, breaker=False),
        Variant(
            "breaker", {"CALLSTREAM_BREAKER__WAIT_IN_OPEN_S": f"{plan.wait_in_open_s:g}"}, True
        ),
    )


@dataclass
class _Tally:
    """The first outcome of each request published, and when it was made (epoch ms)."""

    created_ms: dict[str, int] = field(default_factory=dict)
    ended_ms: dict[str, int] = field(default_factory=dict)
    kinds: Counter[str] = field(default_factory=Counter)
    expected: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, request_id: str | None, kind: str, at_ms: int) -> bool:
        if request_id not in self.created_ms or request_id in self.ended_ms:
            return False
        self.ended_ms[request_id] = at_ms
        self.kinds[kind] += 1
        if len(self.ended_ms) >= self.expected:
            self.done.set()
        return True

    def add_result(self, event: ResultEvent) -> bool:
        kind = event.status if event.status == "ok" else f"{event.status}/{event.reason}"
        return self.add(event.request_id, kind, event.completed_at_ms)

    def add_dead_letter(self, letter: DeadLetterEvent) -> bool:
        kind = f"dead_letter/{letter.reason}"
        return self.add(letter.request_id, kind, letter.last_failure_at_ms)


@dataclass
class _Timeline:
    """What a run saw: monotonic seconds, or epoch ms where named ``_ms``."""

    outage_at: float = 0.0
    opened_at: float | None = None
    recovered_at: float = 0.0
    recovered_at_ms: int = 0
    closed_at: float | None = None
    stats_at_outage: dict[str, Any] = field(default_factory=dict)
    stats_at_open: dict[str, Any] = field(default_factory=dict)
    stats_at_recovery: dict[str, Any] = field(default_factory=dict)
    metrics_at_recovery: str = ""


def measure_outage(tmp: Path, servers: str, plan: OutagePlan, console: Console) -> dict[str, Any]:
    """Run both variants in turn; returns the figures of ``{"outage": ...}``."""
    figures = {}
    for variant in variants(plan):
        console.print(f"[bold]{variant.name}[/]: starting a worker and a fake provider...")
        figures[variant.name] = _run_variant(tmp, servers, variant, plan, console)
    breaker = figures["breaker"]
    since_open = breaker["calls_since_open"]
    within = since_open is not None and since_open <= breaker["probes_bound"]
    none_lost = all(variant["lost"] == 0 for variant in figures.values())
    return {
        "outage_s": plan.outage_s,
        "rate": plan.rate_per_s,
        "before_s": plan.before_s,
        "after_s": plan.after_s,
        "wait_in_open_s": plan.wait_in_open_s,
        "variants": figures,
        "goal": {
            # The breaker needs its window to see the failures first: the calls compared with
            # the probes are those from when the breaker was seen open to recovery.
            "calls_counted_from": "breaker_open",
            "calls_during_outage_le_probes": within,
            "lost": 0,
            "met": within and none_lost,
        },
    }


def _run_variant(
    tmp: Path, servers: str, variant: Variant, plan: OutagePlan, console: Console
) -> dict[str, Any]:
    prefix = f"bench-outage-{variant.name}.{int(time.time())}"  # fresh topics and group
    topics = bench_topics(prefix)
    fake = start_fake_provider(tmp, "--api-key", DEMO_API_KEY, "--latency-ms", str(FAKE_LATENCY_MS))
    env = bench_worker_env(
        tmp,
        servers,
        fake.url,
        prefix,
        topics,
        CALLSTREAM_PROVIDERS__FAKE__SHARDS=str(SHARDS),
        **variant.env,
    )
    worker = start_worker(tmp, env, name=prefix)
    try:
        wait_worker_ready(worker, timeout_s=90)
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=servers),
            topics=topics,
            providers={"fake": ProviderSettings(shards=SHARDS)},
        )
        tally, timeline = run(_drive(settings, plan, fake.url, worker.url, console))
        final_stats = httpx.get(f"{fake.url}/_fake/stats", timeout=10).json()
    finally:
        worker.stop()
        fake.stop()
    return _figures(plan, variant, tally, timeline, final_stats)


async def _drive(
    settings: Settings, plan: OutagePlan, fake_url: str, worker_url: str, console: Console
) -> tuple[_Tally, _Timeline]:
    """Offer the load, stage the outage, and read outcomes until each request has one."""
    tally = _Tally(expected=plan.requests)
    progress = Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    phase = progress.add_task("healthy", total=math.ceil(plan.load_s))
    published = progress.add_task("published", total=plan.requests)
    settled = progress.add_task("outcomes", total=plan.requests)
    started = time.monotonic()

    def on_published(sent: int) -> None:
        progress.update(published, completed=sent)
        progress.update(phase, completed=min(plan.load_s, time.monotonic() - started))

    def on_outcome(added: bool) -> None:
        if added:
            progress.update(settled, completed=len(tally.ended_ms))

    def say(text: str) -> None:
        progress.update(phase, description=text)

    tasks: list[asyncio.Task[None]] = []
    async with httpx.AsyncClient(timeout=5) as http, CallstreamClient(settings) as client:
        tasks += read_outcomes(
            client,
            lambda event: on_outcome(tally.add_result(event)),
            lambda letter: on_outcome(tally.add_dead_letter(letter)),
        )
        with progress:
            try:
                load = asyncio.create_task(_offer_load(client, plan, tally, on_published))
                tasks.append(load)
                timeline = await _stage_outage(http, fake_url, worker_url, plan, say)
                if timeline.opened_at is not None:
                    tasks.append(asyncio.create_task(_watch_close(http, worker_url, timeline)))
                await load
                say("draining the backlog")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DRAIN_TIMEOUT_S):
                        await tally.done.wait()
                say("done" if tally.done.is_set() else "gave up waiting for outcomes")
            finally:
                await cancel_all(tasks)
    return tally, timeline


async def _offer_load(
    client: CallstreamClient,
    plan: OutagePlan,
    tally: _Tally,
    on_published: Callable[[int], None],
) -> None:
    """Publish ``plan.requests`` at ``plan.rate_per_s``, without deadline, each created as sent."""
    started = time.monotonic()
    sent = 0
    while sent < plan.requests:
        due = min(plan.requests, math.floor((time.monotonic() - started) * plan.rate_per_s) + 1)
        batch = [
            RequestEvent(provider="fake", operation="get_item", params={"item_id": f"o{index}"})
            for index in range(sent, due)
        ]
        tally.created_ms.update((request.request_id, request.created_at_ms) for request in batch)
        await client.publish_many(batch)
        sent = due
        on_published(sent)
        await asyncio.sleep(PUBLISH_TICK_S)


async def _stage_outage(
    http: httpx.AsyncClient,
    fake_url: str,
    worker_url: str,
    plan: OutagePlan,
    say: Callable[[str], None],
) -> _Timeline:
    """Healthy for before_s; then every call answered 503 for outage_s, watching the breaker;
    then healthy again."""
    t = _Timeline()
    await asyncio.sleep(plan.before_s)
    t.stats_at_outage = await _stats(http, fake_url)
    await _set_error_mix(http, fake_url, status_503=1.0)
    t.outage_at = time.monotonic()
    say("outage: every call answered 503")
    end = t.outage_at + plan.outage_s
    while (left := end - time.monotonic()) > 0:
        if t.opened_at is None and _is_open(await _metrics(http, worker_url)):
            t.opened_at = time.monotonic()
            t.stats_at_open = await _stats(http, fake_url)
            say(f"outage: breaker open after {t.opened_at - t.outage_at:.1f} s")
        await asyncio.sleep(min(POLL_S, left))
    t.stats_at_recovery = await _stats(http, fake_url)
    t.metrics_at_recovery = await _metrics(http, worker_url)
    await _set_error_mix(http, fake_url)
    t.recovered_at, t.recovered_at_ms = time.monotonic(), now_ms()
    say("recovered: calls answered 200")
    return t


async def _watch_close(http: httpx.AsyncClient, worker_url: str, t: _Timeline) -> None:
    """Poll the worker's metrics until the breaker has closed again."""
    while True:
        text = await _metrics(http, worker_url)
        if _sample(text, STATE, breaker=BREAKER) == 0 and _transitions(text, "closed") >= 1:
            t.closed_at = time.monotonic()
            return
        await asyncio.sleep(POLL_S)


async def _set_error_mix(http: httpx.AsyncClient, fake_url: str, **mix: float) -> None:
    response = await http.post(f"{fake_url}/_fake/config", json={"error_mix": mix})
    response.raise_for_status()


async def _stats(http: httpx.AsyncClient, fake_url: str) -> dict[str, Any]:
    stats: dict[str, Any] = (await http.get(f"{fake_url}/_fake/stats")).json()
    return stats


async def _metrics(http: httpx.AsyncClient, worker_url: str) -> str:
    return (await http.get(f"{worker_url}/metrics")).text


def _is_open(metrics: str) -> bool:
    """Open or half-open now, or opened since (a poll may fall between two modes)."""
    return _sample(metrics, STATE, breaker=BREAKER) >= 1 or _transitions(metrics, "open") >= 1


def _transitions(metrics: str, to: str) -> float:
    return _sample(metrics, TRANSITIONS, breaker=BREAKER, to=to)


def _sample(metrics: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0.0 when absent)."""
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def _figures(
    plan: OutagePlan,
    variant: Variant,
    tally: _Tally,
    t: _Timeline,
    final_stats: dict[str, Any],
) -> dict[str, Any]:
    return {
        "requests": len(tally.created_ms),
        # The calls the fake answered 503, from the outage's start to its end.
        "provider_calls_during_outage": _failed_calls(t.stats_at_outage, t.stats_at_recovery),
        "provider_calls_by_status_during_outage": _by_status(
            t.stats_at_outage, t.stats_at_recovery
        ),
        **_opening(t),
        "probes_bound": plan.probes_bound if variant.breaker else None,
        "half_open_rounds": _rounds(t.metrics_at_recovery) if variant.breaker else None,
        "recovery_to_closed_s": _since(t.recovered_at, t.closed_at),
        "outcomes": dict(sorted(tally.kinds.items())),
        # From recovery to the outcomes of the requests created before it.
        **_backlog(tally, t.recovered_at_ms),
        "provider_peak_calls_per_s": final_stats.get("max_rate_1s"),
        "lost": len(tally.created_ms) - len(tally.ended_ms),
    }


def _opening(t: _Timeline) -> dict[str, Any]:
    """When the worker's /metrics first showed the breaker open (polled every POLL_S), the
    calls the fake failed before, and those from then to recovery: the half-open probes."""
    if t.opened_at is None:
        return {"seconds_to_open": None, "calls_before_open": None, "calls_since_open": None}
    return {
        "seconds_to_open": _since(t.outage_at, t.opened_at),
        "calls_before_open": _failed_calls(t.stats_at_outage, t.stats_at_open),
        "calls_since_open": _failed_calls(t.stats_at_open, t.stats_at_recovery),
    }


def _since(start: float, end: float | None) -> float | None:
    return None if end is None else round(end - start, 1)


def _failed_calls(before: dict[str, Any], after: dict[str, Any]) -> int:
    """Calls answered 503: the outage's (the fake fails no other call)."""
    return int(after["status_counts"].get("503", 0)) - int(before["status_counts"].get("503", 0))


def _by_status(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    counts = {
        status: count - before["status_counts"].get(status, 0)
        for status, count in after["status_counts"].items()
    }
    return {status: count for status, count in sorted(counts.items()) if count}


def _rounds(metrics: str) -> int:
    return int(_transitions(metrics, "half_open"))


def _backlog(tally: _Tally, recovered_at_ms: int) -> dict[str, Any]:
    """The requests created before recovery and still without an outcome then, and when their
    outcomes came: the median and the last, in seconds after recovery (None: one is missing)."""
    backlog = [
        rid
        for rid, created in tally.created_ms.items()
        if created < recovered_at_ms and tally.ended_ms.get(rid, recovered_at_ms) >= recovered_at_ms
    ]
    ended = sorted(
        tally.ended_ms[rid] - recovered_at_ms for rid in backlog if rid in tally.ended_ms
    )
    drained_s: float | None = round(ended[-1] / 1000, 1) if ended else 0.0
    if len(ended) < len(backlog):
        drained_s = None  # some of the backlog never got an outcome
    return {
        "backlog_at_recovery": len(backlog),
        "recovery_to_half_drained_s": round(ended[len(ended) // 2] / 1000, 1) if ended else None,
        "recovery_to_drained_s": drained_s,
    }


def print_outage(console: Console, report: dict[str, Any]) -> None:
    """The variants side by side, their outcomes, and whether the breaker meets the goal."""
    goal = report["goal"]
    table = Table(
        title=f"outage: {report['outage_s']:g} s of 503s under {report['rate']:g} req/s, "
        f"breaker wait in open {report['wait_in_open_s']:g} s",
        caption="calls: provider calls during the outage; since open: those from the breaker "
        "seen open to recovery, against the probes bound; drained: the backlog's outcomes "
        "after recovery, half of them / all",
    )
    for column in ("variant", "calls", "open after", "since open", "drained", "lost"):
        table.add_column(column, justify="right")
    for name, figures in report["variants"].items():
        since = figures["calls_since_open"]
        half, drained = figures["recovery_to_half_drained_s"], figures["recovery_to_drained_s"]
        table.add_row(
            name,
            str(figures["provider_calls_during_outage"]),
            _seconds(figures["seconds_to_open"]),
            "-" if since is None else f"{since} / {figures['probes_bound']}",
            f"{_seconds(half)} / {_seconds(drained)}",
            str(figures["lost"]),
        )
    console.print(table)
    for name, figures in report["variants"].items():
        ended = ", ".join(f"{kind} {count}" for kind, count in figures["outcomes"].items())
        console.print(f"{name} outcomes: {ended}")
    console.print(
        "goal (calls since the breaker opened <= probes bound, 0 lost): "
        f"{'met' if goal['met'] else 'NOT met'}"
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:g} s"
