"""Auth strategies: config models, signers for the aiohttp hot path, httpx adapters (own module)."""

from providers.auth.config import (
    ApiKeyAuth,
    AuthConfig,
    BasicAuth,
    BearerAuth,
    HmacAuth,
    MtlsAuth,
    NoAuth,
    OAuth2ClientCredentialsAuth,
    parse_auth_config,
)
from providers.auth.errors import AuthConfigError, SecretResolutionError
from providers.auth.factory import build_signer, ssl_context_for
from providers.auth.oauth2 import aiohttp_token_fetcher
from providers.auth.oauth2_flow import FetchToken, TokenResponse
from providers.auth.request import PreparedRequest
from providers.auth.secrets import resolve_secret
from providers.auth.signer import Signer, SyncSigner

__all__ = [
    "ApiKeyAuth",
    "AuthConfig",
    "AuthConfigError",
    "BasicAuth",
    "BearerAuth",
    "FetchToken",
    "HmacAuth",
    "MtlsAuth",
    "NoAuth",
    "OAuth2ClientCredentialsAuth",
    "PreparedRequest",
    "SecretResolutionError",
    "Signer",
    "SyncSigner",
    "TokenResponse",
    "aiohttp_token_fetcher",
    "build_signer",
    "parse_auth_config",
    "resolve_secret",
    "ssl_context_for",
]
