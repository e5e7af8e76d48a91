"""Stripe flavor: secret key as Bearer or Basic username, form bodies, idempotent replays.

Errors are ``{"error": {"type", "code", "message"}}`` with ``Request-Id`` and, where Stripe
sends it, ``Stripe-Should-Retry``. A POST repeated with its ``Idempotency-Key`` gets the stored
response and ``Idempotent-Replayed: true``; other parameters give an ``idempotency_error``; a
repeat while the first is running, 409.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any

from aiohttp import web

from providers.fake.config import FakeProviderConfig
from providers.fake.flavors.base import Flavor, RateState, Route, Verdict, dumps, respond

_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", "parameter_invalid", "Invalid request."),
    402: ("card_error", "card_declined", "Your card was declined."),
    404: ("invalid_request_error", "resource_missing", "No such object."),
    409: (
        "idempotency_error",
        "idempotency_key_in_use",
        "There is currently another in-progress "
        "request using this Stripe API key and idempotency key.",
    ),
    429: (
        "invalid_request_error",
        "rate_limit",
        "Too many requests hit the API too quickly. "
        "We recommend an exponential backoff of your requests.",
    ),
}
_SHOULD_RETRY = {409: "true", 429: "true", 500: "true", 503: "true", 400: "false", 404: "false"}


def _error(kind: str, code: str | None, message: str, **extra: str) -> bytes:
    error: dict[str, Any] = {"type": kind, "message": message, **extra}
    if code is not None:
        error["code"] = code
    return dumps({"error": error})


class StripeFlavor(Flavor):
    name = "stripe"
    basic_for_bearer = True

    def __init__(self, config: FakeProviderConfig) -> None:
        super().__init__(config)
        self._objects: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def extra_routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/balance", self.balance),
            Route("GET", "/v1/customers", self.list_customers),
            Route("POST", "/v1/customers", self.create_customer),
            Route("GET", "/v1/customers/{id}", self.get_object),
            Route("POST", "/v1/payment_intents", self.create_payment_intent),
            Route("GET", "/v1/payment_intents/{id}", self.get_object),
            Route("POST", "/v1/refunds", self.create_refund),
        ]

    async def balance(self, request: web.Request) -> web.Response:
        funds = [{"amount": 10_000, "currency": "usd"}]
        return self._ok({"object": "balance", "available": funds, "pending": funds})

    async def list_customers(self, request: web.Request) -> web.Response:
        data = [o for o in self._objects.values() if o["object"] == "customer"][:10]
        return self._ok({"object": "list", "url": "/v1/customers", "has_more": False, "data": data})

    async def create_customer(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = {k: form[k] for k in ("email", "name") if isinstance(form.get(k), str)}
        return self._ok(self._store("cus", "customer", fields))

    async def create_payment_intent(self, request: web.Request) -> web.Response:
        form = await request.post()
        for name in ("amount", "currency"):
            if not form.get(name):
                return self._param_error(
                    "parameter_missing", f"Missing required param: {name}.", name
                )
        amount = form["amount"]
        if not isinstance(amount, str) or not amount.isdigit() or int(amount) < 1:
            return self._param_error(
                "parameter_invalid_integer", "Invalid integer: amount.", "amount"
            )
        fields = {
            "amount": int(amount),
            "currency": form["currency"],
            "status": "requires_payment_method",
        }
        return self._ok(self._store("pi", "payment_intent", fields))

    async def create_refund(self, request: web.Request) -> web.Response:
        form = await request.post()
        intent = form.get("payment_intent")
        if not isinstance(intent, str) or intent not in self._objects:
            return self._missing(str(intent or ""))
        fields = {
            "payment_intent": intent,
            "amount": self._objects[intent].get("amount"),
            "status": "succeeded",
        }
        return self._ok(self._store("re", "refund", fields))

    async def get_object(self, request: web.Request) -> web.Response:
        object_id = request.match_info["id"]
        found = self._objects.get(object_id)
        return self._ok(found) if found is not None else self._missing(object_id)

    def _store(self, prefix: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        object_id = f"{prefix}_{next(self._ids):06d}{secrets.token_hex(4)}"
        obj = {"id": object_id, "object": kind, "livemode": False, **fields}
        self._objects[object_id] = obj
        return obj

    def _ok(self, payload: dict[str, Any]) -> web.Response:
        return respond(200, dumps(payload), _request_id())

    def _missing(self, object_id: str) -> web.Response:
        body = _error(
            "invalid_request_error",
            "resource_missing",
            f"No such object: '{object_id}'",
            param="id",
        )
        return respond(404, body, {**_request_id(), "Stripe-Should-Retry": "false"})

    def _param_error(self, code: str, message: str, param: str) -> web.Response:
        body = _error("invalid_request_error", code, message, param=param)
        return respond(400, body, {**_request_id(), "Stripe-Should-Retry": "false"})

    # -- shapes ---------------------------------------------------------------------------

    def error_body(self, status: int) -> bytes:
        kind, code, message = _ERRORS.get(
            status, ("api_error", None, "An unknown error occurred on Stripe's end.")
        )
        return _error(kind, code, message)

    def error(self, status: int, *, retry_after_s: int | None = None) -> web.Response:
        response = super().error(status, retry_after_s=retry_after_s)
        response.headers.update(_request_id())
        if status in _SHOULD_RETRY:
            response.headers["Stripe-Should-Retry"] = _SHOULD_RETRY[status]
        return response

    def unauthorized(self, verdict: Verdict) -> web.Response:
        message = (
            "You did not provide an API key. Provide it as a Bearer token or Basic username."
            if verdict == "missing"
            else "Invalid API Key provided."  # Stripe shows a masked key; we show none
        )
        body = _error("invalid_request_error", None, message)
        return respond(401, body, {**_request_id(), "WWW-Authenticate": 'Basic realm="Stripe"'})

    def rate_limited(self, state: RateState | None, *, retry_after_s: int) -> web.Response:
        # Stripe sends no rate-limit headers, only the error code and Stripe-Should-Retry.
        return self.error(429)

    def rate_headers(self, state: RateState) -> dict[str, str]:
        return {}

    def idempotency_conflict(self) -> web.Response:
        body = _error(
            "idempotency_error",
            None,
            "Keys for idempotent requests can only be used "
            "with the same parameters they were first used with.",
        )
        return respond(400, body, _request_id())


def _request_id() -> dict[str, str]:
    return {"Request-Id": f"req_{secrets.token_hex(7)}"}
