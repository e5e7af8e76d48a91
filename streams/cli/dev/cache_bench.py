"""`callstream bench cache`: real request traces through the worker's response cache, LRU
against the kept L1 policy, judged against Belady's offline optimum (issue 23).

Each trace of ``../shared/traces`` (``agents.cache.traces``) is replayed as requests for the
fake provider's item route, one item per trace key (``k`` and the zero-padded index of the
key's first request, so every answer and every cache entry has the same size), through a real
broker and a worker process. The worker's declaration of the fake (a file that replaces the
fake's own) makes the operation cacheable with one fixed TTL and no stale windows. The L1 is
bounded in bytes: capacity x the size of one entry (``CachedResponse.size`` of a real reply),
so a capacity of 5% of the unique keys holds exactly that many entries, as in the simulator
(``agents.cache.simulate``) and in Belady's optimum (``agents.cache.belady``).

Requests are published in trace order with a bounded window without an outcome (32), so the
cache sees the trace's order; a request that finds its key's call in flight waits for it
(``coalesced``) and is counted apart from hits. Every (trace, capacity, policy) run gets a
fresh worker (app id, topics, data dir): a cold cache. Hits are counted from the results'
status and ``cache_tier``, provider calls from the fake's ``/_fake/stats``.

The worker's CPU for a call and for a hit comes from two calibration phases per trace, on a
worker whose L1 holds them all: N distinct cold keys (calls), then the same N keys (L1 hits).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agents.cache.belady import belady_hits
from agents.cache.entry import from_reply
from agents.cache.freshness import lifetime
from agents.cache.policy import PolicyName
from agents.cache.simulate import KEPT, capacity_for, gap_closed, policy_hits
from agents.cache.traces import TRACES, trace_keys
from providers.base import Provider
from providers.declaration import CacheSpec, ProviderSpec
from providers.fake.provider import FAKE_PROVIDER
from schemas.models import DeadLetterEvent, RequestEvent, ResultEvent
from streams.cli.common import run
from streams.cli.dev.dev_cmd import DEMO_API_KEY
from streams.cli.dev.processes import Child, start_fake_provider, start_worker, wait_worker_ready
from streams.cli.dev.roundtrip import (
    bench_topics,
    bench_worker_env,
    cancel_all,
    declare_fake,
    read_outcomes,
)
from streams.cli.dev.throughput import ProcessCpu
from streams.errors import CallstreamError
from streams.sdk import CallstreamClient
from streams.settings import KafkaSettings, Settings

PROVIDER = "fake"
# The fake's tenant-scoped cacheable item operation; the bench's declaration sets its TTL.
OPERATION = "get_cached_item"
LRU: PolicyName = "lru"
CAPACITY_PCTS = (1.0, 5.0, 10.0)
# Longer than any replay: no entry expires, so the TTL does not confound the policies.
DEFAULT_TTL_S = 86_400.0
WINDOW = 32  # requests published and without an outcome yet
CALIBRATION_REQUESTS = 2000
WARM_UP_REQUESTS = 200  # per calibration: connections and code paths, not counted
# Requests outstanding in the calibration phases: a busy worker, as `bench throughput` runs
# one (its 200 in flight). With the trace window's 32 the worker idles between small fetches
# and produce requests, and per-record costs (a syscall per produce) swamp what is measured.
CALIBRATION_WINDOW = 256
# Item ids: a letter and this many digits, so every answer and entry has the same size.
ID_DIGITS = 6
TRACE_PREFIX, COLD_PREFIX, WARM_PREFIX = "k", "c", "w"
STALL_S = 60.0  # no outcome for this long: the run has failed
GAUGE_WAIT_S = 7.0  # the worker refreshes its cache gauges every 5 s
L2_MAX_BYTES = 256 << 20  # per partition with --l2: the setting's default, holds any trace
# Results of requests answered without a call of their own, by their cache_tier.
HIT_TIERS = ("l1", "l2")
COALESCED, REVALIDATED, CALL = "coalesced", "revalidated", "call"


class BenchStalled(CallstreamError):
    """A run stopped getting outcomes (the worker died or hangs).

    Operator action: read the worker's log named in the message.
    """


@dataclass(frozen=True)
class CachePlan:
    """What every run gets: the traces, the capacities, the load and the cache settings."""

    traces: tuple[str, ...]
    capacity_pcts: tuple[float, ...] = CAPACITY_PCTS
    limit: int | None = None  # the first N requests of each trace
    ttl_s: float = DEFAULT_TTL_S
    window: int = WINDOW
    latency_ms: float = 0.0  # the fake's
    l2: bool = False
    calibration: int = CALIBRATION_REQUESTS
    kept: PolicyName = KEPT

    @property
    def policies(self) -> tuple[PolicyName, ...]:
        return (LRU, self.kept)


def parse_traces(values: Sequence[str] | None) -> tuple[str, ...]:
    """Trace names from repeated options and comma lists (all, in ``TRACES`` order, if none).

    Raises:
        ValueError: an unknown name, as one line.
    """
    names = [name.strip() for value in values or () for name in value.split(",")]
    names = [name for name in names if name]
    if unknown := [name for name in names if name not in TRACES]:
        raise ValueError(f"unknown trace {unknown[0]!r}; known: {', '.join(TRACES)}")
    return tuple(name for name in TRACES if name in names) if names else tuple(TRACES)


def parse_pcts(values: Sequence[str] | None) -> tuple[float, ...]:
    """Capacities in percent of the unique keys, from repeated options and comma lists.

    Raises:
        ValueError: not a number, or not in (0, 100], as one line.
    """
    texts = [text.strip() for value in values or () for text in value.split(",")]
    pcts: list[float] = []
    for text in filter(None, texts):
        try:
            pct = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number of percent") from None
        if not 0 < pct <= 100 or not math.isfinite(pct):
            raise ValueError(f"{text} is not a percentage in (0, 100]")
        if pct not in pcts:
            pcts.append(pct)
    return tuple(sorted(pcts)) if pcts else CAPACITY_PCTS


def item_ids(keys: Iterable[Hashable], prefix: str = TRACE_PREFIX) -> list[str]:
    """One fixed-width item id per request: ``prefix`` and the index of its key's first
    request, zero-padded; the same key always maps to the same id.

    Raises:
        ValueError: more unique keys than ``ID_DIGITS`` digits can number.
    """
    index: dict[Hashable, str] = {}
    ids = []
    for key in keys:
        item = index.get(key)
        if item is None:
            if len(index) >= 10**ID_DIGITS:
                raise ValueError(f"more than {10**ID_DIGITS} unique keys")
            item = index[key] = f"{prefix}{len(index):0{ID_DIGITS}d}"
        ids.append(item)
    return ids


def distinct_ids(count: int, prefix: str) -> list[str]:
    """``count`` distinct item ids of the same width as the trace's."""
    return [f"{prefix}{index:0{ID_DIGITS}d}" for index in range(count)]


