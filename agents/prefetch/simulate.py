"""An offline replay that judges the refresh variants on the real traces (issue 24).

The cache is unbounded with one fixed TTL (the issue's reference was measured so, at 300 s).
A request hits if its key's entry has not expired (``now < expires``), else it misses and its
call fills the entry for another TTL. At each expiry the variant decides: ``ttl`` never
refreshes, ``rule`` refreshes iff the entry was read since its fetch (``rule.py``), ``model``
iff the online model's P(requested within the next TTL) reaches its threshold (``model.py``).
A refresh is a call at the expiry that fills the entry for another TTL; calls are instant
(the agent would send it a few seconds early, which only shifts the windows by that much).
The replay ends at the trace's last request: later decisions are not taken.

Clock: the traces' real timestamps (no compression), requests ordered by time (a stable sort:
the Apache log is ordered by minute only). The Apache log holds one minute per hour (84
one-minute samples), so at a 300 s TTL no request ever falls in the window after an expiry:
no refresh there can be used, and the right answer is never to refresh.

``python -m agents.prefetch.simulate`` prints the table (with a sweep of the model's
threshold, in-sample), the same by halves of each trace (a threshold chosen on the first half
judged on the second), and the CPU cost of each step.
"""

from __future__ import annotations

import heapq
import sys
import time
import timeit
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from agents.cache.traces import TRACES
from agents.prefetch import model as logit
from agents.prefetch import rule
from agents.prefetch.features import KeyFeatures

__all__ = [
    "EPOCH_S",
    "SWEEP",
    "TTL_S",
    "VARIANTS",
    "ModelStrategy",
    "NoRefresh",
    "PrefetchRow",
    "Replay",
    "RuleStrategy",
    "Strategy",
    "Variant",
    "compare",
    "cpu_costs_us",
    "format_table",
    "halves",
    "load",
    "meets_goal",
    "replay",
    "strategy_for",
    "variant_costs_us",
]

Variant = Literal["ttl", "rule", "model"]
VARIANTS: tuple[Variant, ...] = ("ttl", "rule", "model")
TTL_S = 300.0
# The traces' earliest request in epoch seconds (traces.py counts from it): the features'
# hour of day needs the wall clock. NASA's first row; the Apache log's earliest stamp.
EPOCH_S = {"nasa": 807_256_800.0, "apache": 1_431_857_100.0}


class Strategy(Protocol):
    """What a variant sees (the access events) and decides (refresh at an expiry)."""

    def access(self, key: Hashable, now: float, *, hit: bool, expires_s: float) -> None: ...

    def decide(self, key: Hashable, now: float) -> bool: ...

    def refreshed(self, key: Hashable, now: float, *, expires_s: float) -> None: ...


class NoRefresh:
    """``ttl``: entries just expire."""

    def access(self, key: Hashable, now: float, *, hit: bool, expires_s: float) -> None:
        pass

    def decide(self, key: Hashable, now: float) -> bool:
        return False

    def refreshed(self, key: Hashable, now: float, *, expires_s: float) -> None:
        pass


class RuleStrategy:
    """``rule``: the static rule over the same per-key features the agent keeps."""

    def __init__(self) -> None:
        self.features: dict[Hashable, KeyFeatures] = {}

    def access(self, key: Hashable, now: float, *, hit: bool, expires_s: float) -> None:
        state = self.features.get(key) or KeyFeatures()
        self.features[key] = state.observe(now, hit=hit, expires_s=expires_s)

    def decide(self, key: Hashable, now: float) -> bool:
        return rule.should_refresh(self.features[key])

    def refreshed(self, key: Hashable, now: float, *, expires_s: float) -> None:
        self.features[key] = self.features[key].refreshed(now, expires_s=expires_s)


class ModelStrategy(RuleStrategy):
    """``model``: one online model over every key of the trace, learning as the agent would
    (``model.py``): each decision's label is whether a request came before its window closed,
    and it is learnt at the close."""

    def __init__(self, config: logit.LogitConfig, *, window_s: float) -> None:
        super().__init__()
        self.config = config
        self.window_s = window_s
        self.model = logit.LogitModel.new()
        self.pending: dict[Hashable, logit.Pending] = {}
        self._closing: list[tuple[float, int, Hashable]] = []  # (closes_s, order, key)
        self._order = 0
        self.labels = 0

    def access(self, key: Hashable, now: float, *, hit: bool, expires_s: float) -> None:
        self._close(now)
        pending = self.pending.get(key)
        if pending is not None:
            self.pending[key] = pending.seen(now)
        super().access(key, now, hit=hit, expires_s=expires_s)

    def decide(self, key: Hashable, now: float) -> bool:
        self._close(now)
        inputs = self.features[key].vector(now)
        closes = now + self.window_s
        self.pending[key] = logit.Pending(inputs, closes)
        self._order += 1
        heapq.heappush(self._closing, (closes, self._order, key))
        return logit.should_refresh(self.model, inputs, self.config)

    def _close(self, now: float) -> None:
        closing = self._closing
        while closing and closing[0][0] <= now:
            closes, _, key = heapq.heappop(closing)
            pending = self.pending.get(key)
            if pending is not None and pending.closes_s == closes:
                del self.pending[key]
                self.model = logit.learn(self.model, pending.inputs, pending.requested, self.config)
                self.labels += 1


