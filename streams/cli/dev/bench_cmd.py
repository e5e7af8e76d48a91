"""`callstream bench`: benchmarks that print figures against a baseline measured in the same run."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.table import Table

from infra.broker import start_broker
from streams.cli.common import run, use_event_loop
from streams.cli.dev.dev_cmd import DEMO_API_KEY, worker_env
from streams.cli.dev.processes import (
    scratch_dir,
    start_fake_provider,
    start_worker,
    wait_worker_ready,
)
from streams.cli.dev.ratelimit import collect_results, limit_figures
from streams.cli.dev.throughput import (
    CPU_ROLES,
    JitActivity,
    MachineCpu,
    ProcessCpu,
    RunFigure,
    interleave,
    median_rate,
    run_direct,
    run_pipeline,
)
from streams.settings import KafkaSettings, ProviderSettings, Settings, TopicSettings

BenchBootstrap = Annotated[
    str | None,
    typer.Option("--bootstrap", "-b", help="Use this Kafka instead of starting Apache Kafka."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the figures as JSON too.")]

T = TypeVar("T")
V = TypeVar("V")

bench_app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)

# A broker whose JIT compiler threads use less than this share of a core is warm.
JIT_QUIET_SHARE = 0.03

# In-flight calls per variant, as in the measurements of shared/ENVIRONMENT.md.
CONCURRENCY_BY_LATENCY = {0: 100, 50: 200}


@dataclass(frozen=True)
class _BenchBroker:
    servers: str
    # Empty for a broker given with --bootstrap: its CPU is not ours to measure.
    pids: tuple[int, ...] = ()


@contextlib.contextmanager
def _broker(bootstrap: str | None) -> Iterator[_BenchBroker]:
    if bootstrap:
        yield _BenchBroker(bootstrap)
        return
    broker = start_broker("kafka")
    try:
        yield _BenchBroker(broker.bootstrap_servers, broker.pids)
    finally:
        broker.stop()


@bench_app.command("throughput")
def throughput(
    requests: Annotated[int, typer.Option("--requests", "-n", min=100)] = 10_000,
    rounds: Annotated[int, typer.Option(min=1, max=20)] = 3,
    warm_up: Annotated[
        int,
        typer.Option(
            "--warm-up",
            min=0,
            max=5,
            help="Uncounted rounds first; more follow (up to 5) while the broker's JIT "
            "compiler is still busy, so the counted rounds see its steady state.",
        ),
    ] = 1,
    event_loop: Annotated[
        str,
        typer.Option(
            "--event-loop",
            help="uvloop or asyncio, for the worker and the direct "
            "client alike (a fair baseline uses the same loop).",
        ),
    ] = "uvloop",
    latency: Annotated[
        list[int] | None,
        typer.Option("--latency-ms", help="Provider latencies to measure (repeatable)."),
    ] = None,
    in_flight: Annotated[
        int | None,
        typer.Option(
            "--in-flight",
            min=1,
            max=2000,
            help="Calls in flight, for both variants (default: 100 at 0 ms, 200 otherwise). "
            "Few in flight make the run latency-bound, many make it CPU-bound.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=8,
            help="Worker processes in the pipeline's consumer group (one per core scales "
            "a CPU-bound worker; the direct client stays one process).",
        ),
    ] = 1,
    bootstrap: BenchBootstrap = None,
    as_json: JsonFlag = False,
) -> None:
    """Pipeline throughput against a direct aiohttp client, on real Apache Kafka."""
    console = Console()
    if event_loop not in ("uvloop", "asyncio"):
        raise typer.BadParameter("uvloop or asyncio", param_hint="--event-loop")
    use_event_loop(event_loop)
    latencies = latency or [0, 50]
    summary: list[dict[str, Any]] = []
    with scratch_dir("callstream-bench-") as tmp, _broker(bootstrap) as broker:
        console.print(
            f"broker {broker.servers}; {requests} requests x {rounds} rounds per variant "
            f"after {warm_up} warm-up round(s); "
            f"{workers} worker process(es)"
        )
        for latency_ms in latencies:
            concurrency = in_flight or CONCURRENCY_BY_LATENCY.get(latency_ms, 200)
            directs, pipelines = _measure(
                tmp,
                broker,
                latency_ms,
                concurrency,
                requests,
                rounds,
                warm_up,
                console,
                event_loop,
                workers,
            )
            direct_rate, pipeline_rate = median_rate(directs), median_rate(pipelines)
            cpu = {
                variant: {
                    role: _median(f.cpu_ms_per_request(role) for f in figures) for role in CPU_ROLES
                }
                | {"total": _median(f.total_cpu_ms_per_request for f in figures)}
                for variant, figures in (("direct", directs), ("pipeline", pipelines))
            }
            summary.append(
                {
                    "latency_ms": latency_ms,
                    "concurrency": concurrency,
                    "workers": workers,
                    "direct_req_s": round(direct_rate, 1),
                    "pipeline_req_s": round(pipeline_rate, 1),
                    "ratio": round(pipeline_rate / direct_rate, 3),
                    "worker_cpu_ms_per_request": cpu["pipeline"]["worker"],
                    "cpu_ms_per_request": cpu,
                    "direct_machine_busy": _median(f.machine_busy for f in directs),
                    "pipeline_machine_busy": _median(f.machine_busy for f in pipelines),
                }
            )
    _print_summary(console, summary)
    if as_json:
        sys.stdout.write(json.dumps({"throughput": summary}) + "\n")


def _bench_topics(prefix: str) -> TopicSettings:
    return TopicSettings(
        requests=f"{prefix}.requests", results=f"{prefix}.results", dead_letters=f"{prefix}.dlq"
    )


def _bench_worker_env(
    servers: str,
    provider_url: str,
    tmp: Path,
    app_id: str,
    topics: TopicSettings,
    **extra: str,
) -> dict[str, str]:
    """A benchmark worker: its own app id and topics, quiet logs, plus ``extra`` settings."""
    return {
        **worker_env(servers, provider_url, tmp, embedded=False),
        "CALLSTREAM_APP_ID": app_id,
        "CALLSTREAM_TOPICS__REQUESTS": topics.requests,
        "CALLSTREAM_TOPICS__RESULTS": topics.results,
        "CALLSTREAM_TOPICS__DEAD_LETTERS": topics.dead_letters,
        "CALLSTREAM_LOG_LEVEL": "warning",
        **extra,
    }


def _measure(
    tmp: Path,
    broker: _BenchBroker,
    latency_ms: int,
    concurrency: int,
    requests: int,
    rounds: int,
    warm_up: int,
    console: Console,
    event_loop: str,
    workers: int,
) -> tuple[list[RunFigure], list[RunFigure]]:
    fake = start_fake_provider(tmp, "--latency-ms", str(latency_ms), "--api-key", DEMO_API_KEY)
    # One limit key lives on one partition, so on one worker: with several workers the fake
    # provider's limit is split into shards, which spread its requests over the partitions.
    shards = 1 if workers == 1 else 6 * workers
    app_id = f"bench-{latency_ms}ms"
    topics = _bench_topics(app_id)
    servers = broker.servers
    env = _bench_worker_env(
        servers,
        fake.url,
        tmp,
        app_id,
        topics,
        # Each worker process takes its share of the in-flight budget.
        CALLSTREAM_CALLER__MAX_IN_FLIGHT=str(max(1, concurrency // workers)),
        CALLSTREAM_CALLER__EVENT_LOOP=event_loop,
        CALLSTREAM_PROVIDERS__FAKE__SHARDS=str(shards),
    )
    children = [
        start_worker(
            tmp,
            {**env, "CALLSTREAM_DATA_DIR": str(tmp / f"worker-{latency_ms}ms-{index}")},
            name=f"worker-{latency_ms}ms-{index}",
        )
        for index in range(workers)
    ]
    pids = [child.process.pid for child in children]
    try:
        for child in children:
            wait_worker_ready(child, timeout_s=90)
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=servers),
            topics=topics,
            providers={"fake": ProviderSettings(shards=shards)},
        )
        run(run_pipeline(settings, 200, "warmup"))  # connections, metadata, JIT-free warm-up
        counter = iter(range(1_000_000))

        provider_and_client = {"provider": [fake.process.pid], "client": [os.getpid()]}

        def direct() -> RunFigure:
            machine, cpu = MachineCpu(), ProcessCpu(provider_and_client)
            seconds = run(run_direct(fake.url, DEMO_API_KEY, requests, concurrency))
            return RunFigure(
                "direct aiohttp",
                latency_ms,
                requests,
                seconds,
                cpu.spent(),
                machine_busy=machine.busy(),
            )

        def pipeline() -> RunFigure:
            machine = MachineCpu()
            cpu = ProcessCpu({"worker": pids, "broker": broker.pids, **provider_and_client})
            seconds = run(run_pipeline(settings, requests, f"run{next(counter)}"))
            return RunFigure(
                "pipeline", latency_ms, requests, seconds, cpu.spent(), machine_busy=machine.busy()
            )

        def report(figure: RunFigure, counted: bool) -> None:
            worker = figure.cpu_ms_per_request("worker")
            total = figure.total_cpu_ms_per_request
            cpu = f", worker CPU {worker:.3f} ms/request" if worker is not None else ""
            cpu += f", all CPU {total:.3f} ms/request" if total is not None else ""
            busy = (
                f", machine {figure.machine_busy:.0%} busy"
                if figure.machine_busy is not None
                else ""
            )
            note = "" if counted else " (warm-up, not counted)"
            console.print(
                f"  {latency_ms:>3} ms  {figure.variant:<15} {figure.rate:8.0f} req/s"
                f"{cpu}{busy}{note}"
            )

        jit = JitActivity(broker.pids)

        def still_warming() -> bool:
            share = jit.share()
            busy = share > JIT_QUIET_SHARE
            if busy:
                console.print(f"  broker still compiling (JIT at {share:.0%} of a core)")
            return busy

        return interleave(
            rounds, direct, pipeline, report, warm_up=warm_up, still_warming=still_warming
        )
    finally:
        for child in children:
            child.stop()
        fake.stop()


def _median(values: Iterable[float | None]) -> float | None:
    """The (upper) median of the values measured, to 3 decimals; None if none was."""
    known = sorted(value for value in values if value is not None)
    return round(known[len(known) // 2], 3) if known else None


def _percent(share: float | int | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def _print_summary(console: Console, summary: list[dict[str, Any]]) -> None:
    table = Table(
        title="throughput in req/s: pipeline vs direct aiohttp client (medians)",
        caption="ms/req: worker CPU per request; busy d/p: share of all cores busy "
        "during the direct and the pipeline runs",
    )
    # Short headers: the table must fit an 80-column terminal or a CI log.
    for column in (
        "latency",
        "in flight",
        "workers",
        "direct",
        "pipeline",
        "ratio",
        "ms/req",
        "busy d/p",
    ):
        table.add_column(column, justify="right")
    for row in summary:
        table.add_row(
            f"{row['latency_ms']} ms",
            str(row["concurrency"]),
            str(row["workers"]),
            f"{row['direct_req_s']:.0f}",
            f"{row['pipeline_req_s']:.0f}",
            f"{row['ratio']:.2f}",
            str(row["worker_cpu_ms_per_request"]),
            f"{_percent(row['direct_machine_busy'])}/{_percent(row['pipeline_machine_busy'])}",
        )
    console.print(table)
    # Where the CPU goes: on a machine both variants saturate, the ratio of throughputs is
    # about the inverse ratio of these totals.
    cpu_table = Table(
        title="CPU ms per request, by process (medians)",
        caption="client: the direct client, or the pipeline's publisher and result reader",
    )
    for column in ("latency", "variant", *CPU_ROLES, "total"):
        cpu_table.add_column(column, justify="right")
    for row in summary:
        for variant, by_role in row["cpu_ms_per_request"].items():
            cpu_table.add_row(
                f"{row['latency_ms']} ms",
                variant,
                *(_ms(by_role[role]) for role in (*CPU_ROLES, "total")),
            )
    console.print(cpu_table)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@bench_app.command("codec")
def codec(n: Annotated[int, typer.Option("-n", min=100)] = 20_000) -> None:
    """Avro encode/decode cost per event: the `avro` package against `fastavro`."""
    from schemas.tools.bench import format_report, run_codec_bench

    typer.echo(format_report(run_codec_bench(n)))


@bench_app.command("delays")
def delays(
    n: Annotated[int, typer.Option("-n", min=10, help="Requests per round; 2 rounds each.")] = 5000,
    tick_ms: Annotated[
        float, typer.Option("--tick-ms", min=0, help="Timer table: ms between firing passes.")
    ] = 10.0,
    warm_up: Annotated[
        int, typer.Option("--warm-up", min=0, help="Uncounted requests per round first.")
    ] = 1000,
    bootstrap: BenchBootstrap = None,
    as_json: JsonFlag = False,
) -> None:
    """Durable delays: a timer table (RocksDB + changelog) against delay-tier topics."""
    from streams.cli.dev.delays_bench import print_delays, run_delays_bench

    console = Console()
    use_event_loop("uvloop")  # as the worker runs
    with (
        console.status("starting the broker") as status,
        scratch_dir("callstream-bench-") as tmp,
        _broker(bootstrap) as broker,
    ):
        kafka = KafkaSettings(bootstrap_servers=broker.servers)
        figures = run(
            run_delays_bench(
                kafka,
                count=n,
                data_dir=tmp,
                warm_up=warm_up,
                tick_ms=tick_ms,
                broker_pids=broker.pids,
                progress=status.update,
            )
        )
    print_delays(console, figures)
    if as_json:
        sys.stdout.write(json.dumps({"delays": figures}) + "\n")


@bench_app.command("ratelimit")
def ratelimit(
    requests: Annotated[int, typer.Option("--requests", "-n", min=10)] = 1500,
    rate: Annotated[float, typer.Option(help="The provider's limit, requests per second.")] = 50,
    burst: Annotated[int, typer.Option(help="The provider's burst.")] = 10,
    bootstrap: BenchBootstrap = None,
    as_json: JsonFlag = False,
) -> None:
    """Saturate a strictly limited fake provider: utilization, violations and waits."""
    console = Console()
    with scratch_dir("callstream-bench-") as tmp, _broker(bootstrap) as broker:
        servers = broker.servers
        fake = start_fake_provider(
            tmp,
            "--latency-ms",
            "20",
            "--api-key",
            DEMO_API_KEY,
            "--rate",
            str(rate),
            "--burst",
            str(burst),
        )
        app_id = "bench-ratelimit"
        topics = _bench_topics(f"{app_id}.{int(time.time())}")  # fresh topics per run
        env = _bench_worker_env(
            servers,
            fake.url,
            tmp,
            app_id,
            topics,
            CALLSTREAM_PROVIDERS__FAKE__RATE_PER_S=str(rate),
            CALLSTREAM_PROVIDERS__FAKE__BURST=str(burst),
        )
        worker = start_worker(tmp, env, name="worker-ratelimit")
        try:
            wait_worker_ready(worker, timeout_s=90)
            settings = Settings(kafka=KafkaSettings(bootstrap_servers=servers), topics=topics)
            console.print(
                f"publishing {requests} requests against a {rate:g}/s (burst {burst}) "
                f"limit: about {requests / rate:.0f} s"
            )
            results = run(collect_results(settings, requests))
            stats = httpx.get(f"{fake.url}/_fake/stats", timeout=10).json()
        finally:
            worker.stop()
            fake.stop()
    figures = limit_figures(results, rate, stats)
    _print_limits(console, figures, rate, burst)
    if as_json:
        sys.stdout.write(json.dumps({"ratelimit": figures}) + "\n")


def _print_limits(console: Console, figures: dict[str, float], rate: float, burst: int) -> None:
    table = Table(title=f"rate limit: {rate:g}/s, burst {burst}, fake provider enforcing it")
    for column in (
        "allowed /s",
        "achieved /s",
        "utilization",
        "violations (429)",
        "wait p50 ms",
        "wait p99 ms",
    ):
        table.add_column(column, justify="right")
    table.add_row(
        f"{figures['allowed_per_s']:g}",
        f"{figures['achieved_per_s']:.2f}",
        f"{figures['utilization']:.1%}",
        str(int(figures["violations"])),
        f"{figures['wait_p50_ms']:.0f}",
        f"{figures['wait_p99_ms']:.0f}",
    )
    console.print(table)


@bench_app.command("retries")
def retries(
    requests: Annotated[int, typer.Option("--requests", "-n", min=10)] = 2000,
    failure_rate: Annotated[
        float, typer.Option(min=0, max=0.9, help="Share of provider calls failing transiently.")
    ] = 0.3,
    rate: Annotated[float, typer.Option(min=1, help="Requests published per second.")] = 100,
    bootstrap: BenchBootstrap = None,
    as_json: JsonFlag = False,
) -> None:
    """No retries, immediate retries and callstream's on a flaky fake: success, calls, time."""
    from streams.cli.dev.retries_bench import measure_retries, print_retries

    console = Console()
    with scratch_dir("callstream-bench-") as tmp, _broker(bootstrap) as broker:
        console.print(
            f"broker {broker.servers}; {requests} requests per variant at {rate:g}/s, "
            f"{failure_rate:.0%} of calls failing"
        )
        report = measure_retries(
            tmp,
            broker.servers,
            requests=requests,
            failure_rate=failure_rate,
            rate_per_s=rate,
            console=console,
        )
    print_retries(console, report)
    if as_json:
        sys.stdout.write(json.dumps({"retries": report}) + "\n")


