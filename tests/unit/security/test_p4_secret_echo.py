"""Probe p4 (security review 2026-12-02, finding 8): a provider that echoes the credential it
rejected must not put it in a dead letter or a ``failed`` result.

Each signer redacts its resolved secret values (token, key, Basic pair and its base64 form,
HMAC secret, OAuth2 client secret and access token) from the provider's error text.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import pytest

from agents.outcomes import dead_letter
from providers.auth.oauth2 import OAuth2ClientCredentialsSigner
from providers.auth.request import PreparedRequest
from providers.base import Provider
from providers.declaration import ProviderSpec
from providers.errors import ProviderError
from providers.http import ProviderClient
from schemas.models import RequestEvent
from streams.stage.records import SourceRecord
from tests.unit.security.conftest import http_response

TOKEN = "SECRET_TOKEN_123"


def echo_everything(head: bytes) -> bytes:
    """An API that echoes the whole request it rejected (a debugging proxy, a careless API)."""
    body = json.dumps({"message": "invalid credentials: " + head.decode("latin-1")}).encode()
    return http_response("401 Unauthorized", body, "Content-Type: application/json\r\n")


async def rejected(url: str, auth: dict[str, Any], **fields: Any) -> ProviderError:
    spec = ProviderSpec.model_validate({
        "name": "acme", "base_url": url, "auth": auth,
        "error_shape": {"message_field": "message"}, "operations": {"get": {"path": "/x"}},
        **fields,
    })  # fmt: skip
    async with ProviderClient() as client:
        with pytest.raises(ProviderError) as caught:
            await client.call(Provider(spec), RequestEvent(provider="acme", operation="get"))
    return caught.value


def letter_json(error: ProviderError) -> str:
    request = RequestEvent(provider="acme", operation="get")
    source = SourceRecord("requests", 0, 0, b"")
    letter = dead_letter(
        source, reason=error.reason, error=error, stage="caller", now_ms=0, request=request
    )
    return letter.model_dump_json()


@pytest.mark.parametrize(
    ("auth", "secrets"),
    [
        ({"type": "bearer", "token": f"literal:{TOKEN}"}, [TOKEN]),
        (
            {"type": "api_key", "name": "X-Api-Key", "key": "literal:KEY_abc/+=123"},
            ["KEY_abc/+=123"],
        ),
        (
            {"type": "api_key", "name": "key", "in": "query", "key": "literal:Q_KEY/+=9"},
            ["Q_KEY/+=9", quote("Q_KEY/+=9", safe="")],
        ),
        (
            {"type": "basic", "username": "sk_live_USERNAME_1", "password": "literal:PASS_word_2"},
            [
                "sk_live_USERNAME_1",
                "PASS_word_2",
                base64.b64encode(b"sk_live_USERNAME_1:PASS_word_2").decode(),
            ],
        ),
    ],
)
async def test_an_echoed_credential_never_reaches_the_dead_letter(recorder_factory, auth, secrets):
    recorder = await recorder_factory(echo_everything)
    error = await rejected(recorder.url, auth)
    assert error.reason == "auth_failed"
    assert "[redacted]" in str(error)
    assert any(s in recorder.heads[0] for s in secrets), "the server saw the credential"
    text = letter_json(error)
    assert all(s not in text for s in secrets)


async def test_a_secret_at_the_message_cut_is_not_left_half_visible(recorder_factory):
    for pad in range(170, 200, 3):  # the token straddles the 200-character cut somewhere here
        body = json.dumps({"message": "x" * pad + f" Bearer {TOKEN} tail"}).encode()
        recorder = await recorder_factory(http_response("401 Unauthorized", body))
        message = str(await rejected(recorder.url, {"type": "bearer", "token": f"literal:{TOKEN}"}))
        assert "SECRET" not in message and "TOKEN_1" not in message


async def test_a_secret_after_a_long_body_is_redacted_or_dropped(recorder_factory):
    body = (" " * 4090 + TOKEN).encode()  # straddles the part of the body that is read
    recorder = await recorder_factory(http_response("400 Bad Request", body))
    message = str(await rejected(recorder.url, {"type": "bearer", "token": f"literal:{TOKEN}"}))
    assert "SECRET" not in message


async def test_the_hmac_secret_is_redacted(recorder_factory):
    body = b'{"message": "expected signature made with HMAC_SHARED_SECRET_77"}'
    recorder = await recorder_factory(http_response("401 Unauthorized", body))
    auth = {"type": "hmac", "key_id": "k1", "secret": "literal:HMAC_SHARED_SECRET_77"}
    assert "HMAC_SHARED_SECRET_77" not in str(await rejected(recorder.url, auth))


async def test_the_oauth2_signer_redacts_its_client_secret_and_tokens():
    async def fetch(request: PreparedRequest) -> Any:
        raise AssertionError("not called")

    form = PreparedRequest("POST", "https://auth.test/token", {}, b"client_secret=CLIENT_SECRET_42")
    signer = OAuth2ClientCredentialsSigner(
        token_request=form, refresh_margin_s=0, fetch_token=fetch, client_secret="CLIENT_SECRET_42"
    )
    text = "client CLIENT_SECRET_42 or " + quote("CLIENT_SECRET_42", safe="")
    assert signer.redact(text) == "client [redacted] or [redacted]"


def test_a_short_secret_is_not_redacted_from_ordinary_words():
    from providers.auth.bearer import BearerSigner

    assert BearerSigner(token="ab").redact("a tab") == "a tab"
    assert BearerSigner(token="abcd1234").redact("x abcd1234 y") == "x [redacted] y"
