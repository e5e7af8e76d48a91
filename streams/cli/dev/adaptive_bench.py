"""`callstream bench adaptive`: a declared limit above the provider's real one, per variant.

Issue 22. The worker enforces a declared 100/s (burst 10) for the fake provider, whose own token
bucket, the real limit, is lower and hidden; it answers a call over it 429 with
``Retry-After: 1``. The real limit changes from phase to phase (``POST /_fake/config``); the
scenario ``changing`` is 60/s, then 80/s, then 40/s, ``fixed`` is 50/s throughout. Without
``--headers`` the worker's declaration of the fake names no rate-limit headers (a declaration
file replaces the fake's own), so only 429s and their Retry-After tell it anything.

Each variant runs the real pipeline (workers on the broker) on fresh topics and app id against
a fake of its own. By default one worker and one shard (one limit key, ``fake``). With
``--shards N`` the declared limit is split into N keys ``fake#0`` .. ``fake#N-1`` (rate/N,
burst/N each) and with ``--workers M`` M worker processes share one group: the request topic
gets a partition count at which the keys' partitions are dealt evenly over the workers, so each
worker owns its own keys and learns from its own 429s, while the fake's one bucket is the real
limit of them all (two workers sharing a sharded key must behave as one client, issue 22).

Every key stays backlogged: requests without deadline are published so that a few seconds of
its declared rate are always waiting per key, and the limiter's wait for requests without
deadline is raised so that none expires. Measured from outside: the fake's counts
(``GET /_fake/stats``) at every phase change, and, every POLL_S, each key's enforced rate and
learned limit gauges from the worker that owns its partition (``/healthz``, ``/metrics``),
summed over the keys for the provider (None unless every key has them); each request's first
outcome, after the load, once the backlog has drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas.keys import limit_key, request_limit_key
from schemas.models import DeadLetterEvent, RequestEvent, ResultEvent
from streams.cli.common import run
from streams.cli.dev.dev_cmd import DEMO_API_KEY
from streams.cli.dev.processes import (
    Child,
    ChildStartError,
    start_fake_provider,
    start_worker,
    wait_worker_ready,
)
from streams.cli.dev.roundtrip import (
    bench_topics,
    bench_worker_env,
    cancel_all,
    declare_fake,
    read_outcomes,
)
from streams.routing import partition_for
from streams.sdk import CallstreamClient
from streams.settings import KafkaSettings, ProviderSettings, Settings, TopicSettings

# Real limits per phase, requests per second.
SCENARIOS: Mapping[str, tuple[float, ...]] = {"changing": (60, 80, 40), "fixed": (50,)}
DECLARED_PER_S = 100.0
DECLARED_BURST = 10
REAL_BURST = 5  # the fake's bucket
FAKE_LATENCY_MS = 10
PROVIDER = "fake"
# The request topic's partitions: the default, unless the keys would not be dealt evenly over
# the workers there (`spread_partitions`).
DEFAULT_PARTITIONS: int = TopicSettings().partitions
MAX_PARTITIONS = 1024
SETTLE_TIMEOUT_S = 60.0  # for the group to give every partition to exactly one worker
# The variant the README recommends (limiter.adaptive.mode's default).
KEPT = "cubic"
POLL_S = 0.5  # how often the worker's gauges and the fake's counts are read
BAND = 0.10  # settled: the enforced rate within this share of the real limit
# Requests kept without an outcome: this many seconds of the declared rate. Well under the
# waiting room's cap per key, and enough that the key never runs dry while some requests
# wait out a Retry-After.
BACKLOG_S = 1.5
FEED_TICK_S = 0.05
MAX_WAIT_S = 3600  # limiter.default_max_wait_s: no request expires while the key is backlogged
# Past the load, the longest the backlog may take: callstream's retry.time_budget_s (120 s by
# default) and some. Requests still without an outcome then are counted unfinished.
DRAIN_TIMEOUT_S = 180.0
RATE_GAUGE = "callstream_limiter_rate_per_s"
LEARNED_GAUGE = "callstream_limiter_learned_limit_per_s"


@dataclass(frozen=True)
class Phase:
    real_per_s: float
    seconds: float


@dataclass(frozen=True)
class AdaptivePlan:
    """The load, the real limits, the declaration and the workers every variant gets."""

    scenario: str
    phases: tuple[Phase, ...]
    headers: bool
    warm_up_s: float
    declared_per_s: float = DECLARED_PER_S
    declared_burst: int = DECLARED_BURST
    real_burst: int = REAL_BURST
    workers: int = 1
    shards: int = 1

    @property
    def load_s(self) -> float:
        return sum(phase.seconds for phase in self.phases)

    @property
    def backlog(self) -> int:
        """Requests kept without an outcome, over all keys."""
        return max(50, round(BACKLOG_S * self.declared_per_s))

    @property
    def backlog_per_key(self) -> int:
        return math.ceil(self.backlog / self.shards)

    @property
    def keys(self) -> tuple[str, ...]:
        """The provider's limit keys, as the workers and the publisher name them."""
        if self.shards <= 1:
            return (limit_key(PROVIDER),)
        return tuple(limit_key(PROVIDER, shard=shard) for shard in range(self.shards))

    @property
    def partitions(self) -> int:
        """The request topic's partitions."""
        return spread_partitions(self.keys, self.workers)