def declaration_overrides(ttl_s: float) -> dict[str, Any]:
    """Changes to the fake's declaration (``ProviderSpec.with_overrides``) that cache
    ``OPERATION`` for ``ttl_s``, with no stale windows: a fixed TTL."""
    operation = FAKE_PROVIDER.operations[OPERATION]
    cached = operation.model_copy(update={"cache": CacheSpec(ttl_s=ttl_s)})
    return {"operations": {**FAKE_PROVIDER.operations, OPERATION: cached}}


def entry_size(spec: ProviderSpec, status: int, headers: Mapping[str, str], body: bytes) -> int:
    """The bytes the L1 counts for this answer of ``OPERATION`` (``CachedResponse.size``), as
    the worker keeps it: the provider's classification picks the headers it keeps.

    Raises:
        ValueError: the answer would not be stored, or not for the declared TTL (a
            ``Cache-Control`` of the fake shortening it).
    """
    reply = Provider(spec).classify(status, headers, body, operation=OPERATION)
    now = time.time()
    cache = spec.operations[OPERATION].cache
    assert cache is not None
    life = lifetime(cache, reply.headers, now=now)
    if life is None or life.fresh_until < now + cache.ttl_s - 1:
        raise ValueError(f"the fake's answer is not kept for {cache.ttl_s:g} s: {reply!r}")
    return from_reply(reply, life, now).size


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0-1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class RunTally:
    """The requests of one replay and the first outcome of each: its kind and latency."""

    sent_at: dict[str, float] = field(default_factory=dict)
    kinds: Counter[str] = field(default_factory=Counter)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    done: int = 0

    @property
    def outstanding(self) -> int:
        return len(self.sent_at) - self.done

    def published(self, request_id: str, at: float) -> None:
        self.sent_at[request_id] = at

    def add_result(self, event: ResultEvent, at: float) -> bool:
        """Count a result; False if it is not one of ours or not the first of its request."""
        return self._add(event.request_id, result_kind(event), at)

    def add_dead_letter(self, letter: DeadLetterEvent, at: float) -> bool:
        return self._add(letter.request_id, f"dead_letter/{letter.reason}", at)

    def _add(self, request_id: str | None, kind: str, at: float) -> bool:
        sent = self.sent_at.get(request_id) if request_id is not None else None
        if sent is None or sent < 0:
            return False
        assert request_id is not None
        self.sent_at[request_id] = -1.0  # answered: a repeated outcome is ignored
        self.done += 1
        self.kinds[kind] += 1
        self.latencies_ms.setdefault(kind, []).append((at - sent) * 1000)
        return True


