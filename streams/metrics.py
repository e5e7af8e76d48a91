"""The Prometheus metrics an operator watches, as one bundle with an injected registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Provider latency buckets: from a cached-at-the-edge 5 ms to a slow LLM call.
_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


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
    consumer_lag: Gauge
    commits: Counter
    rebalances: Counter

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
                "callstream_calls_in_flight", "Requests being processed now.", registry=registry
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
        )
