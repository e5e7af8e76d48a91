"""aiokafka client construction from :class:`KafkaSettings` (TLS and SASL included)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.helpers import create_ssl_context

from streams.errors import BrokerUnavailable
from streams.logs import quiet
from streams.routing import Murmur2Partitioner
from streams.settings import KafkaSettings


def broker_unavailable(kafka: KafkaSettings, exc: BaseException) -> BrokerUnavailable:
    """The one-line error for a client that could not bootstrap (raise it ``from None``)."""
    return BrokerUnavailable(
        f"cannot reach Kafka at {kafka.bootstrap_servers}: {exc!r}. Operator action: start a "
        "broker (`callstream broker start`) or set CALLSTREAM_KAFKA__BOOTSTRAP_SERVERS."
    )


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection options shared by every consumer, producer and admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
            certfile=str(kafka.ssl_certfile) if kafka.ssl_certfile else None,
            keyfile=str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None,
        )
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


def producer_options(
    kafka: KafkaSettings, *, max_record_bytes: int | None = None
) -> dict[str, Any]:
    """A producer that only reports success once every in-sync replica has the record.

    Args:
        kafka: the connection settings.
        max_record_bytes: the largest record it may send (``topics.max_record_bytes``, the
            topics' ``max.message.bytes``); aiokafka's 1 MiB when None. Batches stay within
            it too: the broker refuses a batch over it whole, good records included.
    """
    batch_bytes = _MAX_BATCH_BYTES
    sizes: dict[str, int] = {}
    if max_record_bytes is not None:
        batch_bytes = min(batch_bytes, max_record_bytes)
        sizes["max_request_size"] = max_record_bytes
    return {
        **client_options(kafka),
        "acks": "all",
        "linger_ms": kafka.producer_linger_ms,
        "max_batch_size": batch_bytes,
        **sizes,
        "enable_idempotence": kafka.idempotent_producer,
        "partitioner": Murmur2Partitioner(),
    }


# Records buffered per partition before a send: one fetch-sized batch.
_MAX_BATCH_BYTES = 1024 * 1024


def consumer_options(kafka: KafkaSettings, *, group_id: str) -> dict[str, Any]:
    """A consumer whose offsets only move when our code commits them."""
    return {
        **client_options(kafka),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": int(kafka.session_timeout_s * 1000),
        "heartbeat_interval_ms": int(kafka.heartbeat_interval_s * 1000),
        "max_poll_records": kafka.max_poll_records,
        "fetch_min_bytes": kafka.fetch_min_bytes,
        "fetch_max_wait_ms": kafka.fetch_max_wait_ms,
    }


async def start_client(client: AIOKafkaProducer | AIOKafkaConsumer, kafka: KafkaSettings) -> None:
    """Start an aiokafka client; an unreachable cluster becomes one clear error, and the
    half-started client is closed (aiokafka warns about it otherwise).

    Raises:
        BrokerUnavailable: no broker answers at the bootstrap servers.
    """
    try:
        with quiet("aiokafka"):  # it logs the failed connect itself; we say it once
            await client.start()
    except KafkaConnectionError as exc:
        await client.stop()
        raise broker_unavailable(kafka, exc) from None


@contextlib.asynccontextmanager
async def started(
    client: AIOKafkaProducer | AIOKafkaConsumer, kafka: KafkaSettings
) -> AsyncIterator[None]:
    """Start ``client`` (see :func:`start_client`) and stop it on exit.

    Raises:
        BrokerUnavailable: no broker answers at the bootstrap servers.
    """
    await start_client(client, kafka)
    try:
        yield
    finally:
        await client.stop()


@contextlib.asynccontextmanager
async def admin_client(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client, closed on exit.

    Raises:
        BrokerUnavailable: no broker answers at the bootstrap servers.
    """
    admin = AIOKafkaAdminClient(**client_options(kafka), request_timeout_ms=15_000)
    try:
        await admin.start()
    except KafkaError as exc:
        await admin.close()
        raise broker_unavailable(kafka, exc) from None
    try:
        yield admin
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def reader(
    kafka: KafkaSettings, *topics: str, from_beginning: bool = True, **options: Any
) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer outside any consumer group, stopped on exit.

    It reads every partition of ``topics``, or (without topics) what the caller assigns and
    seeks, and never commits: readers of a range (replay, table recovery, the SDK) neither
    share work nor move a group's position, and joining the worker's group would rebalance it.

    Args:
        kafka: the connection settings; ``max_poll_records`` bounds each fetch.
        topics: topics to read whole; none to assign partitions by hand.
        from_beginning: where a partition without a seek starts: its first or its next record.
        options: further ``AIOKafkaConsumer`` options (fetch sizes).

    Raises:
        BrokerUnavailable: no broker answers at the bootstrap servers.
    """
    consumer = AIOKafkaConsumer(
        *topics,
        **client_options(kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        max_poll_records=kafka.max_poll_records,
        **options,
    )
    async with started(consumer, kafka):
        yield consumer
