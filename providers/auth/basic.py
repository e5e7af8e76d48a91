"""``Authorization: Basic base64(user:password)`` (RFC 7617, UTF-8), header value built once."""

from __future__ import annotations

import base64

from providers.auth.request import PreparedRequest
from providers.auth.signer import StaticSigner, base64_form, secret_forms


def basic_header_value(username: str, password: str) -> str:
    """Return ``Basic <base64(username:password)>``."""
    pair = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


class BasicSigner(StaticSigner):
    """Adds static HTTP Basic credentials."""

    # No username in repr either: Stripe's username *is* the secret key.
    __slots__ = ("_forms", "_header")

    def __init__(self, *, username: str, password: str) -> None:
        self._header = {"Authorization": basic_header_value(username, password)}
        # The header's base64 pair, and each half: the username may be the secret (Stripe).
        self._forms = secret_forms(base64_form(f"{username}:{password}"), username, password)

    def secret_forms(self) -> tuple[str, ...]:
        return self._forms

    def apply(self, request: PreparedRequest, *, now: float) -> PreparedRequest:
        return request.with_headers(self._header)
