"""Secrets never appear in repr, str, log records or exception messages."""

from __future__ import annotations

import logging

import pytest

from providers.auth.config import parse_auth_config
from providers.auth.errors import SecretResolutionError
from providers.auth.factory import build_signer
from providers.auth.oauth2_flow import TokenResponse
from providers.auth.request import PreparedRequest

SECRET = "zz-top-secret-42"
CONFIGS = [
    {"type": "api_key", "name": "X-Key", "key": SECRET},
    {"type": "api_key", "in": "query", "name": "appid", "key": SECRET},
    {"type": "bearer", "token": SECRET},
    {"type": "basic", "username": "user", "password": SECRET},
    {"type": "hmac", "key_id": "k", "secret": SECRET},
    {
        "type": "oauth2_client_credentials",
        "token_url": "https://id.test/t",
        "client_id": "c",
        "client_secret": SECRET,
    },
]


async def fetch_token(request: PreparedRequest) -> TokenResponse:
    return TokenResponse(200, f'{{"access_token": "{SECRET}", "expires_in": 60}}'.encode())


@pytest.mark.parametrize("data", CONFIGS, ids=lambda d: f"{d['type']}-{d.get('in', '')}")
async def test_nothing_printable_contains_the_secret(data, caplog):
    caplog.set_level(logging.DEBUG)
    config = parse_auth_config(data)
    signer = build_signer(config, fetch_token=fetch_token)
    signed = await signer.sign(
        PreparedRequest("POST", "https://api.test/v1?x=1", {}, b"{}"), now=1_700_000_000.0
    )
    logging.getLogger("callstream.test").info("signed %s with %s for %s", signed, signer, config)
    printed = [
        repr(config),
        str(config),
        repr(signer),
        str(signer),
        repr(signed),
        str(signed),
        caplog.text,
        str(config.model_dump()),
        config.model_dump_json(),
    ]
    assert not [text for text in printed if SECRET in text]
    token = getattr(signer, "token", None)
    assert token is None or SECRET not in repr(token)


def test_exception_messages(tmp_path):
    for ref in (f"file:{tmp_path}/nope", "env:FAKE_NOT_THERE"):
        with pytest.raises(SecretResolutionError) as info:
            build_signer(parse_auth_config({"type": "bearer", "token": ref}))
        assert SECRET not in str(info.value)
