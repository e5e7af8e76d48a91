"""AuthFlow, stepped by hand: sign, hear the answer, and after a 401 maybe send once more."""

from __future__ import annotations

from providers.auth.api_key import ApiKeySigner
from providers.auth.flow import AuthFlow
from providers.auth.request import PreparedRequest

REQUEST = PreparedRequest("GET", "https://api.test/items")


class TokenSigner:
    """Token-based (no ``apply``): a 401 drops the token and the next one works."""

    def __init__(self) -> None:
        self.token = 1
        self.dropped: list[PreparedRequest | None] = []

    async def sign(self, request: PreparedRequest, *, now: float) -> PreparedRequest:
        return request.with_headers(Authorization=f"Bearer tok-{self.token}")

    def on_unauthorized(self, request: PreparedRequest | None = None) -> None:
        self.dropped.append(request)
        self.token += 1


async def test_a_first_401_with_a_token_drops_it_and_yields_the_request_signed_again():
    signer = TokenSigner()
    flow = AuthFlow(signer)
    sent = await flow.first(REQUEST, now=0.0)
    again = flow.then(REQUEST, sent, 401, sends=1, now=0.0)
    assert again is not None
    retry = await again
    assert (signer.dropped, retry.headers["Authorization"]) == ([sent], "Bearer tok-2")
    assert flow.then(REQUEST, retry, 401, sends=2, now=0.0) is None  # once, never twice


async def test_other_answers_end_the_flow():
    flow = AuthFlow(TokenSigner())
    sent = await flow.first(REQUEST, now=0.0)
    assert [flow.then(REQUEST, sent, status, sends=1, now=0.0) for status in (200, 403, 429)] == [
        None,
        None,
        None,
    ]


async def test_static_credentials_never_retry():
    flow = AuthFlow(ApiKeySigner(name="X-API-Key", key="k"))
    sent = await flow.first(REQUEST, now=0.0)
    assert not flow.refreshable
    assert flow.then(REQUEST, sent, 401, sends=1, now=0.0) is None