def result_kind(event: ResultEvent) -> str:
    """``l1``, ``l2``, ``coalesced``, ``revalidated`` (answered without a call of its own, or
    by a 304), ``call`` (an ``ok`` from the request's own call), else ``status/reason``."""
    status = str(event.status)
    if status in ("cached", "stale"):
        return event.cache_tier or f"{status}/no_tier"
    if status == "ok":
        return event.cache_tier or CALL
    return f"{status}/{event.reason}"


def run_figures(
    tally: RunTally,
    *,
    provider_calls: int,
    not_modified: int,
    seconds: float,
    worker_cpu_s: float | None,
) -> dict[str, Any]:
    """One policy's figures on one trace and capacity."""
    n = tally.done
    kinds = tally.kinds
    every = [ms for values in tally.latencies_ms.values() for ms in values]
    hits = [ms for tier in HIT_TIERS for ms in tally.latencies_ms.get(tier, ())]
    failed = n - sum(kinds[kind] for kind in (*HIT_TIERS, COALESCED, REVALIDATED, CALL))
    return {
        "requests": n,
        "l1_hit_ratio": _ratio(kinds["l1"], n),
        "l2_hit_ratio": _ratio(kinds["l2"], n),
        "coalesced_ratio": _ratio(kinds[COALESCED], n),
        "hits": {tier: kinds[tier] for tier in (*HIT_TIERS, COALESCED, REVALIDATED)},
        # Requests answered by a call of their own (a revalidation is a call too).
        "calls": kinds[CALL] + kinds[REVALIDATED],
        "provider_calls": provider_calls,
        "not_modified": not_modified,
        "failed": failed,
        "outcomes": dict(sorted(kinds.items())),
        "p50_ms": _ms(percentile(every, 0.5)),
        "p99_ms": _ms(percentile(every, 0.99)),
        "hit_p50_ms": _ms(percentile(hits, 0.5)),
        "call_p50_ms": _ms(percentile(tally.latencies_ms.get(CALL, []), 0.5)),
        "seconds": round(seconds, 2),
        "requests_per_s": round(n / seconds, 1) if seconds > 0 else None,
        "worker_cpu_ms": _ms(None if worker_cpu_s is None else worker_cpu_s * 1000 / n, 4)
        if n
        else None,
    }


@dataclass(frozen=True)
class Calibration:
    """The worker's CPU per request for a call and for an L1 hit, on one trace's worker."""

    call_cpu_ms: float | None
    hit_cpu_ms: float | None
    # Share of the hit phase answered from L1 (1.0 unless the cache misbehaved).
    hit_share: float | None
    # The L1's bytes per entry by the worker's gauges (None: gauges not read).
    gauge_entry_bytes: float | None


