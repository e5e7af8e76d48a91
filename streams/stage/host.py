"""Runs one stage in a worker: its Kafka clients, its loop, commits and gauges, and its stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.stage.loop import StageLoop

log = logging.getLogger(__name__)

GAUGE_REFRESH_S = 5.0


class StageHost(mode.Service):
    """Starts a stage's clients, runs its loop, and drains and commits before it stops.

    Everything is built by the composition root (``streams.composition``) and handed over ready:
    the host only owns the lifecycle, so any stage (the provider caller today, retries and the
    cache tomorrow) runs on the same host.
    """

    def __init__(
        self,
        name: str,
        *,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        loop: StageLoop,
        topics: Sequence[str],
        gauges: Sequence[Callable[[], None]] = (),
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
        background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
        **kwargs: Any,
    ) -> None:
        """Args:
        name: the stage's name, for logs and health.
        consumer: not started; subscribed here to ``topics``.
        producer: not started; shared by the publisher and the stage's tables.
        loop: the consumer loop over ``consumer``.
        gauges: refreshed every ``GAUGE_REFRESH_S`` for /metrics.
        closers: awaited after the clients stop (HTTP sessions, stores).
        background: tasks run from the start until the stop (a broadcast's follower).
        """
        super().__init__(**kwargs)
        self.stage_name = name
        self._consumer = consumer
        self._producer = producer
        self._stage_loop = loop
        self._topics = list(topics)
        self._gauges = gauges
        self._closers = closers
        self._background = background
        self._running: list[asyncio.Task[None]] = []
        self._clients_started = False

    async def on_start(self) -> None:
        await self._producer.start()
        self._consumer.subscribe(self._topics, listener=self._stage_loop.rebalance_listener())
        await self._consumer.start()
        self._clients_started = True
        self._running = [asyncio.create_task(run()) for run in self._background]
        log.info("stage %s consuming %s", self.stage_name, ", ".join(self._topics))

    @mode.Service.task
    async def _run_loop(self) -> None:
        await self._stage_loop.run()

    @mode.Service.task
    async def _run_commits(self) -> None:
        await self._stage_loop.run_commits()

    @mode.Service.task
    async def _run_delays(self) -> None:
        await self._stage_loop.run_delays()

    @mode.Service.timer(GAUGE_REFRESH_S)
    async def _refresh_gauges(self) -> None:
        await self._stage_loop.update_lag()
        for refresh in self._gauges:
            refresh()

    async def on_stop(self) -> None:
        # Finish and commit what is in flight before leaving the group, so the next owner of
        # these partitions starts after them instead of calling the providers again.
        for task in self._running:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._clients_started:
            await self._stage_loop.stop()
        await self._consumer.stop()
        await self._producer.stop()
        for close in self._closers:
            await close()

    def health(self) -> dict[str, Any]:
        """Readiness for /healthz: ready once the group has given this worker its share."""
        stage_loop = self._stage_loop
        if not self._clients_started:
            return {"ready": False, "stage": "starting"}
        return {
            "ready": stage_loop.has_assignment,
            "partitions": sorted(
                f"{tp.topic}[{tp.partition}]" for tp in stage_loop.owned_partitions
            ),
            "in_flight": stage_loop.in_flight,
            # Full partitions, not fetched until they drain (issue 20); the rest flow.
            "paused": sorted(f"{tp.topic}[{tp.partition}]" for tp in stage_loop.paused_partitions),
        }