def make_plan(
    scenario: str,
    phase_s: float,
    *,
    headers: bool,
    warm_up_s: float,
    workers: int = 1,
    shards: int = 1,
) -> AdaptivePlan:
    phases = tuple(Phase(rate, phase_s) for rate in SCENARIOS[scenario])
    return AdaptivePlan(
        scenario,
        phases,
        headers,
        warm_up_s=min(warm_up_s, phase_s * 0.5),
        workers=workers,
        shards=shards,
    )


def spread_partitions(keys: Sequence[str], workers: int) -> int:
    """The request topic's partition count for ``workers``: the default if the keys land on
    distinct partitions that the group's assignor deals evenly over the workers (each gets
    len(keys) // workers of them, or one more); else the fewest counts at which they do.

    Shards go to consecutive partitions (``streams.routing.partition_for``), so the default
    serves as long as there are at least as many partitions as shards. The caller's consumer
    uses aiokafka's default round-robin assignor, which deals partition p to the
    (p mod workers)-th member; the bench checks the assignment the workers report anyway
    (`_wait_settled`).
    """
    if workers <= 1:
        return DEFAULT_PARTITIONS
    counts: list[int] = [DEFAULT_PARTITIONS, *range(max(workers, len(keys)), MAX_PARTITIONS + 1)]
    for count in counts:
        owned = [partition_for(key.encode(), range(count)) for key in keys]
        if len(set(owned)) < len(owned):
            continue
        per_worker = Counter(partition % workers for partition in owned)
        loads = [per_worker[worker] for worker in range(workers)]
        if max(loads) - min(loads) <= 1:
            return count
    raise ValueError(f"no partition count up to {MAX_PARTITIONS} spreads {keys} over {workers}")


@dataclass(frozen=True)
class Variant:
    name: str
    env: Mapping[str, str]


def _mode(mode: str, **env: str) -> dict[str, str]:
    return {"CALLSTREAM_LIMITER__ADAPTIVE__MODE": mode, **env}


VARIANTS = (
    # The declared rate enforced, a 429 ends its request.
    Variant("static", _mode("off", CALLSTREAM_RETRY__MAX_ATTEMPTS="1")),
    # The declared rate enforced, 429s retried after their Retry-After (callstream's retries).
    Variant("retry", _mode("off")),
    Variant("aimd", _mode("aimd")),
    Variant("cubic", _mode("cubic")),
)
VARIANT_NAMES = tuple(variant.name for variant in VARIANTS)


@dataclass
class _Tally:
    """What the backlog feeder published and the first outcome of each request."""

    created_ms: dict[str, int] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    key_of: dict[str, str] = field(default_factory=dict)  # request id: its limit key
    outstanding_by_key: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    failed_rate_limited: int = 0
    feeding: bool = True
    fed: asyncio.Event = field(default_factory=asyncio.Event)  # the first backlog is out
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def outstanding(self) -> int:
        return len(self.created_ms) - len(self.ended)

    def stop_feeding(self) -> None:
        self.feeding = False
        self._check_done()

    def add_result(self, event: ResultEvent) -> None:
        if not self._first(event.request_id):
            return
        self.kinds[event.status if event.status == "ok" else f"{event.status}/{event.reason}"] += 1
        if event.status == "failed":
            self.failed += 1
            self.failed_rate_limited += event.reason == "rate_limited" or event.http_status == 429

    def add_dead_letter(self, letter: DeadLetterEvent) -> None:
        if not self._first(letter.request_id):
            return
        self.kinds[f"dead_letter/{letter.reason}"] += 1
        self.failed += 1
        self.failed_rate_limited += _for_429(letter)

    def _first(self, request_id: str | None) -> bool:
        """Whether this is the first outcome of one of ours (an outcome is at least once)."""
        if request_id is None or request_id not in self.created_ms or request_id in self.ended:
            return False
        self.ended.add(request_id)
        key = self.key_of.get(request_id)
        if key is not None:
            self.outstanding_by_key[key] -= 1
        self._check_done()
        return True

    def _check_done(self) -> None:
        if not self.feeding and self.outstanding <= 0:
            self.done.set()


