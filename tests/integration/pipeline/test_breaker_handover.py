"""A breaker opened on one worker holds on the next owner of the provider's partition (issue 21:
"a breaker opened on one worker is seen by the owner of the same key after a rebalance")."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import pytest

from schemas.models import RequestEvent, now_ms
from streams.cli.dev.processes import Child
from streams.sdk import CallstreamClient
from streams.settings import Settings
from tests.integration.limits.test_no_stall import sample, scrape
from tests.integration.pipeline.outcomes import collect
from tests.integration.pipeline.test_breaker import one_shard

pytestmark = pytest.mark.integration

# Far longer than the test: the breaker the first worker opens must still be open at its end
# (checked: the wait left is shown by `callstream breakers`).
WAIT_IN_OPEN_S = 90.0
FAILING = 30  # requests sent into the outage: more than the breaker's 20 minimum calls
AFTER = 20  # requests sent to the second worker, every other one with a deadline
DEADLINE_S = 20.0  # shorter than the wait left in open: such a request ends circuit_open
POLL_S = 0.2
OPEN = 2  # callstream_breaker_state: 0 closed, 1 half-open, 2 open


def get_item(name: str, *, deadline_s: float | None = None) -> RequestEvent:
    created = now_ms()
    deadline = None if deadline_s is None else created + int(deadline_s * 1000)
    return RequestEvent(
        provider="fake",
        operation="get_item",
        params={"item_id": name},
        created_at_ms=created,
        deadline_at_ms=deadline,
    )


async def publish(settings: Settings, requests: list[RequestEvent]) -> None:
    async with CallstreamClient(settings) as client:
        await client.publish_many(requests)


def poll(
    url: str, name: str, wanted: Callable[[float], bool], *, timeout_s: float, **labels: str
) -> float:
    """Scrape ``url``'s metrics until ``wanted(sample)``; the sample (asserts on timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = sample(scrape(url), name, **labels)
        if wanted(value):
            return value
        assert time.monotonic() < deadline, f"{name}{labels} still {value} after {timeout_s} s"
        time.sleep(POLL_S)


def set_error_mix(fake_url: str, **mix: float) -> None:
    response = httpx.post(f"{fake_url}/_fake/config", json={"error_mix": mix}, timeout=5)
    assert response.status_code == 200, response.text


def calls_total(fake_url: str) -> int:
    calls: int = httpx.get(f"{fake_url}/_fake/stats", timeout=5).json()["calls_total"]
    return calls


def breakers_cli(settings: Settings, app_id: str = "") -> subprocess.CompletedProcess[str]:
    """`callstream breakers --json` with the workers' settings (or another app id)."""
    env = {
        **os.environ,
        "CALLSTREAM_APP_ID": app_id or settings.app_id,
        "CALLSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "CALLSTREAM_BREAKER__WAIT_IN_OPEN_S": str(WAIT_IN_OPEN_S),
    }
    return subprocess.run(
        [sys.executable, "-m", "streams", "breakers", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.slow
def test_a_breaker_opened_on_one_worker_is_seen_by_the_next_owner(
    settings: Settings,
    fake_provider_factory: Callable[..., Child],
    worker_factory: Callable[..., Child],
) -> None:
    started = time.monotonic()
    settings = one_shard(settings)  # one limit key, so one partition holds all of fake's work
    fake = fake_provider_factory("--latency-ms", "5")
    env = {
        "CALLSTREAM_PROVIDERS__FAKE__SHARDS": "1",
        "CALLSTREAM_BREAKER__WAIT_IN_OPEN_S": str(WAIT_IN_OPEN_S),
    }
    first = worker_factory(fake.url, name="first", **env)

    # An outage opens the first worker's breaker.
    set_error_mix(fake.url, status_503=1.0)
    asyncio.run(publish(settings, [get_item(f"down{n}") for n in range(FAILING)]))
    poll(first.url, "callstream_breaker_state", lambda v: v == OPEN, timeout_s=15, breaker="fake")
    opened_s = time.monotonic() - started

    # The second worker joins; the first leaves, and its partitions go to the second.
    second = worker_factory(fake.url, name="second", **env)
    assigned = sample(scrape(second.url), "callstream_rebalances_total", kind="assigned")
    first.stop()  # SIGTERM: it finishes what is in flight and leaves the group
    poll(
        second.url,
        "callstream_rebalances_total",
        lambda v: v > assigned,
        timeout_s=20,
        kind="assigned",
    )
    handed_over_s = time.monotonic() - started

    # The provider is healthy again, but the breaker is open until its wait is over: the second
    # worker calls it for none of the new requests (nor for the first worker's retries).
    set_error_mix(fake.url)
    before = calls_total(fake.url)
    sent = [get_item(f"up{n}", deadline_s=DEADLINE_S if n % 2 else None) for n in range(AFTER)]
    asyncio.run(publish(settings, sent))
    with_deadline = {r.request_id for r in sent if r.deadline_at_ms is not None}
    outcomes = asyncio.run(collect(settings, until_ids=with_deadline, timeout_s=20, settle_s=0.5))
    waiting = poll(
        second.url,
        "callstream_delayed_requests",
        lambda v: v >= AFTER // 2,
        timeout_s=10,
        kind="breaker",
    )
    metrics = scrape(second.url)
    after = calls_total(fake.url)
    shown = breakers_cli(settings)

    ends: dict[str | None, tuple[str, str | None]] = {
        d.request_id: (d.reason, d.stage) for d in outcomes.dead_letters
    }
    ends.update({r.request_id: (r.status, r.reason) for r in outcomes.results})
    print(
        f"\nbreaker open on the first worker {opened_s:.1f} s in, handed over "
        f"{handed_over_s:.1f} s in; the second worker: breaker state "
        f"{sample(metrics, 'callstream_breaker_state', breaker='fake'):g}, refusals "
        f"{sample(metrics, 'callstream_breaker_refusals_total', breaker='fake'):g}, "
        f"{waiting:g} requests waiting for it; provider calls since recovery "
        f"{after - before}; `callstream breakers`: "
        f"{shown.stdout.strip()} {shown.stderr.strip()}"
    )
    assert sample(metrics, "callstream_breaker_state", breaker="fake") == OPEN
    assert after == before, "a call while the breaker was open"
    assert {ends.get(rid) for rid in with_deadline} == {("circuit_open", "breaker")}
    assert not ({r.request_id for r in sent} - with_deadline) & ends.keys(), "they wait"

    assert shown.returncode == 0, shown.stderr
    [fake_breaker] = [b for b in json.loads(shown.stdout)["breakers"] if b["provider"] == "fake"]
    assert fake_breaker["mode"] == "open"
    assert fake_breaker["opened_at"] is not None
    assert fake_breaker["seconds_until_half_open"] > 0, "the premise: still in its wait"

    # An app id without workers has no breakers topic: one line, exit code 1, nothing created.
    missing = breakers_cli(settings, app_id=f"{settings.app_id}-none")
    assert (missing.returncode, missing.stdout) == (1, ""), missing.stderr
    assert missing.stderr.startswith("callstream: error: no breakers topic "), missing.stderr
    assert missing.stderr.count("\n") == 1, missing.stderr
    assert breakers_cli(settings, app_id=f"{settings.app_id}-none").returncode == 1
