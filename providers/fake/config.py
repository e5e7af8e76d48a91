"""Configuration of the fake provider: latency, error mix, rate limit, demanded auth, flavor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from providers.auth.config import ApiKeyAuth, BasicAuth, BearerAuth, HmacAuth, NoAuth

FlavorName = Literal[
    "generic", "github", "stripe", "openai", "open_meteo", "slack", "openweathermap"
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class ErrorMix(_Frozen):
    """Probabilities of injected failures per request; the rest succeed."""

    status_500: float = Field(default=0.0, ge=0, le=1)
    status_503: float = Field(default=0.0, ge=0, le=1)
    status_404: float = Field(default=0.0, ge=0, le=1)
    status_400: float = Field(default=0.0, ge=0, le=1)
    # A transient 429 (not the bucket's), answered with ``Retry-After: retry_after_s``.
    status_429: float = Field(default=0.0, ge=0, le=1)
    retry_after_s: int = Field(default=1, ge=0)
    # Never answers until ``timeout_sleep_s`` (past any client timeout); cancelled on disconnect.
    timeout: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _at_most_one(self) -> ErrorMix:
        if self.total > 1.0 + 1e-9:
            raise ValueError("error probabilities add up to more than 1")
        return self

    @property
    def total(self) -> float:
        return (
            self.status_500
            + self.status_503
            + self.status_404
            + self.status_400
            + self.status_429
            + self.timeout
        )

    def outcomes(self) -> list[tuple[float, int | Literal["timeout"]]]:
        """Cumulative thresholds for one uniform draw, most frequent first."""
        pairs: list[tuple[float, int | Literal["timeout"]]] = [
            (self.status_500, 500),
            (self.status_503, 503),
            (self.status_404, 404),
            (self.status_400, 400),
            (self.status_429, 429),
            (self.timeout, "timeout"),
        ]
        out: list[tuple[float, int | Literal["timeout"]]] = []
        edge = 0.0
        for p, outcome in sorted(pairs, key=lambda pair: -pair[0]):
            if p > 0:
                edge += p
                out.append((edge, outcome))
        return out


class RateLimit(_Frozen):
    """A strict token bucket on arrival time: over it, a 429 with Retry-After."""

    rate_per_s: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)


class FakeOAuth2Auth(_Frozen):
    """The server demands bearer tokens it issued itself at ``/oauth/token``."""

    type: Literal["oauth2_client_credentials"] = "oauth2_client_credentials"
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    # Lifetime announced as ``expires_in`` and enforced: an expired token gets a 401.
    token_expires_in_s: float = Field(default=3600.0, gt=0)
    # When set, a token request must ask for exactly this scope.
    scope: str | None = None


FakeAuth = Annotated[
    NoAuth | ApiKeyAuth | BearerAuth | BasicAuth | HmacAuth | FakeOAuth2Auth,
    Field(discriminator="type"),
]


class FakeTls(_Frozen):
    """Serve HTTPS; with ``client_ca_file`` a client certificate signed by it is required."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


class FakeProviderConfig(_Frozen):
    """Everything the fake provider does, for one server instance."""

    latency_ms: float = Field(default=0.0, ge=0)
    # Uniform extra latency in [0, jitter_ms].
    jitter_ms: float = Field(default=0.0, ge=0)
    error_mix: ErrorMix = ErrorMix()
    # Seeds latency jitter and the error mix; None draws a fresh seed.
    seed: int | None = None
    rate_limit: RateLimit | None = None
    auth: FakeAuth = Field(default_factory=NoAuth)
    flavor: FlavorName = "generic"
    # How long an injected timeout sleeps before answering 504.
    timeout_sleep_s: float = Field(default=30.0, gt=0)
    # Replay the stored response of a POST whose Idempotency-Key was seen (Stripe semantics).
    idempotency: bool = True
    # OpenAI flavor: the tokens-per-minute budget behind its x-ratelimit-*-tokens headers.
    tokens_per_min: int = Field(default=1_000_000, ge=1)
    # OpenAI flavor: generation time per completion token, waited after the call's tokens are
    # charged (LLM latency grows with the output), on top of the latency above.
    completion_ms_per_token: float = Field(default=0.0, ge=0)
    tls: FakeTls | None = None
    # The generic item route's content: its ETag, Last-Modified and body derive from the item id
    # and this; raise it (``update(content_version=2)``) to change every item (issue 23).
    content_version: int = Field(default=1, ge=0, le=1_000_000)
    # Sent verbatim as ``Cache-Control`` on the item route's 200s and 304s (the
    # ``fake_cache_control`` directive overrides it per request); None sends none.
    cache_control: str | None = Field(default=None, pattern=r"^[\x20-\x7e]{1,200}$")

    def with_changes(self, changes: dict[str, Any]) -> FakeProviderConfig:
        """A validated copy with top-level fields replaced (used by ``POST /_fake/config``)."""
        return type(self).model_validate({**self._plain(), **changes})

    def _plain(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in type(self).model_fields}

    def to_json_with_secrets(self) -> str:
        """JSON that a child process can read back, secrets included (``model_dump_json``
        masks them). The fake holds test credentials only."""
        return json.dumps(_reveal(self.model_dump(mode="python", by_alias=True)), default=str)


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {key: _reveal(item) for key, item in value.items()}
    return value
