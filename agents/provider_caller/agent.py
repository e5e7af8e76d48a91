"""The call stage as a service of the worker: Kafka clients, the loop, and its lifecycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.provider_caller.guard import CallGuard
from agents.provider_caller.runtime import CallerLoop, PartitionListener, RecordHandler
from agents.publishing.publisher import EventEncoder, OutcomePublisher
from streams.kafka import consumer_options, producer_options
from streams.metrics import Metrics
from streams.routing import PartitionRouter
from streams.settings import Settings
from streams.topics import ensure_topics, pipeline_topics

log = logging.getLogger(__name__)

GAUGE_REFRESH_S = 5.0

# Builds the per-partition state that follows the assignment, once the producer exists.
ListenerFactory = Callable[[AIOKafkaProducer], Awaitable[Sequence[PartitionListener]]]


class CallerService(mode.Service):
    """Owns the caller's consumer and producer; drains and commits before it stops."""

    def __init__(
        self,
        settings: Settings,
        handler: RecordHandler,
        encoder: EventEncoder,
        metrics: Metrics,
        known_providers: frozenset[str],
        *,
        router: PartitionRouter | None = None,
        guard: CallGuard | None = None,
        listener_factory: ListenerFactory | None = None,
        gauges: Callable[[], None] | None = None,
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._handler = handler
        self._encoder = encoder
        self._metrics = metrics
        self._known_providers = known_providers
        self._router = router
        self._guard = guard
        self._listener_factory = listener_factory
        self._gauges = gauges
        self._closers = closers
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._loop_runner: CallerLoop | None = None
        self.ready = asyncio.Event()

    @property
    def group_id(self) -> str:
        return f"{self._settings.app_id}.caller"

    async def on_start(self) -> None:
        settings = self._settings
        await ensure_topics(
            settings.kafka, pipeline_topics(settings.topics), create=settings.topics.create
        )
        self._producer = AIOKafkaProducer(**producer_options(settings.kafka))
        await self._producer.start()
        listeners = await self._listener_factory(self._producer) if self._listener_factory else ()
        self._consumer = AIOKafkaConsumer(
            **consumer_options(settings.kafka, group_id=self.group_id)
        )
        publisher = OutcomePublisher(
            self._producer,
            self._encoder,
            self._metrics,
            results_topic=settings.topics.results,
            dead_letter_topic=settings.topics.dead_letters,
            requests_topic=settings.topics.requests,
            known_providers=self._known_providers,
        )
        self._loop_runner = CallerLoop(
            self._consumer,
            self._handler,
            publisher,
            self._metrics,
            settings.caller,
            listeners=[_RouterRefresh(self), *listeners],
            guard=self._guard,
            commit_metadata=settings.kafka.commit_metadata,
        )
        self._consumer.subscribe(
            [settings.topics.requests], listener=self._loop_runner.rebalance_listener()
        )
        await self._consumer.start()
        self.ready.set()
        log.info("caller consuming %s as group %s", settings.topics.requests, self.group_id)

    def refresh_router(self) -> None:
        if self._router is not None and self._consumer is not None:
            partitions = self._consumer.partitions_for_topic(self._settings.topics.requests)
            if partitions:
                self._router.update(partitions)

    @mode.Service.task
    async def _run_loop(self) -> None:
        await self.ready.wait()
        assert self._loop_runner is not None
        await self._loop_runner.run()

    @mode.Service.task
    async def _run_commits(self) -> None:
        await self.ready.wait()
        assert self._loop_runner is not None
        await self._loop_runner.run_commits()

    @mode.Service.timer(GAUGE_REFRESH_S)
    async def _refresh_gauges(self) -> None:
        if self._loop_runner is not None:
            await self._loop_runner.update_lag()
        if self._gauges is not None:
            self._gauges()

    async def on_stop(self) -> None:
        # Finish and commit what is in flight before leaving the group, so the next owner of
        # these partitions starts after them instead of calling the providers again.
        if self._loop_runner is not None:
            await self._loop_runner.stop()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        for close in self._closers:
            await close()

    def health(self) -> dict[str, Any]:
        """Readiness for /healthz: ready once the group has given this worker its share."""
        runner = self._loop_runner
        if runner is None:
            return {"ready": False, "stage": "starting"}
        return {
            "ready": runner.has_assignment,
            "partitions": sorted(f"{tp.topic}[{tp.partition}]" for tp in runner.owned_partitions),
            "in_flight": runner.in_flight,
        }


class _RouterRefresh:
    """Re-reads the request topic's partitions at every assignment (they can be added)."""

    def __init__(self, service: CallerService) -> None:
        self._service = service

    async def assigned(self, partitions: set[int]) -> None:
        self._service.refresh_router()

    async def revoked(self, partitions: set[int]) -> None:
        return None
