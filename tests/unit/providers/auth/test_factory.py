"""build_signer: every config becomes its signer, secrets resolved once, clear failures."""

from __future__ import annotations

import pytest

from providers.auth.api_key import ApiKeySigner
from providers.auth.basic import BasicSigner
from providers.auth.bearer import BearerSigner
from providers.auth.config import parse_auth_config
from providers.auth.errors import AuthConfigError, SecretResolutionError
from providers.auth.factory import build_signer
from providers.auth.hmac_signing import HmacSigner
from providers.auth.oauth2 import OAuth2ClientCredentialsSigner
from providers.auth.request import PreparedRequest
from providers.auth.signer import NoAuthSigner

REQUEST = PreparedRequest("GET", "https://api.test/v1", {})


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ({"type": "none"}, NoAuthSigner),
        ({"type": "api_key", "name": "X-Key", "key": "env:FAKE_SECRET"}, ApiKeySigner),
        ({"type": "bearer", "token": "env:FAKE_SECRET"}, BearerSigner),
        ({"type": "basic", "username": "u", "password": "env:FAKE_SECRET"}, BasicSigner),
        ({"type": "hmac", "key_id": "k", "secret": "env:FAKE_SECRET"}, HmacSigner),
    ],
)
async def test_builds_each_signer_with_resolved_secret(monkeypatch, data, kind):
    monkeypatch.setenv("FAKE_SECRET", "resolved-value")
    signer = build_signer(parse_auth_config(data))
    assert type(signer) is kind
    signed = await signer.sign(REQUEST, now=1.0)
    assert "env:FAKE_SECRET" not in str(dict(signed.headers))


async def test_oauth2_needs_and_uses_fetch_token(token_endpoint):
    config = parse_auth_config(
        {
            "type": "oauth2_client_credentials",
            "client_id": "c",
            "token_url": "https://id.test/t",
            "client_secret": "s",
        }
    )
    with pytest.raises(AuthConfigError, match="fetch_token"):
        build_signer(config)
    signer = build_signer(config, fetch_token=token_endpoint)
    assert isinstance(signer, OAuth2ClientCredentialsSigner)
    assert (await signer.sign(REQUEST, now=0)).headers["Authorization"] == "Bearer tok-1"


def test_missing_secret_fails_at_build_time_naming_the_variable():
    config = parse_auth_config({"type": "bearer", "token": "env:FAKE_UNSET_TOKEN"})
    with pytest.raises(SecretResolutionError, match="FAKE_UNSET_TOKEN is not set"):
        build_signer(config)


def test_secret_file_is_read(secret_file):
    signer = build_signer(parse_auth_config({"type": "bearer", "token": f"file:{secret_file}"}))
    assert signer.apply(REQUEST, now=0).headers["Authorization"] == "Bearer from-a-file"  # type: ignore[attr-defined]
