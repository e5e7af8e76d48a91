"""AuthConfig: the discriminated union, defaults, and validation errors that hide secrets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from providers.auth.config import (
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    HmacAuth,
    MtlsAuth,
    NoAuth,
    OAuth2ClientCredentialsAuth,
    parse_auth_config,
)

SECRET = "hunter2-very-secret"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ({"type": "none"}, NoAuth),
        ({"type": "api_key", "in": "query", "name": "appid", "key": SECRET}, ApiKeyAuth),
        ({"type": "bearer", "token": SECRET}, BearerAuth),
        ({"type": "basic", "username": "u", "password": SECRET}, BasicAuth),
        (
            {
                "type": "oauth2_client_credentials",
                "token_url": "https://id.test/token",
                "client_id": "c",
                "client_secret": SECRET,
            },
            OAuth2ClientCredentialsAuth,
        ),
        ({"type": "hmac", "key_id": "k", "secret": SECRET}, HmacAuth),
        ({"type": "mtls", "cert_file": "/c.pem", "key_file": "/k.pem"}, MtlsAuth),
    ],
)
def test_union_picks_member_and_hides_secrets(data, kind):
    config = parse_auth_config(data)
    assert type(config) is kind
    assert SECRET not in repr(config)
    assert SECRET not in str(config)


def test_defaults():
    oauth = parse_auth_config(
        {
            "type": "oauth2_client_credentials",
            "client_id": "c",
            "token_url": "https://id.test/t",
            "client_secret": "s",
        }
    )
    assert isinstance(oauth, OAuth2ClientCredentialsAuth)
    assert (oauth.refresh_margin_s, oauth.scope, oauth.audience, oauth.client_auth) == (
        30.0,
        None,
        None,
        "basic",
    )
    hmac = HmacAuth(key_id="k", secret="s")  # type: ignore[arg-type]
    assert (
        hmac.algorithm,
        hmac.signature_header,
        hmac.timestamp_header,
        hmac.key_id_header,
        hmac.max_skew_s,
    ) == ("sha256", "X-Signature", "X-Timestamp", "X-Key-Id", 300.0)
    assert ApiKeyAuth(name="X-Key", key="k").in_ == "header"  # type: ignore[arg-type]


def test_api_key_location_serialises_as_in():
    config = ApiKeyAuth(in_="query", name="appid", key="k")  # type: ignore[arg-type]
    assert config.model_dump(by_alias=True)["in"] == "query"


@pytest.mark.parametrize(
    "data",
    [
        {"type": "basic", "password": SECRET},  # missing username
        {"type": "bearer", "token": SECRET, "extra": SECRET},  # extra field
        {"type": "basic", "username": "a:b", "password": SECRET},  # colon in username
        {
            "type": "oauth2_client_credentials",
            "token_url": "ftp://x",
            "client_id": "c",
            "client_secret": SECRET,
        },
        {"type": "kerberos", "ticket": SECRET},
    ],
)
def test_validation_errors_never_echo_secrets(data):
    with pytest.raises(ValidationError) as info:
        parse_auth_config(data)
    assert SECRET not in str(info.value)


def test_frozen():
    config = BearerAuth(token="t")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        config.token = "other"  # type: ignore[assignment]