def _for_429(letter: DeadLetterEvent) -> bool:
    """A dead letter whose last failure was a 429: a request failed for the rate limit."""
    last = letter.attempts[-1] if letter.attempts else None
    return (
        letter.reason == "rate_limited"
        or letter.error_type == "RateLimited"
        or (last is not None and last.http_status == 429)
    )


@dataclass(frozen=True)
class _Counts:
    """The fake's counts at one moment (monotonic seconds)."""

    at: float
    accepted: int  # calls answered 200
    throttled: int  # calls refused by the bucket (429)
    arrivals: int  # every call that reached the fake

    @classmethod
    def of(cls, at: float, stats: Mapping[str, Any]) -> _Counts:
        return cls(
            at,
            int(stats["status_counts"].get("200", 0)),
            int(stats.get("rate_limited", 0)),
            int(stats.get("arrivals", 0)),
        )


@dataclass(frozen=True)
class _Sample:
    at: float
    rate: float | None  # the provider's enforced rate: the sum over its keys' gauges
    learned: float | None  # the sum of its keys' learned limits
    # Each key's enforced rate, from the worker that owns its partition (absent: no gauge).
    keys: Mapping[str, float] = field(default_factory=dict)


@dataclass
class _Timeline:
    """The fake's counts at each phase's start and at the load's end, after the warm-up, and
    the gauges polled every POLL_S."""

    marks: list[_Counts] = field(default_factory=list)
    warmed: _Counts | None = None
    samples: list[_Sample] = field(default_factory=list)


def measure_adaptive(
    tmp: Path,
    servers: str,
    plan: AdaptivePlan,
    names: Sequence[str],
    console: Console,
) -> dict[str, Any]:
    """Run the variants named, in turn; returns the figures of ``{"adaptive": ...}``."""
    figures = {}
    for variant in VARIANTS:
        if variant.name in names:
            workers = "a worker" if plan.workers == 1 else f"{plan.workers} workers"
            console.print(f"[bold]{variant.name}[/]: starting {workers} and a fake provider...")
            figures[variant.name] = _run_variant(tmp, servers, variant, plan, console)
    return {
        "scenario": plan.scenario,
        "workers": plan.workers,
        "shards": plan.shards,
        "partitions": plan.partitions,
        "declared": {"rate_per_s": plan.declared_per_s, "burst": plan.declared_burst},
        "real_burst": plan.real_burst,
        "phases": [{"real_per_s": p.real_per_s, "seconds": p.seconds} for p in plan.phases],
        "headers": plan.headers,
        "warm_up_s": plan.warm_up_s,
        "variants": figures,
        "kept": KEPT,
    }


