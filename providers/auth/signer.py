"""The ``Signer`` seam every auth strategy implements, and the base of the I/O-free ones."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from providers.auth.request import PreparedRequest


@runtime_checkable
class Signer(Protocol):
    """Adds credentials to a request.

    ``now`` is wall-clock epoch seconds (``time.time()``): HMAC puts it in the request and
    OAuth2 compares it with token expiry, so tests inject it instead of sleeping.
    """

    async def sign(self, request: PreparedRequest, *, now: float) -> PreparedRequest: ...

    def on_unauthorized(self, request: PreparedRequest | None = None) -> None:
        """The provider answered 401 to ``request``: drop cached credentials (``AuthFlow``
        then signs the request again and sends it once more)."""


@runtime_checkable
class SyncSigner(Signer, Protocol):
    """A signer that needs no I/O, so sync code (``httpx.Auth.auth_flow``) can use it too."""

    def apply(self, request: PreparedRequest, *, now: float) -> PreparedRequest: ...


class StaticSigner:
    """Base of signers whose work is pure: ``sign`` is ``apply`` without awaiting anything."""

    __slots__ = ()

    def apply(self, request: PreparedRequest, *, now: float) -> PreparedRequest:
        raise NotImplementedError

    async def sign(self, request: PreparedRequest, *, now: float) -> PreparedRequest:
        return self.apply(request, now=now)

    def on_unauthorized(self, request: PreparedRequest | None = None) -> None:
        """Static credentials cannot be refreshed; a 401 is final."""

    def __repr__(self) -> str:
        # Subclasses keep credentials in slots; never let a default repr show them.
        return f"{type(self).__name__}()"


class NoAuthSigner(StaticSigner):
    """Sends requests unchanged."""

    __slots__ = ()

    def apply(self, request: PreparedRequest, *, now: float) -> PreparedRequest:
        return request