@bench_app.command("outage")
def outage(
    outage_s: Annotated[
        float, typer.Option("--outage-s", min=1, help="How long every call is answered 503.")
    ] = 30,
    rate: Annotated[float, typer.Option(min=1, help="Requests published per second.")] = 50,
    before_s: Annotated[
        float, typer.Option("--before-s", min=0, help="Healthy load before the outage.")
    ] = 10,
    after_s: Annotated[
        float, typer.Option("--after-s", min=0, help="Load that goes on after recovery.")
    ] = 20,
    wait_in_open_s: Annotated[
        float,
        typer.Option("--wait-in-open-s", min=0.1, help="The breaker's wait in open (variant 2)."),
    ] = 5,
    bootstrap: BenchBootstrap = None,
    as_json: JsonFlag = False,
) -> None:
    """A provider outage under steady load, without and with circuit breakers (issue 21)."""
    from streams.cli.dev.outage_bench import OutagePlan, measure_outage, print_outage

    console = Console()
    plan = OutagePlan(outage_s, rate, before_s, after_s, wait_in_open_s)
    with scratch_dir("callstream-bench-") as tmp, _broker(bootstrap) as broker:
        console.print(
            f"broker {broker.servers}; {plan.requests} requests per variant at {rate:g}/s, "
            f"a {outage_s:g} s outage after {before_s:g} s, {after_s:g} s of load after it"
        )
        report = measure_outage(tmp, broker.servers, plan, console)
    print_outage(console, report)
    if as_json:
        sys.stdout.write(json.dumps({"outage": report}) + "\n")


