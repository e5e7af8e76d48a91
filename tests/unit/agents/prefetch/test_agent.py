"""The agent's wiring on a Faust app: agent, table, timer and the revocation hook."""

from __future__ import annotations

import faust
import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from agents.prefetch.agent import TABLE_NAME, install, planner_config
from agents.prefetch.metrics import PrefetchMetrics
from schemas.codec import Codecs
from schemas.models import AccessBatch, AccessEvent, AccessKind
from streams.settings import PrefetchSettings, TopicSettings

PARTITIONS = 4
FILL = AccessEvent(key=b"k", at_ms=1, kind=AccessKind.FILL, expires_at_ms=30_001)


async def test_install_declares_the_agent_its_table_and_the_revocation_hook() -> None:
    app = faust.App("prefetch-test", broker="kafka://127.0.0.1:1", store="memory://")
    prefetcher = install(
        app,
        topics=TopicSettings(access="access.v1", partitions=PARTITIONS),
        prefetch=PrefetchSettings(),
        shards={},
        metrics=PrefetchMetrics.create(CollectorRegistry()),
    )
    assert list(app.agents) == ["prefetch.refresh_hot_keys"]
    assert app.tables[TABLE_NAME].partitions == PARTITIONS
    # Faust's table refuses writes outside an event: the agent is the only writer.
    with pytest.raises(TypeError, match="outside of stream iteration"):
        await prefetcher.handle(1, Codecs().access.encode(AccessBatch(events=[FILL])))
    assert "partitions=[1]" in repr(prefetcher)
    prefetcher.ready = True
    await app.on_partitions_revoked.send({TP("access.v1", 1), TP("elsewhere", 2)})
    assert not prefetcher.ready
    assert "partitions=[]" in repr(prefetcher)


def test_the_label_grace_covers_the_workers_batching() -> None:
    config = planner_config(PrefetchSettings(lead_s=1.5, flush_ms=400))
    assert (config.lead_ms, config.label_grace_ms) == (1_500, 1_800)