def _run_variant(
    tmp: Path, servers: str, variant: Variant, plan: AdaptivePlan, console: Console
) -> dict[str, Any]:
    prefix = f"bench-adaptive-{variant.name}.{int(time.time())}"  # fresh topics and group
    topics = bench_topics(prefix).model_copy(update={"partitions": plan.partitions})
    fake = start_fake_provider(
        tmp,
        *("--api-key", DEMO_API_KEY, "--latency-ms", str(FAKE_LATENCY_MS)),
        *("--rate", f"{plan.phases[0].real_per_s:g}", "--burst", str(plan.real_burst)),
    )
    env = bench_worker_env(
        tmp,
        servers,
        fake.url,
        prefix,
        topics,
        CALLSTREAM_TOPICS__PARTITIONS=str(plan.partitions),
        CALLSTREAM_PROVIDERS__FAKE__SHARDS=str(plan.shards),
        CALLSTREAM_PROVIDERS__FAKE__RATE_PER_S=f"{plan.declared_per_s:g}",
        CALLSTREAM_PROVIDERS__FAKE__BURST=str(plan.declared_burst),
        CALLSTREAM_LIMITER__DEFAULT_MAX_WAIT_S=str(MAX_WAIT_S),
        **variant.env,
    )
    if not plan.headers:
        # The fake's own declaration without its rate-limit headers.
        directory = declare_fake(tmp / f"providers-{prefix}", {"rate_limit_headers": {}})
        env["CALLSTREAM_PROVIDER_DIRS"] = json.dumps([str(directory)])
    workers: list[Child] = []
    try:
        # One group (the app id), a data directory each.
        for index in range(plan.workers):
            name = prefix if plan.workers == 1 else f"{prefix}-w{index}"
            own = {**env, "CALLSTREAM_DATA_DIR": str(tmp / name)}
            workers.append(start_worker(tmp, own, name=name))
        for worker in workers:
            wait_worker_ready(worker, timeout_s=90)
        owners = _wait_settled(workers, topics.requests, plan.partitions)
        key_owners = {key: owners.get(_partition(key, plan.partitions)) for key in plan.keys}
        if plan.workers > 1:
            console.print(
                "  "
                + ", ".join(f"{key} on worker {owner}" for key, owner in key_owners.items())
                + f" ({plan.partitions} partitions)"
            )
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=servers),
            topics=topics,
            providers={PROVIDER: ProviderSettings(shards=plan.shards)},
        )
        urls = [worker.url for worker in workers]
        tally, timeline = run(_drive(settings, plan, fake.url, urls, console))
    finally:
        for worker in workers:
            worker.stop()
        fake.stop()
    return {**_figures(plan, tally, timeline), "owners": key_owners}


def _partition(key: str, partitions: int) -> int:
    """The request topic's partition of a limit key (the publisher keys requests by it)."""
    return partition_for(key.encode(), range(partitions))


_OWNED = re.compile(r"^(?P<topic>.+)\[(?P<partition>\d+)\]$")


def _owned(health: Mapping[str, Any], topic: str) -> set[int]:
    """The partitions of ``topic`` a worker's ``/healthz`` says it owns."""
    owned = set()
    for entry in health.get("partitions", ()):
        match = _OWNED.match(str(entry))
        if match and match["topic"] == topic:
            owned.add(int(match["partition"]))
    return owned


def _owners(owned: Sequence[set[int]], partitions: int) -> dict[int, int] | None:
    """Each partition's worker index, given what each worker owns; None unless every
    partition has exactly one owner (a rebalance is under way)."""
    owners = {partition: index for index, mine in enumerate(owned) for partition in mine}
    if sum(map(len, owned)) != partitions or set(owners) != set(range(partitions)):
        return None
    return owners


def _wait_settled(workers: Sequence[Child], topic: str, partitions: int) -> dict[int, int]:
    """Wait until the group has given each partition of ``topic`` to exactly one worker (by
    their ``/healthz``); returns each partition's worker index.

    Raises:
        ChildStartError: not settled within SETTLE_TIMEOUT_S.
    """
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    seen: list[set[int]] = []
    while time.monotonic() < deadline:
        seen = []
        with contextlib.suppress(httpx.HTTPError, ValueError):
            for worker in workers:
                seen.append(_owned(httpx.get(f"{worker.url}/healthz", timeout=2).json(), topic))
        owners = _owners(seen, partitions) if len(seen) == len(workers) else None
        if owners is not None:
            return owners
        time.sleep(0.2)
    raise ChildStartError(
        f"the workers' group did not settle in {SETTLE_TIMEOUT_S:g} s: {topic}'s partitions "
        f"owned {[sorted(owned) for owned in seen]}"
    )