@dataclass(frozen=True, slots=True)
class Replay:
    """What one variant did on one request sequence."""

    requests: int
    hits: int
    calls: int  # provider calls: misses and refreshes
    refreshes: int
    used: int  # refreshed entries that served a request before they expired
    decisions: int  # expiries the variant decided on

    @property
    def wasted(self) -> int:
        """Refreshes that served nothing."""
        return self.refreshes - self.used


def replay(
    requests: Iterable[tuple[float, Hashable]], strategy: Strategy, *, ttl_s: float = TTL_S
) -> Replay:
    """Replay ``requests`` ((time s, key), in time order) through an unbounded cache with
    ``ttl_s``, refreshing at each expiry the ``strategy`` says to."""
    expires: dict[Hashable, float] = {}
    unused: set[Hashable] = set()  # keys whose refreshed entry has served nothing yet
    queue: list[tuple[float, int, Hashable]] = []  # (expiry, order, key), some superseded
    n = hits = calls = refreshes = used = decisions = order = 0
    for now, key in requests:
        while queue and queue[0][0] <= now:
            expiry, _, due = heapq.heappop(queue)
            if expires[due] != expiry:
                continue  # superseded by a later fill
            decisions += 1
            unused.discard(due)
            if strategy.decide(due, expiry):
                calls += 1
                refreshes += 1
                expires[due] = expiry + ttl_s
                unused.add(due)
                strategy.refreshed(due, expiry, expires_s=expiry + ttl_s)
                order += 1
                heapq.heappush(queue, (expiry + ttl_s, order, due))
        n += 1
        expiry = expires.get(key, -1.0)
        if now < expiry:
            hits += 1
            if key in unused:
                unused.discard(key)
                used += 1
            strategy.access(key, now, hit=True, expires_s=expiry)
        else:
            calls += 1
            expires[key] = now + ttl_s
            unused.discard(key)
            strategy.access(key, now, hit=False, expires_s=now + ttl_s)
            order += 1
            heapq.heappush(queue, (now + ttl_s, order, key))
    return Replay(n, hits, calls, refreshes, used, decisions)


@dataclass(frozen=True, slots=True)
class PrefetchRow:
    """One variant on one trace (the issue's row, less what only the pipeline measures)."""

    trace: str
    variant: str  # a Variant, or "model@<threshold>" in a sweep
    requests: int
    hit_ratio: float
    provider_calls: int
    extra_calls_pct: float  # over ``ttl``'s calls on the same trace
    refreshes: int
    precision: float | None  # used / refreshes; None without refreshes
    wasted_calls: int
    decisions: int
    replay_s: float  # wall time of the replay, every strategy call included


def load(name: str) -> list[tuple[float, Hashable]]:
    """The named trace (``nasa`` or ``apache``) as (epoch s, key), stably sorted by time."""
    origin = EPOCH_S[name]
    rows: list[tuple[float, Hashable]] = [
        (origin + (r.time_s or 0.0), r.key) for r in TRACES[name]()
    ]
    rows.sort(key=lambda row: row[0])
    return rows


def strategy_for(
    variant: Variant, *, ttl_s: float = TTL_S, config: logit.LogitConfig | None = None
) -> Strategy:
    """A fresh strategy for ``variant`` (the model learns from scratch on each replay)."""
    if variant == "ttl":
        return NoRefresh()
    if variant == "rule":
        return RuleStrategy()
    return ModelStrategy(config or logit.LogitConfig(), window_s=ttl_s)


def _row(trace: str, variant: str, done: Replay, base_calls: int, spent_s: float) -> PrefetchRow:
    return PrefetchRow(
        trace=trace,
        variant=variant,
        requests=done.requests,
        hit_ratio=done.hits / done.requests if done.requests else 0.0,
        provider_calls=done.calls,
        extra_calls_pct=100.0 * (done.calls / base_calls - 1.0) if base_calls else 0.0,
        refreshes=done.refreshes,
        precision=done.used / done.refreshes if done.refreshes else None,
        wasted_calls=done.wasted,
        decisions=done.decisions,
        replay_s=spent_s,
    )


