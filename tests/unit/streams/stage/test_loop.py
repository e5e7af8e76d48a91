"""StageLoop: records run concurrently, offsets are committed in order, handovers drain."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)
from aiokafka.structs import OffsetAndMetadata
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agents.rate_limiter.book import LimitBook, ProviderLimit
from agents.rate_limiter.limiter import Limiter, MemoryQuotaStore
from agents.rate_limiter.partitions import LimiterPartitions
from schemas.models import RequestEvent
from streams.metrics import Metrics
from streams.stage.loop import PartitionListener, StageLoop
from streams.stage.no_return import PointOfNoReturn
from streams.stage.offsets import decode_done, encode_done
from streams.stage.publisher import OutcomePublisher
from streams.stage.records import Outcome, SourceRecord

from .fakes import (
    NOW_MS,
    TOPIC,
    TP0,
    TP1,
    FakeConsumer,
    FakeEncoder,
    FakeSender,
    GatedHandler,
    Limits,
    wait_until,
)


@dataclass
class RecordingListener:
    """A partition listener that notes each call and how many records were in flight then."""

    loop: StageLoop | None = None
    calls: list[tuple[str, set[int], int]] = field(default_factory=list)

    async def assigned(self, partitions: set[int]) -> None:
        self.calls.append(("assigned", partitions, self._in_flight()))

    async def revoked(self, partitions: set[int]) -> None:
        self.calls.append(("revoked", partitions, self._in_flight()))

    def _in_flight(self) -> int:
        return self.loop.in_flight if self.loop else 0


class LimitedHandler(GatedHandler):
    """Waits for a token from a real limiter first, as the caller does, then calls (gated)."""

    def __init__(self, limiter: Limiter) -> None:
        super().__init__(PointOfNoReturn())
        self._limiter = limiter

    async def handle(self, source: SourceRecord) -> Outcome:
        request = RequestEvent(provider="acme", operation="get_item", request_id=str(source.offset))
        await self._limiter.admit(request, source.partition)
        self.no_return.mark_passed()
        return await super().handle(source)


@dataclass
class Stage:
    loop: StageLoop
    consumer: FakeConsumer
    sender: FakeSender
    handler: GatedHandler
    metrics: Metrics
    listener: RecordingListener
    runner: asyncio.Task[None] | None = None

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)

    def committed(self, tp: TopicPartition = TP0) -> OffsetAndMetadata:
        return self.consumer.stored[tp]

    async def finish(self, *offsets: int) -> None:
        """Let ``offsets`` finish and wait until their outcomes are published."""
        before = len(self.sender.sent)
        self.handler.open(*offsets)
        await wait_until(lambda: len(self.sender.sent) == before + len(offsets))


StageFactory = Callable[..., Awaitable[Stage]]


def build_stage(
    consumer: FakeConsumer | None = None,
    *,
    calling: set[int] | frozenset[int] = frozenset(),
    max_pending: int = 100,
    metadata: bool = True,
    handler: GatedHandler | None = None,
    listeners: Sequence[PartitionListener] = (),
    sender: FakeSender | None = None,
) -> Stage:
    consumer = consumer or FakeConsumer()
    metrics = Metrics.create(CollectorRegistry())
    sender = sender or FakeSender()
    publisher = OutcomePublisher(
        sender,
        FakeEncoder(),
        metrics,
        results_topic="results",
        dead_letter_topic="dlq",
        known_providers=frozenset({"acme"}),
        retry_backoff_s=0.001,
    )
    no_return = handler.no_return if handler else PointOfNoReturn()
    handler = handler or GatedHandler(no_return, calling)
    listener = RecordingListener()
    loop = StageLoop(
        consumer,
        handler,
        publisher,
        metrics,
        Limits(max_pending=max_pending),
        listeners=[listener, *listeners],
        no_return=no_return,
        commit_metadata=metadata,
    )
    listener.loop = loop
    return Stage(loop, consumer, sender, handler, metrics, listener)


async def start_stage(stage: Stage) -> Stage:
    await stage.loop.on_assigned(stage.consumer.assignment())
    stage.runner = asyncio.create_task(stage.loop.run())
    return stage


async def shut(stage: Stage) -> None:
    for gate in stage.handler.gates.values():
        gate.set()
    async with asyncio.timeout(1):
        await stage.loop.stop()
        if stage.runner is not None:
            stage.runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stage.runner


@pytest.fixture
async def stage_factory() -> AsyncIterator[StageFactory]:
    """Build a stage loop over fakes, assign its partitions and run it; stopped at the end."""
    started: list[Stage] = []

    async def start(consumer: FakeConsumer | None = None, **options: object) -> Stage:
        stage = await start_stage(build_stage(consumer, **options))  # type: ignore[arg-type]
        started.append(stage)
        return stage

    yield start
    for stage in started:
        await shut(stage)


@pytest.fixture
async def stage(stage_factory: StageFactory) -> Stage:
    return await stage_factory()


async def test_out_of_order_outcomes_commit_the_contiguous_position_with_the_rest_in_metadata(
    stage: Stage,
) -> None:
    stage.consumer.feed(TP0, range(5))
    await wait_until(lambda: len(stage.handler.started) == 5)
    assert stage.sample("callstream_events_in_total", topic=TOPIC) == 5

    await stage.finish(3, 1)
    await stage.loop.commit()
    assert stage.committed().offset == 0
    assert decode_done(0, stage.committed().metadata) == {1, 3}

    await stage.finish(0)
    await stage.loop.commit()
    assert stage.committed().offset == 2
    assert decode_done(2, stage.committed().metadata) == {3}

    await stage.finish(2, 4)
    await stage.loop.commit()
    assert stage.committed() == OffsetAndMetadata(5, "")


async def test_a_slow_first_record_holds_the_commit_at_its_offset_while_later_ones_finish(
    stage: Stage,
) -> None:
    stage.consumer.feed(TP0, range(4))
    await wait_until(lambda: len(stage.handler.started) == 4)
    await stage.finish(1, 2, 3)
    await stage.loop.commit()
    await stage.loop.commit()  # nothing moved: no second commit

    assert [commit[TP0].offset for commit in stage.consumer.commits] == [0]
    assert decode_done(0, stage.committed().metadata) == {1, 2, 3}
    assert stage.loop.in_flight == 1

    await stage.finish(0)
    await stage.loop.commit()
    assert stage.committed() == OffsetAndMetadata(4, "")
    assert stage.sample("callstream_offset_commits_total") == 2


async def test_revocation_cancels_a_record_before_the_point_of_no_return_and_drains_one_past_it(
    stage_factory: StageFactory,
) -> None:
    stage = await stage_factory(calling={0})
    stage.consumer.feed(TP0, [0, 1])
    await wait_until(lambda: len(stage.handler.started) == 2)

    revoking = asyncio.create_task(stage.loop.on_revoked({TP0}))
    await wait_until(lambda: stage.handler.cancelled == [1])
    await asyncio.sleep(0.01)
    assert not revoking.done()  # still waiting for the call that has started

    stage.handler.open(0)
    await asyncio.wait_for(revoking, 1)
    assert stage.handler.finished == [0]
    assert [value for _, value, _ in stage.sender.sent] == [b"result:req-0-0:ok"]
    # 0 is committed; 1 is not, so the next owner reads it again.
    assert stage.committed() == OffsetAndMetadata(1, "")
    assert stage.loop.owned_partitions == frozenset()
    assert stage.loop.in_flight == 0


async def test_revocation_tells_the_listeners_before_it_drains(stage_factory: StageFactory) -> None:
    stage = await stage_factory(calling={0})
    stage.consumer.feed(TP0, [0, 1])
    await wait_until(lambda: len(stage.handler.started) == 2)
    stage.handler.open(0)
    await stage.loop.on_revoked({TP0})
    # The limiter (a listener) cancels its waiting requests while they are still in flight.
    assert stage.listener.calls == [("assigned", {0}, 0), ("revoked", {0}, 2)]


async def test_a_new_owner_skips_what_its_predecessor_finished_above_the_committed_offset() -> None:
    consumer = FakeConsumer()
    consumer.stored[TP0] = OffsetAndMetadata(2, encode_done(2, [3, 5]))
    stage = await start_stage(build_stage(consumer))
    try:
        assert consumer._coordinator.fetches == [[TP0]]
        consumer.feed(TP0, range(2, 7))
        await wait_until(lambda: len(stage.handler.started) == 3)
        await asyncio.sleep(0.01)
        assert stage.handler.started == [2, 4, 6]
        assert stage.sample("callstream_requests_skipped_total") == 2

        await stage.finish(2, 4, 6)
        await stage.loop.commit()
        assert stage.committed() == OffsetAndMetadata(7, "")
    finally:
        await shut(stage)


@pytest.mark.parametrize(
    ("stored", "rewound_to"),
    [(OffsetAndMetadata(5, ""), 5), (None, "beginning")],
    ids=["to-committed", "to-beginning-without-commit"],
)
async def test_a_batch_fetched_before_a_revocation_is_dropped_and_the_partition_rewound(
    stored: OffsetAndMetadata | None, rewound_to: int | str
) -> None:
    consumer = FakeConsumer()
    if stored is not None:
        consumer.stored[TP0] = stored
    stage = await start_stage(build_stage(consumer))

    async def rebalance() -> None:  # the partition comes back to this worker
        await stage.loop.on_revoked({TP0})
        await stage.loop.on_assigned({TP0})

    try:
        consumer.feed(TP0, [5, 6, 7], before=rebalance)
        await wait_until(lambda: bool(consumer.seeks))
        assert consumer.seeks == [(TP0, rewound_to)]
        assert stage.handler.started == []

        consumer.feed(TP0, [5, 6, 7])  # the re-read after the seek runs normally
        await wait_until(lambda: stage.handler.started == [5, 6, 7])
    finally:
        await shut(stage)


async def test_a_stale_batch_of_a_partition_that_moved_away_is_dropped_without_a_seek() -> None:
    consumer = FakeConsumer()
    stage = await start_stage(build_stage(consumer))

    async def rebalance() -> None:  # partition 0 goes elsewhere, 1 comes here
        await stage.loop.on_revoked({TP0})
        consumer.assigned = {TP1}
        await stage.loop.on_assigned({TP1})

    try:
        consumer.feed(TP0, [0, 1], before=rebalance)
        consumer.feed(TP1, [9])
        await wait_until(lambda: stage.handler.started == [9])
        assert consumer.seeks == []
        assert stage.loop.owned_partitions == frozenset({TP1})
    finally:
        await shut(stage)


async def test_stop_cancels_waiting_records_drains_calls_in_flight_and_commits(
    stage_factory: StageFactory,
) -> None:
    stage = await stage_factory(calling={0, 1})
    stage.consumer.feed(TP0, [0, 1, 2])
    await wait_until(lambda: len(stage.handler.started) == 3)

    stopping = asyncio.create_task(stage.loop.stop())
    await wait_until(lambda: stage.handler.cancelled == [2])
    await asyncio.sleep(0.01)
    assert not stopping.done()

    stage.handler.open(0, 1)
    await asyncio.wait_for(stopping, 1)
    assert stage.committed() == OffsetAndMetadata(2, "")
    assert ("revoked", {0}, 3) in stage.listener.calls

    stage.consumer.feed(TP0, [3])
    assert stage.runner is not None
    await wait_until(stage.runner.done)
    assert stage.handler.started == [0, 1, 2]


async def test_max_pending_bounds_the_records_in_flight(stage_factory: StageFactory) -> None:
    stage = await stage_factory(max_pending=2)
    stage.consumer.feed(TP0, range(5))
    await wait_until(lambda: len(stage.handler.started) == 2)
    await asyncio.sleep(0.01)
    assert stage.handler.started == [0, 1]
    assert stage.sample("callstream_requests_pending") == 2

    await stage.finish(0)
    await wait_until(lambda: len(stage.handler.started) == 3)
    assert stage.loop.in_flight == 2

    await stage.finish(1, 2, 3, 4)
    assert stage.loop.in_flight == 0
    assert stage.handler.started == [0, 1, 2, 3, 4]


async def test_a_failed_commit_is_sent_again_by_the_next_commit(stage: Stage) -> None:
    stage.consumer.feed(TP0, [0])
    await wait_until(lambda: len(stage.handler.started) == 1)
    await stage.finish(0)

    stage.consumer.fail_commits = 1
    await stage.loop.commit()
    assert stage.consumer.commits == []
    await stage.loop.commit()
    assert stage.committed() == OffsetAndMetadata(1, "")
    assert stage.sample("callstream_offset_commits_total") == 1


async def test_without_commit_metadata_nothing_is_written_or_read_beyond_the_offset(
    stage_factory: StageFactory,
) -> None:
    consumer = FakeConsumer()
    consumer.stored[TP0] = OffsetAndMetadata(0, encode_done(0, [1]))
    stage = await stage_factory(consumer, metadata=False)
    assert consumer._coordinator.fetches == []

    consumer.feed(TP0, [0, 1, 2])
    await wait_until(lambda: len(stage.handler.started) == 3)  # 1 is not skipped
    await stage.finish(2)
    await stage.loop.commit()
    assert stage.committed() == OffsetAndMetadata(0, "")


async def test_lag_is_the_high_watermark_minus_the_committed_offset_until_revoked(
    stage: Stage,
) -> None:
    stage.consumer.stored[TP0] = OffsetAndMetadata(4, "")
    stage.consumer.highwaters[TP0] = 10
    await stage.loop.update_lag()
    labels = {"topic": TOPIC, "partition": "0"}
    assert stage.sample("callstream_consumer_lag_records", **labels) == 6

    await stage.loop.on_revoked({TP0})
    assert stage.sample("callstream_consumer_lag_records", **labels) is None


@settings(database=None, deadline=None, max_examples=25)
@given(order=st.permutations(range(6)))
def test_whatever_the_finishing_order_commits_never_pass_an_unfinished_record(
    order: list[int],
) -> None:
    async def scenario() -> None:
        stage = await start_stage(build_stage())
        try:
            stage.consumer.feed(TP0, range(6))
            await wait_until(lambda: len(stage.handler.started) == 6)
            finished: set[int] = set()
            for offset in order:
                await stage.finish(offset)
                finished.add(offset)
                await stage.loop.commit()
                committed = stage.committed()
                # Everything below the position is finished, the position itself is not.
                assert set(range(committed.offset)) <= finished
                assert committed.offset == 6 or committed.offset not in finished
                assert decode_done(committed.offset, committed.metadata) == {
                    o for o in finished if o > committed.offset
                }
        finally:
            await shut(stage)

    asyncio.run(scenario())


async def test_a_record_waiting_for_a_token_at_revocation_is_never_called_nor_committed() -> None:
    now = [NOW_MS / 1000]
    book = LimitBook({"acme": ProviderLimit(rate_per_s=100, burst=1)}, jitter_s=0.0)
    metrics = Metrics.create(CollectorRegistry())
    limiter = Limiter(book, MemoryQuotaStore(), metrics, clock=lambda: now[0])
    handler = LimitedHandler(limiter)
    partitions = LimiterPartitions(limiter, None)
    stage = await start_stage(build_stage(handler=handler, listeners=[partitions]))
    try:
        stage.consumer.feed(TP0, [0, 1])
        await asyncio.sleep(0.02)
        assert handler.started == []  # both wait: a fresh owner starts with an empty bucket
        now[0] += 0.01  # one token: offset 0 goes and calls its provider
        await wait_until(lambda: handler.started == [0])

        revoking = asyncio.create_task(stage.loop.on_revoked({TP0}))
        await asyncio.sleep(0.01)
        assert not revoking.done()  # the call in flight is drained, not abandoned
        handler.open(0)
        await asyncio.wait_for(revoking, 1)

        assert handler.started == [0]  # offset 1 never called its provider
        assert stage.committed() == OffsetAndMetadata(1, "")
    finally:
        await shut(stage)
        limiter.close()


# -- a record never jams its partition (issue 19) --------------------------------------------


class FailingHandler(GatedHandler):
    """Raises (a bug) for the offsets in ``failing``; the others finish when opened."""

    def __init__(self, failing: set[int]) -> None:
        super().__init__(PointOfNoReturn())
        self._failing = failing

    async def handle(self, source: SourceRecord) -> Outcome:
        if source.offset in self._failing:
            raise RuntimeError(f"bug on {source.offset}")
        return await super().handle(source)


async def test_a_handler_that_raises_ends_its_record_with_a_dead_letter(
    stage_factory: StageFactory,
) -> None:
    stage = await stage_factory(handler=FailingHandler({1}))
    stage.consumer.feed(TP0, range(3))
    await wait_until(lambda: len(stage.sender.sent) == 1)
    assert stage.sender.sent[0][:1] == ("dlq",)
    await stage.finish(0, 2)

    await stage.loop.commit()
    assert stage.committed() == OffsetAndMetadata(3, "")
    assert stage.sample("callstream_outcomes_reduced_total", kind="replaced") == 1
    assert stage.sample("callstream_dead_letters_total", reason="internal_error", stage="handler")
    assert stage.loop.in_flight == 0


class UnwindingBugHandler(GatedHandler):
    """Raises a plain error instead of CancelledError when cancelled before its call: what a
    waiting primitive with a bug does (concurrency.py's acquire once did)."""

    async def handle(self, source: SourceRecord) -> Outcome:
        try:
            return await super().handle(source)
        except asyncio.CancelledError:
            raise ValueError("not in deque") from None


async def test_an_error_raised_while_a_revocation_unwinds_an_uncalled_record_leaves_it_unfinished(
    stage_factory: StageFactory,
) -> None:
    handler = UnwindingBugHandler(PointOfNoReturn(), calling={0})
    stage = await stage_factory(handler=handler)
    stage.consumer.feed(TP0, [0, 1])
    await wait_until(lambda: len(stage.handler.started) == 2)

    revoking = asyncio.create_task(stage.loop.on_revoked({TP0}))
    await wait_until(lambda: stage.handler.cancelled == [1])
    stage.handler.open(0)
    await asyncio.wait_for(revoking, 1)

    # No dead letter for 1: it was never called, and the next owner reads it again.
    assert [value for _, value, _ in stage.sender.sent] == [b"result:req-0-0:ok"]
    assert stage.committed() == OffsetAndMetadata(1, "")
    assert stage.loop.in_flight == 0


async def test_only_a_task_cancelled_before_its_call_counts_as_revoked_before_call() -> None:
    no_return = PointOfNoReturn()

    async def cancelled_then_asked(called: bool) -> bool:
        if called:
            no_return.mark_passed()
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1)
        return no_return.cancelled_before_call()

    assert await asyncio.create_task(cancelled_then_asked(called=True)) is False
    assert await asyncio.create_task(cancelled_then_asked(called=False)) is True
    assert no_return.cancelled_before_call() is False  # this test's own task: never cancelled


