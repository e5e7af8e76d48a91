"""Mutual TLS: the client certificate lives in an ``ssl.SSLContext``; requests pass unchanged."""

from __future__ import annotations

import ssl

from providers.auth.config import MtlsAuth
from providers.auth.errors import AuthConfigError
from providers.auth.request import PreparedRequest
from providers.auth.signer import StaticSigner


def build_ssl_context(config: MtlsAuth, *, key_password: str | None = None) -> ssl.SSLContext:
    """Build a client context that verifies the server and presents the configured certificate.

    Args:
        config: certificate, key and optional CA bundle (system CAs when absent).
        key_password: the resolved password of an encrypted key file.

    Returns:
        A context for aiohttp (``ssl=``) or httpx (``verify=``).

    Raises:
        AuthConfigError: a file is missing or the certificate and key do not load.
    """
    for label, path in (("cert_file", config.cert_file), ("key_file", config.key_file)):
        if not path.is_file():
            raise AuthConfigError(f"mtls: {label} {path} not found")
    if config.ca_file is not None and not config.ca_file.is_file():
        raise AuthConfigError(f"mtls: ca_file {config.ca_file} not found")
    try:
        context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
        context.load_cert_chain(config.cert_file, config.key_file, password=key_password)
    except ssl.SSLError as error:
        # ssl messages name the failing step (e.g. KEY_VALUES_MISMATCH), never the password.
        raise AuthConfigError(
            f"mtls: cannot load {config.cert_file} / {config.key_file}: {error.reason}"
        ) from None
    return context


class MtlsSigner(StaticSigner):
    """Leaves requests unchanged and carries the ``ssl_context`` the HTTP client must use."""

    __slots__ = ("ssl_context",)

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self.ssl_context = ssl_context

    def apply(self, request: PreparedRequest, *, now: float) -> PreparedRequest:
        return request