def compare(
    traces: Mapping[str, Sequence[tuple[float, Hashable]]],
    *,
    ttl_s: float = TTL_S,
    config: logit.LogitConfig | None = None,
    sweep: Sequence[float] = (),
) -> list[PrefetchRow]:
    """Rows for ``ttl``, ``rule`` and ``model`` per trace, then ``model@t`` for each
    threshold ``t`` of ``sweep`` (the model's other settings as in ``config``)."""
    config = config or logit.LogitConfig()
    rows: list[PrefetchRow] = []
    for name, requests in traces.items():
        runs: list[tuple[str, Strategy]] = [
            (v, strategy_for(v, ttl_s=ttl_s, config=config)) for v in VARIANTS
        ]
        runs += [
            (f"model@{t:g}", ModelStrategy(_with_threshold(config, t), window_s=ttl_s))
            for t in sweep
        ]
        base_calls = 0
        for variant, strategy in runs:
            started = time.perf_counter()
            done = replay(requests, strategy, ttl_s=ttl_s)
            spent = time.perf_counter() - started
            base_calls = base_calls or done.calls  # ttl runs first
            rows.append(_row(name, variant, done, base_calls, spent))
    return rows


def _model_maker(config: logit.LogitConfig, window_s: float) -> Callable[[], Strategy]:
    return lambda: ModelStrategy(config, window_s=window_s)


def _with_threshold(config: logit.LogitConfig, threshold: float) -> logit.LogitConfig:
    return logit.LogitConfig(config.learning_rate, config.l2, config.scaler_memory, threshold)


def halves(
    name: str,
    requests: Sequence[tuple[float, Hashable]],
    *,
    ttl_s: float = TTL_S,
    thresholds: Sequence[float] = (),
) -> list[PrefetchRow]:
    """Rows as ``compare``'s for each half of ``requests`` by time (traces ``<name>/1`` and
    ``<name>/2``): a threshold chosen on the first half is judged on the second. The second
    half's counts are the whole replay's less the first's, so the model reaches it having
    learnt from the first, as the agent would."""
    mid = (requests[0][0] + requests[-1][0]) / 2
    first = [request for request in requests if request[0] < mid]
    config = logit.LogitConfig()
    runs: list[tuple[str, Callable[[], Strategy]]] = [("ttl", NoRefresh), ("rule", RuleStrategy)]
    runs += [(f"model@{t:g}", _model_maker(_with_threshold(config, t), ttl_s)) for t in thresholds]
    rows: list[PrefetchRow] = []
    base: list[int] = []
    for variant, make in runs:
        one = replay(first, make(), ttl_s=ttl_s)
        both = replay(requests, make(), ttl_s=ttl_s)
        two = Replay(*(getattr(both, f) - getattr(one, f) for f in Replay.__slots__))
        base = base or [one.calls, two.calls]
        rows.append(_row(f"{name}/1", variant, one, base[0], 0.0))
        rows.append(_row(f"{name}/2", variant, two, base[1], 0.0))
    return sorted(rows, key=lambda row: row.trace)  # stable: each half's rows in run order


def meets_goal(rows: Sequence[PrefetchRow], trace: str, variant: str = "model") -> bool:
    """The issue's goal on ``trace``: at least the rule's hit gain over ``ttl`` for at most
    two thirds of its extra calls."""
    by_variant = {row.variant: row for row in rows if row.trace == trace}
    base, ruled, judged = by_variant["ttl"], by_variant["rule"], by_variant[variant]
    gain_ok = judged.hit_ratio - base.hit_ratio >= ruled.hit_ratio - base.hit_ratio - 1e-12
    return gain_ok and judged.extra_calls_pct <= ruled.extra_calls_pct * 2 / 3 + 1e-9


