"""`callstream bench prefetch`: the real traces, time-compressed, through the worker's cache and
the predictive-cache agent, for TTL only, the static rule and the online model (issue 24).

Each trace (NASA 1995, the 2015 Apache log: ``agents.cache.traces``, real timestamps, ordered by
time) is cut to a portion from its start (``--hours``, default 2, or ``--limit``) and published
request by request at its own time divided by the speedup (``--speedup``, default 60), as the
fake provider's cacheable item operation (one item per trace key, ``cache_bench.item_ids``).
The bench's declaration of the fake gives it one fixed TTL, the trace's TTL compressed alike
(``--ttl-s``, default 300 s of trace time: 5 s of real time); the agent's ``lead_s`` is
compressed the same way (``--lead-s``, default 60 s of trace time: 1 s). So every variant sees
the trace's inter-arrival times relative to the TTL, as ``agents.prefetch.simulate`` does
(whose figures on the same portion each row carries as ``sim``).

Why these defaults: the full run (both traces x ttl, rule, model; no ``--rebalance``) must end
within ~15 minutes on this 2-core machine, and compression must not let the pipeline's own
latencies decide. At 60x the TTL is 5 s and the lead 1 s of real time: five of the agent's
0.2 s ticks and some twenty Kafka round trips, so a decision is taken (and its prefetch served)
before the expiry, while the lead costs 20% of an entry's life (a refreshed entry expires one
lead earlier than in the simulator, which refreshes at the expiry itself). Two hours of each
trace then replay in two minutes (NASA: 2,210 requests; Apache: 185 in its two one-minute
samples, 61 s of replay); on NASA's first two hours the simulator's rule gains about what it
gains on the whole log (+11.8 hit points for +22.9% calls; whole log +9.7 for +20.4%). 30x
(a 10 s TTL) would double the run time; 120x (a 0.5 s lead) puts the lead within the tick and
the round trips. The full run takes about 10 minutes here (each replay plus ~8 s to start and
stop its processes, and the broker's start).

Compression is faithful for the rule (a count of reads since the fetch) but not for the model:
its features' half-lives (300 s, 1 h) and hour of day are wall-clock times in the agent, so at
60x its inputs differ from the simulator's model on the same trace (``sim``).

Every run gets fresh processes and topics (its own app id): the fake provider, with a strict
rate limit at the ttl-only calls' peak (the most calls in one real second, burst the most in
0.2 s, from an offline replay of the same portion), which the worker declares too; a worker
with the cache (L1 only) and access events on (``ttl`` included, so every variant pays them);
and, but for ``ttl``, a ``callstream prefetcher`` with the variant's decider. The worker's
prefetch budget floor (``budget_min_per_s``, per real second) is scaled by the speedup, like
every other duration. Hits come from the results, provider calls and 429s from the fake, the
prefetch calls, uses and skips from the worker's ``/metrics``, the decisions from the agent's,
prefetches issued (and repeats of one decision: same key and expiry) from the requests topic,
and the agent's CPU from ``/proc`` (over the replay, and idle for a few seconds before it).

``--rebalance`` runs each rule and model variant twice: as above, and with a second prefetcher
of the same app id started at the middle of the replay and stopped at 85% of it
(``--rebalance-window``; two rebalances of the agent's group; state comes back from its
table). The row's ``rebalance_prefetch_ratio`` is the prefetches of the second run over the
first's.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agents.prefetch.simulate import EPOCH_S, compare, load
from providers.declaration import ProviderSpec
from providers.fake.provider import FAKE_PROVIDER
from schemas.codec import Codecs, EventCodec
from schemas.errors import DecodeError
from schemas.models import RequestEvent, now_ms
from streams.cli.common import run
from streams.cli.dev.cache_bench import (
    BenchStalled,
    RunTally,
    counted_replay,
    declaration_overrides,
    distinct_ids,
    entry_size,
    item_ids,
    percentile,
)
from streams.cli.dev.dev_cmd import DEMO_API_KEY
from streams.cli.dev.processes import (
    Child,
    free_port,
    spawn,
    start_fake_provider,
    start_worker,
    wait_http,
    wait_worker_ready,
)
from streams.cli.dev.roundtrip import (
    bench_topics,
    bench_worker_env,
    declare_fake,
)
from streams.cli.dev.throughput import ProcessCpu
from streams.kafka import reader
from streams.settings import KafkaSettings, PrefetchSettings, Settings, TopicSettings

__all__ = [
    "TIMED_TRACES",
    "VARIANTS",
    "PrefetchPlan",
    "RunFigures",
    "build_row",
    "check_plan",
    "duplicates",
    "extra_calls_pct",
    "measure_prefetch",
    "metric_by_label",
    "parse_variants",
    "parse_window",
    "peak",
    "portion",
    "prefetch_traces",
    "print_prefetch",
    "provider_limit",
    "ratio",
    "schedule",
    "simulated",
    "timed_replay",
    "ttl_call_times",
]

# The traces with timestamps (web07 has none: a TTL means nothing there).
TIMED_TRACES = tuple(EPOCH_S)
VARIANTS = ("ttl", "rule", "model")
DEFAULT_SPEEDUP = 60.0
DEFAULT_HOURS = 2.0
DEFAULT_TTL_S = 300.0  # trace time: the reference
DEFAULT_LEAD_S = 60.0  # trace time: 1 s of real time at the default speedup
# Below these (real time) the agent's 0.2 s tick and the Kafka round trips decide.
MIN_LEAD_REAL_S = 0.4
MIN_TTL_REAL_S = 1.0
BURST_WINDOW_S = 0.2  # real time: the limit's burst is the ttl-only calls' peak in this window
IDLE_S = 3.0  # the agent's idle CPU is measured this long before the replay
STALL_S = 60.0
READY_S = 90.0
# The second prefetcher of a --rebalance run: started and stopped at these shares of the replay.
REBALANCE_START, REBALANCE_STOP = 0.5, 0.85
HIT_TIERS = ("l1", "l2")
PROBE_PREFIX = "p"  # the item asked before a run, apart from the trace's ("k...")
PREFETCH_TRACES_HELP = ", ".join(TIMED_TRACES)


@dataclass(frozen=True)
class PrefetchPlan:
    """What every run gets. Durations are in trace time; real time divides them by
    ``speedup``."""

    traces: tuple[str, ...] = TIMED_TRACES
    variants: tuple[str, ...] = VARIANTS
    speedup: float = DEFAULT_SPEEDUP
    hours: float | None = DEFAULT_HOURS
    limit: int | None = None
    ttl_s: float = DEFAULT_TTL_S
    lead_s: float = DEFAULT_LEAD_S
    rebalance: bool = False
    # When the second prefetcher of a --rebalance run starts and stops: shares of the replay.
    rebalance_window: tuple[float, float] = (REBALANCE_START, REBALANCE_STOP)
    # The worker's prefetch budget floor, per second of trace time (the setting's default).
    budget_min_per_s: float = PrefetchSettings.model_fields["budget_min_per_s"].default

    @property
    def ttl_real_s(self) -> float:
        return self.ttl_s / self.speedup

    @property
    def lead_real_s(self) -> float:
        return self.lead_s / self.speedup


def prefetch_traces(values: Sequence[str] | None) -> tuple[str, ...]:
    """Trace names from repeated options and comma lists (both timed traces if none).

    Raises:
        ValueError: an unknown name, or one without timestamps, as one line.
    """
    names = _names(values)
    for name in names:
        if name not in TIMED_TRACES:
            known = f"; known: {PREFETCH_TRACES_HELP}"
            why = "has no timestamps" if name == "web07" else "is not a trace"
            raise ValueError(f"{name!r} {why}{known}")
    return tuple(name for name in TIMED_TRACES if name in names) if names else TIMED_TRACES


def parse_variants(values: Sequence[str] | None) -> tuple[str, ...]:
    """Variants from repeated options and comma lists (all three if none), in report order.

    Raises:
        ValueError: an unknown variant, as one line.
    """
    names = _names(values)
    if unknown := [name for name in names if name not in VARIANTS]:
        raise ValueError(f"unknown variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    return tuple(name for name in VARIANTS if name in names) if names else VARIANTS


def parse_window(value: str) -> tuple[float, float]:
    """``START,STOP``: two shares of the replay, ``0 <= START < STOP <= 1``.

    Raises:
        ValueError: anything else, as one line.
    """
    try:
        start, stop = (float(part) for part in value.split(","))
    except ValueError:
        raise ValueError(f"{value!r} is not START,STOP (two shares of the replay)") from None
    if not 0 <= start < stop <= 1:
        raise ValueError(f"{value!r}: START,STOP must be shares with 0 <= START < STOP <= 1")
    return start, stop


def _names(values: Sequence[str] | None) -> list[str]:
    return [name.strip() for value in values or () for name in value.split(",") if name.strip()]


def check_plan(plan: PrefetchPlan) -> None:
    """Refuse a plan whose compressed TTL or lead the pipeline's own latencies would decide.

    Raises:
        ValueError: as one line naming the option to change.
    """
    if plan.lead_s >= plan.ttl_s:
        raise ValueError(f"--lead-s {plan.lead_s:g} must be shorter than --ttl-s {plan.ttl_s:g}")
    for option, trace_s, floor in (
        ("--ttl-s", plan.ttl_s, MIN_TTL_REAL_S),
        ("--lead-s", plan.lead_s, MIN_LEAD_REAL_S),
    ):
        if trace_s / plan.speedup < floor:
            raise ValueError(
                f"{option} {trace_s:g} at --speedup {plan.speedup:g} is "
                f"{trace_s / plan.speedup:.2g} s of real time, under the {floor:g} s that the "
                f"agent's 0.2 s tick and Kafka's round trips need; raise {option} or lower "
                "--speedup"
            )


# -- the trace, offline --------------------------------------------------------------------


def portion(
    rows: Sequence[tuple[float, Hashable]], *, hours: float | None, limit: int | None
) -> list[tuple[float, Hashable]]:
    """The requests of ``rows`` ((epoch s, key), by time) in the first ``hours`` after the
    first one, then the first ``limit`` of those (None: no cut)."""
    if not rows:
        return []
    start = rows[0][0]
    kept = [row for row in rows if hours is None or row[0] - start < hours * 3600]
    return kept[:limit] if limit is not None else kept


def schedule(rows: Sequence[tuple[float, Hashable]], speedup: float) -> list[float]:
    """Each request's real-time offset from the replay's start: its trace time divided by
    ``speedup``."""
    if not rows:
        return []
    start = rows[0][0]
    return [(at - start) / speedup for at, _ in rows]


def ttl_call_times(rows: Sequence[tuple[float, Hashable]], ttl_s: float) -> list[float]:
    """When the ttl-only variant calls the provider: each request whose key has no entry fresh
    (an unbounded cache, as ``simulate.replay``)."""
    expires: dict[Hashable, float] = {}
    calls = []
    for at, key in rows:
        if at < expires.get(key, -math.inf):
            continue
        expires[key] = at + ttl_s
        calls.append(at)
    return calls


def peak(times: Sequence[float], window_s: float) -> int:
    """The most of ``times`` (ascending) within any ``window_s``-long half-open window."""
    best = 0
    for index, at in enumerate(times):
        first = bisect.bisect_right(times, at - window_s, 0, index)
        best = max(best, index - first + 1)
    return best


def provider_limit(
    rows: Sequence[tuple[float, Hashable]], *, ttl_s: float, speedup: float
) -> tuple[int, int]:
    """The fake's rate limit near the trace's peak: (per real second, burst), the most
    ttl-only calls in one real second and in ``BURST_WINDOW_S``."""
    calls = ttl_call_times(rows, ttl_s)
    return max(1, peak(calls, speedup)), max(1, peak(calls, speedup * BURST_WINDOW_S))


def simulated(
    trace: str, rows: Sequence[tuple[float, Hashable]], ttl_s: float
) -> dict[str, dict[str, Any]]:
    """``agents.prefetch.simulate`` on the same portion (trace time, refreshes at the expiry):
    each variant's hit ratio, extra calls and precision."""
    return {
        row.variant: {
            "hit_ratio": round(row.hit_ratio, 4),
            "extra_calls_pct": round(row.extra_calls_pct, 1),
            "precision": _round(row.precision),
            "prefetches": row.refreshes,
        }
        for row in compare({trace: rows}, ttl_s=ttl_s)
    }


