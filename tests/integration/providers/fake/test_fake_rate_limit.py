"""The fake's strict limit, from a child process: bursts get 429s, a paced client gets none."""

from __future__ import annotations

import asyncio
import time

import pytest

from providers.auth.request import PreparedRequest
from tests.integration.providers.fake.conftest import send

pytestmark = pytest.mark.integration


async def test_burst_over_the_limit_gets_429_with_headers(fake_process_factory, session):
    fake = fake_process_factory(rate_limit={"rate_per_s": 0.5, "burst": 5})
    requests = [PreparedRequest("GET", f"{fake.url}/v1/items/{i}", {}) for i in range(30)]
    started = time.monotonic()
    responses = await asyncio.gather(*(send(session, r) for r in requests))
    refilled = int((time.monotonic() - started) * 0.5)
    statuses = [r.status for r in responses]
    assert 5 <= statuses.count(200) <= 5 + refilled  # the burst, plus what refilled meanwhile
    limited = [r for r in responses if r.status == 429]
    assert len(limited) == 30 - statuses.count(200)
    for response in limited:
        headers = response.headers
        assert int(headers["Retry-After"]) >= 1
        assert headers["X-RateLimit-Limit"] == "5"
        assert headers["X-RateLimit-Remaining"] == "0"
        assert int(headers["X-RateLimit-Reset"]) >= 1
    stats = await fake.astats()
    assert stats["rate_limited"] == len(limited)
    assert stats["calls_total"] == statuses.count(200)
    assert stats["max_rate_1s"] == 30


async def test_client_pacing_at_the_rate_gets_none(fake_process_factory, session):
    rate_per_s, count = 20.0, 40
    # Burst 6 absorbs 250 ms of scheduling jitter on either side; the rate is what is tested.
    fake = fake_process_factory(rate_limit={"rate_per_s": rate_per_s, "burst": 6}, latency_ms=5)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def paced(index: int) -> int:
        # Absolute schedule: lateness never makes later requests bunch up early.
        await asyncio.sleep(max(0.0, start + index / rate_per_s - loop.time()))
        request = PreparedRequest("GET", f"{fake.url}/v1/items/{index}", {})
        return (await send(session, request)).status

    started = time.perf_counter()
    statuses = await asyncio.gather(*(paced(i) for i in range(count)))
    assert statuses == [200] * count
    assert time.perf_counter() - started >= (count - 1) / rate_per_s
    stats = await fake.astats()
    assert stats["rate_limited"] == 0
    assert stats["max_rate_1s"] <= rate_per_s + 6