def build_row(
    *,
    trace: str,
    pct: float,
    keys: Sequence[Hashable],
    entry_bytes: int,
    plan: CachePlan,
    runs: Mapping[str, Mapping[str, Any]],
    calibration: Calibration,
) -> dict[str, Any]:
    """The report's row for one trace and capacity: the pipeline's L1 hit ratio per policy,
    the simulator's on the same keys, Belady's optimum, and the kept policy's calls and
    times."""
    n = len(keys)
    capacity = capacity_for(keys, pct)
    belady = belady_hits(keys, capacity) / n
    sim = {policy: policy_hits(keys, policy, capacity) / n for policy in plan.policies}
    lru, kept = runs[LRU], runs[plan.kept]
    lru_ratio, kept_ratio = lru["l1_hit_ratio"], kept["l1_hit_ratio"]
    return {
        "trace": trace,
        "capacity_pct": pct,
        "capacity_entries": capacity,
        "l1_max_bytes": capacity * entry_bytes,
        "entry_bytes": entry_bytes,
        "requests": n,
        "unique_keys": len(set(keys)),
        "kept": plan.kept,
        "lru_hit_ratio": lru_ratio,
        "kept_hit_ratio": kept_ratio,
        "belady_hit_ratio": round(belady, 4),
        "gap_closed": _round(gap_closed(kept_ratio, lru_ratio, belady)),
        "sim_lru_hit_ratio": round(sim[LRU], 4),
        "sim_kept_hit_ratio": round(sim[plan.kept], 4),
        "sim_gap_closed": _round(gap_closed(sim[plan.kept], sim[LRU], belady)),
        "provider_calls": kept["provider_calls"],
        "coalesced": kept["hits"][COALESCED],
        "p50_ms": kept["p50_ms"],
        "p99_ms": kept["p99_ms"],
        "hit_cpu_ms": calibration.hit_cpu_ms,
        "call_cpu_ms": calibration.call_cpu_ms,
        "calibration": {
            "requests": plan.calibration,
            "hit_share": calibration.hit_share,
            "worker_entry_bytes": calibration.gauge_entry_bytes,
        },
        "ttl_s": plan.ttl_s,
        "window": plan.window,
        "l2": plan.l2,
        "policies": dict(runs),
    }


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _ms(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


# -- the runs ------------------------------------------------------------------------------


@dataclass
class _Bench:
    """What the runs share: the broker, the fake, the declaration and the progress bars."""

    tmp: Path
    servers: str
    plan: CachePlan
    fake: Child
    provider_dirs: str  # CALLSTREAM_PROVIDER_DIRS for every worker
    entry_bytes: int
    progress: Progress
    stamp: str = field(default_factory=lambda: str(int(time.time())))

    def cache_env(self, policy: str, l1_max_bytes: int) -> dict[str, str]:
        l2 = str(L2_MAX_BYTES) if self.plan.l2 else "0"
        return {
            "CALLSTREAM_CACHE__ENABLED": "true",
            "CALLSTREAM_CACHE__POLICY": policy,
            "CALLSTREAM_CACHE__L1_MAX_BYTES": str(l1_max_bytes),
            "CALLSTREAM_CACHE__L2_MAX_BYTES_PER_PARTITION": l2,
            "CALLSTREAM_PROVIDER_DIRS": self.provider_dirs,
        }

    def worker(self, name: str, policy: str, l1_max_bytes: int) -> tuple[Child, Settings]:
        """A ready worker on fresh topics (its own app id and data dir), and the settings to
        publish to it."""
        prefix = f"bench-cache-{name}.{self.stamp}"
        topics = bench_topics(prefix)
        env = bench_worker_env(
            self.tmp,
            self.servers,
            self.fake.url,
            prefix,
            topics,
            **self.cache_env(policy, l1_max_bytes),
        )
        child = start_worker(self.tmp, env, name=prefix)
        try:
            wait_worker_ready(child, timeout_s=90)
        except BaseException:
            child.stop()
            raise
        settings = Settings(kafka=KafkaSettings(bootstrap_servers=self.servers), topics=topics)
        return child, settings

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.fake.url}/_fake/stats", timeout=10)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats


