"""OpenAI flavor: Bearer auth, ``x-ratelimit-*-requests`` / ``-tokens`` headers, usage counts.

Errors are ``{"error": {"message", "type", "param", "code"}}``; resets are durations such as
``"1s"`` or ``"6m0s"``. Besides the request bucket, completions spend a tokens-per-minute budget
(``tokens_per_min``); a request that does not fit gets 429 ``rate_limit_exceeded``.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from aiohttp import web

from providers.fake.bucket import TokenBucket, whole_seconds
from providers.fake.config import FakeProviderConfig
from providers.fake.flavors.base import Flavor, RateState, Route, Verdict, dumps, respond

_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
_COMPLETION = "This is a fake completion."
_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    409: ("Conflict.", "invalid_request_error", None),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``"20ms"``, ``"1.5s"``, ``"6m0s"``, ``"1h2m3s"``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{rest}s" if hours else f"{minutes}m{rest}s"


def _error(message: str, kind: str, code: str | None, param: str | None = None) -> bytes:
    return dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


class OpenAIFlavor(Flavor):
    name = "openai"

    def __init__(self, config: FakeProviderConfig) -> None:
        super().__init__(config)
        self._tokens = self._token_bucket(config)

    def configure(self, config: FakeProviderConfig) -> None:
        super().configure(config)
        self._tokens = self._token_bucket(config)

    @staticmethod
    def _token_bucket(config: FakeProviderConfig) -> TokenBucket:
        per_min = config.tokens_per_min
        return TokenBucket(rate_per_s=per_min / 60, burst=per_min, now=time.monotonic())

    def extra_routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/models", self.models),
            Route("POST", "/v1/chat/completions", self.chat_completion),
            Route("POST", "/v1/embeddings", self.embeddings),
        ]

    async def models(self, request: web.Request) -> web.Response:
        data = [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "openai"}
            for m in _MODELS
        ]
        return respond(200, dumps({"object": "list", "data": data}), self._token_headers())

    async def chat_completion(self, request: web.Request) -> web.Response:
        payload = await _json(request)
        if payload is None:
            return respond(
                400,
                _error(
                    "We could not parse the JSON body of your request.",
                    "invalid_request_error",
                    None,
                ),
            )
        model, messages = payload.get("model"), payload.get("messages")
        if not isinstance(model, str) or not model:
            return respond(
                400, _error("you must provide a model parameter", "invalid_request_error", None)
            )
        if not isinstance(messages, list) or not messages:
            return respond(
                400,
                _error(
                    "'messages' is a required property", "invalid_request_error", None, "messages"
                ),
            )
        prompt_tokens = sum(
            _count_tokens(m.get("content")) + 4 for m in messages if isinstance(m, dict)
        )
        completion_tokens = _count_tokens(_COMPLETION)
        denied = self._spend(model, prompt_tokens + completion_tokens)
        if denied is not None:
            return denied
        body = {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": _COMPLETION},
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return respond(200, dumps(body), self._token_headers())

    async def embeddings(self, request: web.Request) -> web.Response:
        payload = await _json(request)
        inputs = payload.get("input") if payload is not None else None
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not isinstance(payload, dict):
            return respond(
                400,
                _error("'input' is a required property", "invalid_request_error", None, "input"),
            )
        tokens = sum(_count_tokens(text) for text in inputs)
        model = str(payload.get("model", "text-embedding-3-small"))
        denied = self._spend(model, tokens)
        if denied is not None:
            return denied
        data = [
            {"object": "embedding", "index": i, "embedding": [0.0, 0.1, 0.2, 0.3]}
            for i in range(len(inputs))
        ]
        body = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return respond(200, dumps(body), self._token_headers())

    def _spend(self, model: str, tokens: int) -> web.Response | None:
        bucket = self._tokens
        wait_s = bucket.take(time.monotonic(), cost=tokens)
        if wait_s == 0.0:
            return None
        used = bucket.burst - bucket.remaining()
        message = (
            f"Rate limit reached for {model} on tokens per min (TPM): "
            f"Limit {bucket.burst}, Used {used}, Requested {tokens}."
        )
        headers = {**self._token_headers(), "retry-after": str(whole_seconds(wait_s))}
        return respond(429, _error(message, "tokens", "rate_limit_exceeded"), headers)

    def _token_headers(self) -> dict[str, str]:
        bucket = self._tokens
        return {
            "x-ratelimit-limit-tokens": str(bucket.burst),
            "x-ratelimit-remaining-tokens": str(bucket.remaining()),
            "x-ratelimit-reset-tokens": duration(bucket.seconds_until_full(time.monotonic())),
            "x-request-id": f"req_{secrets.token_hex(8)}",
        }

    # -- shapes ---------------------------------------------------------------------------

    def error_body(self, status: int) -> bytes:
        message, kind, code = _ERRORS.get(status, ("Error.", "server_error", None))
        return _error(message, kind, code)

    def unauthorized(self, verdict: Verdict) -> web.Response:
        if verdict == "missing":
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth."
            )
            body = _error(message, "invalid_request_error", None)
        else:  # OpenAI echoes a masked key; we echo none
            body = _error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return respond(401, body)

    def rate_limited(self, state: RateState | None, *, retry_after_s: int) -> web.Response:
        headers = {"retry-after": str(retry_after_s)}
        if state is not None:
            headers.update(self.rate_headers(state))
        body = _error("Rate limit reached for requests", "requests", "rate_limit_exceeded")
        return respond(429, body, headers)

    def rate_headers(self, state: RateState) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(state.limit),
            "x-ratelimit-remaining-requests": str(state.remaining),
            "x-ratelimit-reset-requests": duration(state.reset_s),
        }


async def _json(request: web.Request) -> dict[str, Any] | None:
    try:
        payload = json.loads(await request.read())
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _count_tokens(content: object) -> int:
    """About four characters per token, like OpenAI's rule of thumb."""
    return max(1, len(content) // 4) if isinstance(content, str) else 1