@bench_app.command("adaptive")
def adaptive(
    scenario: Annotated[
        str,
        typer.Option(
            help="changing: the real limit 60/s, then 80/s, then 40/s; fixed: 50/s throughout."
        ),
    ] = "changing",
    phase_s: Annotated[
        float, typer.Option("--phase-s", min=5, help="Seconds of each phase of the real limit.")
    ] = 40,
    headers: Annotated[
        bool,
        typer.Option(
            "--headers/--no-headers",
            help="Whether the worker's declaration names the fake's X-RateLimit-* headers "
            "(without: only 429s and their Retry-After inform it).",
        ),
    ] = False,
    variants: Annotated[
        str,
        typer.Option(
            help="Comma-separated, of static (declared rate, no retries), retry (declared "
            "rate, 429s retried), aimd and cubic (limiter.adaptive.mode)."
        ),
    ] = "static,retry,aimd,cubic",
    warm_up_s: Annotated[
        float,
        typer.Option(
            "--warm-up-s",
            min=0,
            help="Seconds of load not counted in throughput_per_s (at most half a phase).",
        ),
    ] = 5,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=8,
            help="Worker processes in one group, sharing the fake provider's one real limit.",
        ),
    ] = 1,
    shards: Annotated[
        int,
        typer.Option(
            min=1,
            max=32,
            help="Split the declared limit into this many limit keys (providers.fake.shards), "
            "dealt evenly over the workers.",
        ),
    ] = 1,
    bootstrap: BenchBootstrap = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print only the JSON line on stdout (progress and table on stderr)."
        ),
    ] = False,
) -> None:
    """A declared rate limit above the provider's real, hidden one: static, retries, adaptive."""
    from streams.cli.dev.adaptive_bench import (
        SCENARIOS,
        VARIANT_NAMES,
        make_plan,
        measure_adaptive,
        print_adaptive,
    )

    if scenario not in SCENARIOS:
        raise typer.BadParameter(" or ".join(SCENARIOS), param_hint="--scenario")
    names = [name.strip() for name in variants.split(",") if name.strip()]
    if not names or set(names) - set(VARIANT_NAMES):
        raise typer.BadParameter(
            f"a comma-separated list of {', '.join(VARIANT_NAMES)}", param_hint="--variants"
        )
    console = Console(stderr=as_json)
    plan = make_plan(
        scenario, phase_s, headers=headers, warm_up_s=warm_up_s, workers=workers, shards=shards
    )
    with scratch_dir("callstream-bench-") as tmp, _broker(bootstrap) as broker:
        reals = ", then ".join(f"{phase.real_per_s:g}/s" for phase in plan.phases)
        sharing = f"; {workers} workers, {shards} shards" if workers > 1 or shards > 1 else ""
        console.print(
            f"broker {broker.servers}; declared {plan.declared_per_s:g}/s, real {reals}, "
            f"{phase_s:g} s each; variants {', '.join(names)}{sharing}"
        )
        report = measure_adaptive(tmp, broker.servers, plan, names, console)
    print_adaptive(console, report)
    if as_json:
        sys.stdout.write(json.dumps({"adaptive": report}) + "\n")


