"""``Authorization: Bearer <token>`` (RFC 6750), header value built once."""

from __future__ import annotations

from providers.auth.request import PreparedRequest
from providers.auth.signer import StaticSigner


class BearerSigner(StaticSigner):
    """Adds a static bearer token."""

    __slots__ = ("_header",)

    def __init__(self, *, token: str) -> None:
        self._header = {"Authorization": f"Bearer {token}"}

    def apply(self, request: PreparedRequest, *, now: float) -> PreparedRequest:
        return request.with_headers(self._header)
