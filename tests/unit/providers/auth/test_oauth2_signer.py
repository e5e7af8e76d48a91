"""OAuth2 signer: one fetch for many callers, refresh before expiry, one invalidation per 401."""

from __future__ import annotations

import asyncio

import pytest

from providers.auth.config import OAuth2ClientCredentialsAuth
from providers.auth.oauth2 import FAILURE_HOLD_S, OAuth2ClientCredentialsSigner
from providers.auth.oauth2_flow import FetchToken, TokenResponse
from providers.auth.request import PreparedRequest
from providers.auth.signer import SyncSigner
from providers.errors import AuthFailed, ProviderUnavailable

REQUEST = PreparedRequest("GET", "https://api.test/v1/items/1", {})
CONFIG = OAuth2ClientCredentialsAuth.model_validate(
    {
        "token_url": "https://id.test/token",
        "client_id": "c",
        "client_secret": "s",
        "refresh_margin_s": 30,
    }
)


def make_signer(endpoint: FetchToken) -> OAuth2ClientCredentialsSigner:
    return OAuth2ClientCredentialsSigner.from_config(
        CONFIG, client_secret="s", fetch_token=endpoint
    )


def bearer(request: PreparedRequest) -> str:
    return request.headers["Authorization"]


async def test_hundred_concurrent_calls_fetch_one_token(token_endpoint):
    token_endpoint.delay_s = 0.01  # the fetch is in flight while the others arrive
    signer = make_signer(token_endpoint)
    signed = await asyncio.gather(*(signer.sign(REQUEST, now=1000.0) for _ in range(100)))
    assert len(token_endpoint.requests) == 1
    assert {bearer(r) for r in signed} == {"Bearer tok-1"}
    assert not isinstance(signer, SyncSigner), "callers learn OAuth2 can refresh on 401"


async def test_token_is_reused_then_refreshed_before_expiry(token_endpoint):
    signer = make_signer(token_endpoint)  # tokens live 3600 s, margin 30 s
    assert bearer(await signer.sign(REQUEST, now=1000.0)) == "Bearer tok-1"
    assert bearer(await signer.sign(REQUEST, now=1000.0 + 3569)) == "Bearer tok-1"
    assert bearer(await signer.sign(REQUEST, now=1000.0 + 3570)) == "Bearer tok-2"
    assert len(token_endpoint.requests) == 2
    assert signer.token is not None
    assert signer.token.expires_at == 1000.0 + 3570 + 3600


async def test_401_invalidates_once(token_endpoint):
    signer = make_signer(token_endpoint)
    stale = await signer.sign(REQUEST, now=0.0)
    signer.on_unauthorized(stale)
    fresh = await signer.sign(REQUEST, now=1.0)
    assert bearer(fresh) == "Bearer tok-2"
    # More 401s for requests that carried the old token must not drop the new one.
    for _ in range(5):
        signer.on_unauthorized(stale)
    assert bearer(await signer.sign(REQUEST, now=2.0)) == "Bearer tok-2"
    assert len(token_endpoint.requests) == 2
    signer.on_unauthorized()  # without a request: drop whatever is cached
    assert bearer(await signer.sign(REQUEST, now=3.0)) == "Bearer tok-3"


async def test_failure_reaches_every_waiter_then_holds_briefly(token_endpoint):
    token_endpoint.next_status = 503
    token_endpoint.delay_s = 0.01
    signer = make_signer(token_endpoint)
    results = await asyncio.gather(
        *(signer.sign(REQUEST, now=0.0) for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, ProviderUnavailable) for r in results)
    assert len(token_endpoint.requests) == 1
    with pytest.raises(ProviderUnavailable):  # within the hold: fail fast, no new request
        await signer.sign(REQUEST, now=FAILURE_HOLD_S / 2)
    assert len(token_endpoint.requests) == 1
    token_endpoint.next_status = 200
    assert bearer(await signer.sign(REQUEST, now=FAILURE_HOLD_S)) == "Bearer tok-2"


async def test_refused_credentials_are_permanent(token_endpoint):
    token_endpoint.next_status = 401
    token_endpoint.next_body = b'{"error":"invalid_client"}'
    with pytest.raises(AuthFailed) as info:
        await make_signer(token_endpoint).sign(REQUEST, now=0.0)
    assert not info.value.retriable


async def test_a_cancelled_caller_does_not_cancel_the_fetch(token_endpoint):
    token_endpoint.delay_s = 0.05
    signer = make_signer(token_endpoint)
    first = asyncio.create_task(signer.sign(REQUEST, now=0.0))
    second = asyncio.create_task(signer.sign(REQUEST, now=0.0))
    await asyncio.sleep(0.01)
    first.cancel()
    assert bearer(await second) == "Bearer tok-1"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(token_endpoint.requests) == 1


async def test_aclose_cancels_a_fetch_in_flight(token_endpoint):
    token_endpoint.delay_s = 10
    signer = make_signer(token_endpoint)
    waiter = asyncio.create_task(signer.sign(REQUEST, now=0.0))
    await asyncio.sleep(0.01)
    await signer.aclose()
    with pytest.raises(asyncio.CancelledError):
        await waiter


def test_repr_hides_secret_and_token():
    async def never(request: PreparedRequest) -> TokenResponse:
        raise AssertionError("no fetch expected")

    signer = OAuth2ClientCredentialsSigner.from_config(
        CONFIG, client_secret="s3cr3t", fetch_token=never
    )
    assert "s3cr3t" not in repr(signer)
    assert "id.test" in repr(signer)
