"""The composition root of `callstream prefetcher`: the predictive-cache agent (issue 24) in a
Faust app of its own, with Faust's Kafka I/O on, its own app id and consumer group.

Beside :mod:`streams.composition`, the only streams module that imports ``agents.prefetch``
(checked by ``lint-imports``); the command imports it lazily. The worker's ``WorkerApp`` turns
Faust's Kafka I/O off (``HostBootStrategy``): here the agent, its table and its timer are Faust's.
The app id is ``{app_id}-prefetch``, so its group, changelog and data never meet the call path's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from agents.prefetch.agent import install
from agents.prefetch.metrics import PrefetchMetrics
from agents.prefetch.prefetcher import Prefetcher
from streams.app import add_metrics_page, check_web_port
from streams.errors import ConfigurationError
from streams.logs import quiet
from streams.settings import Settings, WebSettings
from streams.topics import access_topic, check_copartitioned, ensure_topics, pipeline_topics

__all__ = [
    "app_id",
    "check_port",
    "check_topics",
    "compose",
    "faust_options",
    "prefetcher_web",
    "run_prefetcher",
]

log = logging.getLogger(__name__)

# Faust commits every 2.8 s by default: a rebalance then replays up to that much of the access
# stream. Replays are harmless here (decisions are deduplicated in the table) but cost CPU.
COMMIT_INTERVAL_S = 0.5


def app_id(settings: Settings) -> str:
    """The prefetcher's Faust app id: its consumer group and the prefix of its changelog."""
    return f"{settings.app_id}-prefetch"


def prefetcher_web(settings: Settings, port: int | None = None) -> WebSettings:
    """The prefetcher's ``/metrics`` and ``/healthz`` endpoint: ``port``, else the worker's
    ``web.port`` + 1 (0, any free port, stays 0), so a worker and a prefetcher share a host."""
    web = settings.web
    if port is None:
        port = web.port + 1 if 0 < web.port < 65535 else web.port
    return web.model_copy(update={"port": port})


def check_port(web: WebSettings) -> None:
    """Check that the prefetcher's endpoint can bind its port, before anything starts.

    Raises:
        ConfigurationError: the port is taken, naming how to move it.
    """
    try:
        check_web_port(web)
    except ConfigurationError:
        raise ConfigurationError(
            f"prefetcher endpoint: cannot bind {web.host}:{web.port} (in use?). Operator "
            "action: give it a port with `callstream prefetcher --web-port` (by default "
            "web.port + 1), or turn the endpoints off with CALLSTREAM_WEB__ENABLED=false"
        ) from None


def faust_options(settings: Settings, web: WebSettings) -> dict[str, Any]:
    """The worker's Faust options with the prefetcher's id, store, data and endpoint."""
    return {
        **settings.faust_options(),
        "id": app_id(settings),
        # RocksDB through rocksdict (python-rocksdb is not installed; "rocksdict://" is not a
        # registered scheme in faust-streaming 0.15: shared/ENVIRONMENT.md).
        "store": "rocksdb://",
        "datadir": str(settings.data_dir / "prefetch"),
        "web_enabled": web.enabled,
        "web_host": web.host,
        "web_port": web.port,
        "web_bind": web.host,
        "topic_partitions": settings.topics.partitions,
        "broker_commit_interval": COMMIT_INTERVAL_S,
    }


async def check_topics(settings: Settings) -> None:
    """Create (or check) the requests and access topics, co-partitioned.

    Raises:
        ConfigurationError: a topic is missing and may not be created, or the access topic has
            another partition count (a key's partition is ``crc32(key) % topics.partitions``).
    """
    topics = settings.topics
    requests = [spec for spec in pipeline_topics(topics) if spec.name == topics.requests]
    await ensure_topics(settings.kafka, [*requests, access_topic(topics)], create=topics.create)
    await check_copartitioned(settings.kafka, topics.requests, [topics.access])


def compose(settings: Settings, web: WebSettings) -> tuple[faust.App, Prefetcher]:
    """The prefetcher's app with its agent, table, timer and pages; nothing started."""
    (settings.data_dir / "prefetch").mkdir(parents=True, exist_ok=True)
    metrics = PrefetchMetrics.create()
    app = faust.App(**faust_options(settings, web))
    prefetcher = install(
        app,
        topics=settings.topics,
        prefetch=settings.prefetch,
        shards={name: provider.shards for name, provider in settings.providers.items()},
        metrics=metrics,
    )

    add_metrics_page(app, metrics.registry)

    @app.page("/healthz")  # type: ignore[arg-type]
    async def health(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
        # Ready once the table is recovered and the schedule rebuilt for the owned partitions.
        ready = prefetcher.ready
        return web.json({"ready": ready}, status=200 if ready else 503)

    return app, prefetcher


def run_prefetcher(
    settings: Settings, loop: asyncio.AbstractEventLoop, *, web: WebSettings | None = None
) -> None:
    """Run the prefetcher on ``loop`` until a signal stops it.

    Raises:
        ConfigurationError, BrokerUnavailable: before anything starts, as one clear line.
    """
    web = web or prefetcher_web(settings)
    check_port(web)
    asyncio.set_event_loop(loop)
    with quiet("aiokafka"):
        loop.run_until_complete(check_topics(settings))
    if not settings.prefetch.enabled:
        log.warning(
            "prefetch.enabled is false in these settings: workers with them publish no access "
            "events, and this prefetcher has nothing to read. Operator action: set "
            "CALLSTREAM_PREFETCH__ENABLED=true for the workers."
        )
    app, _ = compose(settings, web)
    runner = faust.Worker(app, loop=loop, loglevel=settings.log_level, quiet=True)
    runner.spinner = None  # see streams.composition.run_worker
    runner.execute_from_commandline()