def measure_cache(
    tmp: Path, servers: str, plan: CachePlan, console: Console
) -> list[dict[str, Any]]:
    """Replay every trace of ``plan`` at every capacity, LRU then the kept policy; returns the
    rows of ``{"cache": [...]}``."""
    overrides = declaration_overrides(plan.ttl_s)
    spec = FAKE_PROVIDER.with_overrides(overrides)
    directory = declare_fake(tmp / "providers", overrides)
    fake = start_fake_provider(
        tmp, "--api-key", DEMO_API_KEY, "--latency-ms", f"{plan.latency_ms:g}"
    )
    progress = Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    try:
        answer = httpx.get(
            f"{fake.url}/v1/items/{distinct_ids(1, TRACE_PREFIX)[0]}",
            headers={"X-API-Key": DEMO_API_KEY},
            timeout=10,
        )
        size = entry_size(spec, answer.status_code, answer.headers, answer.content)
        console.print(
            f"fake provider {fake.url}; one entry is {size} bytes; TTL {plan.ttl_s:g} s; "
            f"window {plan.window}; L2 {'on' if plan.l2 else 'off'}"
        )
        bench = _Bench(tmp, servers, plan, fake, json.dumps([str(directory)]), size, progress)
        rows: list[dict[str, Any]] = []
        with progress:
            for trace in plan.traces:
                rows += _measure_trace(bench, trace, console)
        return rows
    finally:
        fake.stop()


def _measure_trace(bench: _Bench, trace: str, console: Console) -> list[dict[str, Any]]:
    keys: list[Hashable] = list(trace_keys(trace))
    if bench.plan.limit is not None:
        keys = keys[: bench.plan.limit]
    ids = item_ids(keys)
    calibration = _calibrate(bench, trace)
    if calibration.gauge_entry_bytes not in (None, float(bench.entry_bytes)):
        console.print(
            f"[yellow]{trace}: the worker counts {calibration.gauge_entry_bytes:g} bytes per "
            f"L1 entry, the bench {bench.entry_bytes}: capacities are off[/]"
        )
    rows = []
    for pct in bench.plan.capacity_pcts:
        capacity = capacity_for(keys, pct)
        runs: dict[str, Mapping[str, Any]] = {
            policy: _replay_run(bench, trace, pct, policy, ids, capacity * bench.entry_bytes)
            for policy in bench.plan.policies
        }
        rows.append(
            build_row(
                trace=trace,
                pct=pct,
                keys=keys,
                entry_bytes=bench.entry_bytes,
                plan=bench.plan,
                runs=runs,
                calibration=calibration,
            )
        )
    return rows


def _replay_run(
    bench: _Bench, trace: str, pct: float, policy: str, ids: Sequence[str], l1_max_bytes: int
) -> dict[str, Any]:
    task = bench.progress.add_task(f"{trace} {pct:g}% {policy}: starting", total=len(ids))
    worker, settings = bench.worker(f"{trace}-{pct:g}-{policy}", policy, l1_max_bytes)
    try:
        bench.progress.update(task, description=f"{trace} {pct:g}% {policy}")
        before = bench.stats()
        cpu = ProcessCpu({"worker": [worker.process.pid]})
        started = time.perf_counter()
        tally = run(
            replay(
                settings,
                ids,
                bench.plan.window,
                worker,
                lambda n: bench.progress.update(task, completed=n),
            )
        )
        seconds = time.perf_counter() - started
        spent = cpu.spent().get("worker")
        after = bench.stats()
    finally:
        worker.stop()
    return run_figures(
        tally,
        provider_calls=after["calls_total"] - before["calls_total"],
        not_modified=after.get("not_modified", 0) - before.get("not_modified", 0),
        seconds=seconds,
        worker_cpu_s=spent,
    )


