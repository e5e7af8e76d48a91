"""`callstream bench throughput`: the pipeline against a direct aiohttp client, in one run.

The baseline is what a service would do without callstream: an aiohttp client calling the
provider with the same concurrency. The pipeline run is the same calls made by a worker from
request events on a real broker, timed from the first publish to the last result read back.
Runs are interleaved (direct, pipeline, direct, ...) so drift on the machine hits both alike,
after warm-up rounds that are not counted, as many as the broker needs: a broker just started
spends its first minutes compiling (its JIT threads took a quarter of a core during the first
pipeline runs), on the cores the worker needs, while the direct runs do not touch it at all.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from schemas.models import RequestEvent
from streams.cli.dev.roundtrip import round_trip
from streams.settings import Settings

# The processes whose CPU a run measures, by role.
CPU_ROLES = ("worker", "provider", "broker", "client")


@dataclass(frozen=True)
class RunFigure:
    variant: str
    latency_ms: int
    requests: int
    seconds: float
    # CPU seconds each role's processes spent in the run: "worker", "provider", "broker",
    # "client" (this process: the direct client, or the pipeline's publisher and reader).
    cpu_s: Mapping[str, float] = field(default_factory=dict)
    # Share of all the machine's cores busy during the run: near 1.0, the run was bound by
    # the machine (every process on it), not by the variant's own design.
    machine_busy: float | None = None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def cpu_ms_per_request(self, role: str) -> float | None:
        """Milliseconds of CPU per request spent by ``role``; None if it was not measured."""
        spent = self.cpu_s.get(role)
        return None if spent is None else spent * 1000 / self.requests

    @property
    def total_cpu_ms_per_request(self) -> float | None:
        """CPU per request over every measured process: what a run costs the machine."""
        return sum(self.cpu_s.values()) * 1000 / self.requests if self.cpu_s else None


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    return _stat_cpu_s(f"/proc/{pid}/stat")


def _stat_cpu_s(path: str) -> float:
    """User + system CPU seconds in a /proc ``stat`` file (a process's or a thread's)."""
    with open(path) as stat:
        # The command name in parentheses may hold spaces: the fields start after it.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ProcessCpu:
    """CPU seconds spent by groups of processes, by role, from now until :meth:`spent`."""

    def __init__(self, roles: Mapping[str, Sequence[int]]) -> None:
        self._roles = {role: tuple(pids) for role, pids in roles.items() if pids}
        self._start = self._read()

    def _read(self) -> dict[str, float]:
        return {role: sum(map(process_cpu_s, pids)) for role, pids in self._roles.items()}

    def spent(self) -> dict[str, float]:
        end = self._read()
        return {role: end[role] - self._start[role] for role in end}


class MachineCpu:
    """Busy share of all cores from now until :meth:`busy` (from /proc/stat; Linux)."""

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as stat:
                fields = [int(value) for value in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    def busy(self) -> float | None:
        end = self._read()
        if self._start is None or end is None or end[0] == self._start[0]:
            return None
        total = end[0] - self._start[0]
        return 1.0 - (end[1] - self._start[1]) / total


async def run_direct(url: str, api_key: str, count: int, concurrency: int) -> float:
    """Seconds for ``count`` GETs with ``concurrency`` in flight, straight to the provider."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"X-API-Key": api_key}
    async with aiohttp.ClientSession(connector=connector) as session:
        next_index = 0

        async def one_client() -> None:
            nonlocal next_index
            while next_index < count:
                index = next_index
                next_index += 1
                async with session.get(
                    f"{url}/v1/items/item-{index % 200}", headers=headers
                ) as response:
                    await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        return time.perf_counter() - started


async def run_pipeline(settings: Settings, count: int, batch_tag: str) -> float:
    """Seconds from the first publish of ``count`` requests to the last of their results."""
    requests = [
        RequestEvent(
            provider="fake",
            operation="get_item",
            params={"item_id": f"item-{index % 200}"},
            request_id=f"{batch_tag}-{index}",
        )
        for index in range(count)
    ]
    _, seconds = await round_trip(settings, requests, timeout_s=max(60.0, count / 100))
    return seconds


def interleave(
    rounds: int,
    direct: Callable[[], RunFigure],
    pipeline: Callable[[], RunFigure],
    report: Callable[[RunFigure, bool], None],
    *,
    warm_up: int = 0,
    still_warming: Callable[[], bool] = lambda: False,
    max_warm_up: int = 5,
) -> tuple[list[RunFigure], list[RunFigure]]:
    """Rounds of a direct run then a pipeline run; ``report`` gets every figure and whether
    it counts.

    Warm-up rounds come first and are not counted: ``warm_up`` of them, then more while
    ``still_warming()`` says so after each, up to ``max_warm_up`` (none at all if
    ``warm_up`` is 0).
    """
    directs: list[RunFigure] = []
    pipelines: list[RunFigure] = []
    warmed = 0
    while warmed < warm_up or (0 < warmed < max_warm_up and still_warming()):
        for runner in (direct, pipeline):
            report(runner(), False)
        warmed += 1
    for _ in range(rounds):
        for runner, sink in ((direct, directs), (pipeline, pipelines)):
            figure = runner()
            report(figure, True)
            sink.append(figure)
    return directs, pipelines


class JitActivity:
    """The share of a core a JVM's JIT compiler threads used since the previous call.

    Linux only (thread names from /proc); 0.0 where they cannot be read. A broker whose JIT
    is still busy is not in its steady state yet, and it compiles on the cores the worker
    needs during the pipeline runs only.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = tuple(pids)
        self._last = (time.monotonic(), self._compiler_cpu_s())

    def _compiler_cpu_s(self) -> float:
        spent = 0.0
        for pid in self._pids:
            try:
                threads = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in threads:
                try:
                    with open(f"/proc/{pid}/task/{tid}/comm") as comm:
                        # HotSpot names them "C1 CompilerThread0", "C2 CompilerThread1", ...
                        if "CompilerThre" not in comm.read():
                            continue
                    spent += _stat_cpu_s(f"/proc/{pid}/task/{tid}/stat")
                except OSError:
                    continue  # the thread ended meanwhile
        return spent

    def share(self) -> float:
        now, spent = time.monotonic(), self._compiler_cpu_s()
        then, spent_before = self._last
        self._last = (now, spent)
        return (spent - spent_before) / (now - then) if now > then else 0.0


def median_rate(figures: list[RunFigure]) -> float:
    return statistics.median(figure.rate for figure in figures)