@bench_app.command("cache")
def cache(
    trace: Annotated[
        list[str] | None,
        typer.Option(
            "--trace",
            help="Traces to replay: nasa, apache, web07 (repeatable or a comma list; "
            "default: all three).",
        ),
    ] = None,
    capacity_pct: Annotated[
        list[str] | None,
        typer.Option(
            "--capacity-pct",
            help="L1 capacities in percent of the trace's unique keys (repeatable or a comma "
            "list; default: 1,5,10).",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Replay only the first N requests of each trace."),
    ] = None,
    ttl_s: Annotated[
        float,
        typer.Option(
            "--ttl-s",
            min=1,
            help="The operation's fixed TTL. The default (a day) outlasts any replay, so no "
            "entry expires and the TTL does not confound the policy comparison.",
        ),
    ] = 86_400.0,
    window: Annotated[
        int,
        typer.Option(
            min=1,
            max=1000,
            help="Requests published and without an outcome at most (published in trace "
            "order, so the cache sees the trace's order).",
        ),
    ] = 32,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", min=0, help="The fake provider's latency.")
    ] = 0.0,
    l2: Annotated[
        bool,
        typer.Option(
            "--l2/--no-l2",
            help="Keep the L2 (RocksDB) tier on. Off by default: at these sizes it holds every "
            "key, so provider calls would be the unique keys whatever the L1 policy.",
        ),
    ] = False,
    calibration: Annotated[
        int,
        typer.Option(
            min=10,
            help="Cold keys per trace of the CPU calibration (calls, then the same keys as "
            "L1 hits).",
        ),
    ] = 2000,
    bootstrap: BenchBootstrap = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print only the JSON line on stdout (progress and table on stderr)."
        ),
    ] = False,
) -> None:
    """Real traces through the response cache: LRU and the kept L1 policy against Belady."""
    from streams.cli.dev.cache_bench import (
        CachePlan,
        measure_cache,
        parse_pcts,
        parse_traces,
        print_cache,
    )

    traces = _parsed(parse_traces, trace, "--trace")
    pcts = _parsed(parse_pcts, capacity_pct, "--capacity-pct")
    plan = CachePlan(
        traces,
        pcts,
        limit=limit,
        ttl_s=ttl_s,
        window=window,
        latency_ms=latency_ms,
        l2=l2,
        calibration=calibration,
    )
    use_event_loop("uvloop")  # the publisher and reader, as the worker runs
    console = Console(stderr=as_json)
    started = time.monotonic()
    with scratch_dir("callstream-bench-") as tmp, _broker(bootstrap) as broker:
        console.print(
            f"broker {broker.servers}; traces {', '.join(traces)}; L1 at "
            f"{', '.join(f'{pct:g}%' for pct in pcts)} of unique keys; LRU and {plan.kept}"
        )
        rows = measure_cache(tmp, broker.servers, plan, console)
    print_cache(console, rows)
    console.print(f"took {time.monotonic() - started:.0f} s")
    if as_json:
        sys.stdout.write(json.dumps({"cache": rows}) + "\n")