def _calibrate(bench: _Bench, trace: str) -> Calibration:
    """Calls then L1 hits of the same N cold keys, after a warm-up, on a worker of the kept
    policy whose L1 holds them all."""
    n = bench.plan.calibration
    warm, cold = distinct_ids(WARM_UP_REQUESTS, WARM_PREFIX), distinct_ids(n, COLD_PREFIX)
    entries = len(warm) + len(cold)
    task = bench.progress.add_task(f"{trace} calibration: starting", total=2 * (len(warm) + n))
    worker, settings = bench.worker(
        f"{trace}-calibration", bench.plan.kept, 2 * entries * bench.entry_bytes
    )
    window = CALIBRATION_WINDOW
    try:
        bench.progress.update(task, description=f"{trace} calibration (calls, hits)")
        done = 0

        def phase(ids: Sequence[str]) -> tuple[RunTally, float | None]:
            nonlocal done
            cpu = ProcessCpu({"worker": [worker.process.pid]})
            base = done
            tally = run(
                replay(
                    settings,
                    ids,
                    window,
                    worker,
                    lambda k: bench.progress.update(task, completed=base + k),
                )
            )
            done += len(ids)
            return tally, cpu.spent().get("worker")

        phase(warm)
        phase(warm)
        calls, call_cpu_s = phase(cold)
        hits, hit_cpu_s = phase(cold)
        gauge = _gauge_entry_bytes(worker.url, entries)
    finally:
        worker.stop()
    return Calibration(
        call_cpu_ms=_per_request_ms(call_cpu_s, calls.kinds[CALL]),
        hit_cpu_ms=_per_request_ms(hit_cpu_s, hits.kinds["l1"]),
        hit_share=_ratio(hits.kinds["l1"], hits.done),
        gauge_entry_bytes=gauge,
    )


def _per_request_ms(cpu_s: float | None, count: int) -> float | None:
    return None if cpu_s is None or count == 0 else round(cpu_s * 1000 / count, 4)


