"""Build the signer an ``AuthConfig`` describes, resolving its secret references once."""

from __future__ import annotations

import ssl

from providers.auth.api_key import ApiKeySigner
from providers.auth.basic import BasicSigner
from providers.auth.bearer import BearerSigner
from providers.auth.config import (
    ApiKeyAuth,
    AuthConfig,
    BasicAuth,
    BearerAuth,
    HmacAuth,
    MtlsAuth,
    NoAuth,
    OAuth2ClientCredentialsAuth,
)
from providers.auth.errors import AuthConfigError
from providers.auth.hmac_signing import HmacSigner
from providers.auth.mtls import MtlsSigner, build_ssl_context
from providers.auth.oauth2 import OAuth2ClientCredentialsSigner
from providers.auth.oauth2_flow import FetchToken
from providers.auth.secrets import describe_ref, resolve_secret
from providers.auth.signer import NoAuthSigner, Signer


def build_signer(config: AuthConfig, *, fetch_token: FetchToken | None = None) -> Signer:
    """Return the signer for ``config``.

    Args:
        config: any ``AuthConfig`` member.
        fetch_token: sends OAuth2 token requests (``aiohttp_token_fetcher(session)`` in
            production); required for ``oauth2_client_credentials`` only.

    Returns:
        A ``Signer``; all but OAuth2 are also ``SyncSigner``. For mTLS, pass its
        ``ssl_context`` (or ``ssl_context_for(config)``) to the HTTP client.

    Raises:
        AuthConfigError: a secret does not resolve, mTLS files do not load, or OAuth2 has no
            ``fetch_token``.
    """
    match config:
        case NoAuth():
            return NoAuthSigner()
        case ApiKeyAuth():
            key = resolve_secret(config.key).get_secret_value()
            return ApiKeySigner(name=config.name, key=key, in_=config.in_)
        case BearerAuth():
            return BearerSigner(token=resolve_secret(config.token).get_secret_value())
        case BasicAuth():
            password = resolve_secret(config.password).get_secret_value()
            return BasicSigner(username=_basic_username(config), password=password)
        case HmacAuth():
            return HmacSigner(
                key_id=config.key_id,
                secret=resolve_secret(config.secret).get_secret_value(),
                algorithm=config.algorithm,
                encoding=config.encoding,
                signature_header=config.signature_header,
                timestamp_header=config.timestamp_header,
                key_id_header=config.key_id_header,
            )
        case OAuth2ClientCredentialsAuth():
            if fetch_token is None:
                raise AuthConfigError(
                    "oauth2_client_credentials needs a fetch_token function to reach "
                    f"{config.token_url}"
                )
            secret = resolve_secret(config.client_secret).get_secret_value()
            return OAuth2ClientCredentialsSigner.from_config(
                config, client_secret=secret, fetch_token=fetch_token
            )
        case MtlsAuth():
            return MtlsSigner(_mtls_context(config))


def _basic_username(config: BasicAuth) -> str:
    """The resolved username: a reference like the password, or a literal."""
    username = resolve_secret(config.username).get_secret_value()
    if not username or ":" in username:  # RFC 7617 §2: the first colon ends the user-id
        raise AuthConfigError(
            f"basic username {describe_ref(config.username)} must be non-empty, without ':'"
        )
    return username


def ssl_context_for(config: AuthConfig) -> ssl.SSLContext | None:
    """Return the client ``SSLContext`` an mTLS config needs, None for every other scheme."""
    return _mtls_context(config) if isinstance(config, MtlsAuth) else None


def _mtls_context(config: MtlsAuth) -> ssl.SSLContext:
    password = None
    if config.key_password is not None:
        password = resolve_secret(config.key_password).get_secret_value()
    return build_ssl_context(config, key_password=password)
