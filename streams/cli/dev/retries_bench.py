"""`callstream bench retries`: no retries, immediate retries and callstream's on a flaky fake.

A fake provider fails a share of its calls transiently (500 and 503, timeouts past the
worker's provider timeout, 429 with Retry-After). Each variant runs the real pipeline (a
worker on the broker) on fresh topics and app id, against a fake of its own, and is measured
from outside (issue 20): ok results per request, provider calls per request (the fake's count
of calls per request id) and completion time, from a request's creation to its result or to
its dead letter's last failure.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas.models import DeadLetterEvent, RequestEvent, ResultEvent
from streams.cli.common import run
from streams.cli.dev.dev_cmd import DEMO_API_KEY
from streams.cli.dev.processes import start_fake_provider, start_worker, wait_worker_ready
from streams.cli.dev.roundtrip import (
    bench_topics,
    bench_worker_env,
    cancel_all,
    declare_fake,
    read_outcomes,
)
from streams.errors import CallstreamError
from streams.sdk import CallstreamClient
from streams.settings import KafkaSettings, Settings, TopicSettings

# How the failures divide: all retriable, as a flaky provider's are.
FAILURE_SHARES = {"500": 0.35, "503": 0.35, "timeout": 0.15, "429": 0.15}
RETRY_AFTER_S = 1  # of the fake's 429s
# The worker's timeout for the fake, short so that a timeout costs little of the run; an
# injected timeout hangs well past it (the fake stops when the worker hangs up).
PROVIDER_TIMEOUT_S = 0.5
TIMEOUT_SLEEP_S = 5.0
GOAL_SUCCESS_RATE = 0.999
GOAL_AMPLIFICATION = 1.5
PUBLISH_TICK_S = 0.05
# Past the last publish, the longest a variant may take: callstream's retry.time_budget_s
# (120 s by default) and some.
DRAIN_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Variant:
    """One retry policy: worker settings, and the fake's declared Retry-After ceiling."""

    name: str
    env: Mapping[str, str]
    # The fake's limits.max_retry_after_s, through a declaration file; None: as declared.
    max_retry_after_s: float | None = None


VARIANTS = (
    Variant("none", {"CALLSTREAM_RETRY__MAX_ATTEMPTS": "1"}),
    # Every retry at once: no backoff, no retry budget, the provider's Retry-After clamped away.
    Variant(
        "immediate",
        {
            "CALLSTREAM_RETRY__BASE_DELAY_S": "0.001",
            "CALLSTREAM_RETRY__MAX_DELAY_S": "0.001",
            "CALLSTREAM_RETRY__BUDGET_RATIO": "1000",
        },
        max_retry_after_s=0.001,
    ),
    Variant("callstream", {}),
)


@dataclass
class _Tally:
    """The outcomes of one variant's requests, each request counted once."""

    expected: int
    created_ms: dict[str, int] = field(default_factory=dict)
    kinds: Counter[str] = field(default_factory=Counter)
    ok_attempts: Counter[int] = field(default_factory=Counter)
    dead_letter_attempts: Counter[int] = field(default_factory=Counter)
    completion_ms: list[float] = field(default_factory=list)
    settled: set[str] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def add_result(self, event: ResultEvent) -> bool:
        if not self._first(event.request_id):
            return False
        self.kinds[event.status if event.status == "ok" else f"{event.status}/{event.reason}"] += 1
        if event.status == "ok":
            self.ok_attempts[event.attempts] += 1
        self.completion_ms.append(event.completed_at_ms - self.created_ms[event.request_id])
        return True

    def add_dead_letter(self, letter: DeadLetterEvent) -> bool:
        if letter.request_id is None or not self._first(letter.request_id):
            return False
        self.kinds[f"dead_letter/{letter.reason}"] += 1
        self.dead_letter_attempts[len(letter.attempts)] += 1
        self.completion_ms.append(letter.last_failure_at_ms - self.created_ms[letter.request_id])
        return True

    def _first(self, request_id: str) -> bool:
        """Whether this is the first outcome of one of ours (an outcome is at least once)."""
        if request_id not in self.created_ms or request_id in self.settled:
            return False
        self.settled.add(request_id)
        if len(self.settled) >= self.expected:
            self.done.set()
        return True

    @property
    def total(self) -> int:
        return len(self.completion_ms)