def _gauge_entry_bytes(worker_url: str, entries: int) -> float | None:
    """The L1's bytes per entry by the worker's gauges, once they count ``entries``; None if
    they do not within GAUGE_WAIT_S."""
    deadline = time.monotonic() + GAUGE_WAIT_S
    while time.monotonic() < deadline:
        try:
            text = httpx.get(f"{worker_url}/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        held = _l1_gauges(text)
        if held is not None and held[1] >= entries:
            return round(held[0] / held[1], 1)
        time.sleep(0.5)
    return None


def _l1_gauges(metrics: str) -> tuple[float, float] | None:
    """The L1's (bytes, entries) gauges, or None if the worker has none."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.labels.get("tier") == "l1" and sample.name in (
                "callstream_cache_bytes",
                "callstream_cache_entries",
            ):
                found[sample.name] = float(sample.value)
    if len(found) < 2 or not found["callstream_cache_entries"]:
        return None
    return found["callstream_cache_bytes"], found["callstream_cache_entries"]


async def replay(
    settings: Settings,
    ids: Sequence[str],
    window: int,
    worker: Child,
    on_progress: Callable[[int], object],
) -> RunTally:
    """Publish a request per item id, in order, with at most ``window`` without an outcome;
    return when each has its outcome.

    Raises:
        BenchStalled: no outcome for STALL_S, or the worker exited.
    """
    async with counted_replay(settings, on_progress) as (tally, freed, publish):
        index = 0
        while index < len(ids) or tally.outstanding:
            room = window - tally.outstanding
            if index < len(ids) and room > 0:
                batch = ids[index : index + room]
                index += len(batch)
                await publish(batch)
                continue
            freed.clear()
            await _wait_outcome(freed, worker, tally)
    return tally


# Publishes a request per item id, each noted in the tally as sent now.
Publish = Callable[[Sequence[str]], Awaitable[None]]


@contextlib.asynccontextmanager
async def counted_replay(
    settings: Settings, on_progress: Callable[[int], object]
) -> AsyncIterator[tuple[RunTally, asyncio.Event, Publish]]:
    """A replay's plumbing, shared by the cache and prefetch benches: a tally fed by the
    outcomes read back (``freed`` set at each), and how to publish a batch of item ids."""
    tally = RunTally()
    freed = asyncio.Event()

    def outcome(counted: bool) -> None:
        if counted:
            on_progress(tally.done)
            freed.set()

    async with CallstreamClient(settings) as client:

        async def publish(items: Sequence[str]) -> None:
            batch = [_request(item) for item in items]
            sent = time.perf_counter()
            for request in batch:
                tally.published(request.request_id, sent)
            await client.publish_many(batch)

        readers = read_outcomes(
            client,
            lambda event: outcome(tally.add_result(event, time.perf_counter())),
            lambda letter: outcome(tally.add_dead_letter(letter, time.perf_counter())),
        )
        try:
            yield tally, freed, publish
        finally:
            await cancel_all(readers)


def _request(item_id: str) -> RequestEvent:
    return RequestEvent(provider=PROVIDER, operation=OPERATION, params={"item_id": item_id})


async def _wait_outcome(freed: asyncio.Event, worker: Child, tally: RunTally) -> None:
    """Until the next outcome; checks every second that the worker still runs.

    Raises:
        BenchStalled: the worker exited, or no outcome for STALL_S; names a copy of the
            worker's log kept outside the scratch directory (removed on exit).
    """
    deadline = time.monotonic() + STALL_S
    while not freed.is_set():
        if not worker.alive():
            raise BenchStalled(
                f"worker {worker.name} exited with {worker.process.returncode} after "
                f"{tally.done} outcomes; see {_keep_log(worker)}"
            )
        if time.monotonic() > deadline:
            raise BenchStalled(
                f"no outcome for {STALL_S:g} s with {tally.outstanding} requests waiting "
                f"after {tally.done} outcomes; see {_keep_log(worker)}"
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(freed.wait(), 1.0)


def _keep_log(worker: Child) -> Path:
    kept = Path(tempfile.gettempdir()) / worker.log_path.name
    with contextlib.suppress(OSError):
        shutil.copyfile(worker.log_path, kept)
    return kept


# -- the report ----------------------------------------------------------------------------


def print_cache(console: Console, rows: Sequence[Mapping[str, Any]]) -> None:
    """The rows as a table (hit ratios against Belady's, the kept policy's calls and times),
    then the worker's CPU for a hit and a call per trace."""
    if not rows:
        return
    first = rows[0]
    kept = first["kept"]
    table = Table(
        title=f"cache: L1 hit ratio, LRU vs {kept} vs Belady (TTL {first['ttl_s']:g} s, "
        f"window {first['window']}, L2 {'on' if first['l2'] else 'off'})",
        caption="gap: share of the LRU-to-Belady gap the kept policy closes, in the pipeline "
        f"/ in the simulator; calls and p50/p99 ms: the {kept} run",
    )
    # Short headers: the table must fit an 80-column terminal or a CI log.
    for column in ("trace", "capacity", "lru", kept, "belady", "gap", "calls", "p50/p99"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["trace"],
            f"{row['capacity_pct']:g}% ({row['capacity_entries']})",
            _share(row["lru_hit_ratio"], 1),
            _share(row["kept_hit_ratio"], 1),
            _share(row["belady_hit_ratio"], 1),
            f"{_share(row['gap_closed'])}/{_share(row['sim_gap_closed'])}",
            str(row["provider_calls"]),
            f"{_num(row['p50_ms'], 0)}/{_num(row['p99_ms'], 0)}",
        )
    console.print(table)
    shown: set[str] = set()
    for row in rows:
        if row["trace"] in shown:
            continue
        shown.add(row["trace"])
        hit, call = row["hit_cpu_ms"], row["call_cpu_ms"]
        ratio = f" ({hit / call:.0%} of a call)" if hit is not None and call else ""
        console.print(
            f"{row['trace']}: the worker's CPU per L1 hit {_num(hit, 3)} ms, per call "
            f"{_num(call, 3)} ms{ratio}"
        )


def _share(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}%}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
