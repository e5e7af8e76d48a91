"""Units limits per key: a call waits until its estimate fits, and its answer settles it."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from agents.rate_limiter.unit_limits import UnitLimits
from providers.declaration import ProviderSpec
from providers.response import ProviderReply
from schemas.models import RequestEvent
from streams.metrics import Metrics


def spec(units_per_s: float) -> ProviderSpec:
    return ProviderSpec.model_validate(
        {
            "name": "llm",
            "base_url": "https://llm.example",
            "limits": {"units": {"name": "tokens", "rate_per_s": units_per_s, "burst": 1000}},
            "operations": {
                "chat": {"method": "POST", "path": "/chat", "units_estimate": 400,
                         "units_from": "usage.total_tokens"},
                "models": {"method": "GET", "path": "/models"},
            },
        }
    )  # fmt: skip


def limits(units_per_s: float = 1000.0) -> UnitLimits:
    """A new owner's buckets start empty and fill in real time: at 1,000/s, 400 in 0.4 s."""
    made = UnitLimits(
        {"llm": spec(units_per_s)}, lambda name: 1, Metrics.create(CollectorRegistry()),
        clock=time.time,
    )  # fmt: skip
    made.assign([0])
    return made


def chat(request_id: str) -> RequestEvent:
    return RequestEvent(provider="llm", operation="chat", request_id=request_id)


def answer(tokens: int) -> ProviderReply:
    return ProviderReply(200, b'{"usage": {"total_tokens": %d}}' % tokens)


def test_only_operations_declaring_units_spend_them() -> None:
    made = limits()
    assert made.spends(chat("a"))
    assert not made.spends(RequestEvent(provider="llm", operation="models"))


async def test_a_call_waits_until_its_estimate_fits_and_a_refund_makes_room() -> None:
    made = limits()
    assert await made.acquire(chat("a"), 0, "llm", deadline_at=None)  # ~0.4 s: filling
    second = asyncio.create_task(made.acquire(chat("b"), 0, "llm", deadline_at=None))
    await asyncio.sleep(0.02)
    assert not second.done()  # 400 more take 0.4 s of refill...
    made.settle(chat("a"), answer(50), reached=True)  # ...but a spent 50: 350 come back
    await asyncio.sleep(0.15)
    assert second.done() and second.result()


async def test_a_wait_past_the_deadline_reserves_nothing() -> None:
    made = limits()
    assert not await made.acquire(chat("a"), 0, "llm", deadline_at=time.time() + 0.01)


async def test_revocation_cancels_a_waiting_call() -> None:
    made = limits()
    waiter = asyncio.create_task(made.acquire(chat("a"), 0, "llm", deadline_at=None))
    await asyncio.sleep(0)
    made.revoke([0])
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_answers_teach_the_estimate() -> None:
    made = limits(units_per_s=100_000)
    for n in range(30):
        assert await made.acquire(chat(f"r{n}"), 0, "llm", deadline_at=None)
        made.settle(chat(f"r{n}"), answer(100), reached=True)
    assert made.estimates()["llm.chat"] == pytest.approx(100, rel=0.05)
