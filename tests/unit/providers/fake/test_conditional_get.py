"""The item route's validators, 304s, Cache-Control, and their stats (issue 23)."""

from __future__ import annotations

from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

ITEM = "/v1/items/42"


async def get(
    session: aiohttp.ClientSession, url: str, **kwargs: Any
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    """Status, headers (any case: the client sees ``Etag``) and body of one GET."""
    async with session.get(url, **kwargs) as response:
        return response.status, response.headers, await response.read()


async def test_answers_carry_validators_and_the_version(fake_server, session):
    status, headers, body = await get(session, fake_server.url + ITEM)
    assert status == 200
    assert headers["ETag"].startswith('"')
    assert headers["Last-Modified"].endswith(" GMT")
    assert "Cache-Control" not in headers
    assert body == b'{"id":"42","name":"Item 42","version":1}'
    again = await get(session, fake_server.url + ITEM)
    assert again[1]["ETag"] == headers["ETag"], "same id and version: same ETag"
    other = await get(session, fake_server.url + "/v1/items/43")
    assert other[1]["ETag"] != headers["ETag"]


async def test_matching_if_none_match_is_a_304_without_body(fake_server_factory, session):
    server = await fake_server_factory(cache_control="max-age=60")
    url = server.url + ITEM
    _, first, body = await get(session, url)
    status, headers, empty = await get(session, url, headers={"If-None-Match": first["ETag"]})
    assert (status, empty) == (304, b"")
    assert (headers["ETag"], headers["Last-Modified"], headers["Cache-Control"]) == (
        first["ETag"],
        first["Last-Modified"],
        "max-age=60",
    )
    stats = server.stats
    assert (stats.not_modified, stats.calls_total, stats.status_counts) == (1, 2, {200: 1, 304: 1})
    assert stats.body_bytes == len(body), "the 304 sent no body"


async def test_if_none_match_forms(fake_server, session):
    url = fake_server.url + ITEM
    etag = (await get(session, url))[1]["ETag"]
    for header in ("*", f"W/{etag}", f'"nope", {etag}', f'"nope",W/{etag}'):
        assert (await get(session, url, headers={"If-None-Match": header}))[0] == 304, header
    for header in ('"nope"', f'W/{etag[:-2]}x"'):
        assert (await get(session, url, headers={"If-None-Match": header}))[0] == 200, header
    assert fake_server.stats.not_modified == 4


async def test_a_new_content_version_is_a_200_with_a_new_etag(fake_server, session):
    url = fake_server.url + ITEM
    _, old, _ = await get(session, url)
    fake_server.update(content_version=2)
    status, headers, body = await get(session, url, headers={"If-None-Match": old["ETag"]})
    assert status == 200
    assert headers["ETag"] != old["ETag"]
    assert body == b'{"id":"42","name":"Item 42","version":2}'
    # And through the control endpoint, as a child process is changed.
    async with session.post(f"{fake_server.url}/_fake/config", json={"content_version": 3}) as r:
        assert (await r.json())["content_version"] == 3
    status, _, _ = await get(session, url, headers={"If-None-Match": headers["ETag"]})
    assert status == 200


async def test_if_modified_since(fake_server, session):
    url = fake_server.url + ITEM
    _, first, _ = await get(session, url)
    since = {"If-Modified-Since": first["Last-Modified"]}
    assert (await get(session, url, headers=since))[0] == 304
    assert (await get(session, url, headers={"If-Modified-Since": "garbage"}))[0] == 200
    # If-None-Match, when present, decides alone.
    both = {**since, "If-None-Match": '"other"'}
    assert (await get(session, url, headers=both))[0] == 200
    fake_server.update(content_version=2)
    status, headers, _ = await get(session, url, headers=since)
    assert status == 200
    assert headers["Last-Modified"] != first["Last-Modified"]


async def test_cache_control_directive_overrides_the_config(fake_server_factory, session):
    server = await fake_server_factory(cache_control="max-age=60, public")
    url = server.url + ITEM
    assert (await get(session, url))[1]["Cache-Control"] == "max-age=60, public"
    _, headers, _ = await get(session, url + "?fake_cache_control=no-store")
    assert headers["Cache-Control"] == "no-store"
    etag = headers["ETag"]
    status, headers, _ = await get(
        session, url + "?fake_cache_control=max-age%3D5", headers={"If-None-Match": etag}
    )
    assert (status, headers["Cache-Control"]) == (304, "max-age=5")
    server.update(cache_control=None)
    assert "Cache-Control" not in (await get(session, url))[1]


async def test_cache_control_directive_alone_and_refused(fake_server, session):
    url = fake_server.url + ITEM
    _, headers, _ = await get(session, url + "?fake_cache_control=private")
    assert headers["Cache-Control"] == "private"
    status, _, body = await get(session, url + '?fake_cache_control=max-age="1"')
    assert status == 400
    assert b"fake_cache_control" in body


async def test_304_passes_auth_and_the_limit(fake_server_factory, session):
    server = await fake_server_factory(
        auth={"type": "api_key", "name": "X-API-Key", "key": "k1"},
        rate_limit={"rate_per_s": 0.01, "burst": 3},  # 200, 401, 304, then 429
    )
    url = server.url + ITEM
    _, first, _ = await get(session, url, headers={"X-API-Key": "k1"})
    conditional = {"If-None-Match": first["ETag"]}
    assert (await get(session, url, headers=conditional))[0] == 401
    ok, headers, _ = await get(session, url, headers={**conditional, "X-API-Key": "k1"})
    assert (ok, headers["X-RateLimit-Remaining"]) == (304, "0")
    assert (await get(session, url, headers={**conditional, "X-API-Key": "k1"}))[0] == 429
    stats = server.stats
    assert (stats.not_modified, stats.auth_failures, stats.rate_limited) == (1, 1, 1)


async def test_injected_errors_win_over_a_matching_etag(fake_server, session):
    url = fake_server.url + ITEM
    etag = (await get(session, url))[1]["ETag"]
    status, _, _ = await get(session, url + "?fake_status=503", headers={"If-None-Match": etag})
    assert status == 503


async def test_body_bytes_in_stats_json_and_reset(fake_server, session):
    base = fake_server.url
    sizes = [len((await get(session, base + f"/v1/items/{i}"))[2]) for i in range(3)]
    async with session.post(f"{base}/v1/echo", data=b"12345") as response:
        assert response.status == 200
    _, _, missing = await get(session, base + "/v1/items/1?fake_status=404")
    etag = (await get(session, base + ITEM))[1]["ETag"]
    item = len((await get(session, base + ITEM))[2])
    await get(session, base + ITEM, headers={"If-None-Match": etag})
    async with session.get(f"{base}/_fake/stats") as response:
        stats = await response.json()
    assert stats["body_bytes"] == sum(sizes) + 5 + len(missing) + 2 * item
    assert stats["not_modified"] == 1
    async with session.post(f"{base}/_fake/reset") as response:
        assert response.status == 200
    async with session.get(f"{base}/_fake/stats") as response:
        stats = await response.json()
    assert (stats["body_bytes"], stats["not_modified"]) == (0, 0)


async def test_an_injected_304_counts_no_body(fake_server, session):
    status, _, body = await get(session, fake_server.url + ITEM + "?fake_status=304")
    assert (status, body) == (304, b"")
    assert (fake_server.stats.not_modified, fake_server.stats.body_bytes) == (1, 0)
