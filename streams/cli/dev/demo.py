"""The demo workload: a mix of requests that exercises every kind of outcome."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from schemas.models import RequestEvent, ResultEvent, now_ms

# Garbage the demo also publishes, to show that bad input becomes a dead letter, not a crash.
GARBAGE = (b"not avro at all", b"\xc3\x01\x00\x00", b"")


def demo_requests(count: int, *, seed: int = 7, provider: str = "fake") -> list[RequestEvent]:
    """``count`` requests: mostly successes, plus 404s, transient 500s, expired ones, and
    reads of a few popular items through a cacheable operation (answered ``cached`` after
    their first call).

    The fake provider obeys the ``fake_status``/``fake_delay_ms`` parameters, so the mix is
    exact and the summary can be checked against it.
    """
    rnd = random.Random(seed)
    requests = []
    for index in range(count):
        roll = rnd.random()
        params = {"item_id": f"item-{rnd.randrange(200)}"}
        deadline = None
        operation = "get_item"
        if roll >= 0.80:  # popular items, shared by every tenant: one call each, then hits
            operation = "get_public_item"
            params = {"item_id": f"popular-{rnd.randrange(10)}"}
        elif roll < 0.05:
            params["fake_status"] = "404"
        elif roll < 0.10:  # a transient failure: 500 twice, then fine (retried with backoff)
            params["fake_status"] = "500"
            params["fake_fail_first"] = "2"
        elif roll < 0.12:
            deadline = now_ms() - 1  # already past: must never reach the provider
        tenant = ("shop-eu", "shop-us")[index % 2]
        requests.append(
            RequestEvent(
                provider=provider,
                operation=operation,
                params=params,
                tenant=tenant,
                deadline_at_ms=deadline,
            )
        )
    return requests


@dataclass
class OutcomeTally:
    """Counts of outcomes by kind, and latencies of successful calls."""

    by_kind: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    def add_result(self, event: ResultEvent) -> None:
        kind = str(event.status) + (f" ({event.reason})" if event.reason else "")
        if event.status == "ok" and event.attempts > 1:
            kind = "ok after retries"
        self.by_kind[kind] += 1
        if event.status == "ok":
            self.latencies_ms.append(event.latency_ms)

    def add_dead_letter(self, reason: str) -> None:
        self.by_kind[f"dead letter ({reason})"] += 1

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