# -- figures and rows ----------------------------------------------------------------------


@dataclass(frozen=True)
class RunFigures:
    """What one run of one variant measured."""

    requests: int
    hits: int  # answered from L1 or L2
    coalesced: int  # waited for another request's call of the key
    failed: int  # neither a hit nor an answer from a call
    p50_ms: float | None
    p99_ms: float | None
    provider_calls: int
    violations: int  # the fake's 429s
    provider_peak_1s: int  # the most arrivals at the fake in one second
    prefetches: int  # prefetch requests the agent published (on the requests topic)
    duplicate_prefetches: int  # beyond the first for one key and expiry
    prefetch_calls: Mapping[str, int] = field(default_factory=dict)  # the worker's, by result
    prefetch_skipped: Mapping[str, int] = field(default_factory=dict)  # by reason
    prefetch_used: int = 0
    decisions: Mapping[str, int] = field(default_factory=dict)  # the agent's, by verdict
    access_events: Mapping[str, int] = field(default_factory=dict)  # read by the agent, by kind
    ticks: int = 0  # the agent's ticks to quiet access partitions
    outcomes: Mapping[str, int] = field(default_factory=dict)  # results by kind (result_kind)
    seconds: float = 0.0  # the replay, first publish to last outcome
    agent_cpu_s: float | None = None
    agent_idle_cpu_share: float | None = None  # of one core, before the replay
    worker_cpu_s: float | None = None
    second: Mapping[str, Any] | None = None  # the second prefetcher of a --rebalance run

    @property
    def prefetch_calls_made(self) -> int:
        return sum(self.prefetch_calls.values())


