"""Hand-written fakes of the Kafka clients a stage uses, and builders for its events."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from schemas.models import DeadLetterEvent, RequestEvent, ResultEvent, ResultStatus
from streams.stage.no_return import PointOfNoReturn
from streams.stage.records import Outcome, SourceRecord

NOW_MS = 1_700_000_000_000
TOPIC = "callstream.requests.v1"
TP0 = TopicPartition(TOPIC, 0)
TP1 = TopicPartition(TOPIC, 1)


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 1.0) -> None:
    """Yield to the event loop until ``predicate()`` holds; fail after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        # Polling is the point: the fakes have no event for every state a test waits for.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.001)


def result(request_id: str = "r1", provider: str = "acme", **fields: object) -> ResultEvent:
    values: dict[str, object] = {
        "request_id": request_id,
        "tenant": "t1",
        "provider": provider,
        "operation": "get_item",
        "status": ResultStatus.OK,
    }
    values.update(fields)
    return ResultEvent.model_validate(values)


def dead_letter(request_id: str | None = "r1", provider: str | None = "acme") -> DeadLetterEvent:
    original = None
    if provider is not None:
        original = RequestEvent(
            provider=provider, operation="get_item", request_id=request_id or "x"
        )
    return DeadLetterEvent(
        request_id=request_id,
        original_raw=b"raw",
        original=original,
        source_topic=TOPIC,
        source_partition=0,
        source_offset=7,
        reason="timeout",
        error_type="ProviderTimeout",
        error_message="slow",
        first_failure_at_ms=NOW_MS,
        last_failure_at_ms=NOW_MS,
        stage="caller",
    )


def records(tp: TopicPartition, offsets: Iterable[int]) -> list[ConsumerRecord[bytes, bytes]]:
    """Consumer records whose value is the request id the handler answers with."""
    return [
        ConsumerRecord(
            topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            timestamp=NOW_MS,
            timestamp_type=0,
            key=None,
            value=f"req-{tp.partition}-{offset}".encode(),
            checksum=None,
            serialized_key_size=0,
            serialized_value_size=0,
            headers=(),
        )
        for offset in offsets
    ]


class FakeCoordinator:
    """The one coordinator call the loop makes: committed offsets with their metadata."""

    def __init__(self, consumer: FakeConsumer) -> None:
        self._consumer = consumer
        self.fetches: list[list[TopicPartition]] = []

    async def fetch_committed_offsets(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        self.fetches.append(list(partitions))
        stored = self._consumer.stored
        return {tp: stored[tp] for tp in partitions if tp in stored}


Hook = Callable[[], Awaitable[None]]


class FakeConsumer:
    """The part of ``AIOKafkaConsumer`` the stage loop uses, backed by plain collections.

    ``feed`` queues a batch for ``getmany``; a batch may carry a hook that runs inside
    ``getmany`` before it returns, as a rebalance callback can in aiokafka.
    """

    def __init__(self, assigned: Iterable[TopicPartition] = (TP0,)) -> None:
        self.assigned: set[TopicPartition] = set(assigned)
        self.stored: dict[TopicPartition, OffsetAndMetadata] = {}
        self.commits: list[dict[TopicPartition, OffsetAndMetadata]] = []
        self.seeks: list[tuple[TopicPartition, int | str]] = []
        self.highwaters: dict[TopicPartition, int] = {}
        self.fail_commits = 0
        self.paused: set[TopicPartition] = set()
        self.pauses: list[TopicPartition] = []
        self.resumes: list[TopicPartition] = []
        self.polls = 0
        self._batches: list[
            tuple[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]], Hook | None]
        ] = []
        self._fed = asyncio.Event()
        self._coordinator = FakeCoordinator(self)

    def feed(self, tp: TopicPartition, offsets: Iterable[int], before: Hook | None = None) -> None:
        self._batches.append(({tp: records(tp, offsets)}, before))
        self._fed.set()

    @property
    def unread(self) -> int:
        return len(self._batches)

    async def getmany(
        self, timeout_ms: int = 0
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """The first batch fed for a partition not paused (as aiokafka, a paused partition's
        records wait until it is resumed), or nothing after ``timeout_ms`` (5 ms at most)."""
        self.polls += 1
        try:
            async with asyncio.timeout(min(timeout_ms, 5) / 1000):
                while (index := self._next_batch()) is None:
                    self._fed.clear()
                    await self._fed.wait()
        except TimeoutError:
            return {}
        batch, before = self._batches.pop(index)
        if before is not None:
            await before()
        return batch

    def _next_batch(self) -> int | None:
        for index, (batch, _) in enumerate(self._batches):
            if not self.paused & batch.keys():
                return index
        return None

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)
        self.pauses.extend(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)
        self.resumes.extend(partitions)
        self._fed.set()

    async def commit(self, offsets: dict[TopicPartition, tuple[int, str]]) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            raise KafkaError("coordinator moved")
        done = {tp: OffsetAndMetadata(offset, meta) for tp, (offset, meta) in offsets.items()}
        self.commits.append(done)
        self.stored.update(done)

    async def committed(self, tp: TopicPartition) -> int | None:
        stored = self.stored.get(tp)
        return stored.offset if stored else None

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self.seeks.extend((tp, "beginning") for tp in partitions)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)

    def committed_offset(self, tp: TopicPartition = TP0) -> int | None:
        stored = self.stored.get(tp)
        return stored.offset if stored else None