@pytest.mark.parametrize(
    ("failures", "kind", "writes"),
    [
        ([MessageSizeTooLargeError()], "replaced", 2),  # outcome refused, its dead letter taken
        ([MessageSizeTooLargeError(), ("ack", TopicAuthorizationFailedError())], "lost", 2),
    ],
)
async def test_an_outcome_refused_for_good_still_finishes_its_record_and_commits_move_on(
    stage_factory: StageFactory, failures: list[object], kind: str, writes: int
) -> None:
    stage = await stage_factory(sender=FakeSender(failures=failures), max_pending=2)
    stage.consumer.feed(TP0, range(4))
    await wait_until(lambda: len(stage.handler.started) == 2)
    stage.handler.open(0)
    await wait_until(lambda: len(stage.sender.sent) == writes)
    stage.handler.open(1)
    await wait_until(lambda: len(stage.handler.started) == 4)  # both slots came back
    await stage.finish(2, 3)

    await stage.loop.commit()
    assert stage.committed() == OffsetAndMetadata(4, "")
    assert stage.sample("callstream_outcomes_reduced_total", kind=kind) == 1


async def test_a_retriable_publish_error_is_retried_and_holds_the_commit_meanwhile(
    stage_factory: StageFactory,
) -> None:
    stage = await stage_factory(sender=FakeSender(failures=[KafkaTimeoutError()] * 3))
    stage.consumer.feed(TP0, range(2))
    await wait_until(lambda: len(stage.handler.started) == 2)
    stage.handler.open(0, 1)
    await wait_until(lambda: len(stage.sender.sent) == 5)

    await stage.loop.commit()
    assert stage.committed() == OffsetAndMetadata(2, "")
    assert [topic for topic, _, _ in stage.sender.sent] == ["results"] * 5


