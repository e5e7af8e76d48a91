"""Secrets never appear in repr, str, log records or exception messages."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import pytest

from providers.auth.config import parse_auth_config
from providers.auth.errors import AuthConfigError
from providers.auth.factory import build_signer
from providers.auth.oauth2_flow import TokenResponse
from providers.auth.request import PreparedRequest
from tests.unit.providers.auth.certs import TlsMaterial

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


def _undecodable_file(directory: Path) -> str:
    path = directory / "token"
    path.write_bytes(SECRET.encode() + b"\xff\n")  # read, then refused as not UTF-8
    return f"file:{path}"


def _failing_configs(tmp_path: Path, tls: TlsMaterial) -> list[dict[str, object]]:
    """Configs whose secret is read (or held) before building the signer fails."""
    return [
        {"type": "bearer", "token": _undecodable_file(tmp_path)},
        # The key password resolves to SECRET, is handed to openssl, and is the wrong one.
        {"type": "mtls", "cert_file": str(tls.client_cert),
         "key_file": str(tls.client_key_encrypted), "key_password": "env:LEAK_TEST_PASSWORD"},
        # Refused for want of a token fetcher, with the client secret already in the config.
        {"type": "oauth2_client_credentials", "token_url": "https://id.test/t",
         "client_id": "c", "client_secret": SECRET},
    ]  # fmt: skip


def test_exception_messages(tmp_path, tls_material, monkeypatch):
    monkeypatch.setenv("LEAK_TEST_PASSWORD", SECRET)
    for data in _failing_configs(tmp_path, tls_material):
        with pytest.raises(AuthConfigError) as info:
            build_signer(parse_auth_config(data))
        shown = "".join(traceback.format_exception(info.value))  # what a log would print
        assert SECRET not in str(info.value), data["type"]
        assert SECRET not in shown, data["type"]
