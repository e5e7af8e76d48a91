"""Publish requests and wait for their results: the round trip both benchmarks time."""

from __future__ import annotations

import asyncio
import time

from schemas.models import RequestEvent, ResultEvent
from streams.sdk import CallstreamClient
from streams.settings import Settings


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