# -- a full partition pauses alone; the fetch loop never waits (issue 20) ---------------------


def build_paused_stage(
    max_pending: int = 100, per_partition: int = 100, assigned: Sequence[TopicPartition] = (TP0,)
) -> Stage:
    stage = build_stage(FakeConsumer(assigned))
    stage.loop = StageLoop(
        stage.consumer,
        stage.handler,
        stage.loop._publisher,
        stage.metrics,
        Limits(max_pending=max_pending, max_pending_per_partition=per_partition),
        listeners=[stage.listener],
        no_return=stage.handler.no_return,
    )
    stage.listener.loop = stage.loop
    return stage


@pytest.fixture
async def bounded_factory() -> AsyncIterator[Callable[..., Awaitable[Stage]]]:
    started: list[Stage] = []

    async def start(**options: object) -> Stage:
        stage = await start_stage(build_paused_stage(**options))  # type: ignore[arg-type]
        started.append(stage)
        return stage

    yield start
    for stage in started:
        await shut(stage)


async def test_a_full_partition_is_paused_while_the_others_keep_being_fetched(
    bounded_factory: Callable[..., Awaitable[Stage]],
) -> None:
    stage = await bounded_factory(per_partition=2, assigned=(TP0, TP1))
    stage.consumer.feed(TP0, range(5))
    await wait_until(lambda: stage.loop.paused_partitions == {TP0})
    assert stage.consumer.pauses == [TP0]
    assert stage.sample("callstream_partitions_paused") == 1

    stage.consumer.feed(TP0, range(5, 8))  # stays unread while TP0 is paused
    stage.consumer.feed(TP1, range(100, 102))
    await wait_until(lambda: len(stage.handler.started) == 4)
    assert stage.handler.started == [0, 1, 100, 101]
    polls = stage.consumer.polls
    await asyncio.sleep(0.02)
    assert stage.consumer.polls > polls  # the fetch loop goes on: the member stays in its group
    assert stage.consumer.unread == 1
    assert stage.loop.paused_partitions == {TP0}

    await stage.finish(100, 101)  # the other partition finishes while TP0 stays paused
    assert stage.loop.in_flight == 2