def fake_args(failure_rate: float) -> list[str]:
    """The fake provider's flags: ``failure_rate`` of calls fail, shared as FAILURE_SHARES."""
    mix = ",".join(f"{name}={failure_rate * share:.6f}" for name, share in FAILURE_SHARES.items())
    return [
        "--api-key",
        DEMO_API_KEY,
        "--latency-ms",
        "2",
        "--error-mix",
        mix,
        "--retry-after-s",
        str(RETRY_AFTER_S),
        "--timeout-sleep-s",
        str(TIMEOUT_SLEEP_S),
    ]


def measure_retries(
    tmp: Path,
    servers: str,
    *,
    requests: int,
    failure_rate: float,
    rate_per_s: float,
    console: Console,
) -> dict[str, Any]:
    """Run every variant in turn; returns the figures of ``{"retries": ...}``."""
    variants = {}
    for variant in VARIANTS:
        console.print(f"[bold]{variant.name}[/]: starting a worker and a fake provider...")
        variants[variant.name] = _run_variant(
            tmp, servers, variant, requests, failure_rate, rate_per_s, console
        )
    best = variants["callstream"]
    return {
        "failure_rate": failure_rate,
        "requests": requests,
        "variants": variants,
        "goal": {
            "success_rate": GOAL_SUCCESS_RATE,
            "amplification": GOAL_AMPLIFICATION,
            "met": best["success_rate"] >= GOAL_SUCCESS_RATE
            and best["amplification"] <= GOAL_AMPLIFICATION,
        },
    }


def _run_variant(
    tmp: Path,
    servers: str,
    variant: Variant,
    count: int,
    failure_rate: float,
    rate_per_s: float,
    console: Console,
) -> dict[str, Any]:
    prefix = f"bench-retries-{variant.name}.{int(time.time())}"  # fresh topics and group
    topics = bench_topics(prefix)
    fake = start_fake_provider(tmp, *fake_args(failure_rate))
    worker = start_worker(
        tmp, _worker_env(tmp, servers, fake.url, variant, prefix, topics), name=prefix
    )
    try:
        wait_worker_ready(worker, timeout_s=90)
        settings = Settings(kafka=KafkaSettings(bootstrap_servers=servers), topics=topics)
        started = time.monotonic()
        tally = run(_drive(settings, count, rate_per_s, console))
        seconds = time.monotonic() - started
        stats = httpx.get(f"{fake.url}/_fake/stats", params={"keys": "1"}, timeout=10).json()
    finally:
        worker.stop()
        fake.stop()
    calls = sum(stats["calls_by_key"].get(request_id, 0) for request_id in tally.created_ms)
    # Only our requests reach this fake: its 200s are their successful calls.
    failed_calls = max(0, calls - stats["status_counts"].get("200", 0))
    return _figures(tally, calls, failed_calls, seconds)


def _worker_env(
    tmp: Path, servers: str, fake_url: str, variant: Variant, app_id: str, topics: TopicSettings
) -> dict[str, str]:
    env = bench_worker_env(
        tmp,
        servers,
        fake_url,
        app_id,
        topics,
        CALLSTREAM_PROVIDERS__FAKE__TIMEOUT_S=str(PROVIDER_TIMEOUT_S),
        **variant.env,
    )
    if variant.max_retry_after_s is not None:
        # The fake's own declaration with another Retry-After ceiling.
        limits = {"limits": {"max_retry_after_s": variant.max_retry_after_s}}
        directory = declare_fake(tmp / f"providers-{app_id}", limits)
        env["CALLSTREAM_PROVIDER_DIRS"] = json.dumps([str(directory)])
    return env


