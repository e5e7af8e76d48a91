"""The ``Signer`` seam every auth strategy implements, and the base of the I/O-free ones."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Protocol, runtime_checkable
from urllib.parse import quote, quote_plus

from providers.auth.request import PreparedRequest

REDACTED = "[redacted]"
# Shorter values are not redacted: they would blank out ordinary words, and a secret this
# short protects nothing anyway.
_MIN_SECRET_CHARS = 4


def secret_forms(*secrets: str) -> tuple[str, ...]:
    """Each secret as a provider might echo it: as is and percent-encoded (path and form
    style), longest first, so a longer form is replaced whole before a shorter one in it."""
    forms = {
        form
        for secret in secrets
        if len(secret) >= _MIN_SECRET_CHARS
        for form in (secret, quote(secret, safe=""), quote_plus(secret, safe=""))
    }
    return tuple(sorted(forms, key=len, reverse=True))


def base64_form(text: str) -> str:
    """Standard base64 of ``text`` (UTF-8), as Basic credentials carry it."""
    return base64.b64encode(text.encode()).decode("ascii")


def redact_values(text: str, forms: Iterable[str]) -> str:
    """``text`` with every occurrence of each of ``forms`` replaced by ``[redacted]``."""
    for form in forms:
        if form in text:
            text = text.replace(form, REDACTED)
    return text


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

    def secret_forms(self) -> tuple[str, ...]:
        """The resolved secret values this signer sends, in every form it sends them."""
        return ()

    def redact(self, text: str) -> str:
        """``text`` (a provider's error message) with this signer's secrets replaced by
        ``[redacted]``: a provider that echoes the credential it rejected must not put it in
        a result or a dead letter."""
        return redact_values(text, self.secret_forms())

    def __repr__(self) -> str:
        # Subclasses keep credentials in slots; never let a default repr show them.
        return f"{type(self).__name__}()"


class NoAuthSigner(StaticSigner):
    """Sends requests unchanged."""

    __slots__ = ()

    def apply(self, request: PreparedRequest, *, now: float) -> PreparedRequest:
        return request
