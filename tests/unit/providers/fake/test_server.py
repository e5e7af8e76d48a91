"""The fake provider in-process: endpoints, directives, error mix, idempotency, stats, limits."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from providers.fake.server import FakeProviderServer


async def get(
    session: aiohttp.ClientSession, url: str, **kwargs: Any
) -> tuple[int, dict[str, str], Any]:
    async with session.get(url, **kwargs) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


async def test_generic_endpoints(fake_server, session):
    status, _, body = await get(session, f"{fake_server.url}/v1/items/42?color=red")
    assert (status, body) == (
        200,
        {"id": "42", "name": "Item 42", "version": 1, "query": {"color": "red"}},
    )
    async with session.post(
        f"{fake_server.url}/v1/echo", data=b"raw bytes", headers={"Content-Type": "text/plain"}
    ) as response:
        assert (response.status, await response.read()) == (200, b"raw bytes")
        assert response.headers["Content-Type"].startswith("text/plain")
    status, _, body = await get(session, f"{fake_server.url}/nowhere")
    assert (status, body) == (404, {"error": {"status": 404, "message": "Not Found"}})


async def test_status_and_retry_after_directives(fake_server, session):
    status, headers, body = await get(
        session, f"{fake_server.url}/v1/items/1?fake_status=503&fake_retry_after_s=4"
    )
    assert (status, headers["Retry-After"], body["error"]["status"]) == (503, "4", 503)
    status, _, _ = await get(
        session, f"{fake_server.url}/v1/items/1", headers={"X-Fake-Status": "404"}
    )
    assert status == 404
    status, _, body = await get(session, f"{fake_server.url}/v1/items/1?fake_status=x")
    assert status == 400
    assert "fake_status" in body["fake_directive_error"]


async def test_fail_first_per_request_id_then_succeed(fake_server, session):
    url = f"{fake_server.url}/v1/items/1?fake_status=503&fake_fail_first=2"
    statuses = [(await get(session, url, headers={"X-Request-Id": "r-1"}))[0] for _ in range(3)]
    assert statuses == [503, 503, 200]
    # Without a key, calls are counted per target.
    other = f"{fake_server.url}/v1/items/2?fake_status=500&fake_fail_first=1"
    assert [(await get(session, other))[0] for _ in range(2)] == [500, 200]


async def test_latency_and_delay_directive(fake_server_factory, session):
    server = await fake_server_factory(latency_ms=300)
    started = time.perf_counter()
    await get(session, f"{server.url}/v1/items/1")
    assert time.perf_counter() - started >= 0.3
    started = time.perf_counter()
    await get(session, f"{server.url}/v1/items/1?fake_delay_ms=0")
    assert time.perf_counter() - started < 0.3


async def test_seeded_error_mix_is_reproducible(fake_server_factory, session):
    mix = {"status_500": 0.2, "status_503": 0.2, "status_404": 0.1, "status_400": 0.1}
    runs = []
    for _ in range(2):
        server = await fake_server_factory(error_mix=mix, seed=11)
        runs.append([(await get(session, f"{server.url}/v1/items/{i}"))[0] for i in range(40)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 400, 404, 500, 503}


async def test_error_mix_429_carries_its_retry_after(fake_server_factory, session):
    server = await fake_server_factory(error_mix={"status_429": 1.0, "retry_after_s": 2})
    status, headers, _ = await get(session, f"{server.url}/v1/items/1")
    assert (status, headers["Retry-After"]) == (429, "2")
    status, headers, _ = await get(session, f"{server.url}/v1/items/1?fake_status=429")
    assert (status, headers["Retry-After"]) == (429, "2")  # a directive without its own wait
    assert server.stats.rate_limited == 0  # injected, not the bucket's


async def test_injected_timeout_is_cancelled_when_the_client_leaves(fake_server_factory, session):
    server = await fake_server_factory(timeout_sleep_s=0.6)
    with pytest.raises(asyncio.TimeoutError):
        await get(
            session,
            f"{server.url}/v1/items/1?fake_status=timeout",
            timeout=aiohttp.ClientTimeout(total=0.1),
        )
    await asyncio.sleep(0.8)
    assert server.stats.timeouts == 1
    assert 504 not in server.stats.status_counts, "the sleeping handler was cancelled"


async def test_idempotent_post_replays_and_conflicts(fake_server, session):
    url = f"{fake_server.url}/v1/echo"
    headers = {"Idempotency-Key": "idem-1", "Content-Type": "application/json"}
    async with session.post(url, data=b'{"n": 1}', headers=headers) as first:
        assert "Idempotent-Replayed" not in first.headers
    async with session.post(url, data=b'{"n": 1}', headers=headers) as again:
        assert (again.status, again.headers["Idempotent-Replayed"]) == (200, "true")
        assert await again.read() == b'{"n": 1}'
    async with session.post(url, data=b'{"n": 2}', headers=headers) as conflict:
        assert conflict.status == 422
    stats = fake_server.stats
    assert (stats.calls_for("idem-1"), stats.idempotent_replays, stats.duplicates) == (3, 1, 1)


async def test_concurrent_repeat_of_a_running_post_gets_409(fake_server, session):
    url = f"{fake_server.url}/v1/echo"

    async def post(delay_ms: int) -> int:
        async with session.post(
            url, data=b"x", headers={"Idempotency-Key": "k", "X-Fake-Delay-Ms": str(delay_ms)}
        ) as r:
            status: int = r.status
            return status

    first = asyncio.create_task(post(1000))
    for _ in range(500):  # until the first one has arrived and is running
        if fake_server.stats.calls_total:
            break
        await asyncio.sleep(0.01)
    assert await post(0) == 409
    assert await first == 200


async def test_rate_limit_headers_and_stats(fake_server_factory, session):
    # A refill rate this slow keeps the test exact however slowly it runs.
    server = await fake_server_factory(rate_limit={"rate_per_s": 0.01, "burst": 3})
    results = [await get(session, f"{server.url}/v1/items/{i}") for i in range(4)]
    assert [status for status, _, _ in results] == [200, 200, 200, 429]
    _, ok_headers, _ = results[0]
    assert (ok_headers["X-RateLimit-Limit"], ok_headers["X-RateLimit-Remaining"]) == ("3", "2")
    _, headers, _ = results[3]
    assert headers["X-RateLimit-Remaining"] == "0"
    assert 99 <= int(headers["Retry-After"]) <= 100  # one token at 0.01/s
    assert int(headers["X-RateLimit-Reset"]) >= 299
    stats = server.stats
    assert (stats.rate_limited, stats.calls_total, stats.arrivals, stats.max_rate_1s) == (
        1,
        3,
        4,
        4,
    )


async def test_stats_reset_and_config_endpoints(fake_server, session):
    base = fake_server.url
    for _ in range(2):
        await get(session, f"{base}/v1/items/1", headers={"X-Request-Id": "dup"})
    _, _, stats = await get(session, f"{base}/_fake/stats?keys=1")
    assert (stats["calls_total"], stats["duplicates"], stats["calls_by_key"]) == (2, 1, {"dup": 2})
    async with session.post(f"{base}/_fake/config", json={"latency_ms": 25}) as response:
        assert (await response.json())["latency_ms"] == 25
    assert fake_server.config.latency_ms == 25
    async with session.post(f"{base}/_fake/config", json={"flavor": "github"}) as response:
        assert response.status == 400
    async with session.post(f"{base}/_fake/reset") as response:
        assert response.status == 200
    _, _, stats = await get(session, f"{base}/_fake/stats")
    assert (stats["calls_total"], stats["duplicates"]) == (0, 0)


async def test_api_key_demanded(fake_server_factory, session):
    server = await fake_server_factory(auth={"type": "api_key", "name": "X-API-Key", "key": "k1"})
    assert (await get(session, f"{server.url}/v1/items/1"))[0] == 401
    assert (await get(session, f"{server.url}/v1/items/1", headers={"X-API-Key": "k2"}))[0] == 401
    assert (await get(session, f"{server.url}/v1/items/1", headers={"X-API-Key": "k1"}))[0] == 200
    assert (server.stats.auth_failures, server.stats.calls_total) == (2, 1)


async def test_token_endpoint_without_oauth2_is_404(fake_server, session):
    async with session.post(f"{fake_server.url}/oauth/token", data={"grant_type": "x"}) as r:
        assert r.status == 404
        assert "OAuth2" in json.loads(await r.read())["error"]


async def test_url_before_start_is_an_error():
    with pytest.raises(RuntimeError, match="not started"):
        _ = FakeProviderServer().url
