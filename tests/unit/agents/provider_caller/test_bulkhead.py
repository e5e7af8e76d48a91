"""Bulkheads: a slow provider holds at most its own calls; the others keep calling."""

from __future__ import annotations

import asyncio
import json

from prometheus_client import CollectorRegistry

from agents.provider_caller.bulkhead import Bulkheads
from agents.provider_caller.caller import Caller
from providers.auth.request import PreparedRequest
from providers.response import ProviderReply
from schemas.models import RequestEvent
from streams.metrics import Metrics
from streams.stage.records import Outcome, SourceRecord

from .test_caller import JsonDecoder


class TwoProviders:
    """``slow`` answers when the test opens its gate; ``fast`` at once. Counts calls at once."""

    provider_names = frozenset({"slow", "fast"})

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.running = {"slow": 0, "fast": 0}
        self.most = {"slow": 0, "fast": 0}

    def build(self, request: RequestEvent) -> PreparedRequest:
        return PreparedRequest("GET", f"http://{request.provider}.test/")

    async def call(self, request: RequestEvent, prepared: PreparedRequest) -> ProviderReply:
        name = request.provider
        self.running[name] += 1
        self.most[name] = max(self.most[name], self.running[name])
        try:
            if name == "slow":
                await self.gate.wait()
            return ProviderReply(status=200, body=b"{}", headers={}, latency_s=0.0)
        finally:
            self.running[name] -= 1


def record(provider: str, n: int) -> SourceRecord:
    request = RequestEvent(provider=provider, operation="get", request_id=f"{provider}{n}")
    return SourceRecord("requests", 0, n, json.dumps(request.model_dump(mode="json")).encode())


async def test_a_slow_provider_holds_only_its_bulkhead_and_the_other_keeps_calling() -> None:
    metrics = Metrics.create(CollectorRegistry())
    gateway = TwoProviders()
    bulkheads = Bulkheads(lambda provider, _op: (provider, 3), metrics)
    caller = Caller(gateway, JsonDecoder(), max_in_flight=5, bulkheads=bulkheads)  # type: ignore[arg-type]

    slow = [asyncio.create_task(caller.handle(record("slow", n))) for n in range(10)]
    await asyncio.sleep(0.01)
    assert gateway.most["slow"] == 3, "the slow provider holds three of the five call slots"
    fast = await asyncio.wait_for(
        asyncio.gather(*(caller.handle(record("fast", n)) for n in range(20))), 1
    )
    assert all(isinstance(o, Outcome) and o.event.status == "ok" for o in fast)  # type: ignore[union-attr]
    waits = metrics.registry.get_sample_value(
        "callstream_bulkhead_waits_total", {"bulkhead": "slow"}
    )
    assert waits == 7

    gateway.gate.set()
    done = await asyncio.wait_for(asyncio.gather(*slow), 1)
    assert len(done) == 10 and gateway.most["slow"] == 3


def test_a_bulkhead_as_large_as_max_in_flight_is_skipped() -> None:
    metrics = Metrics.create(CollectorRegistry())
    sizes = {"lone": 10, "small": 3}
    bulkheads = Bulkheads(lambda p, _op: (p, sizes[p]), metrics, max_in_flight=10)
    assert bulkheads.slot("lone", "get") is None, "it could never bind: no semaphore"
    small = bulkheads.slot("small", "get")
    assert small is not None and bulkheads.slot("small", "put") is small
