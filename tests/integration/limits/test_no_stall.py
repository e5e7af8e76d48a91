"""Waiting never blocks other keys (issue 20): a flood for a slow provider pauses its own
partition only, while another tenant's requests to a fast provider keep completing."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from schemas.models import RequestEvent
from streams.routing import partition_for
from streams.sdk import CallstreamClient
from streams.settings import ProviderSettings, Settings
from tests.integration.conftest import API_KEY
from tests.integration.pipeline.outcomes import collect, publish, run

pytestmark = pytest.mark.integration

SLOW = "tortoise"  # 2 calls a second, declared in a provider file
SLOW_RATE_PER_S = 2
FLOOD = 3000
PER_PARTITION = 300  # the flood's partition pauses at this many records in flight
VICTIM_ROUNDS, VICTIM_PER_ROUND = 10, 20

SLOW_SPEC = f"""
name = "{SLOW}"
base_url = "{{url}}"
auth = {{{{ type = "api_key", in = "header", name = "X-API-Key", key = "env:TORTOISE_KEY" }}}}
[limits]
rate_per_s = {SLOW_RATE_PER_S}
burst = 1
[operations.get_item]
path = "/v1/items/{{{{item_id}}}}"
path_params.item_id = {{{{ pattern = "[A-Za-z0-9._~-]{{{{1,128}}}}" }}}}
"""


def items(provider: str, tenant: str, count: int, prefix: str) -> list[RequestEvent]:
    return [
        RequestEvent(
            provider=provider,
            operation="get_item",
            tenant=tenant,
            params={"item_id": f"{prefix}{n}"},
        )
        for n in range(count)
    ]


def sample(metrics: str, name: str, **labels: str) -> float:
    """One sample of the worker's /metrics text (0.0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}(?:\{{{re.escape(wanted)}\}})? (\S+)$" if wanted else None
    for line in metrics.splitlines():
        if wanted and pattern and (match := re.match(pattern, line)):
            return float(match.group(1))
        if not wanted and line.startswith(f"{name} "):
            return float(line.split()[1])
    return 0.0


def scrape(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=5).text


async def publish_in_rounds(settings: Settings, rounds: int, per_round: int) -> list[RequestEvent]:
    """The victim's requests, a round every 0.5 s, each created just before it is sent."""
    sent: list[RequestEvent] = []
    async with CallstreamClient(settings, ensure_topics=False) as client:
        for round_ in range(rounds):
            batch = items("fake", "victim", per_round, f"v{round_}-")
            await client.publish_many(batch)
            sent.extend(batch)
            await asyncio.sleep(0.5)
    return sent


def with_providers(settings: Settings) -> Settings:
    providers = {"fake": ProviderSettings(shards=1), SLOW: ProviderSettings()}
    return settings.model_copy(update={"providers": providers})


def start_worker(fake_provider_factory, worker_factory, tmp_path: Path, **env: str):
    """A worker serving ``fake`` (fast, one shard) and ``tortoise`` (2/s), both on one fake."""
    fake = fake_provider_factory("--latency-ms", "2")
    spec_dir = tmp_path / "provider_files"
    spec_dir.mkdir()
    (spec_dir / f"{SLOW}.toml").write_text(SLOW_SPEC.format(url=fake.url))
    return worker_factory(
        fake.url,
        CALLSTREAM_PROVIDER_DIRS=f'["{spec_dir}"]',
        CALLSTREAM_PROVIDERS__FAKE__SHARDS="1",
        CALLSTREAM_PROVIDERS__TORTOISE__ENABLED="true",
        TORTOISE_KEY=API_KEY,
        **env,
    )