async def _drive(settings: Settings, count: int, rate_per_s: float, console: Console) -> _Tally:
    tally = _Tally(expected=count)
    progress = Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    published = progress.add_task("published", total=count)
    settled = progress.add_task("outcomes", total=count)

    def advance(added: bool) -> None:
        if added:
            progress.update(settled, completed=tally.total)

    async with CallstreamClient(settings) as client:
        readers = read_outcomes(
            client,
            lambda event: advance(tally.add_result(event)),
            lambda letter: advance(tally.add_dead_letter(letter)),
        )
        with progress:
            try:
                await _publish_paced(
                    client,
                    tally,
                    rate_per_s,
                    lambda sent: progress.update(published, completed=sent),
                )
                async with asyncio.timeout(DRAIN_TIMEOUT_S):
                    await tally.done.wait()
            except TimeoutError:
                raise CallstreamError(
                    f"only {tally.total} of {count} outcomes arrived within "
                    f"{DRAIN_TIMEOUT_S:.0f} s of the last publish"
                ) from None
            finally:
                await cancel_all(readers)
    return tally


async def _publish_paced(
    client: CallstreamClient,
    tally: _Tally,
    rate_per_s: float,
    on_published: Callable[[int], None],
) -> None:
    """Publish ``tally.expected`` requests at ``rate_per_s``, each created as it is sent."""
    started = time.monotonic()
    sent = 0
    while sent < tally.expected:
        due = min(tally.expected, math.floor((time.monotonic() - started) * rate_per_s) + 1)
        batch = [
            RequestEvent(provider="fake", operation="get_item", params={"item_id": f"r{index}"})
            for index in range(sent, due)
        ]
        tally.created_ms.update((request.request_id, request.created_at_ms) for request in batch)
        await client.publish_many(batch)
        sent = due
        on_published(sent)
        await asyncio.sleep(PUBLISH_TICK_S)


def _figures(tally: _Tally, calls: int, failed_calls: int, seconds: float) -> dict[str, Any]:
    requests = tally.expected
    completion = sorted(tally.completion_ms)
    return {
        "success_rate": round(tally.kinds["ok"] / requests, 5),
        "amplification": round(calls / requests, 3),
        "p50_ms": _quantile(completion, 0.5),
        "p99_ms": _quantile(completion, 0.99),
        "provider_calls": calls,
        # The share of calls that failed, as drawn (the configured rate, give or take chance).
        "provider_failure_rate": round(failed_calls / calls, 4) if calls else 0.0,
        "outcomes": dict(sorted(tally.kinds.items())),
        # Of the ok results, how many succeeded at each attempt.
        "ok_attempts": _by_number(tally.ok_attempts),
        # Of the dead letters, how many attempts each made: max_attempts, or fewer when the
        # retry budget or the time budget ended it.
        "dead_letter_attempts": _by_number(tally.dead_letter_attempts),
        "seconds": round(seconds, 1),
    }


def _by_number(counts: Counter[int]) -> dict[str, int]:
    return {str(n): counts[n] for n in sorted(counts)}


def _quantile(ordered: list[float], q: float) -> float:
    """Nearest rank."""
    if not ordered:
        return 0.0
    return round(float(ordered[max(0, math.ceil(q * len(ordered)) - 1)]), 1)


def print_retries(console: Console, report: dict[str, Any]) -> None:
    """The variants side by side, and whether callstream's meets the goal."""
    goal = report["goal"]
    table = Table(
        title=f"retries: {report['requests']} requests per variant, "
        f"{report['failure_rate']:.0%} of calls failing transiently",
        caption=f"goal (callstream): success >= {goal['success_rate']:.1%}, "
        f"amplification <= {goal['amplification']:g}: {'met' if goal['met'] else 'NOT met'}",
    )
    for column in ("variant", "success", "calls/req", "p50 ms", "p99 ms", "not ok"):
        table.add_column(column, justify="right")
    for name, figures in report["variants"].items():
        not_ok = ", ".join(  # "dead_letter/retries_exhausted" -> "retries_exhausted"
            f"{kind.rpartition('/')[2]} {count}"
            for kind, count in figures["outcomes"].items()
            if kind != "ok"
        )
        table.add_row(
            name,
            f"{figures['success_rate']:.2%}",
            f"{figures['amplification']:.3f}",
            f"{figures['p50_ms']:.0f}",
            f"{figures['p99_ms']:.0f}",
            not_ok or "-",
        )
    console.print(table)
