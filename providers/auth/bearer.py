"""``Authorization: Bearer <token>`` (RFC 6750), header value built once."""

from __future__ import annotations

from providers.auth.request import PreparedRequest
from providers.auth.signer import StaticSigner, secret_forms


class BearerSigner(StaticSigner):
    """Adds a static bearer token."""

    __slots__ = ("_forms", "_header")

    def __init__(self, *, token: str) -> None:
        self._header = {"Authorization": f"Bearer {token}"}
        self._forms = secret_forms(token)

    def secret_forms(self) -> tuple[str, ...]:
        return self._forms

    def apply(self, request: PreparedRequest, *, now: float) -> PreparedRequest:
        return request.with_headers(self._header)
