"""Auth configuration: a discriminated union on ``type``, frozen, secrets as ``SecretStr`` refs.

Secret fields hold a reference (``env:NAME``, ``file:/path``, ``dir:NAME`` or a literal, see
``providers.auth.secrets``). They are resolved when a signer is built, not when the config is
parsed, so provider declarations load and validate without their credentials present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    field_validator,
    model_validator,
)

from providers.auth.secrets import LITERAL_PREFIX, is_secret_ref
from providers.header_names import SIGNER_RESERVED_HEADERS, check_header_name


class _AuthModel(BaseModel):
    # hide_input_in_errors: a ValidationError would otherwise print the raw input, secrets too.
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,
        validate_by_name=True,
        validate_by_alias=True,
    )


class NoAuth(_AuthModel):
    """The provider needs no credentials."""

    type: Literal["none"] = "none"


class ApiKeyAuth(_AuthModel):
    """A static key sent in a header (``X-API-Key: k``) or a query parameter (``?appid=k``)."""

    type: Literal["api_key"] = "api_key"
    # Written ``in`` in files (OpenAPI's name), ``in_`` in Python; not ``alias``: type checkers
    # would then demand ``in=`` as the constructor keyword, which Python cannot spell.
    in_: Literal["header", "query"] = Field(
        default="header", validation_alias="in", serialization_alias="in"
    )
    name: str = Field(min_length=1, max_length=128)
    key: SecretStr

    @model_validator(mode="after")
    def _header_name(self) -> ApiKeyAuth:
        if self.in_ == "header":  # a query parameter name is percent-encoded instead
            check_header_name(self.name, reserved=SIGNER_RESERVED_HEADERS)
        return self


class BearerAuth(_AuthModel):
    """``Authorization: Bearer <token>`` (RFC 6750)."""

    type: Literal["bearer"] = "bearer"
    token: SecretStr


class BasicAuth(_AuthModel):
    """``Authorization: Basic base64(user:password)`` (RFC 7617)."""

    type: Literal["basic"] = "basic"
    # A secret reference like the password (Stripe's username *is* the secret key), or a
    # literal; a plain str so that code reading it keeps working, kept out of repr.
    username: str = Field(min_length=1, repr=False)
    # Empty is valid: Stripe takes the secret key as the username and no password.
    password: SecretStr = SecretStr("")

    @field_validator("username")
    @classmethod
    def _no_colon(cls, value: str) -> str:
        if is_secret_ref(value):
            return value  # checked once resolved, when the signer is built
        if ":" in value.removeprefix(LITERAL_PREFIX):  # RFC 7617 §2: the first colon
            raise ValueError("username must not contain ':'")  # separates user from password
        return value


class OAuth2ClientCredentialsAuth(_AuthModel):
    """OAuth 2.0 client credentials grant (RFC 6749 §4.4), token cached and refreshed early."""

    type: Literal["oauth2_client_credentials"] = "oauth2_client_credentials"
    token_url: str
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    scope: str | None = None
    audience: str | None = None
    refresh_margin_s: float = Field(default=30.0, ge=0)
    # RFC 6749 §2.3.1: servers must accept HTTP Basic; some (Auth0) want the form body instead.
    client_auth: Literal["basic", "body"] = "basic"

    @field_validator("token_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("token_url must be an absolute http(s) URL")
        return value


class HmacAuth(_AuthModel):
    """Request signing: HMAC over method, path?query, timestamp and the body's SHA-256."""

    type: Literal["hmac"] = "hmac"
    key_id: str = Field(min_length=1)
    secret: SecretStr
    algorithm: Literal["sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    signature_header: str = "X-Signature"
    timestamp_header: str = "X-Timestamp"
    key_id_header: str = "X-Key-Id"
    max_skew_s: float = Field(default=300.0, gt=0)

    @field_validator("signature_header", "timestamp_header", "key_id_header")
    @classmethod
    def _header_names(cls, value: str) -> str:
        return check_header_name(value, reserved=SIGNER_RESERVED_HEADERS)


class MtlsAuth(_AuthModel):
    """TLS client certificate; the HTTP client uses the ``ssl.SSLContext`` built from it."""

    type: Literal["mtls"] = "mtls"
    cert_file: Path
    key_file: Path
    ca_file: Path | None = None
    key_password: SecretStr | None = None


AuthConfig = Annotated[
    NoAuth
    | ApiKeyAuth
    | BearerAuth
    | BasicAuth
    | OAuth2ClientCredentialsAuth
    | HmacAuth
    | MtlsAuth,
    Field(discriminator="type"),
]

# Only the outermost validator's config decides whether errors print their input: a model that
# embeds AuthConfig must set hide_input_in_errors=True too, or a typo prints the secrets beside it.
AUTH_CONFIG: TypeAdapter[AuthConfig] = TypeAdapter(
    AuthConfig, config=ConfigDict(hide_input_in_errors=True)
)


def parse_auth_config(data: object) -> AuthConfig:
    """Validate a mapping (from YAML/JSON) into the matching ``AuthConfig`` member."""
    return AUTH_CONFIG.validate_python(data)