def test_a_flood_for_a_slow_provider_pauses_only_its_partition(
    settings, fake_provider_factory, worker_factory, tmp_path: Path
):
    settings = with_providers(settings)
    partitions = list(range(settings.topics.partitions))
    slow_partition = partition_for(SLOW.encode(), partitions)
    assert slow_partition != partition_for(b"fake", partitions), "the keys must not share"

    worker = start_worker(
        fake_provider_factory,
        worker_factory,
        tmp_path,
        # Below the flood: with one worker-wide bound, the flood alone would fill it and the
        # worker would stop fetching every partition (review finding 2). Shared among the six
        # partitions, 400 each, capped at PER_PARTITION.
        CALLSTREAM_CALLER__MAX_PENDING="2400",
        CALLSTREAM_CALLER__MAX_PENDING_PER_PARTITION=str(PER_PARTITION),
        CALLSTREAM_LIMITER__MAX_WAITING_PER_KEY="10000",
        CALLSTREAM_LIMITER__MAX_WAITING_PER_TENANT="10000",
    )
    before = scrape(worker.url)
    rebalances = sample(before, "callstream_rebalances_total", kind="assigned")

    flood = items(SLOW, "noisy", FLOOD, "n")  # no deadline: they would wait 300 s
    run(publish(settings, flood, spread=False))
    deadline = time.monotonic() + 20
    while sample(scrape(worker.url), "callstream_partitions_paused") < 1:
        assert time.monotonic() < deadline, "the flooded partition was never paused"
        time.sleep(0.2)

    victims = run(publish_in_rounds(settings, VICTIM_ROUNDS, VICTIM_PER_ROUND))
    outcomes = run(collect(settings, until_ids={r.request_id for r in victims}, timeout_s=30))
    during = scrape(worker.url)

    by_id = {r.request_id: r for r in outcomes.results}
    created = {r.request_id: r.created_at_ms for r in victims}
    missing = created.keys() - by_id.keys()
    assert not missing, f"{len(missing)} of the victim's requests got no outcome in 30 s"
    latencies = sorted(by_id[i].completed_at_ms - created[i] for i in created)
    assert all(by_id[i].status == "ok" for i in created)
    p99 = latencies[math.ceil(0.99 * len(latencies)) - 1]
    print(f"victim p50 {latencies[len(latencies) // 2]} ms, p99 {p99} ms, max {latencies[-1]} ms")
    assert p99 < 1000, f"victim p99 {p99} ms while the flood waits"

    # The flood is served at its provider's rate, its partition paused at the bound.
    noisy_ok = sum(1 for r in outcomes.results if r.tenant == "noisy" and r.status == "ok")
    assert noisy_ok >= 5
    assert noisy_ok < FLOOD / 2
    assert sample(during, "callstream_partitions_paused") == 1
    assert sample(during, "callstream_requests_pending") <= PER_PARTITION + VICTIM_PER_ROUND
    # The member never left its group: no assignment beyond the first one.
    assert sample(during, "callstream_rebalances_total", kind="assigned") == rebalances == 1
    waiting = sample(during, "callstream_limiter_waiting_requests", limit_key=SLOW)
    assert 0 < waiting <= PER_PARTITION


def test_past_its_cap_a_tenant_is_refused_queue_full_and_another_still_waits_its_turn(
    settings, fake_provider_factory, worker_factory, tmp_path: Path
):
    settings = with_providers(settings)
    worker = start_worker(
        fake_provider_factory,
        worker_factory,
        tmp_path,
        CALLSTREAM_LIMITER__MAX_WAITING_PER_TENANT="20",
    )
    noisy = items(SLOW, "noisy", 300, "n")
    run(publish(settings, noisy, spread=False))
    polite = items(SLOW, "polite", 3, "p")
    run(publish(settings, polite, spread=False))
    ids = {r.request_id for r in noisy + polite}
    outcomes = run(collect(settings, until_ids=ids, timeout_s=40, settle_s=0.5))

    statuses = Counter((r.tenant, r.status, r.reason) for r in outcomes.results)
    full = statuses[("noisy", "rejected", "queue_full")]
    assert full + statuses[("noisy", "ok", None)] == 300, statuses
    assert full >= 250, statuses  # refused at once, not left to stall the partition
    assert statuses[("polite", "ok", None)] == 3, statuses  # its own cap, not noisy's
    metrics = scrape(worker.url)
    refusals = sample(
        metrics, "callstream_limiter_refusals_total", provider=SLOW, reason="queue_full"
    )
    assert refusals == full