def ratio(part: float, whole: float) -> float | None:
    """``part / whole`` to 4 decimals; None for nothing to divide."""
    return round(part / whole, 4) if whole else None


def extra_calls_pct(calls: int, base_calls: int | None) -> float | None:
    """Provider calls over the ttl-only run's, in % (None without a ttl run)."""
    return round(100.0 * (calls / base_calls - 1.0), 1) if base_calls else None


def duplicates(decisions: Sequence[Hashable]) -> int:
    """Prefetches beyond the first of each decision (a key and the expiry it refreshes)."""
    return len(decisions) - len(set(decisions))


def agent_cpu(run: RunFigures) -> dict[str, float | None]:
    """The agent's CPU over the replay: share of one core, idle share before the replay, and
    per access event read, net of the idle share (µs)."""
    spent, idle = run.agent_cpu_s, run.agent_idle_cpu_share
    if spent is None or run.seconds <= 0:
        return {"agent_cpu_pct": None, "agent_idle_cpu_pct": None, "agent_cpu_us_per_event": None}
    net = spent - (idle or 0.0) * run.seconds
    events = sum(run.access_events.values())
    per_event = net * 1e6 / events if events else None
    return {
        "agent_cpu_pct": round(100 * spent / run.seconds, 2),
        "agent_idle_cpu_pct": None if idle is None else round(100 * idle, 2),
        "agent_cpu_us_per_event": None if per_event is None else round(max(0.0, per_event), 1),
    }


