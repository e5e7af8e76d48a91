"""AccessLog: accesses batched per access-topic partition, sent best effort, bounded."""

from __future__ import annotations

import zlib

from prometheus_client import CollectorRegistry

from agents.cache.access import AccessLog
from schemas.codec import Codecs
from schemas.models import AccessBatch, AccessKind
from streams.metrics import Metrics


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[int, AccessBatch]] = []
        self.fail = fail

    async def __call__(self, partition: int, value: bytes) -> None:
        if self.fail:
            raise RuntimeError("broker away")
        self.sent.append((partition, Codecs().access.decode(value)))


def log_for(sink: Sink, **kwargs: int) -> tuple[AccessLog, Metrics]:
    metrics = Metrics.create(CollectorRegistry())
    options = {"partitions": 4, "max_batch": 100, **kwargs}
    log = AccessLog(sink, Codecs().access.encode, metrics, flush_s=0.05, **options)
    return log, metrics


def sample(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


async def test_accesses_go_in_one_record_per_partition_of_their_key() -> None:
    sink = Sink()
    log, metrics = log_for(sink)
    keys = [f"k{n}".encode() for n in range(20)]
    for n, key in enumerate(keys):
        log.record(key, AccessKind.HIT, at_ms=n, expires_at_ms=1000)
    log.record(b"k0", AccessKind.FILL, at_ms=99, expires_at_ms=2000, request=b"raw")
    await log.flush()
    assert len(sink.sent) == len({zlib.crc32(k) % 4 for k in keys})
    for partition, batch in sink.sent:
        assert {zlib.crc32(e.key) % 4 for e in batch.events} == {partition}
    events = [e for _, batch in sink.sent for e in batch.events]
    assert len(events) == 21
    fill = [e for e in events if e.kind == AccessKind.FILL]
    assert [(f.key, f.request, f.expires_at_ms) for f in fill] == [(b"k0", b"raw", 2000)]
    assert sample(metrics, "callstream_access_events_total") == 21
    await log.flush()
    assert len(sink.sent) == len({zlib.crc32(k) % 4 for k in keys})  # nothing left to send


async def test_a_refused_batch_is_counted_and_dropped() -> None:
    log, metrics = log_for(Sink(fail=True))
    log.record(b"k", AccessKind.HIT, at_ms=1, expires_at_ms=2)
    await log.flush()
    assert sample(metrics, "callstream_access_dropped_total") == 1


async def test_the_buffer_is_bounded_while_nothing_is_sent() -> None:
    sink = Sink()
    log, metrics = log_for(sink, partitions=1, max_batch=10, max_buffered=50)
    for n in range(200):
        log.record(b"k", AccessKind.HIT, at_ms=n, expires_at_ms=0)
    await log.flush()
    sent = [e for _, batch in sink.sent for e in batch.events]
    assert len(sent) <= 50
    assert sent[-1].at_ms == 199  # the newest are kept
    dropped = sample(metrics, "callstream_access_dropped_total")
    assert dropped is not None and dropped + len(sent) == 200


async def test_large_batches_are_split() -> None:
    sink = Sink()
    log, _ = log_for(sink, partitions=1, max_batch=10)
    for n in range(25):
        log.record(b"k", AccessKind.HIT, at_ms=n, expires_at_ms=0)
    await log.flush()
    assert [len(batch.events) for _, batch in sink.sent] == [10, 10, 5]