def format_table(rows: Iterable[PrefetchRow]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| trace | variant | hit ratio | provider calls | extra calls | refreshes "
        "| precision | wasted calls | decisions | replay s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        precision = "-" if row.precision is None else f"{row.precision:.3f}"
        lines.append(
            f"| {row.trace} | {row.variant} | {row.hit_ratio:.4f} | {row.provider_calls} "
            f"| {row.extra_calls_pct:+.1f}% | {row.refreshes} | {precision} "
            f"| {row.wasted_calls} | {row.decisions} | {row.replay_s:.2f} |"
        )
    return "\n".join(lines)


def cpu_costs_us(requests: Sequence[tuple[float, Hashable]]) -> dict[str, float]:
    """The CPU time of each step, in µs per call (the best of 5 passes over a sample of the
    per-key states a ``model`` replay of ``requests`` ends with, less the bare loop's).

    Keys: ``observe`` (an access event), ``codec`` (a state's ``to_bytes`` and
    ``from_bytes``: the table write and read per event), ``rule`` (its test), ``vector``,
    ``predict`` and ``learn`` (one of each per model decision), ``model_codec``.
    """
    strategy = ModelStrategy(logit.LogitConfig(), window_s=TTL_S)
    replay(requests, strategy)
    model, config = strategy.model, strategy.config
    states = list(strategy.features.values())[:2_000]
    now = max(state.last_s for state in states) + TTL_S
    vectors = [state.vector(now) for state in states]
    blobs = [state.to_bytes() for state in states]
    from_bytes = KeyFeatures.from_bytes
    steps: dict[str, Callable[[], object]] = {
        "observe": lambda: [s.observe(now, hit=True, expires_s=now) for s in states],
        "codec": lambda: [from_bytes(s.to_bytes()) for s in states],
        "rule": lambda: [rule.should_refresh(s) for s in states],
        "vector": lambda: [s.vector(now) for s in states],
        "predict": lambda: [logit.predict(model, x) for x in vectors],
        "learn": lambda: [logit.learn(model, x, True, config) for x in vectors],
        "model_codec": lambda: [logit.LogitModel.from_bytes(model.to_bytes()) for _ in blobs],
    }
    bare = min(timeit.repeat(lambda: [s for s in states], number=1, repeat=5))
    return {
        name: max(0.0, min(timeit.repeat(step, number=1, repeat=5)) - bare) / len(states) * 1e6
        for name, step in steps.items()
    }


def variant_costs_us(steps: Mapping[str, float]) -> dict[str, tuple[float, float]]:
    """Per variant, (µs per access event, µs per decision) from ``cpu_costs_us``: the agent
    reads and writes the key's state on every event; a model decision makes the inputs,
    predicts, and later learns its label."""
    event = steps["observe"] + steps["codec"]
    return {
        "ttl": (0.0, 0.0),
        "rule": (event, steps["rule"]),
        "model": (event, steps["vector"] + steps["predict"] + steps["learn"]),
    }


def main() -> None:
    """Print the table for the real traces (``../shared/traces``), the goal, and the costs."""
    traces = {name: load(name) for name in EPOCH_S}
    rows = compare(traces, sweep=SWEEP)
    out = sys.stdout
    out.write(f"TTL {TTL_S:g} s, real timestamps, unbounded cache.\n\n")
    out.write(format_table(rows) + "\n\n")
    for name in traces:
        out.write(f"goal on {name}: model {'met' if meets_goal(rows, name) else 'NOT met'}")
        met = [r.variant for r in rows if r.trace == name and "@" in r.variant]
        met = [v for v in met if meets_goal(rows, name, v)]
        out.write(f" (sweep, in-sample: met at {', '.join(met) or 'none'})\n")
    out.write("\nBy halves of each trace (a threshold chosen on /1 is judged on /2):\n\n")
    split = [r for n, q in traces.items() for r in halves(n, q, thresholds=(0.5, *SWEEP))]
    out.write(format_table(split) + "\n\n")
    for name in sorted({row.trace for row in split}):
        met = [r.variant for r in split if r.trace == name and "@" in r.variant]
        met = [v for v in met if meets_goal(split, name, v)]
        out.write(f"goal on {name}: met at {', '.join(met) or 'none'}\n")
    steps = cpu_costs_us(traces["nasa"])
    out.write("\nCPU µs per call: " + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
    for variant, (event, decision) in variant_costs_us(steps).items():
        out.write(f"\n{variant}: {event:.2f} µs per access event, {decision:.2f} µs per decision")
    out.write("\n")


# The thresholds the table also shows the model at. Read them as in-sample: choosing one of
# them by this table is tuning on the test set. Measured (300 s): the model's default (0.5)
# beats the rule on both traces on hits and on calls (NASA +10.8 points for +16.7%, the rule
# +9.7 for +20.4%; Apache +0 for +1.2% against +0 for +23.7%), but misses the goal on
# NASA (<= +13.6%). Only 0.56 meets it there, in-sample; on NASA's first half no threshold
# does. Tried and dropped, each moving NASA's frontier by at most 0.1 point: other half-lives
# (60 s to 2 h) and gap weights, a global request rate, interactions and squares, per-key
# label history, Poisson-style inputs, separate models by read-since-fetch, other learning
# rates and scaler memories, a threshold steered online to match the rule's used refreshes,
# and river's LogisticRegression, Hoeffding tree, ARF and AMF (none better, trees 5-200x
# dearer). An oracle that refreshes exactly the entries used gets +12.9 points for +6.0%: the
# limit is what per-key history can tell, not the learner (a rolling GBDT did no better).
SWEEP = (0.55, 0.56, 0.57, 0.58, 0.6, 0.65)

if __name__ == "__main__":
    main()