def build_row(
    *,
    trace: str,
    variant: str,
    run: RunFigures,
    base: RunFigures | None,
    plan: PrefetchPlan,
    limit: tuple[int, int],
    sim: Mapping[str, Any] | None = None,
    rebalanced: RunFigures | None = None,
) -> dict[str, Any]:
    """The report's row for one trace and variant; ``base`` is the trace's ttl-only run,
    ``rebalanced`` the same variant's run with a rebalance of the agent's group."""
    n = run.requests
    made = run.prefetch_calls_made
    row: dict[str, Any] = {
        "trace": trace,
        "variant": variant,
        "requests": n,
        "hit_ratio": ratio(run.hits, n),
        "coalesced_ratio": ratio(run.coalesced, n),
        "provider_calls": run.provider_calls,
        "extra_calls_pct": extra_calls_pct(
            run.provider_calls, base.provider_calls if base else None
        ),
        "precision": ratio(run.prefetch_used, made),
        "wasted_calls": max(0, made - run.prefetch_used),
        "p50_ms": run.p50_ms,
        "p99_ms": run.p99_ms,
        "p99_vs_ttl_pct": _pct_over(run.p99_ms, base.p99_ms if base else None),
        "violations": run.violations,
        "failed": run.failed,
        "prefetches_issued": run.prefetches,
        "duplicate_prefetches": run.duplicate_prefetches,
        "prefetch_calls": made,
        "prefetch_calls_by_result": dict(sorted(run.prefetch_calls.items())),
        "prefetch_used": run.prefetch_used,
        "prefetches_skipped": dict(sorted(run.prefetch_skipped.items())),
        "decisions": dict(sorted(run.decisions.items())),
        "revalidated_ratio": ratio(run.outcomes.get("revalidated", 0), n),
        "outcomes": dict(sorted(run.outcomes.items())),
        "access_events": dict(sorted(run.access_events.items())),
        "agent_ticks": run.ticks,
        **agent_cpu(run),
        "worker_cpu_ms_per_request": (
            round(run.worker_cpu_s * 1000 / n, 3) if run.worker_cpu_s is not None and n else None
        ),
        "limit_per_s": limit[0],
        "limit_burst": limit[1],
        "provider_peak_1s": run.provider_peak_1s,
        "seconds": round(run.seconds, 1),
        "speedup": plan.speedup,
        "hours": plan.hours,
        "limit": plan.limit,
        "ttl_s": plan.ttl_s,
        "lead_s": plan.lead_s,
        "ttl_real_s": round(plan.ttl_real_s, 3),
        "lead_real_s": round(plan.lead_real_s, 3),
        "sim": dict(sim or {}),
    }
    if rebalanced is not None:
        row["rebalance_prefetch_ratio"] = ratio(rebalanced.prefetches, run.prefetches)
        row["rebalance"] = {
            "prefetches_issued": rebalanced.prefetches,
            "duplicate_prefetches": rebalanced.duplicate_prefetches,
            "hit_ratio": ratio(rebalanced.hits, rebalanced.requests),
            "provider_calls": rebalanced.provider_calls,
            "violations": rebalanced.violations,
            "decisions": dict(sorted(rebalanced.decisions.items())),
            "second_prefetcher": dict(rebalanced.second or {}),
        }
    return row


