"""Publish requests and wait for their results: the round trip both benchmarks time; and what
the benchmarks that run a worker per variant share (fresh topics, the worker's settings, a
declaration of the fake that replaces its own, the outcome readers)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from providers.fake.provider import FAKE_PROVIDER
from schemas.models import DeadLetterEvent, RequestEvent, ResultEvent
from streams.cli.dev.dev_cmd import DEMO_API_KEY, worker_env
from streams.sdk import CallstreamClient
from streams.settings import Settings, TopicSettings


async def round_trip(
    settings: Settings, requests: list[RequestEvent], *, timeout_s: float
) -> tuple[list[ResultEvent], float]:
    """Publish ``requests`` and read the result topic until each has its result.

    Returns:
        The first result of each request, and the seconds from the first publish to the last
        result (the reader is positioned at the end before that clock starts).
    """
    wanted = {request.request_id for request in requests}
    results: list[ResultEvent] = []
    async with CallstreamClient(settings) as client, client.reader(from_beginning=False) as reader:
        started = time.perf_counter()
        await client.publish_many(requests)
        stream = reader.results(follow=True, idle_timeout_s=0.2, codecs=client.codecs)
        async with asyncio.timeout(timeout_s):
            async for event in stream:
                if event.request_id in wanted:
                    results.append(event)
                    wanted.discard(event.request_id)
                    if not wanted:
                        break
        return results, time.perf_counter() - started


def bench_topics(prefix: str) -> TopicSettings:
    """Fresh topics named after ``prefix`` (a benchmark variant's own)."""
    return TopicSettings(
        requests=f"{prefix}.requests", results=f"{prefix}.results", dead_letters=f"{prefix}.dlq"
    )


def bench_worker_env(
    tmp: Path, servers: str, fake_url: str, app_id: str, topics: TopicSettings, **extra: str
) -> dict[str, str]:
    """A benchmark worker against the fake provider: its own app id, data dir and topics,
    quiet logs, plus ``extra`` settings (``CALLSTREAM_...`` names)."""
    return {
        **worker_env(servers, fake_url, tmp, embedded=False),
        "CALLSTREAM_APP_ID": app_id,
        "CALLSTREAM_DATA_DIR": str(tmp / app_id),
        "CALLSTREAM_TOPICS__REQUESTS": topics.requests,
        "CALLSTREAM_TOPICS__RESULTS": topics.results,
        "CALLSTREAM_TOPICS__DEAD_LETTERS": topics.dead_letters,
        "CALLSTREAM_LOG_LEVEL": "warning",
        **extra,
    }


def declare_fake(directory: Path, overrides: Mapping[str, Any]) -> Path:
    """Write the fake's own declaration with ``overrides`` (``ProviderSpec.with_overrides``)
    into ``directory``, for a worker's ``CALLSTREAM_PROVIDER_DIRS``: a declaration file wins
    over the entry point. Returns ``directory``."""
    spec = FAKE_PROVIDER.with_overrides(overrides)
    data = spec.model_dump(mode="json", by_alias=True)
    data["auth"]["key"] = DEMO_API_KEY  # dumped masked; the worker's settings replace it too
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{spec.name}.yaml").write_text(yaml.safe_dump(data))
    return directory


def read_outcomes(
    client: CallstreamClient,
    on_result: Callable[[ResultEvent], object],
    on_dead_letter: Callable[[DeadLetterEvent], object],
) -> list[asyncio.Task[None]]:
    """Tasks that pass every result and every dead letter of ``client``'s topics, from their
    beginning, to the callbacks; end them with ``cancel_all``."""

    async def read_results() -> None:
        async for event in client.results():
            on_result(event)

    async def read_dead_letters() -> None:
        async for letter in client.dead_letters():
            on_dead_letter(letter)

    return [asyncio.create_task(read_results()), asyncio.create_task(read_dead_letters())]


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait until each has ended."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