async def test_a_paused_partition_resumes_at_half_its_bound_and_starts_what_it_held_in_order(
    bounded_factory: Callable[..., Awaitable[Stage]],
) -> None:
    stage = await bounded_factory(per_partition=4)
    stage.consumer.feed(TP0, range(10))
    stage.consumer.feed(TP0, range(10, 12))
    await wait_until(lambda: len(stage.handler.started) == 4)

    await stage.finish(0)  # 3 pending: over half of 4, still paused
    await asyncio.sleep(0.02)
    assert stage.loop.paused_partitions == {TP0}
    assert stage.handler.started == [0, 1, 2, 3]

    await stage.finish(1)  # 2 pending: resumed, 4 and 5 start, paused again at 4
    await wait_until(lambda: len(stage.handler.started) == 6)
    assert stage.consumer.resumes == [TP0]
    assert stage.loop.paused_partitions == {TP0}

    for offset in range(2, 12):
        await stage.finish(offset)
    assert stage.handler.started == list(range(12))  # held records first, then the next batch
    assert stage.loop.paused_partitions == frozenset()
    assert stage.sample("callstream_partitions_paused") == 0
    await stage.loop.commit()
    assert stage.committed() == OffsetAndMetadata(12, "")


@settings(database=None, deadline=None, max_examples=20)
@given(order=st.permutations(range(8)))
def test_while_paused_commits_never_pass_a_held_record(order: list[int]) -> None:
    async def scenario() -> None:
        stage = await start_stage(build_paused_stage(per_partition=3))
        try:
            stage.consumer.feed(TP0, range(8))
            await wait_until(lambda: len(stage.handler.started) == 3)
            finished: set[int] = set()
            while len(finished) < 8:
                await wait_until(lambda: len(stage.handler.started) > len(finished))
                # Records start in offset order: every record not started is held (or unread).
                started = set(stage.handler.started)
                assert started == set(range(len(started)))
                # The first of the given order that has started and not finished, finishes.
                offset = next(o for o in order if o in started and o not in finished)
                await stage.finish(offset)
                finished.add(offset)
                await stage.loop.commit()
                if TP0 in stage.consumer.stored:
                    committed = stage.committed()
                    assert set(range(committed.offset)) <= finished
                    assert committed.offset <= len(stage.handler.started)
            await stage.loop.commit()
            assert stage.committed() == OffsetAndMetadata(8, "")
        finally:
            await shut(stage)

    asyncio.run(scenario())