class FakeSender:
    """Stands in for ``AIOKafkaProducer.send``: records each write and acknowledges it.

    ``failures`` makes the next writes fail: an exception raised by ``send`` itself,
    ``"ack"`` for a delivery future that fails (with a base ``KafkaError``, which is retried),
    or ``("ack", error)`` for one that fails with ``error``. ``hang`` leaves every delivery
    unacknowledged.
    """

    def __init__(
        self,
        failures: Iterable[BaseException | str | tuple[str, BaseException]] = (),
        hang: bool = False,
    ) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.failures = list(failures)
        self.hang = hang
        self._unacknowledged: list[asyncio.Future[object]] = []

    def acknowledge_all(self) -> None:
        """Stop hanging and acknowledge every write still waiting."""
        self.hang = False
        for delivery in self._unacknowledged:
            if not delivery.done():
                delivery.set_result(None)

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None
    ) -> asyncio.Future[object]:
        self.sent.append((topic, value, key))
        delivery: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, BaseException):
                raise failure
            error = failure[1] if isinstance(failure, tuple) else KafkaError("not acknowledged")
            delivery.set_exception(error)
        elif self.hang:
            self._unacknowledged.append(delivery)
        else:
            delivery.set_result(None)
        return delivery


class FakeEncoder:
    """Readable bytes instead of Avro: what was encoded is visible in the sent value."""

    def encode_result(self, event: ResultEvent) -> bytes:
        return f"result:{event.request_id}:{event.status}".encode()

    def encode_dead_letter(self, event: DeadLetterEvent) -> bytes:
        return f"dead:{event.request_id}:{event.reason}".encode()


@dataclass(frozen=True)
class Limits:
    max_pending: int = 100
    max_pending_per_partition: int = 100
    commit_interval_s: float = 3600.0  # tests commit by hand
    drain_timeout_s: float = 1.0


class GatedHandler:
    """A handler whose records finish when the test opens their gate.

    Offsets in ``calling`` mark the point of no return first, as the caller does right before
    its provider call; the others wait like a request waiting for a token.
    """

    def __init__(self, no_return: PointOfNoReturn, calling: Iterable[int] = ()) -> None:
        self.no_return = no_return
        self._calling = set(calling)
        self.gates: dict[int, asyncio.Event] = {}
        self.started: list[int] = []
        self.cancelled: list[int] = []
        self.finished: list[int] = []

    def gate(self, offset: int) -> asyncio.Event:
        return self.gates.setdefault(offset, asyncio.Event())

    def open(self, *offsets: int) -> None:
        for offset in offsets:
            self.gate(offset).set()

    async def handle(self, source: SourceRecord) -> Outcome:
        self.started.append(source.offset)
        if source.offset in self._calling:
            self.no_return.mark_passed()
        try:
            await self.gate(source.offset).wait()
        except asyncio.CancelledError:
            self.cancelled.append(source.offset)
            raise
        self.finished.append(source.offset)
        return Outcome(result(source.value.decode()))
