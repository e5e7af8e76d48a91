"""Probe p13 (security review 2026-12-02, "held up: cookies"): a ``Set-Cookie`` from one
provider is sent to no provider, and never reaches a result's headers.

Held on the old main too (``DummyCookieJar``); pinned here because one shared aiohttp session
serves every provider: a real cookie jar would carry provider A's session to later calls.
"""

from __future__ import annotations

from typing import Any

from providers.base import Provider
from providers.declaration import ProviderSpec
from providers.http import ProviderClient
from schemas.models import RequestEvent
from tests.unit.security.conftest import http_response

SET_COOKIE = "Set-Cookie: session=COOKIE_FROM_A; Path=/\r\nSet-Cookie: b=2; Domain=127.0.0.1\r\n"


def provider(name: str, url: str) -> Provider:
    return Provider(ProviderSpec.model_validate(
        {"name": name, "base_url": url, "operations": {"g": {"path": "/g"}}}
    ))  # fmt: skip


async def test_a_cookie_from_one_provider_is_sent_to_none(recorder_factory: Any) -> None:
    a = await recorder_factory(http_response("200 OK", b"{}", SET_COOKIE))
    b = await recorder_factory()
    pa, pb = provider("a", a.url), provider("b", b.url)
    async with ProviderClient() as client:
        reply = await client.call(pa, RequestEvent(provider="a", operation="g"))
        await client.call(pa, RequestEvent(provider="a", operation="g"))
        await client.call(pb, RequestEvent(provider="b", operation="g"))

    assert len(a.heads) == 2 and len(b.heads) == 1
    assert not any("cookie" in head.lower() for head in a.heads + b.heads)
    assert "set-cookie" not in {name.lower() for name in reply.headers}