async def test_the_worker_wide_bound_is_shared_among_the_partitions_owned(
    bounded_factory: Callable[..., Awaitable[Stage]],
) -> None:
    stage = await bounded_factory(max_pending=4, assigned=(TP0, TP1))
    stage.consumer.feed(TP0, range(5))  # a share of 2 each: TP0 cannot take TP1's room
    await wait_until(lambda: stage.loop.paused_partitions == {TP0})
    stage.consumer.feed(TP1, range(100, 102))
    await wait_until(lambda: len(stage.handler.started) == 4)
    assert stage.handler.started == [0, 1, 100, 101]
    assert stage.loop.paused_partitions == {TP0}
    polls = stage.consumer.polls
    await asyncio.sleep(0.02)
    assert stage.consumer.polls > polls

    await stage.finish(0)  # down to half its share: resumed, 2 starts, paused again
    await wait_until(lambda: len(stage.handler.started) == 5)
    for offset in (1, 2, 3, 4, 100, 101):
        await stage.finish(offset)
    assert stage.handler.started == [0, 1, 100, 101, 2, 3, 4]
    assert stage.loop.paused_partitions == frozenset()
    assert stage.loop.in_flight == 0


async def test_a_revoked_paused_partition_drops_what_it_held_and_commits_below_it(
    bounded_factory: Callable[..., Awaitable[Stage]],
) -> None:
    stage = await bounded_factory(per_partition=4)
    stage.consumer.feed(TP0, range(10))
    await wait_until(lambda: len(stage.handler.started) == 4)
    await stage.finish(0)

    await stage.loop.on_revoked({TP0})  # 1-3 wait (cancelled), 4-9 were held
    assert sorted(stage.handler.cancelled) == [1, 2, 3]
    assert stage.committed() == OffsetAndMetadata(1, "")
    assert stage.loop.paused_partitions == frozenset()
    assert stage.sample("callstream_partitions_paused") == 0

    stage.consumer.paused.clear()  # as aiokafka: a new assignment starts unpaused
    await stage.loop.on_assigned({TP0})  # the next owner (here: this one again) reads from 1
    await asyncio.sleep(0.02)  # a fetch begun before the rebalance has returned (empty)
    stage.consumer.feed(TP0, range(1, 10))
    await wait_until(lambda: len(stage.handler.started) == 4 + 4)
    assert stage.handler.started[4:] == [1, 2, 3, 4]
    assert stage.loop.in_flight == 4
