"""`callstream dev`: embedded broker + fake provider + worker + a demo load, with a summary."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from infra.broker import start_broker
from streams.cli.common import run
from streams.cli.dev.demo import GARBAGE, OutcomeTally, demo_requests
from streams.cli.dev.processes import (
    Child,
    scratch_dir,
    start_fake_provider,
    start_worker,
    wait_worker_ready,
)
from streams.errors import CallstreamError
from streams.sdk import CallstreamClient
from streams.settings import KafkaSettings, ProviderSettings, Settings

# Tansu holds every JoinGroup for half the group's session timeout (shared/ENVIRONMENT.md):
# a short timeout makes the embedded broker's rebalances take seconds, not half a minute.
EMBEDDED_SESSION_TIMEOUT_S = "2.0"
EMBEDDED_HEARTBEAT_S = "0.5"
DEMO_API_KEY = "demo-key"


def worker_env(
    bootstrap: str, provider_url: str, data_dir: Path, *, embedded: bool
) -> dict[str, str]:
    """Environment for a worker talking to ``bootstrap`` and the fake provider."""
    env = {
        "CALLSTREAM_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "CALLSTREAM_PROVIDERS__FAKE__BASE_URL": provider_url,
        "CALLSTREAM_PROVIDERS__FAKE__SECRET": DEMO_API_KEY,
        "CALLSTREAM_DATA_DIR": str(data_dir / "worker"),
        "CALLSTREAM_LOG_LEVEL": "info",
    }
    if embedded:
        env["CALLSTREAM_KAFKA__SESSION_TIMEOUT_S"] = EMBEDDED_SESSION_TIMEOUT_S
        env["CALLSTREAM_KAFKA__HEARTBEAT_INTERVAL_S"] = EMBEDDED_HEARTBEAT_S
        env["CALLSTREAM_KAFKA__COMMIT_METADATA"] = "false"
    return env


def dev(
    requests: Annotated[
        int,
        typer.Option(
            "--requests", "-n", min=1, max=1_000_000, help="How many demo requests to publish."
        ),
    ] = 1000,
    latency_ms: Annotated[int, typer.Option(min=0, help="Fake provider latency.")] = 20,
    timeout_s: Annotated[float, typer.Option(min=1, help="Give up waiting after this.")] = 180,
) -> None:
    """Run the whole pipeline locally on the embedded broker with a demo workload."""
    console = Console(stderr=False)
    children: list[Child] = []
    with scratch_dir("callstream-dev-") as tmp:
        console.print("[bold]callstream dev[/]: starting the embedded broker (Tansu)...")
        broker = start_broker("embedded")
        try:
            console.print(f"  broker on {broker.bootstrap_servers}")
            fake = start_fake_provider(
                tmp, "--latency-ms", str(latency_ms), "--api-key", DEMO_API_KEY
            )
            children.append(fake)
            console.print(f"  fake provider on {fake.url} ({latency_ms} ms latency)")
            env = worker_env(broker.bootstrap_servers, fake.url, tmp, embedded=True)
            # The demo's burst of requests meets a small fake server: a modest number of
            # calls in flight keeps the reported provider latency close to the real one.
            env["CALLSTREAM_CALLER__MAX_IN_FLIGHT"] = "64"
            worker = start_worker(tmp, env)
            children.append(worker)
            console.print(f"  worker starting (metrics at {worker.url}/metrics)...")
            wait_worker_ready(worker, timeout_s=90)
            settings = Settings(
                kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
                providers={"fake": ProviderSettings(base_url=fake.url)},
            )
            tally, elapsed = run(_drive(settings, requests, timeout_s, console))
            _summarise(console, tally, requests + len(GARBAGE), elapsed)
        finally:
            for child in reversed(children):
                child.stop()
            broker.stop()


async def _drive(
    settings: Settings, count: int, timeout_s: float, console: Console
) -> tuple[OutcomeTally, float]:
    expected = count + len(GARBAGE)
    tally = OutcomeTally()
    done = asyncio.Event()
    progress = Progress(
        TextColumn("outcomes"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    task = progress.add_task("outcomes", total=expected)

    async with CallstreamClient(settings) as client:

        async def read_results() -> None:
            async for event in client.results():
                tally.add_result(event)
                _advance(progress, task, tally, expected, done)

        async def read_dead_letters() -> None:
            async for letter in client.dead_letters():
                tally.add_dead_letter(letter.reason)
                _advance(progress, task, tally, expected, done)

        readers = [asyncio.create_task(read_results()), asyncio.create_task(read_dead_letters())]
        started = time.monotonic()
        with progress:
            await client.publish_many(demo_requests(count))
            for garbage in GARBAGE:
                await client.publish_raw(garbage, key=b"fake")
            try:
                await asyncio.wait_for(done.wait(), timeout_s)
            except TimeoutError:
                raise CallstreamError(
                    f"only {tally.total} of {expected} outcomes arrived within {timeout_s:.0f} s"
                ) from None
            finally:
                for reader in readers:
                    reader.cancel()
                for reader in readers:
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader
        return tally, time.monotonic() - started


def _advance(
    progress: Progress, task: object, tally: OutcomeTally, expected: int, done: asyncio.Event
) -> None:
    progress.update(task, completed=tally.total)  # type: ignore[arg-type]
    if tally.total >= expected:
        done.set()


def _summarise(console: Console, tally: OutcomeTally, expected: int, elapsed: float) -> None:
    console.print(f"[bold]{tally.total} outcomes for {expected} events in {elapsed:.1f} s[/]")
    table = Table()
    table.add_column("outcome")
    table.add_column("count", justify="right")
    for kind, number in sorted(tally.by_kind.items(), key=lambda item: -item[1]):
        table.add_row(kind, str(number))
    console.print(table)
    console.print(
        f"throughput {tally.total / elapsed:.0f} outcomes/s; provider latency of successful "
        f"calls p50 {tally.percentile(0.5):.1f} ms, p99 {tally.percentile(0.99):.1f} ms"
    )
