"""Probe p8 (security review 2026-12-02, findings 1 and 12): commit positions and metadata.

1. On the old main a record whose outcome could never be published stayed in flight for
   good: its partition's commit stopped there and the set of offsets finished above it grew
   without bound ("3,000,000 finished above: one commit cycle 343 ms CPU, rss 336 MB"). Now a
   record whose outcome the broker refuses for good still ends (a dead letter instead), and
   commits move past it.
2. Commit metadata written by another group member was expanded with no bound ("metadata of
   24 chars decoded into 100,000,000 offsets in 21.3 s, rss 8924 MB"). Now it is ignored
   whole past ``MAX_DONE_OFFSETS`` (see also tests/unit/streams/test_stage_offsets.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import tracemalloc
import zlib

from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.structs import OffsetAndMetadata

from streams.stage.offsets import _PREFIX, MAX_DONE_OFFSETS, _varints, decode_done
from tests.unit.streams.stage.fakes import TP0, FakeSender, wait_until
from tests.unit.streams.stage.test_loop import build_stage

FOLLOWERS = 1000


async def test_a_record_whose_outcome_is_refused_for_good_does_not_hold_the_commit() -> None:
    stage = build_stage(sender=FakeSender(failures=[MessageSizeTooLargeError()]), max_pending=100)
    stage.handler.open(*range(FOLLOWERS + 1))
    await stage.loop.on_assigned(stage.consumer.assignment())
    runner = asyncio.create_task(stage.loop.run())
    try:
        stage.consumer.feed(TP0, range(FOLLOWERS + 1))
        # Every record ends: one outcome each, plus the refused write that was replaced.
        await wait_until(lambda: len(stage.sender.sent) == FOLLOWERS + 2, timeout_s=10)
        await wait_until(lambda: stage.loop.in_flight == 0)
        await stage.loop.commit()
        assert stage.committed() == OffsetAndMetadata(FOLLOWERS + 1, "")  # nothing left above
        assert stage.sample("callstream_outcomes_reduced_total", kind="replaced") == 1
    finally:
        await stage.loop.stop()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


def test_the_probes_24_characters_of_metadata_decode_to_nothing_quickly() -> None:
    metadata = _PREFIX + base64.b64encode(zlib.compress(_varints([(0, 10**8)]), 9)).decode()
    assert len(metadata) == 24
    tracemalloc.start()
    try:
        started = time.perf_counter()
        done = decode_done(0, metadata)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert done == set()
    assert elapsed < 0.5 and peak < 10 * 2**20, (elapsed, peak)
    assert MAX_DONE_OFFSETS < 10**8
