"""`callstream bench ratelimit`: drive a limited provider flat out and measure the limiter."""

from __future__ import annotations

from typing import Any

from schemas.models import RequestEvent, ResultEvent
from streams.cli.dev.roundtrip import round_trip
from streams.settings import Settings


async def collect_results(settings: Settings, count: int) -> list[ResultEvent]:
    """Publish ``count`` requests for the fake provider and read back every result."""
    requests = [
        RequestEvent(provider="fake", operation="get_item", params={"item_id": f"item-{index}"})
        for index in range(count)
    ]
    results, _ = await round_trip(settings, requests, timeout_s=max(120.0, count))
    return results


def limit_figures(
    results: list[ResultEvent], rate: float, stats: dict[str, Any]
) -> dict[str, float]:
    """Allowed and achieved rate, utilization, provider-side violations, queue waits.

    The wait of a request is its time from publication to completion less the provider call:
    what the limiter (and the pipeline) added.
    """
    done = sorted(r.completed_at_ms for r in results if r.status == "ok")
    span_s = (done[-1] - done[0]) / 1000 if len(done) > 1 else 0.0
    achieved = (len(done) - 1) / span_s if span_s > 0 else 0.0
    waits = sorted(max(0.0, r.completed_at_ms - r.created_at_ms - r.latency_ms) for r in results)
    return {
        "allowed_per_s": rate,
        "achieved_per_s": round(achieved, 2),
        "utilization": round(achieved / rate, 4),
        "violations": float(stats.get("rate_limited", 0)),
        "ok": float(len(done)),
        "wait_p50_ms": _quantile(waits, 0.5),
        "wait_p99_ms": _quantile(waits, 0.99),
    }


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0
