"""Codec micro-benchmark: Apache ``avro`` against ``fastavro`` on the three events."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Final, Literal

import avro.io
import avro.schema
from fastavro import schemaless_reader, schemaless_writer
from pydantic import BaseModel

from schemas.codec import Codecs, EventCodec
from schemas.models import AttemptRecord, DeadLetterEvent, RequestEvent, ResultEvent, ResultStatus

Op = Literal["encode", "decode"]

# Each timing runs n calls in short slices and keeps the fastest: other processes on a shared
# machine only ever make a slice slower, and short slices often fit between their bursts.
_SLICES: Final = 20
# Apache avro is an order of magnitude slower; a tenth of the iterations keeps the run short
# while each timing still spans thousands of calls.
_AVRO_SHARE: Final = 10
_T0_MS: Final = 1_767_225_600_000


@dataclass(frozen=True, slots=True)
class BenchRow:
    """Microseconds per operation for one event and one direction.

    ``avro_us`` and ``fastavro_us`` time the Avro body alone, from the same dict; ``codec_us``
    times ``EventCodec`` end to end (framing, ``model_dump`` or pydantic validation).
    """

    event: str
    op: Op
    size_bytes: int
    avro_us: float
    fastavro_us: float
    codec_us: float

    @property
    def ratio(self) -> float:
        """How many times faster fastavro is than avro."""
        return self.avro_us / self.fastavro_us


def sample_request() -> RequestEvent:
    """A typical request: 4 params and W3C trace context headers (~300 bytes framed)."""
    return RequestEvent(
        request_id="5f0c6c1e-8f7a-4a53-9d0e-3c1b2a9d7e41",
        idempotency_key="fc:52.52:13.41:2026-01-01",
        tenant="shop-eu",
        provider="open_meteo",
        operation="get_forecast",
        params={
            "latitude": "52.52",
            "longitude": "13.41",
            "hourly": "temperature_2m",
            "forecast_days": "3",
        },
        priority=5,
        deadline_at_ms=_T0_MS + 2_000,
        created_at_ms=_T0_MS,
        reply_to="callstream.results.v1",
        trace={
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "congo=t61rcWkgMzE",
        },
    )


def sample_result() -> ResultEvent:
    """A successful result with a 200-byte JSON body and rate-limit headers."""
    body = json.dumps(
        {"latitude": 52.52, "longitude": 13.41, "hourly": {"temperature_2m": [1.5, 1.2, 0.9]}}
    ).encode()
    body = body[:-1] + b',"pad":"' + b"x" * (200 - len(body) - 9) + b'"}'
    request = sample_request()
    return ResultEvent(
        request_id=request.request_id,
        idempotency_key=request.idempotency_key,
        tenant=request.tenant,
        provider=request.provider,
        operation=request.operation,
        status=ResultStatus.OK,
        provider_used=request.provider,
        http_status=200,
        body=body,
        content_type="application/json",
        headers={"x-ratelimit-remaining": "598", "x-request-id": "a1b2c3d4"},
        attempts=1,
        latency_ms=48.7,
        cost=0.0001,
        trace=request.trace,
        created_at_ms=_T0_MS,
        completed_at_ms=_T0_MS + 51,
    )


def sample_dead_letter() -> DeadLetterEvent:
    """A request that timed out twice, with its original bytes and attempt history."""
    request = sample_request()
    attempts = [
        AttemptRecord(
            attempt=n,
            started_at_ms=_T0_MS + 1_000 * n,
            duration_ms=2_000.0,
            error_type="ProviderTimeout",
            error_message="no response within 2.0 s",
        )
        for n in (1, 2)
    ]
    return DeadLetterEvent(
        request_id=request.request_id,
        original_raw=Codecs().request.encode(request),
        original=request,
        source_topic="callstream.requests.v1",
        source_partition=3,
        source_offset=184_467,
        reason="retries_exhausted",
        error_type="ProviderTimeout",
        error_message="no response within 2.0 s",
        retriable=True,
        attempts=attempts,
        first_failure_at_ms=_T0_MS + 3_000,
        last_failure_at_ms=_T0_MS + 4_000,
        stage="caller",
    )


def run_codec_bench(n: int = 20000) -> list[BenchRow]:
    """Time encode and decode of each sample event with both libraries and the codec.

    Args:
        n: calls per fastavro and codec timing (avro makes n/10), in 20 slices; the
            fastest slice counts.

    Returns:
        Two rows (encode, decode) per event.
    """
    codecs = Codecs()
    cases: list[tuple[str, EventCodec[Any], BaseModel]] = [
        ("request", codecs.request, sample_request()),
        ("result", codecs.result, sample_result()),
        ("dead_letter", codecs.dead_letter, sample_dead_letter()),
    ]
    rows: list[BenchRow] = []
    for event, codec, model in cases:
        rows += _bench_event(event, codec, model, n)
    return rows


def format_report(rows: list[BenchRow]) -> str:
    """A fixed-width table of the rows, µs per operation."""
    lines = [
        f"{'event':<12} {'op':<7} {'bytes':>6} {'avro µs':>9} {'fastavro µs':>12} "
        f"{'ratio':>6} {'codec µs':>9}"
    ]
    lines += [
        f"{r.event:<12} {r.op:<7} {r.size_bytes:>6} {r.avro_us:>9.1f} {r.fastavro_us:>12.2f} "
        f"{r.ratio:>5.1f}x {r.codec_us:>9.2f}"
        for r in rows
    ]
    lines.append("avro/fastavro: Avro body only; codec: fastavro + framing + pydantic.")
    return "\n".join(lines)


def _bench_event(event: str, codec: EventCodec[Any], model: BaseModel, n: int) -> list[BenchRow]:
    parsed = codec.schema.parsed
    apache = avro.schema.parse(json.dumps(codec.schema.schema))
    writer = avro.io.DatumWriter(apache)
    reader = avro.io.DatumReader(apache, apache)
    datum = model.model_dump()
    framed = codec.encode(model)
    body = framed[10:]

    def avro_encode() -> bytes:
        buf = BytesIO()
        writer.write(datum, avro.io.BinaryEncoder(buf))
        return buf.getvalue()

    def fastavro_encode() -> bytes:
        buf = BytesIO()
        schemaless_writer(buf, parsed, datum, disable_tuple_notation=True)  # as EventCodec
        return buf.getvalue()

    def fastavro_decode() -> object:
        return schemaless_reader(BytesIO(body), parsed, None)

    avro_n = max(n // _AVRO_SHARE, 1)
    encode = BenchRow(
        event,
        "encode",
        len(framed),
        _us_per_op(avro_encode, avro_n),
        _us_per_op(fastavro_encode, n),
        _us_per_op(lambda: codec.encode(model), n),
    )
    decode = BenchRow(
        event,
        "decode",
        len(framed),
        _us_per_op(lambda: reader.read(avro.io.BinaryDecoder(BytesIO(body))), avro_n),
        _us_per_op(fastavro_decode, n),
        _us_per_op(lambda: codec.decode(framed), n),
    )
    return [encode, decode]


def _us_per_op(call: Callable[[], object], n: int) -> float:
    call()  # warm caches and lazy imports outside the timing
    per_slice = max(n // _SLICES, 1)
    best_ns = min(_time_ns(call, per_slice) for _ in range(_SLICES))
    return best_ns / per_slice / 1_000


def _time_ns(call: Callable[[], object], n: int) -> int:
    gc.disable()  # as timeit does: a collection triggered by earlier garbage is not our cost
    try:
        start = time.perf_counter_ns()
        for _ in range(n):
            call()
        return time.perf_counter_ns() - start
    finally:
        gc.enable()
