"""The Python SDK: publish request events, read results and dead letters.

```python
async with CallstreamClient(settings) as client:
    request = RequestEvent(provider="open_meteo", operation="get_forecast",
                           params={"latitude": "52.5", "longitude": "13.4"})
    result = await client.call(request, timeout=10)  # or publish() and read results()
```
Outcomes are published at least once: after a worker crash the same outcome can appear twice,
always with the same request id. :meth:`CallstreamClient.results` drops those duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.codec import Codecs
from schemas.errors import DecodeError
from schemas.keys import request_limit_key
from schemas.models import DeadLetterEvent, RequestEvent, ResultEvent, dead_letter_key
from streams.errors import CallTimeout, RequestDeadLettered
from streams.kafka import producer_options, reader, start_client
from streams.settings import Settings
from streams.topics import ensure_topics, pipeline_topics


class SeenIds:
    """A bounded memory of request ids, oldest forgotten first."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def add(self, request_id: str) -> bool:
        """Remember ``request_id``; False when it was already seen (a duplicate)."""
        if request_id in self._ids:
            return False
        self._ids[request_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True


def limit_key_of(request: RequestEvent, shards: int = 1) -> bytes:
    """The message key that routes a request to the partition owning its limit's bucket."""
    try:
        return request_limit_key(request.provider, request.request_id, shards).encode()
    except ValueError:  # not a valid provider name: no limit to route by; workers refuse it
        return request.provider.encode()


class CallstreamClient:
    """Publishes requests and reads outcomes; one producer, consumers made per call."""

    def __init__(
        self, settings: Settings, codecs: Codecs | None = None, *, ensure_topics: bool = True
    ) -> None:
        """Args:
        settings: brokers and topic names.
        codecs: the event codecs; the default Avro ones when None.
        ensure_topics: check (and, with ``topics.create``, create) the pipeline's topics on
            entry. A publish to a missing topic would otherwise let the broker auto-create it
            with its default partition count (often 1), and every later worker would be
            stuck with it.
        """
        self._settings = settings
        self._codecs = codecs or Codecs()
        self._ensure_topics = ensure_topics
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> Self:
        """Connect the producer (after making sure the topics exist, unless told not to).

        Raises:
            BrokerUnavailable: no broker answers at the bootstrap servers.
            ConfigurationError: a topic is missing and may not be created.
        """
        if self._ensure_topics:
            topics = self._settings.topics
            await ensure_topics(self._settings.kafka, pipeline_topics(topics), create=topics.create)
        producer = AIOKafkaProducer(
            **producer_options(
                self._settings.kafka, max_record_bytes=self._settings.topics.max_record_bytes
            )
        )
        await start_client(producer, self._settings.kafka)
        self._producer = producer
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, request: RequestEvent) -> str:
        """Publish one request and wait until the broker has it; returns its request id."""
        await self.publish_many([request])
        return request.request_id

    async def publish_many(
        self,
        requests: Iterable[RequestEvent],
        *,
        partition_key: Callable[[RequestEvent], bytes] | None = None,
    ) -> list[str]:
        """Publish many requests, batched by the producer; returns their ids in order.

        Args:
            requests: the request events.
            partition_key: the message key; by default the limit key, so each provider's limit
                has one owner. Any other key spreads requests but gives up exact limits.
        """
        producer = self._require_producer()
        topic = self._settings.topics.requests
        key_of = partition_key or self._limit_key
        ids: list[str] = []
        deliveries = []
        for request in requests:
            value = self._codecs.request.encode(request)
            deliveries.append(await producer.send(topic, value=value, key=key_of(request)))
            ids.append(request.request_id)
        await asyncio.gather(*deliveries)
        return ids

    # A timeout argument (ASYNC109): "call and wait at most" is the point of this helper.
    async def call(self, request: RequestEvent, *, timeout: float) -> ResultEvent:  # noqa: ASYNC109
        """Publish ``request`` and wait for its outcome.

        The result and dead-letter topics are positioned at their ends before the request is
        published, so its outcome cannot be missed. Each call opens two readers: for many
        requests at once, publish them with :meth:`publish_many` and read :meth:`results`.

        Args:
            request: the request; its ``reply_to`` topic, when set, is where its result is read.
            timeout: seconds to wait for the outcome, reader start-up included.

        Returns:
            The result event (``ok``, ``expired``, ``rejected``, ``failed``...).

        Raises:
            RequestDeadLettered: the request became a dead letter; ``reason`` says why.
            CallTimeout: no outcome within ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                return await self._call(request)
        except TimeoutError:
            raise CallTimeout(
                f"no outcome for request {request.request_id} within {timeout:g} s",
                request_id=request.request_id,
            ) from None

    async def _call(self, request: RequestEvent) -> ResultEvent:
        results_topic = request.reply_to or self._settings.topics.results
        dlq_topic = self._settings.topics.dead_letters
        async with (
            self.reader(results_topic, from_beginning=False) as results,
            self.reader(dlq_topic, from_beginning=False) as letters,
        ):
            await self.publish(request)
            result = asyncio.ensure_future(self._result_of(results, request.request_id))
            letter = asyncio.ensure_future(self._letter_of(letters, request.request_id))
            try:
                await asyncio.wait({result, letter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (result, letter):
                    task.cancel()
                await asyncio.gather(result, letter, return_exceptions=True)
            if not result.cancelled():  # done before the wait returned (or failed: re-raised)
                return result.result()
            dead = letter.result()  # done, as the wait returned
            raise RequestDeadLettered(
                f"request {request.request_id} became a dead letter: {dead.reason}: "
                f"{dead.error_message}",
                request_id=request.request_id,
                reason=dead.reason,
                letter=dead,
            )

    async def _result_of(self, reader: TopicReader, request_id: str) -> ResultEvent:
        async for event in reader.results(follow=True, idle_timeout_s=1.0, codecs=self._codecs):
            if event.request_id == request_id:
                return event
        raise AssertionError("a followed topic never ends")  # pragma: no cover

    async def _letter_of(self, reader: TopicReader, request_id: str) -> DeadLetterEvent:
        async for raw in reader.values(follow=True, idle_timeout_s=1.0):
            try:
                letter = self._codecs.dead_letter.decode(raw)
            except DecodeError:
                continue
            if letter.request_id == request_id:
                return letter
        raise AssertionError("a followed topic never ends")  # pragma: no cover

    async def publish_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Publish bytes as they are (for tests and replays of raw dead letters)."""
        producer = self._require_producer()
        await (await producer.send(self._settings.topics.requests, value=value, key=key))

    @property
    def codecs(self) -> Codecs:
        return self._codecs

    def reader(self, topic: str | None = None, *, from_beginning: bool = True) -> TopicReader:
        """A reader of the result topic (or ``topic``); positions are fixed on entry."""
        return TopicReader(
            self._settings, topic or self._settings.topics.results, from_beginning=from_beginning
        )

    async def results(
        self,
        *,
        from_beginning: bool = True,
        follow: bool = True,
        idle_timeout_s: float = 1.0,
        topic: str | None = None,
    ) -> AsyncIterator[ResultEvent]:
        """Result events, each request id once. Undecodable records are skipped."""
        async with self.reader(topic, from_beginning=from_beginning) as reader:
            async for event in reader.results(
                follow=follow, idle_timeout_s=idle_timeout_s, codecs=self._codecs
            ):
                yield event

    async def dead_letters(
        self,
        *,
        from_beginning: bool = True,
        follow: bool = True,
        idle_timeout_s: float = 1.0,
    ) -> AsyncIterator[DeadLetterEvent]:
        """Dead letters, duplicates (same request id or same original position) dropped."""
        seen = SeenIds()
        async with self.reader(
            self._settings.topics.dead_letters, from_beginning=from_beginning
        ) as reader:
            async for raw in reader.values(follow=follow, idle_timeout_s=idle_timeout_s):
                try:
                    letter = self._codecs.dead_letter.decode(raw)
                except DecodeError:
                    continue
                if seen.add(dead_letter_key(letter)):
                    yield letter

    def _limit_key(self, request: RequestEvent) -> bytes:
        provider = self._settings.providers.get(request.provider)
        return limit_key_of(request, provider.shards if provider else 1)

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("use `async with CallstreamClient(...)` before publishing")
        return self._producer


