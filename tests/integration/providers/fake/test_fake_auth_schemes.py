"""Every auth scheme against the real fake server: right credentials pass, wrong ones get 401."""

from __future__ import annotations

import ssl
import time

import aiohttp
import pytest

from providers.auth.config import MtlsAuth, parse_auth_config
from providers.auth.factory import build_signer, ssl_context_for
from providers.auth.oauth2 import aiohttp_token_fetcher
from providers.auth.request import PreparedRequest
from providers.errors import AuthFailed
from tests.integration.providers.fake.conftest import send, signed_call

pytestmark = pytest.mark.integration

# server demands / client config that matches / client configs that must be refused
SCHEMES = {
    "api_key_header": (
        {"type": "api_key", "name": "X-API-Key", "key": "k-123"},
        {"type": "api_key", "name": "X-API-Key", "key": "k-123"},
        [
            {"type": "api_key", "name": "X-API-Key", "key": "k-999"},
            {"type": "api_key", "name": "X-Other", "key": "k-123"},
        ],
    ),
    "api_key_query": (
        {"type": "api_key", "in": "query", "name": "appid", "key": "k/1 2"},
        {"type": "api_key", "in": "query", "name": "appid", "key": "k/1 2"},
        [
            {"type": "api_key", "in": "query", "name": "appid", "key": "k/1"},
            {"type": "api_key", "in": "header", "name": "appid", "key": "k/1 2"},
        ],
    ),
    "bearer": (
        {"type": "bearer", "token": "t-123"},
        {"type": "bearer", "token": "t-123"},
        [{"type": "bearer", "token": "t-124"}, {"type": "basic", "username": "t-123"}],
    ),
    "basic": (
        {"type": "basic", "username": "ann", "password": "pw-ü"},
        {"type": "basic", "username": "ann", "password": "pw-ü"},
        [
            {"type": "basic", "username": "ann", "password": "pw-u"},
            {"type": "basic", "username": "bob", "password": "pw-ü"},
        ],
    ),
    "hmac": (
        {"type": "hmac", "key_id": "key-1", "secret": "s-123"},
        {"type": "hmac", "key_id": "key-1", "secret": "s-123"},
        [
            {"type": "hmac", "key_id": "key-1", "secret": "s-124"},
            {"type": "hmac", "key_id": "key-2", "secret": "s-123"},
        ],
    ),
}


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
async def test_scheme_accepts_right_and_rejects_wrong(fake_server_factory, session, scheme):
    demanded, right, wrongs = SCHEMES[scheme]
    server = await fake_server_factory(auth=demanded)
    get = PreparedRequest("GET", f"{server.url}/v1/items/a%2Fb?x=1%202&y=", {})
    post = PreparedRequest(
        "POST", f"{server.url}/v1/echo?z=1", {"Content-Type": "text/plain"}, b"body \xe2\x9c\x93"
    )
    assert (await send(session, get)).status == 401, "no credentials"
    signer = build_signer(parse_auth_config(right))
    assert (await signed_call(session, signer, get)).status == 200
    assert (await signed_call(session, signer, post)).status == 200
    for wrong in wrongs:
        refused = await signed_call(session, build_signer(parse_auth_config(wrong)), get)
        assert refused.status == 401, wrong
    assert server.stats.auth_failures == 1 + len(wrongs)


async def test_hmac_outside_the_skew_window_is_refused(fake_server_factory, session):
    server = await fake_server_factory(
        auth={"type": "hmac", "key_id": "k", "secret": "s", "max_skew_s": 30}
    )
    signer = build_signer(parse_auth_config({"type": "hmac", "key_id": "k", "secret": "s"}))
    request = PreparedRequest("GET", f"{server.url}/v1/items/1", {})
    assert (await signed_call(session, signer, request, now=time.time() - 25)).status == 200
    assert (await signed_call(session, signer, request, now=time.time() - 60)).status == 401
    assert (await signed_call(session, signer, request, now=time.time() + 60)).status == 401


async def test_oauth2_right_and_wrong_client(fake_server_factory, session):
    server = await fake_server_factory(
        auth={"type": "oauth2_client_credentials", "client_id": "app", "client_secret": "cs"}
    )
    fetch = aiohttp_token_fetcher(session)
    request = PreparedRequest("GET", f"{server.url}/v1/items/1", {})
    for client_auth in ("basic", "body"):
        right = parse_auth_config(
            {
                "type": "oauth2_client_credentials",
                "client_id": "app",
                "client_secret": "cs",
                "token_url": server.token_url,
                "client_auth": client_auth,
            }
        )
        assert (
            await signed_call(session, build_signer(right, fetch_token=fetch), request)
        ).status == 200
    wrong = parse_auth_config(
        {
            "type": "oauth2_client_credentials",
            "client_id": "app",
            "client_secret": "nope",
            "token_url": server.token_url,
        }
    )
    with pytest.raises(AuthFailed, match="invalid_client"):
        await signed_call(session, build_signer(wrong, fetch_token=fetch), request)
    forged = build_signer(parse_auth_config({"type": "bearer", "token": "forged"}))
    assert (await signed_call(session, forged, request)).status == 401
    assert server.stats.token_requests == 3


async def test_mtls_needs_a_certificate_from_the_trusted_ca(
    fake_server_factory, session, tls_material
):
    server = await fake_server_factory(
        tls={
            "cert_file": tls_material.server_cert,
            "key_file": tls_material.server_key,
            "client_ca_file": tls_material.ca,
        }
    )
    assert server.url.startswith("https://")
    request = PreparedRequest("GET", f"{server.url}/v1/items/1", {})
    config = MtlsAuth(
        cert_file=tls_material.client_cert,
        key_file=tls_material.client_key,
        ca_file=tls_material.ca,
    )
    signer = build_signer(config)
    context = ssl_context_for(config)
    assert (await signed_call(session, signer, request, ssl_context=context)).status == 200

    no_cert = ssl.create_default_context(cafile=str(tls_material.ca))
    rogue = MtlsAuth(
        cert_file=tls_material.rogue_cert, key_file=tls_material.rogue_key, ca_file=tls_material.ca
    )
    for refused in (no_cert, ssl_context_for(rogue)):
        with pytest.raises(aiohttp.ClientError):
            await send(session, request, ssl_context=refused)
    assert server.stats.calls_total == 1


async def test_scheme_through_a_child_process(fake_process_factory, session):
    fake = fake_process_factory(auth={"type": "hmac", "key_id": "k", "secret": "child-s"})
    signer = build_signer(parse_auth_config({"type": "hmac", "key_id": "k", "secret": "child-s"}))
    request = PreparedRequest("POST", f"{fake.url}/v1/echo", {}, b"{}")
    assert (await signed_call(session, signer, request)).status == 200
    assert (await send(session, request)).status == 401
    stats = await fake.astats()
    assert (stats["calls_total"], stats["auth_failures"]) == (1, 1)