def _pct_over(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else round(100.0 * (value / base - 1.0), 1)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def metric_by_label(text: str, name: str, label: str | None = None) -> dict[str, int]:
    """A counter's samples named ``name`` in a Prometheus text page, summed by ``label`` (all
    under "" without one)."""
    found: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[sample.labels.get(label, "") if label else ""] += int(sample.value)
    return dict(found)


# -- the runs ------------------------------------------------------------------------------


@dataclass
class _Bench:
    """What the runs share: the broker, the declaration and the progress bars."""

    tmp: Path
    servers: str
    plan: PrefetchPlan
    provider_dirs: str  # CALLSTREAM_PROVIDER_DIRS for every worker
    progress: Progress
    stamp: str = field(default_factory=lambda: str(int(time.time())))

    def env(
        self, prefix: str, topics: TopicSettings, fake: Child, variant: str, limit: tuple[int, int]
    ) -> dict[str, str]:
        """The worker's and the prefetchers' settings (each process gets its own data dir)."""
        plan = self.plan
        return bench_worker_env(
            self.tmp,
            self.servers,
            fake.url,
            prefix,
            topics,
            CALLSTREAM_TOPICS__ACCESS=topics.access,
            CALLSTREAM_PROVIDER_DIRS=self.provider_dirs,
            CALLSTREAM_PROVIDERS__FAKE__RATE_PER_S=str(limit[0]),
            CALLSTREAM_PROVIDERS__FAKE__BURST=str(limit[1]),
            CALLSTREAM_CACHE__ENABLED="true",
            CALLSTREAM_CACHE__L2_MAX_BYTES_PER_PARTITION="0",
            CALLSTREAM_PREFETCH__ENABLED="true",
            CALLSTREAM_PREFETCH__LEAD_S=f"{plan.lead_real_s:g}",
            CALLSTREAM_PREFETCH__BUDGET_MIN_PER_S=f"{plan.budget_min_per_s * plan.speedup:g}",
            CALLSTREAM_PREFETCH__DECIDER="model" if variant == "model" else "rule",
        )

    def prefetcher(self, env: Mapping[str, str], name: str) -> Child:
        """A `callstream prefetcher` process on its own data dir and port (not waited for)."""
        port = free_port()
        argv = ["-m", "streams", "prefetcher", "--web-port", str(port)]
        child = spawn(
            name,
            [sys.executable, *argv],
            {**env, "CALLSTREAM_DATA_DIR": str(self.tmp / name)},
            self.tmp,
        )
        child.url = f"http://127.0.0.1:{port}"
        return child


def measure_prefetch(
    tmp: Path, servers: str, plan: PrefetchPlan, console: Console
) -> list[dict[str, Any]]:
    """Replay each trace of ``plan`` for each variant; returns the rows of
    ``{"prefetch": [...]}``."""
    overrides = declaration_overrides(plan.ttl_real_s)
    directory = declare_fake(tmp / "providers", overrides)
    progress = Progress(
        TextColumn("{task.description:<36}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    bench = _Bench(tmp, servers, plan, json.dumps([str(directory)]), progress)
    rows: list[dict[str, Any]] = []
    with progress:
        for trace in plan.traces:
            rows += _measure_trace(bench, trace, FAKE_PROVIDER.with_overrides(overrides), console)
    return rows


def _measure_trace(
    bench: _Bench, trace: str, spec: ProviderSpec, console: Console
) -> list[dict[str, Any]]:
    plan = bench.plan
    rows = portion(load(trace), hours=plan.hours, limit=plan.limit)  # never empty: hours > 0
    offsets = schedule(rows, plan.speedup)
    ids = item_ids(key for _, key in rows)
    limit = provider_limit(rows, ttl_s=plan.ttl_s, speedup=plan.speedup)
    sim = simulated(trace, rows, plan.ttl_s)
    console.print(
        f"{trace}: {len(rows)} requests, {len(set(ids))} keys over {offsets[-1]:.0f} s of "
        f"replay; TTL {plan.ttl_real_s:g} s, lead {plan.lead_real_s:g} s (real); fake limited "
        f"to {limit[0]}/s, burst {limit[1]}"
    )
    timed = list(zip(offsets, ids, strict=True))
    base: RunFigures | None = None
    out = []
    for variant in plan.variants:
        figures = _run(bench, trace, variant, timed, limit, spec, rebalance=False)
        rebalanced = None
        if plan.rebalance and variant != "ttl":
            rebalanced = _run(bench, trace, variant, timed, limit, spec, rebalance=True)
        if variant == "ttl":
            base = figures
        out.append(
            build_row(
                trace=trace,
                variant=variant,
                run=figures,
                base=base,
                plan=plan,
                limit=limit,
                sim=sim.get(variant),
                rebalanced=rebalanced,
            )
        )
    return out


def _run(
    bench: _Bench,
    trace: str,
    variant: str,
    timed: Sequence[tuple[float, str]],
    limit: tuple[int, int],
    spec: ProviderSpec,
    *,
    rebalance: bool,
) -> RunFigures:
    name = f"{trace}-{variant}{'-rebalance' if rebalance else ''}"
    task = bench.progress.add_task(f"{name}: starting", total=len(timed))
    prefix = f"bench-prefetch-{name}.{bench.stamp}"
    topics = bench_topics(prefix).model_copy(update={"access": f"{prefix}.access"})
    fake = start_fake_provider(
        bench.tmp, "--api-key", DEMO_API_KEY, "--rate", str(limit[0]), "--burst", str(limit[1])
    )
    children = [fake]
    try:
        _check_entry(fake, spec)
        env = bench.env(prefix, topics, fake, variant, limit)
        worker = start_worker(bench.tmp, env, name=prefix)
        children.append(worker)
        agent = None
        if variant != "ttl":
            agent = bench.prefetcher(env, f"{prefix}-prefetcher-a")
            children.append(agent)
        wait_worker_ready(worker, timeout_s=READY_S)
        if agent is not None:
            wait_http(agent, f"{agent.url}/healthz", READY_S)
        idle = _idle_share(agent)
        settings = Settings(kafka=KafkaSettings(bootstrap_servers=bench.servers), topics=topics)
        second: dict[str, Any] = {}
        side = _second_prefetcher(bench, env, prefix, second) if rebalance else None
        bench.progress.update(task, description=name)
        cpu = ProcessCpu({"worker": [worker.process.pid], "agent": _pids(agent)})
        started = time.perf_counter()
        tally = run(
            timed_replay(
                settings,
                timed,
                worker,
                lambda n: bench.progress.update(task, completed=n),
                side=side,
            )
        )
        ended_ms = now_ms()
        seconds = time.perf_counter() - started
        spent = cpu.spent()
        stats = httpx.get(f"{fake.url}/_fake/stats", timeout=10).json()
        worker_page = httpx.get(f"{worker.url}/metrics", timeout=10).text
        agent_page = httpx.get(f"{agent.url}/metrics", timeout=10).text if agent else ""
        issued = run(prefetch_decisions(settings, until_ms=ended_ms))
    finally:
        for child in reversed(children):
            child.stop()
    return _figures(
        tally,
        stats=stats,
        worker_page=worker_page,
        agent_page=agent_page,
        issued=issued,
        seconds=seconds,
        cpu=spent,
        idle=idle,
        second=second or None,
    )


def _check_entry(fake: Child, spec: ProviderSpec) -> None:
    """The fake's answer is kept for the whole TTL (else the bench would measure nothing)."""
    answer = httpx.get(
        f"{fake.url}/v1/items/{distinct_ids(1, PROBE_PREFIX)[0]}",
        headers={"X-API-Key": DEMO_API_KEY},
        timeout=10,
    )
    entry_size(spec, answer.status_code, answer.headers, answer.content)
    httpx.post(f"{fake.url}/_fake/reset", timeout=10)  # its 1 s peak and its bucket


def _pids(child: Child | None) -> list[int]:
    return [child.process.pid] if child is not None else []


def _idle_share(agent: Child | None) -> float | None:
    """The agent's CPU over IDLE_S before the replay, as a share of one core."""
    if agent is None:
        return None
    cpu = ProcessCpu({"agent": [agent.process.pid]})
    time.sleep(IDLE_S)
    return cpu.spent()["agent"] / IDLE_S


def _figures(
    tally: RunTally,
    *,
    stats: Mapping[str, Any],
    worker_page: str,
    agent_page: str,
    issued: Sequence[Hashable],
    seconds: float,
    cpu: Mapping[str, float],
    idle: float | None,
    second: Mapping[str, Any] | None,
) -> RunFigures:
    kinds = tally.kinds
    every = [ms for values in tally.latencies_ms.values() for ms in values]
    hits = sum(kinds[tier] for tier in HIT_TIERS)
    answered = hits + kinds["coalesced"] + kinds["call"] + kinds["revalidated"]
    return RunFigures(
        requests=tally.done,
        hits=hits,
        coalesced=kinds["coalesced"],
        failed=tally.done - answered,
        p50_ms=_ms(percentile(every, 0.5)),
        p99_ms=_ms(percentile(every, 0.99)),
        provider_calls=int(stats["calls_total"]),
        violations=int(stats["rate_limited"]),
        provider_peak_1s=int(stats["max_rate_1s"]),
        prefetches=len(issued),
        duplicate_prefetches=duplicates(issued),
        prefetch_calls=metric_by_label(worker_page, "callstream_prefetch_calls_total", "result"),
        prefetch_skipped=metric_by_label(
            worker_page, "callstream_prefetch_skipped_total", "reason"
        ),
        prefetch_used=sum(metric_by_label(worker_page, "callstream_prefetch_used_total").values()),
        decisions=metric_by_label(agent_page, "callstream_prefetcher_decisions_total", "verdict"),
        access_events=metric_by_label(
            agent_page, "callstream_prefetcher_access_events_total", "kind"
        ),
        ticks=sum(metric_by_label(agent_page, "callstream_prefetcher_ticks_total").values()),
        outcomes=dict(kinds),
        seconds=seconds,
        agent_cpu_s=cpu.get("agent"),
        agent_idle_cpu_share=idle,
        worker_cpu_s=cpu.get("worker"),
        second=second,
    )


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _second_prefetcher(
    bench: _Bench, env: Mapping[str, str], prefix: str, report: dict[str, Any]
) -> Callable[[float], Coroutine[Any, Any, None]]:
    """The side task of a --rebalance run: a second prefetcher of the same app id over the
    plan's ``rebalance_window`` of the replay's ``duration`` (real s); fills ``report`` with
    when it was ready and what it published."""
    start, stop = bench.plan.rebalance_window

    async def side(duration: float) -> None:
        await asyncio.sleep(duration * start)
        begun = time.perf_counter()
        child = bench.prefetcher(env, f"{prefix}-prefetcher-b")
        window = duration * (stop - start)
        try:
            ready = await asyncio.to_thread(_ready_within, child, window)
            report["ready_after_s"] = round(time.perf_counter() - begun, 1) if ready else None
            await asyncio.sleep(max(0.0, window - (time.perf_counter() - begun)))
            page = await asyncio.to_thread(_page, child)
            report["prefetches"] = sum(
                metric_by_label(page, "callstream_prefetcher_prefetches_total").values()
            )
            report["access_events"] = sum(
                metric_by_label(page, "callstream_prefetcher_access_events_total").values()
            )
            report["decisions"] = metric_by_label(
                page, "callstream_prefetcher_decisions_total", "verdict"
            )
        finally:
            report["stopped_after_s"] = round(time.perf_counter() - begun, 1)
            await asyncio.to_thread(child.stop)

    return side


def _ready_within(child: Child, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.alive():
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{child.url}/healthz", timeout=1.0).status_code == 200:
                return True
        time.sleep(0.2)
    return False


def _page(child: Child) -> str:
    try:
        return httpx.get(f"{child.url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""


async def timed_replay(
    settings: Settings,
    timed: Sequence[tuple[float, str]],
    worker: Child,
    on_progress: Callable[[int], object],
    *,
    side: Callable[[float], Coroutine[Any, Any, None]] | None = None,
) -> RunTally:
    """Publish a request per (real offset s, item id) at its offset from the start, then wait
    for every outcome; ``side`` runs alongside, given the replay's duration, and is awaited.

    Raises:
        BenchStalled: the worker exited, or no outcome for STALL_S after the last publish.
    """
    async with counted_replay(settings, on_progress) as (tally, freed, publish):
        helper = asyncio.create_task(side(timed[-1][0])) if side and timed else None
        started = time.perf_counter()
        try:
            index = 0
            while index < len(timed):
                now = time.perf_counter() - started
                if timed[index][0] > now:
                    _check_alive(worker, tally)
                    await asyncio.sleep(min(timed[index][0] - now, 1.0))
                    continue
                end = bisect.bisect_right(timed, now, lo=index, key=lambda row: row[0])
                await publish([item for _, item in timed[index:end]])
                index = end
            await _drain(freed, worker, tally)
            if helper is not None:
                await helper
        finally:
            if helper is not None and not helper.done():
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
    return tally


def _check_alive(worker: Child, tally: RunTally) -> None:
    if not worker.alive():
        raise BenchStalled(
            f"worker {worker.name} exited with {worker.process.returncode} after "
            f"{tally.done} outcomes; see {worker.log_path}"
        )


async def _drain(freed: asyncio.Event, worker: Child, tally: RunTally) -> None:
    deadline = time.monotonic() + STALL_S
    while tally.outstanding:
        _check_alive(worker, tally)
        if time.monotonic() > deadline:
            raise BenchStalled(
                f"no outcome for {STALL_S:g} s with {tally.outstanding} requests waiting "
                f"after {tally.done} outcomes; see {worker.log_path}"
            )
        freed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(freed.wait(), 1.0)
            deadline = time.monotonic() + STALL_S


async def prefetch_decisions(settings: Settings, *, until_ms: int) -> list[Hashable]:
    """The prefetches on the requests topic created by ``until_ms``, each as the decision it
    carries out: the item and the expiry (its deadline is the expiry plus the lead).

    Raises:
        BenchStalled: no record for STALL_S while some were due.
    """
    topic = settings.topics.requests
    tps = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
    found: list[Hashable] = []
    codec = Codecs().request
    async with reader(settings.kafka) as consumer:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        due = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        progress_at = time.monotonic()
        while due:
            batches = await consumer.getmany(*due, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < ends[tp]:
                        _note(found, codec, record.value, until_ms)
            due = {tp for tp in due if await consumer.position(tp) < ends[tp]}
            if batches:
                progress_at = time.monotonic()
            elif due and time.monotonic() - progress_at > STALL_S:
                raise BenchStalled(f"reading {topic} got no record for {STALL_S:g} s")
    return found


def _note(
    found: list[Hashable], codec: EventCodec[RequestEvent], raw: bytes | None, until_ms: int
) -> None:
    try:
        request = codec.decode(raw or b"")
    except DecodeError:
        return
    if request.prefetch and request.created_at_ms <= until_ms:
        found.append((json.dumps(request.params, sort_keys=True), request.deadline_at_ms))


# -- the report ----------------------------------------------------------------------------


def print_prefetch(console: Console, rows: Sequence[Mapping[str, Any]]) -> None:
    """The rows as a table: hits, extra calls, precision and costs per trace and variant."""
    if not rows:
        return
    first = rows[0]
    table = Table(
        title=f"prefetch: TTL {first['ttl_s']:g} s, lead {first['lead_s']:g} s of trace time, "
        f"{first['speedup']:g}x compressed",
        caption="hits and extra calls (over ttl's): the pipeline's / the offline replay's; "
        "prec: prefetches used / made; cpu: the agent's share of a core",
    )
    # Short headers: the table must fit an 80-column terminal or a CI log.
    for column in ("trace", "variant", "hits", "extra", "prec", "p50/p99", "429", "cpu"):
        table.add_column(column, justify="right")
    for row in rows:
        sim = row["sim"]
        table.add_row(
            row["trace"],
            row["variant"],
            f"{_pct(row['hit_ratio'])}/{_pct(sim.get('hit_ratio'))}",
            f"{_signed(row['extra_calls_pct'])}/{_signed(sim.get('extra_calls_pct'))}",
            _pct(row["precision"]),
            f"{_num(row['p50_ms'], 0)}/{_num(row['p99_ms'], 0)}",
            str(row["violations"]),
            _num(row["agent_cpu_pct"], 1),
        )
    console.print(table)
    for row in rows:
        if "rebalance_prefetch_ratio" in row:
            rebalanced = row["rebalance"]
            console.print(
                f"{row['trace']} {row['variant']}: {rebalanced['prefetches_issued']} prefetches "
                f"with a rebalance, {row['prefetches_issued']} without "
                f"(ratio {_num(row['rebalance_prefetch_ratio'], 3)}), "
                f"{rebalanced['duplicate_prefetches']} repeated"
            )


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0f}%"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