class TopicReader:
    """Reads a whole topic without a consumer group: readers neither share work nor commit."""

    def __init__(self, settings: Settings, topic: str, *, from_beginning: bool) -> None:
        self._kafka = settings.kafka
        self._topic = topic
        self._from_beginning = from_beginning
        self._exit = contextlib.AsyncExitStack()
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Self:
        consumer = await self._exit.enter_async_context(
            reader(self._kafka, self._topic, from_beginning=self._from_beginning)
        )
        try:
            if not self._from_beginning:
                # Resolve "the end" now, so records published after entry are never missed.
                await consumer.seek_to_end()
                for tp in consumer.assignment():
                    await consumer.position(tp)
        except BaseException:
            await self._exit.aclose()
            raise
        self._consumer = consumer
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._consumer = None
        await self._exit.aclose()

    async def values(self, *, follow: bool, idle_timeout_s: float) -> AsyncIterator[bytes]:
        """Record values; without ``follow``, ends after ``idle_timeout_s`` with nothing new."""
        consumer = self._require_consumer()
        while True:
            batches = await consumer.getmany(timeout_ms=int(idle_timeout_s * 1000))
            if not batches and not follow:
                return
            for records in batches.values():
                for record in records:
                    if record.value is not None:
                        yield record.value

    async def results(
        self, *, follow: bool, idle_timeout_s: float, codecs: Codecs
    ) -> AsyncIterator[ResultEvent]:
        seen = SeenIds()
        async for raw in self.values(follow=follow, idle_timeout_s=idle_timeout_s):
            try:
                event = codecs.result.decode(raw)
            except DecodeError:
                continue
            if seen.add(event.request_id):
                yield event

    def _require_consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("use `async with client.reader(...)` before reading")
        return self._consumer