@bench_app.command(
    "prefetch", short_help="Time-compressed traces through the predictive cache: ttl, rule, model."
)
def prefetch(
    trace: Annotated[
        list[str] | None,
        typer.Option(
            "--trace",
            help="Traces to replay: nasa, apache (repeatable or a comma list; default: both).",
        ),
    ] = None,
    variants: Annotated[
        list[str] | None,
        typer.Option(
            "--variants",
            help="ttl (no prefetcher), rule, model (repeatable or a comma list; default: all).",
        ),
    ] = None,
    speedup: Annotated[
        float,
        typer.Option(
            "--speedup",
            min=1,
            help="Time compression: trace seconds per real second. The default, 60, makes the "
            "300 s TTL 5 s and the 60 s lead 1 s of real time (five of the agent's 0.2 s "
            "ticks), and two hours of a trace two minutes: the full run takes ~10 minutes.",
        ),
    ] = 60.0,
    hours: Annotated[
        float | None,
        typer.Option(
            "--hours",
            min=0.01,
            help="Replay the first H hours of each trace (default 2; none with --limit alone).",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Replay only the first N requests of each trace (portion)."),
    ] = None,
    ttl_s: Annotated[
        float,
        typer.Option("--ttl-s", min=1, help="The fixed TTL, in trace seconds (the issue's 300)."),
    ] = 300.0,
    lead_s: Annotated[
        float,
        typer.Option(
            "--lead-s", min=0.1, help="The agent's lead before an expiry, in trace seconds."
        ),
    ] = 60.0,
    rebalance: Annotated[
        bool,
        typer.Option(
            "--rebalance",
            help="Run rule and model twice more, with a second prefetcher of the same group "
            "from the middle of the replay to 85% of it; rows add rebalance_prefetch_ratio.",
        ),
    ] = False,
    rebalance_window: Annotated[
        str,
        typer.Option(
            "--rebalance-window",
            help="When --rebalance's second prefetcher starts and stops, as START,STOP shares "
            "of the replay (it joins once started up: a short replay may need an earlier "
            "START).",
        ),
    ] = "0.5,0.85",
    bootstrap: BenchBootstrap = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print only the JSON line on stdout (progress and table on stderr)."
        ),
    ] = False,
) -> None:
    """Time-compressed traces through the cache and the predictive-cache agent: ttl, rule, model.
    Defaults: 60x compression, the first 2 hours of NASA and Apache, a 300 s TTL and a 60 s lead
    in trace time (5 s and 1 s of real time: the lead is five of the agent's 0.2 s ticks, well
    above Kafka's round trips); the full run takes about 10 minutes (six replays of at most two
    minutes, fresh processes each). The fake provider is rate-limited at the ttl-only calls'
    peak, so prefetches must find spare quota."""
    from streams.cli.dev.prefetch_bench import (
        DEFAULT_HOURS,
        PrefetchPlan,
        check_plan,
        measure_prefetch,
        parse_variants,
        parse_window,
        prefetch_traces,
        print_prefetch,
    )

    traces = _parsed(prefetch_traces, trace, "--trace")
    chosen = _parsed(parse_variants, variants, "--variants")
    plan = PrefetchPlan(
        traces,
        chosen,
        speedup=speedup,
        hours=hours if hours is not None or limit is not None else DEFAULT_HOURS,
        limit=limit,
        ttl_s=ttl_s,
        lead_s=lead_s,
        rebalance=rebalance,
        rebalance_window=_parsed(parse_window, rebalance_window, "--rebalance-window"),
    )
    try:
        check_plan(plan)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    use_event_loop("uvloop")  # the publisher and reader, as the worker runs
    console = Console(stderr=as_json)
    started = time.monotonic()
    with scratch_dir("callstream-bench-") as tmp, _broker(bootstrap) as broker:
        console.print(
            f"broker {broker.servers}; traces {', '.join(traces)}; variants "
            f"{', '.join(chosen)}; {speedup:g}x; TTL {ttl_s:g} s, lead {lead_s:g} s (trace time)"
        )
        rows = measure_prefetch(tmp, broker.servers, plan, console)
    print_prefetch(console, rows)
    console.print(f"took {time.monotonic() - started:.0f} s")
    if as_json:
        sys.stdout.write(json.dumps({"prefetch": rows}) + "\n")


def _parsed(parse: Callable[[V], T], value: V, option: str) -> T:
    """``parse(value)``, its ValueError turned into the option's one-line usage error."""
    try:
        return parse(value)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=option) from None
