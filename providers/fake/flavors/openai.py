"""OpenAI flavor: Bearer auth, ``x-ratelimit-*-requests`` / ``-tokens`` headers, usage counts.

Errors are ``{"error": {"message", "type", "param", "code"}}``; resets are durations such as
``"1s"`` or ``"6m0s"``. Besides the request bucket, completions and embeddings spend a
tokens-per-minute budget (``tokens_per_min``): a bucket of a minute's tokens refilled
continuously, as OpenAI's rolling minute. A request that does not fit gets 429
``rate_limit_exceeded`` (type ``tokens``) with ``Retry-After`` and the token headers.

Token counts are deterministic, so a test can replay given counts:

- prompt: 3 (priming the reply) plus, per message, 4 and a token per four characters of its
  text content (rounded up), OpenAI's cookbook rule with ~4 characters a token; or exactly the
  ``fake_prompt_tokens`` / ``X-Fake-Prompt-Tokens`` directive when given (directives.py);
- completion: ``max_completion_tokens`` (else ``max_tokens``) when given, all of them
  (``finish_reason`` ``"length"``); else a fixed sentence of 7 tokens;
- usage: prompt plus completion, and that is what the bucket is charged, when the call reaches
  the operation (after the configured latency), before the completion is generated
  (``completion_ms_per_token`` per completion token). OpenAI also counts at arrival, but from
  ``max_tokens`` and an estimate of the prompt; the fake charges exactly what it reports, which
  is what a client settles.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from aiohttp import web

from providers.fake.bucket import TokenBucket, whole_seconds
from providers.fake.config import FakeProviderConfig
from providers.fake.directives import DirectiveError, read_prompt_tokens
from providers.fake.flavors.base import Flavor, RateState, Route, Verdict, dumps, respond

_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
_COMPLETION = "This is a fake completion."
# A completion of N tokens, by the fake's count of four characters a token.
_WORD = "word"
# Tokens of a chat prompt beyond its messages' text: per message (role, separators), and once
# to prime the reply.
_PER_MESSAGE = 4
_PRIMING = 3
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
        """A new budget starts full; any other change keeps the tokens spent so far."""
        if config.tokens_per_min != self.config.tokens_per_min:
            self._tokens = self._token_bucket(config)
        super().configure(config)

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
        try:
            prompt_tokens = read_prompt_tokens(request)
        except DirectiveError as error:
            return respond(400, dumps({"fake_directive_error": str(error)}))
        if prompt_tokens is None:
            prompt_tokens = prompt_tokens_of(messages)
        limit = _completion_limit(payload)
        if isinstance(limit, web.Response):
            return limit
        if limit is None:
            content, completion_tokens, finish = _COMPLETION, _count_tokens(_COMPLETION), "stop"
        else:
            content, completion_tokens, finish = _WORD * limit, limit, "length"
        denied = self._spend(model, prompt_tokens + completion_tokens)
        if denied is not None:
            return denied
        if self.config.completion_ms_per_token > 0:
            await asyncio.sleep(self.config.completion_ms_per_token * completion_tokens / 1000)
        body = {
            "id": f"chatcmpl-{secrets.token_hex(12)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish,
                    "message": {"role": "assistant", "content": content},
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
        tokens = sum(max(1, _count_tokens(text)) for text in inputs)
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
        if tokens > bucket.burst:  # never fits: OpenAI answers 429 all the same
            message = (
                f"Request too large for {model} on tokens per min (TPM): "
                f"Limit {bucket.burst}, Requested {tokens}. "
                "The input or output tokens must be reduced in order to run successfully."
            )
        else:
            message = (
                f"Rate limit reached for {model} on tokens per min (TPM): "
                f"Limit {bucket.burst}, Used {used}, Requested {tokens}. "
                f"Please try again in {duration(wait_s)}."
            )
        headers = {**self._token_headers(), "retry-after": str(whole_seconds(wait_s))}
        return respond(429, _error(message, "tokens", "rate_limit_exceeded"), headers)

    def _token_headers(self) -> dict[str, str]:
        """The token bucket as it stands when the answer leaves (refilled first, so remaining
        and reset agree: the reset is when it is full again, as OpenAI's)."""
        bucket = self._tokens
        until_full_s = bucket.seconds_until_full(time.monotonic())
        return {
            "x-ratelimit-limit-tokens": str(bucket.burst),
            "x-ratelimit-remaining-tokens": str(bucket.remaining()),
            "x-ratelimit-reset-tokens": duration(until_full_s),
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


def prompt_tokens_of(messages: list[Any]) -> int:
    """A chat prompt's tokens by the fake's rule (the module's doc)."""
    return _PRIMING + sum(
        _PER_MESSAGE + _count_tokens(m.get("content")) for m in messages if isinstance(m, dict)
    )


def _count_tokens(content: object) -> int:
    """A token per four characters of text (rounded up), like OpenAI's rule of thumb; the
    text parts of a list of content parts; 0 for anything else."""
    if isinstance(content, str):
        return -(-len(content) // 4)
    if isinstance(content, list):
        return sum(
            _count_tokens(part.get("text"))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return 0


def _completion_limit(payload: dict[str, Any]) -> int | web.Response | None:
    """``max_completion_tokens`` (newer) or ``max_tokens``: None when neither is given, a 400
    in OpenAI's shape when the value is not a whole number of at least 1."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            message = f"Invalid type for '{name}': expected an integer, but got {value!r} instead."
            return respond(400, _error(message, "invalid_request_error", "invalid_type", name))
        if value < 1:
            message = (
                f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
                f"but got {value} instead."
            )
            return respond(
                400, _error(message, "invalid_request_error", "integer_below_min_value", name)
            )
        return value
    return None