async def _drive(
    settings: Settings,
    plan: AdaptivePlan,
    fake_url: str,
    worker_urls: Sequence[str],
    console: Console,
) -> tuple[_Tally, _Timeline]:
    """Keep every key backlogged through the phases, then wait for every request's outcome."""
    tally, timeline = _Tally(), _Timeline()
    progress = Progress(
        TextColumn("{task.description:<44}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    clock = progress.add_task("starting", total=round(plan.load_s))
    outcomes = progress.add_task("outcomes", total=0)

    def on_result(event: ResultEvent) -> None:
        tally.add_result(event)
        progress.update(outcomes, completed=len(tally.ended), total=len(tally.created_ms))

    def on_dead_letter(letter: DeadLetterEvent) -> None:
        tally.add_dead_letter(letter)
        progress.update(outcomes, completed=len(tally.ended), total=len(tally.created_ms))

    def say(text: str, elapsed: float) -> None:
        progress.update(clock, description=text, completed=min(plan.load_s, elapsed))

    tasks: list[asyncio.Task[None]] = []
    async with httpx.AsyncClient(timeout=5) as http, CallstreamClient(settings) as client:
        tasks += read_outcomes(client, on_result, on_dead_letter)
        with progress:
            try:
                tasks.append(asyncio.create_task(_feed(client, tally, plan)))
                await tally.fed.wait()  # the load starts with the first backlog
                poll = _poll(http, plan, settings.topics.requests, worker_urls, timeline)
                tasks.append(asyncio.create_task(poll))
                await _stage_phases(http, fake_url, plan, timeline, say)
                tally.stop_feeding()
                progress.update(clock, description="draining the backlog")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DRAIN_TIMEOUT_S):
                        await tally.done.wait()
                done = "done" if tally.done.is_set() else "gave up waiting for outcomes"
                progress.update(clock, description=done)
            finally:
                await cancel_all(tasks)
    return tally, timeline


async def _feed(client: CallstreamClient, tally: _Tally, plan: AdaptivePlan) -> None:
    """Publish requests without deadline so that ``plan.backlog_per_key`` of each key are
    always without an outcome: a key whose requests end sooner gets more, so that none runs
    dry while another is slower (requests go to a shard by their id: they are made until each
    key has its share, the spares dropped unpublished)."""
    index = 0
    while tally.feeding:
        wanted = {
            key: plan.backlog_per_key - tally.outstanding_by_key[key]
            for key in plan.keys
            if plan.backlog_per_key > tally.outstanding_by_key[key]
        }
        batch = []
        while wanted:
            request = RequestEvent(
                provider=PROVIDER, operation="get_item", params={"item_id": f"a{index}"}
            )
            index += 1
            key = request_limit_key(PROVIDER, request.request_id, plan.shards)
            if key not in wanted:
                continue
            wanted[key] -= 1
            if not wanted[key]:
                del wanted[key]
            batch.append(request)
            tally.key_of[request.request_id] = key
            tally.outstanding_by_key[key] += 1
        if batch:
            tally.created_ms.update((rq.request_id, rq.created_at_ms) for rq in batch)
            await client.publish_many(batch)
            tally.fed.set()
        await asyncio.sleep(FEED_TICK_S)


async def _stage_phases(
    http: httpx.AsyncClient,
    fake_url: str,
    plan: AdaptivePlan,
    timeline: _Timeline,
    say: Callable[[str, float], None],
) -> None:
    """Each phase's real limit for its seconds; the fake's counts at every change."""
    started = time.monotonic()
    warm_up = asyncio.create_task(_warm_up(http, fake_url, started + plan.warm_up_s, timeline))
    try:
        for index, phase in enumerate(plan.phases):
            if index:
                await _set_real_limit(http, fake_url, phase.real_per_s, plan.real_burst)
            timeline.marks.append(await _counts(http, fake_url))
            end = timeline.marks[-1].at + phase.seconds
            name = f"phase {index + 1}/{len(plan.phases)}: real {phase.real_per_s:g}/s"
            while (left := end - time.monotonic()) > 0:
                last = timeline.samples[-1].rate if timeline.samples else None
                enforced = "" if last is None else f", enforced {last:.0f}/s"
                say(name + enforced, time.monotonic() - started)
                await asyncio.sleep(min(1.0, left))
        timeline.marks.append(await _counts(http, fake_url))
        say("load done", time.monotonic() - started)
    finally:
        await cancel_all([warm_up])


async def _warm_up(
    http: httpx.AsyncClient, fake_url: str, until: float, timeline: _Timeline
) -> None:
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    timeline.warmed = await _counts(http, fake_url)


async def _poll(
    http: httpx.AsyncClient,
    plan: AdaptivePlan,
    topic: str,
    worker_urls: Sequence[str],
    t: _Timeline,
) -> None:
    """Every POLL_S, each key's enforced rate and learned limit from the worker that owns its
    partition now (a worker keeps the gauges of a key it has lost), and their sums."""
    partition_of = {key: _partition(key, plan.partitions) for key in plan.keys}
    while True:
        ticked = time.monotonic()
        answers = await asyncio.gather(
            *(_worker_state(http, url, topic) for url in worker_urls), return_exceptions=True
        )
        rates: dict[str, float] = {}
        learned: dict[str, float] = {}
        for answer in answers:
            if isinstance(answer, BaseException):
                continue
            owned, metrics = answer
            mine = {key for key, partition in partition_of.items() if partition in owned}
            for key, value in _gauges(metrics, RATE_GAUGE).items():
                if key in mine:
                    rates[key] = value
            for key, value in _gauges(metrics, LEARNED_GAUGE).items():
                if key in mine:
                    learned[key] = value
        t.samples.append(
            _Sample(ticked, _total(rates, plan.keys), _total(learned, plan.keys), rates)
        )
        await asyncio.sleep(max(0.0, ticked + POLL_S - time.monotonic()))


async def _worker_state(http: httpx.AsyncClient, url: str, topic: str) -> tuple[set[int], str]:
    """The partitions of ``topic`` a worker owns and its metrics."""
    health, metrics = await asyncio.gather(http.get(f"{url}/healthz"), http.get(f"{url}/metrics"))
    return _owned(health.json(), topic), metrics.text


def _total(values: Mapping[str, float], keys: Iterable[str]) -> float | None:
    """The sum over ``keys``; None unless every key has its value."""
    total = 0.0
    for key in keys:
        if key not in values:
            return None
        total += values[key]
    return total


async def _set_real_limit(
    http: httpx.AsyncClient, fake_url: str, rate_per_s: float, burst: int
) -> None:
    change = {"rate_limit": {"rate_per_s": rate_per_s, "burst": burst}}
    response = await http.post(f"{fake_url}/_fake/config", json=change)
    response.raise_for_status()


async def _counts(http: httpx.AsyncClient, fake_url: str) -> _Counts:
    response = await http.get(f"{fake_url}/_fake/stats")
    response.raise_for_status()
    return _Counts.of(time.monotonic(), response.json())


def _gauges(metrics: str, name: str) -> dict[str, float]:
    """A gauge's sample per limit key (labelled ``key`` or ``limit_key``)."""
    values = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            key = sample.labels.get("limit_key", sample.labels.get("key"))
            if sample.name == name and key is not None:
                values[key] = float(sample.value)
    return values


def _figures(plan: AdaptivePlan, tally: _Tally, t: _Timeline) -> dict[str, Any]:
    phases = [
        _phase_figures(phase, start, end, t.samples)
        for phase, start, end in zip(plan.phases, t.marks, t.marks[1:], strict=False)
    ]
    first, last = t.marks[0], t.marks[-1]
    allowed = sum(phase["allowed"] for phase in phases)
    calls = last.arrivals - first.arrivals
    warmed = t.warmed or first
    span_s = last.at - warmed.at
    return {
        "utilization": _ratio(last.accepted - first.accepted, allowed),
        "utilization_by_phase": [phase["utilization"] for phase in phases],
        "throttled_share": _ratio(last.throttled - first.throttled, calls),
        "settle_s": [phase["settle_s"] for phase in phases],
        "throughput_per_s": round((last.accepted - warmed.accepted) / span_s, 1)
        if span_s > 0
        else None,
        "failed": {"total": tally.failed, "rate_limited": tally.failed_rate_limited},
        "outcomes": dict(sorted(tally.kinds.items())),
        "requests": len(tally.created_ms),
        "unfinished": tally.outstanding,
        "calls": calls,
        "accepted": last.accepted - first.accepted,
        "throttled": last.throttled - first.throttled,
        "phases": phases,
        "keys": _last_by_key(plan.keys, last.at, t.samples),
    }


def _last_by_key(
    keys: Iterable[str], end: float, samples: Iterable[_Sample]
) -> dict[str, float | None]:
    """Each key's last enforced rate before ``end`` (the load's end); None: no gauge."""
    last: dict[str, float | None] = dict.fromkeys(keys)
    for sample in samples:
        if sample.at < end:
            last.update((key, round(rate, 1)) for key, rate in sample.keys.items() if key in last)
    return last


def _phase_figures(
    phase: Phase, start: _Counts, end: _Counts, samples: Iterable[_Sample]
) -> dict[str, Any]:
    seconds = end.at - start.at
    allowed = phase.real_per_s * seconds
    accepted = end.accepted - start.accepted
    calls = end.arrivals - start.arrivals
    inside = [sample for sample in samples if start.at <= sample.at < end.at]
    rates = [sample.rate for sample in inside if sample.rate is not None]
    learned = [sample.learned for sample in inside if sample.learned is not None]
    by_key: dict[str, list[float]] = {}
    for sample in inside:
        for key, rate in sample.keys.items():
            by_key.setdefault(key, []).append(rate)
    return {
        "real_per_s": phase.real_per_s,
        "seconds": round(seconds, 1),
        "allowed": round(allowed),
        "accepted": accepted,
        "utilization": _ratio(accepted, allowed),
        "throughput_per_s": round(accepted / seconds, 1) if seconds > 0 else None,
        "throttled_share": _ratio(end.throttled - start.throttled, calls),
        "settle_s": _settle_s(phase.real_per_s, start.at, inside),
        "enforced_rate_mean": round(sum(rates) / len(rates), 1) if rates else None,
        "enforced_rate_mean_by_key": {
            key: round(sum(values) / len(values), 1) for key, values in sorted(by_key.items())
        },
        "learned_limit_last": round(learned[-1], 1) if learned else None,
    }


def _settle_s(real_per_s: float, start: float, samples: list[_Sample]) -> float | None:
    """Seconds from the phase's start to the first sample from which the enforced rate stays
    within BAND of the real limit until the phase ends; None if it never does (or the gauge is
    absent)."""
    settled: float | None = None
    for sample in samples:
        inside = sample.rate is not None and abs(sample.rate - real_per_s) <= BAND * real_per_s
        if not inside:
            settled = None
        elif settled is None:
            settled = sample.at
    return None if settled is None else round(settled - start, 1)


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 4) if whole > 0 else None


