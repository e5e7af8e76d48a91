"""The figures `callstream bench throughput` prints are computed right."""

from __future__ import annotations

import os
import time

from streams.cli.dev.throughput import (
    JitActivity,
    MachineCpu,
    ProcessCpu,
    RunFigure,
    interleave,
    median_rate,
    process_cpu_s,
)


def test_rate_and_cpu_per_request() -> None:
    figure = RunFigure(
        "pipeline", 50, requests=2000, seconds=4.0, cpu_s={"worker": 1.0, "broker": 0.5}
    )
    assert figure.rate == 500.0
    assert figure.cpu_ms_per_request("worker") == 0.5
    assert figure.cpu_ms_per_request("provider") is None
    assert figure.total_cpu_ms_per_request == 0.75
    assert RunFigure("direct", 50, 10, 1.0).total_cpu_ms_per_request is None


def test_process_cpu_counts_each_role_apart() -> None:
    meter = ProcessCpu({"client": [os.getpid()], "absent": []})
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        pass
    spent = meter.spent()
    assert set(spent) == {"client"}  # a role without processes is not measured
    assert spent["client"] > 0.05


def test_median_rate_of_interleaved_runs() -> None:
    runs = [RunFigure("d", 0, 100, s) for s in (1.0, 2.0, 4.0)]
    assert median_rate(runs) == 50.0


def test_machine_busy_share_rises_while_this_process_spins() -> None:
    machine = MachineCpu()
    spent_before = process_cpu_s(os.getpid())
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        pass
    busy = machine.busy()
    assert busy is not None
    # One core of this machine's cores was busy spinning the whole time, at the least.
    assert 1 / (os.cpu_count() or 1) * 0.5 <= busy <= 1.0
    assert process_cpu_s(os.getpid()) > spent_before


def test_warm_up_rounds_run_and_are_reported_but_not_counted() -> None:
    runs = iter(range(100))

    def direct() -> RunFigure:
        return RunFigure("direct", 50, 10, 1.0 + next(runs))

    def pipeline() -> RunFigure:
        return RunFigure("pipeline", 50, 10, 1.0 + next(runs))

    reported: list[tuple[str, bool]] = []
    directs, pipelines = interleave(
        2, direct, pipeline, lambda f, counted: reported.append((f.variant, counted)), warm_up=1
    )
    assert reported == [
        ("direct", False),
        ("pipeline", False),
        ("direct", True),
        ("pipeline", True),
        ("direct", True),
        ("pipeline", True),
    ]
    # Interleaved: direct and pipeline alternate, and the warm-up pair (runs 0 and 1) is gone.
    assert [f.seconds for f in directs] == [3.0, 5.0]
    assert [f.seconds for f in pipelines] == [4.0, 6.0]


def test_warm_up_goes_on_while_the_broker_is_still_warming_up_to_a_cap() -> None:
    def run() -> RunFigure:
        return RunFigure("any", 0, 10, 1.0)

    counts: list[bool] = []
    verdicts = iter([True, True, False])
    interleave(1, run, run, lambda f, counted: counts.append(counted), warm_up=1,
               still_warming=lambda: next(verdicts))  # fmt: skip
    assert counts.count(False) == 2 * 3  # one round, then two more while still warming
    assert counts.count(True) == 2

    counts.clear()
    interleave(1, run, run, lambda f, counted: counts.append(counted), warm_up=1,
               still_warming=lambda: True, max_warm_up=4)  # fmt: skip
    assert counts.count(False) == 2 * 4  # capped

    counts.clear()
    interleave(1, run, run, lambda f, counted: counts.append(counted), warm_up=0,
               still_warming=lambda: True)  # fmt: skip
    assert counts == [True, True]  # no warm-up asked: none at all


def test_jit_activity_of_a_process_without_compiler_threads_is_zero() -> None:
    jit = JitActivity([os.getpid()])  # CPython has no JIT compiler threads
    deadline = time.monotonic() + 0.1
    while time.monotonic() < deadline:
        pass
    assert jit.share() == 0.0
    assert JitActivity([]).share() == 0.0
