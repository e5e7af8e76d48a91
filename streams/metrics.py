"""The Prometheus metrics an operator watches, as one bundle with an injected registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

# Provider latency buckets: from a cached-at-the-edge 5 ms to a slow LLM call.
_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

M = TypeVar("M", bound=MetricWrapperBase)


class LabelledCache(dict[str | tuple[str, ...], M]):
    """The labelled children of one metric, each made on first use: ``cache["openai"]`` or
    ``cache["openai", "ok"]`` is ``metric.labels(...)`` without its lock and key-building on
    every call (hot path). A dict subclass, so a hit is a plain dict lookup.

    ``fixed`` label values go after the key's: ``LabelledCache(calls, "ok")["openai"]`` is
    ``calls.labels("openai", "ok")``. Keys must come from a bounded set (configured providers,
    statuses, reasons): each one keeps a child, as Prometheus does.
    """

    __slots__ = ("_fixed", "_metric")

    def __init__(self, metric: M, *fixed: str) -> None:
        super().__init__()
        self._metric = metric
        self._fixed = fixed

    def __missing__(self, key: str | tuple[str, ...]) -> M:
        values = key if isinstance(key, tuple) else (key,)
        child = self[key] = self._metric.labels(*values, *self._fixed)
        return child

    def __repr__(self) -> str:
        return f"LabelledCache({self._metric!r}, children={len(self)})"


@dataclass(frozen=True)
class Metrics:
    """Every metric of a worker. Labels stay low-cardinality: provider, status, reason."""

    registry: CollectorRegistry
    events_in: Counter
    outcomes: Counter
    dead_letters: Counter
    provider_calls: Counter
    provider_call_seconds: Histogram
    calls_in_flight: Gauge
    requests_pending: Gauge
    partitions_paused: Gauge
    consumer_lag: Gauge
    commits: Counter
    rebalances: Counter
    limiter_wait_seconds: Histogram
    limiter_refusals: Counter
    limiter_waiting: Gauge
    limiter_tokens: Gauge
    limiter_rate: Gauge
    limiter_learned_limit: Gauge
    limiter_throttled: Counter
    limiter_rate_cuts: Counter
    limiter_bound_seconds: Counter
    concurrency_limit: Gauge
    units_reserved: Counter
    units_spent: Counter
    units_waits: Counter
    units_estimate: Gauge
    forwarded: Counter
    skipped: Counter
    outcomes_reduced: Counter
    delayed: Gauge
    delays_fired: Counter
    delay_lateness_seconds: Histogram
    retries: Counter
    retries_refused: Counter
    breaker_state: Gauge
    breaker_transitions: Counter
    breaker_refusals: Counter
    bulkhead_waits: Counter
    cache_lookups: Counter
    cache_coalesced: Counter
    cache_revalidations: Counter
    cache_stale: Counter
    cache_not_stored: Counter
    cache_evictions: Counter
    cache_bytes: Gauge
    cache_entries: Gauge
    cache_write_failures: Counter
    access_events: Counter
    access_batches: Counter
    access_dropped: Counter
    prefetch_calls: Counter
    prefetch_skipped: Counter
    prefetch_used: Counter
    prefetch_wasted: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> Metrics:
        registry = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=registry,
            events_in=Counter(
                "callstream_events_in", "Request events consumed.", ["topic"], registry=registry
            ),
            outcomes=Counter(
                "callstream_outcomes",
                "Outcomes published, by result status (dead letters have status dead_letter).",
                ["provider", "status"],
                registry=registry,
            ),
            dead_letters=Counter(
                "callstream_dead_letters",
                "Dead letters published, by reason and stage.",
                ["reason", "stage"],
                registry=registry,
            ),
            provider_calls=Counter(
                "callstream_provider_calls",
                "HTTP calls made to providers, by outcome class.",
                ["provider", "outcome"],
                registry=registry,
            ),
            provider_call_seconds=Histogram(
                "callstream_provider_call_seconds",
                "Provider call latency, request sent to response read.",
                ["provider"],
                buckets=_LATENCY_BUCKETS_S,
                registry=registry,
            ),
            calls_in_flight=Gauge(
                "callstream_calls_in_flight", "Provider calls running now.", registry=registry
            ),
            requests_pending=Gauge(
                "callstream_requests_pending",
                "Requests read and not finished: waiting for a token, calling, or publishing.",
                registry=registry,
            ),
            partitions_paused=Gauge(
                "callstream_partitions_paused",
                "Partitions not fetched because they hold their share of unfinished records "
                "(caller.max_pending shared among the partitions, at most "
                "caller.max_pending_per_partition each).",
                registry=registry,
            ),
            consumer_lag=Gauge(
                "callstream_consumer_lag_records",
                "Records between the committed position and the end of each owned partition.",
                ["topic", "partition"],
                registry=registry,
            ),
            commits=Counter(
                "callstream_offset_commits", "Offset commits made by the caller.", registry=registry
            ),
            rebalances=Counter(
                "callstream_rebalances",
                "Partition assignments and revocations seen by the caller.",
                ["kind"],
                registry=registry,
            ),
            limiter_wait_seconds=Histogram(
                "callstream_limiter_wait_seconds",
                "Time a request waited for its quota and rate limit before the call.",
                ["provider"],
                buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
                registry=registry,
            ),
            limiter_refusals=Counter(
                "callstream_limiter_refusals",
                "Requests not called: quota_exceeded, queue_full (waiting room cap), "
                "deadline_passed or max_wait_exceeded (expired while waiting) or over_burst.",
                ["provider", "reason"],
                registry=registry,
            ),
            limiter_waiting=Gauge(
                "callstream_limiter_waiting_requests",
                "Requests waiting for a token, per limit key.",
                ["limit_key"],
                registry=registry,
            ),
            limiter_tokens=Gauge(
                "callstream_limiter_tokens_available",
                "Tokens available now, per limit key owned by this worker.",
                ["limit_key"],
                registry=registry,
            ),
            limiter_rate=Gauge(
                "callstream_limiter_rate_per_s",
                "The rate enforced now per limit key (adaptive: between its floor and ceiling).",
                ["limit_key"],
                registry=registry,
            ),
            limiter_learned_limit=Gauge(
                "callstream_limiter_learned_limit_per_s",
                "Per limit key, the provider's real limit as learned: the rate it last refused "
                "(429), or the ceiling its headers set (the declared rate if neither).",
                ["limit_key"],
                registry=registry,
            ),
            limiter_throttled=Counter(
                "callstream_limiter_throttled",
                "Calls the provider refused with 429, per limit key.",
                ["limit_key"],
                registry=registry,
            ),
            limiter_rate_cuts=Counter(
                "callstream_limiter_rate_cuts",
                "Adaptive rate decreases per limit key (429s of calls sent before a cut are "
                "the old rate's and cut nothing).",
                ["limit_key"],
                registry=registry,
            ),
            units_reserved=Counter(
                "callstream_units_reserved",
                "Units (tokens...) reserved before calls, per limit key (limits.units).",
                ["limit_key"],
                registry=registry,
            ),
            units_spent=Counter(
                "callstream_units_spent",
                "Units the provider's answers said the calls spent, per limit key.",
                ["limit_key"],
                registry=registry,
            ),
            units_waits=Counter(
                "callstream_units_waits",
                "Requests that waited for their units estimate to fit, per limit key.",
                ["limit_key"],
                registry=registry,
            ),
            units_estimate=Gauge(
                "callstream_units_estimate",
                "Units reserved per call as learned from answers, per provider.operation.",
                ["operation"],
                registry=registry,
            ),
            concurrency_limit=Gauge(
                "callstream_concurrency_limit",
                "Calls in flight allowed per limit key, lowered when latency rises over its "
                "baseline (limiter.adaptive.concurrency).",
                ["limit_key"],
                registry=registry,
            ),
            limiter_bound_seconds=Counter(
                "callstream_limiter_bound_seconds",
                "Seconds a limit key's adaptive rate spent at its floor or its ceiling.",
                ["limit_key", "bound"],
                registry=registry,
            ),
            outcomes_reduced=Counter(
                "callstream_outcomes_reduced",
                "Outcomes over topics.max_outcome_bytes or refused by the broker, by what was "
                "published instead: result (body dropped), dead_letter (original dropped, "
                "original_raw maybe truncated), replaced (a minimal dead letter instead), lost "
                "(nothing published: logged, offset finished).",
                ["kind"],
                registry=registry,
            ),
            skipped=Counter(
                "callstream_requests_skipped",
                "Records skipped after a handover because the previous owner had finished them.",
                registry=registry,
            ),
            forwarded=Counter(
                "callstream_requests_forwarded",
                "Requests that arrived on a partition not owning their limit key and were "
                "re-published with the right key.",
                registry=registry,
            ),
            delayed=Gauge(
                "callstream_delayed_requests",
                "Requests waiting durably in the timer tables of the partitions this worker "
                "owns, by kind: retry (backing off after a retriable failure), retry_budget "
                "(a retry deferred by its key's retry budget), quota (waiting for their "
                "tenant's next window) or breaker (waiting for an open breaker).",
                ["kind"],
                registry=registry,
            ),
            delays_fired=Counter(
                "callstream_delays_fired",
                "Delayed requests taken up again when due, by kind.",
                ["kind"],
                registry=registry,
            ),
            delay_lateness_seconds=Histogram(
                "callstream_delay_lateness_seconds",
                "How late a delayed request was taken up, after its due time.",
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                registry=registry,
            ),
            retries=Counter(
                "callstream_retries",
                "Retries scheduled after a retriable failure, by the failure's reason.",
                ["provider", "reason"],
                registry=registry,
            ),
            retries_refused=Counter(
                "callstream_retries_refused",
                "Retries held back or not made, by why: retry_budget_deferred (a due retry "
                "waits for its limit key's retry budget), retry_budget_exceeded (not within "
                "its time budget or deadline), retries_exhausted (attempts, time budget or "
                "deadline) or unsafe_to_retry (not idempotent, may have reached the provider).",
                ["provider", "reason"],
                registry=registry,
            ),
            breaker_state=Gauge(
                "callstream_breaker_state",
                "Each circuit breaker's mode: 0 closed, 1 half-open, 2 open.",
                ["breaker"],
                registry=registry,
            ),
            breaker_transitions=Counter(
                "callstream_breaker_transitions",
                "Circuit breaker changes of mode, by the mode entered.",
                ["breaker", "to"],
                registry=registry,
            ),
            breaker_refusals=Counter(
                "callstream_breaker_refusals",
                "Calls a circuit breaker refused (the request waits, or ends circuit_open).",
                ["breaker"],
                registry=registry,
            ),
            bulkhead_waits=Counter(
                "callstream_bulkhead_waits",
                "Calls that waited for their bulkhead (the provider's, or the operation's, "
                "concurrent calls were at their maximum).",
                ["bulkhead"],
                registry=registry,
            ),
            cache_lookups=Counter(
                "callstream_cache_lookups",
                "Response cache lookups by tier (l1, l2) and result: hit (fresh, or stale "
                "within a window) or miss (absent, or expired). An L1 miss looks in L2.",
                ["provider", "tier", "result"],
                registry=registry,
            ),
            cache_coalesced=Counter(
                "callstream_cache_coalesced",
                "Requests that waited for another request's call of the same cache key "
                "instead of calling (request coalescing).",
                ["provider"],
                registry=registry,
            ),
            cache_revalidations=Counter(
                "callstream_cache_revalidations",
                "Conditional requests for expired entries, by result: not_modified (304, the "
                "entry refreshed without its body), modified (a new answer) or failed.",
                ["provider", "result"],
                registry=registry,
            ),
            cache_stale=Counter(
                "callstream_cache_stale",
                "Answers given from an expired entry, by why: revalidate (within "
                "stale-while-revalidate, refreshed in the background) or error (the provider "
                "could not answer: stale-if-error).",
                ["provider", "why"],
                registry=registry,
            ),
            cache_not_stored=Counter(
                "callstream_cache_not_stored",
                "Answers of cacheable operations not kept, by why: no_store, private (a "
                "shared entry), too_large, status (not a 200).",
                ["provider", "reason"],
                registry=registry,
            ),
            cache_evictions=Counter(
                "callstream_cache_evictions",
                "Entries the cache let go to make room, by tier.",
                ["tier"],
                registry=registry,
            ),
            cache_bytes=Gauge(
                "callstream_cache_bytes",
                "Bytes the cache holds, by tier (l2: the partitions this worker owns).",
                ["tier"],
                registry=registry,
            ),
            cache_entries=Gauge(
                "callstream_cache_entries",
                "Entries the cache holds, by tier (l2: the partitions this worker owns).",
                ["tier"],
                registry=registry,
            ),
            cache_write_failures=Counter(
                "callstream_cache_write_failures",
                "L2 writes that did not reach the changelog (the entry stays in L1 only).",
                registry=registry,
            ),
            access_events=Counter(
                "callstream_access_events",
                "Cache accesses sent to the access topic for the predictive cache.",
                registry=registry,
            ),
            access_batches=Counter(
                "callstream_access_batches",
                "Access-topic records sent (each a batch of one partition's accesses).",
                registry=registry,
            ),
            access_dropped=Counter(
                "callstream_access_dropped",
                "Cache accesses not sent: the broker refused the batch, or the buffer was full.",
                registry=registry,
            ),
            prefetch_calls=Counter(
                "callstream_prefetch_calls",
                "Calls made for prefetch requests, by result: refreshed (a new answer), "
                "not_modified (a 304) or failed.",
                ["provider", "result"],
                registry=registry,
            ),
            prefetch_skipped=Counter(
                "callstream_prefetch_skipped",
                "Prefetch requests not called, by why: quota (no spare token, or requests "
                "waiting), budget (the key's prefetch budget is spent), breaker (open), "
                "in_flight (a call of the key is under way), not_cacheable.",
                ["provider", "reason"],
                registry=registry,
            ),
            prefetch_used=Counter(
                "callstream_prefetch_used",
                "Entries refreshed by a prefetch that answered a request before the next "
                "refresh (the prefetch paid).",
                ["provider"],
                registry=registry,
            ),
            prefetch_wasted=Counter(
                "callstream_prefetch_wasted",
                "Entries refreshed by a prefetch that answered no request before they were "
                "refreshed or filled again (one that expires and is never asked for again is "
                "not counted: calls minus used is the upper bound).",
                ["provider"],
                registry=registry,
            ),
        )