def print_adaptive(console: Console, report: dict[str, Any]) -> None:
    """The variants side by side, then their outcomes."""
    reals = "/".join(f"{phase['real_per_s']:g}" for phase in report["phases"])
    declared = report["declared"]
    workers, shards = report.get("workers", 1), report.get("shards", 1)
    sharing = f", {workers} workers, {shards} shards" if workers > 1 or shards > 1 else ""
    table = Table(
        title=f"adaptive: declared {declared['rate_per_s']:g}/s, real {reals}/s "
        f"({report['phases'][0]['seconds']:g} s each), {'' if report['headers'] else 'no '}headers"
        + sharing,
        caption="util: accepted calls / what the real limit allowed (by phase); settle: "
        f"seconds until the enforced rate stays within {BAND:.0%} of the real limit; "
        f"throughput: accepted calls/s after {report['warm_up_s']:g} s; kept: {report['kept']}",
    )
    for column in ("variant", "util", "by phase", "429 share", "settle s", "failed (429)", "/s"):
        table.add_column(column, justify="right")
    for name, figures in report["variants"].items():
        failed = figures["failed"]
        table.add_row(
            name,
            _percent(figures["utilization"]),
            " ".join(_percent(share) for share in figures["utilization_by_phase"]),
            _percent(figures["throttled_share"], digits=1),
            " ".join("-" if s is None else f"{s:g}" for s in figures["settle_s"]),
            f"{failed['total']} ({failed['rate_limited']})",
            "-" if figures["throughput_per_s"] is None else f"{figures['throughput_per_s']:g}",
        )
    console.print(table)
    for name, figures in report["variants"].items():
        ended = ", ".join(f"{kind} {count}" for kind, count in figures["outcomes"].items())
        left = figures["unfinished"]
        console.print(f"{name} outcomes: {ended}" + (f"; {left} without one" if left else ""))
        if shards > 1:
            owners = figures.get("owners", {})
            console.print(
                f"{name} enforced at the end: "
                + ", ".join(
                    f"{key} {'-' if rate is None else f'{rate:g}'}/s (worker {owners.get(key)})"
                    for key, rate in figures["keys"].items()
                )
            )


def _percent(share: float | None, digits: int = 0) -> str:
    return "-" if share is None else f"{share:.{digits}%}"
