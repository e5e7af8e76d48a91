"""The prefetcher's metrics bundle (issue 24), with an injected registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["PrefetchMetrics"]


@dataclass(frozen=True)
class PrefetchMetrics:
    """The prefetcher's own metrics (the worker counts the prefetch calls it makes, used and
    wasted). Precision = labels{verdict="refresh",requested="true"} / labels{verdict="refresh"}.
    """

    registry: CollectorRegistry
    events: Counter
    prefetches: Counter
    decisions: Counter
    labels: Counter
    model_updates: Counter
    keys: Gauge
    ticks: Counter
    undecodable: Counter
    errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> PrefetchMetrics:
        registry = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=registry,
            events=Counter(
                "callstream_prefetcher_access_events",
                "Access events read, by kind (hit, fill, prefetch).",
                ["kind"],
                registry=registry,
            ),
            prefetches=Counter(
                "callstream_prefetcher_prefetches",
                "Prefetch requests published.",
                registry=registry,
            ),
            decisions=Counter(
                "callstream_prefetcher_decisions",
                "Decisions taken before an entry's expiry, by verdict: refresh, skip, "
                "no_template (no fill seen to copy), late (decided after the expiry).",
                ["verdict"],
                registry=registry,
            ),
            labels=Counter(
                "callstream_prefetcher_labels",
                "Decisions whose outcome became known: was the key requested within one entry "
                "lifetime after the expiry? verdict refresh and requested true is a used prefetch.",
                ["verdict", "requested"],
                registry=registry,
            ),
            model_updates=Counter(
                "callstream_prefetcher_model_updates",
                "Examples the online model learnt (with either decider: it learns in the shadow "
                "of the rule).",
                registry=registry,
            ),
            keys=Gauge(
                "callstream_prefetcher_keys",
                "Cache keys tracked in the partitions this process owns.",
                registry=registry,
            ),
            ticks=Counter(
                "callstream_prefetcher_ticks",
                "Ticks sent to the access topic to fire due decisions of a quiet partition.",
                registry=registry,
            ),
            undecodable=Counter(
                "callstream_prefetcher_undecodable",
                "Records skipped: an access batch or a request template that does not decode.",
                ["what"],
                registry=registry,
            ),
            errors=Counter(
                "callstream_prefetcher_errors",
                "Records whose processing failed unexpectedly (logged; the stream goes on).",
                registry=registry,
            ),
        )
