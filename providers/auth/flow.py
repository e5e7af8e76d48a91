"""The auth flow of one call: httpx's ``auth_flow`` in two steps, sign and then hear the answer.

httpx drives ``Auth.auth_flow(request)``, a generator that yields a request, is sent the response
and may yield one more. On the hot path a generator per call costs more than the rest of the
signing, so the same flow is unrolled into two plain methods the client drives in that order:
``first`` is the first yield, ``then`` is told each answer and returns the next request or None.
The 401 policy lives here, with the credentials, not in the HTTP client.
"""

from __future__ import annotations

from collections.abc import Awaitable

from providers.auth.request import PreparedRequest
from providers.auth.signer import Signer, SyncSigner

__all__ = ["AuthFlow"]


class AuthFlow:
    """A signer driven as an auth flow: sign, send, and on a 401 refresh and send once more.

    Only credentials that can get better by asking again (tokens) retry; static ones (API
    keys, HMAC, Basic, mTLS) cannot, so their 401 is final.
    """

    __slots__ = ("refreshable", "signer")

    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        # Checked once here: isinstance against a runtime Protocol is slow.
        self.refreshable = not isinstance(signer, SyncSigner)

    def __repr__(self) -> str:
        return f"AuthFlow(signer={self.signer!r}, refreshable={self.refreshable})"

    def first(self, request: PreparedRequest, *, now: float) -> Awaitable[PreparedRequest]:
        """The flow's first request: ``request`` signed (``now``: wall-clock epoch seconds)."""
        return self.signer.sign(request, now=now)

    def then(
        self,
        request: PreparedRequest,
        sent: PreparedRequest,
        status: int,
        *,
        sends: int,
        now: float,
    ) -> Awaitable[PreparedRequest] | None:
        """Hear the answer to ``sent``; return the one more request to send, or None (done).

        Args:
            request: the unsigned request, signed again for a retry.
            sent: the signed request that got ``status``.
            status: the HTTP status of the answer.
            sends: how many times the call has been sent so far.
            now: wall-clock epoch seconds, for signing the retry.

        Returns:
            None for every answer but a first 401 with refreshable credentials; then the
            request signed again after the signer dropped the credentials ``sent`` carried.
        """
        if status != 401 or sends > 1 or not self.refreshable:
            return None
        self.signer.on_unauthorized(sent)
        return self.signer.sign(request, now=now)
