"""What a provider declares: base URL, auth, operations, limits, costs and error shapes."""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from providers.auth.config import AuthConfig, NoAuth
from providers.header_names import RESERVED_HEADERS as _RESERVED_HEADERS
from providers.header_names import check_header_name, check_header_value, is_token
from providers.rate_limit_styles import RateLimitStyle, preset_for, style_dimensions

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
# Outcomes an app-level error code can map to; each is the ``reason`` of a class in errors.py.
ErrorReason = Literal[
    "rate_limited", "auth_failed", "not_found", "unavailable", "timeout", "bad_request",
    "invalid_response",
]  # fmt: skip

_NAME = r"^[a-z][a-z0-9_]{0,63}$"
_OPERATION = r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$"
_IDEMPOTENT_METHODS = frozenset({"GET", "PUT", "DELETE"})
# Methods with no side effects by definition (RFC 9110 9.2.1) that a cache may answer.
_SAFE_METHODS = frozenset({"GET", "HEAD"})
# A dotted path into JSON, as ``json_at`` reads it: keys, or digits for list indexes.
_JSON_PATH = r"[^.\s]+(\.[^.\s]+)*"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ParamSpec(_Frozen):
    """One path or query parameter."""

    required: bool = False
    default: str | None = None
    # Full-match regex the value must satisfy (checked at request time).
    pattern: str | None = None
    # The value may be an absolute URL to another host: it is data the provider stores
    # (a webhook target), never a URL we call.
    allow_urls: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value


class BodySpec(_Frozen):
    """Whether an operation takes a body, and in which media types."""

    content_types: tuple[str, ...] = Field(default=("application/json",), min_length=1)
    required: bool = False

    @field_validator("content_types")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.strip().lower() for v in value)


class StaticAnswer(_Frozen):
    """A fixed answer given instead of the provider's (a fallback)."""

    status: int = Field(default=200, ge=200, le=299)
    body: str = ""
    content_type: str = "application/json"


class AlternateCall(_Frozen):
    """Another provider's operation that answers the same question (a fallback)."""

    provider: str = Field(min_length=1, max_length=128)
    operation: str = Field(min_length=1, max_length=128)
    # The alternate's parameters by name, each a template of the request's own: "{lat}".
    # A request lacking one of them skips this fallback.
    params: dict[str, str] = Field(default_factory=dict)


class FallbackSpec(_Frozen):
    """One way to answer when the provider cannot (its breaker is open, or its retries gave
    up): a static answer, or an alternate provider's call (a stale cached answer is next)."""

    static: StaticAnswer | None = None
    call: AlternateCall | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> FallbackSpec:
        if (self.static is None) == (self.call is None):
            raise ValueError("a fallback is either static or call, exactly one of them")
        return self


class CacheSpec(_Frozen):
    """How the response cache keeps an operation's answers (issue 23; README "Response cache").

    Declaring it says the operation is safe to answer from a copy: a GET or HEAD, or an
    operation with no side effects that says so (``safe``: a search or an embedding sent as a
    POST). The provider's ``Cache-Control`` can only shorten ``ttl_s`` (``max-age``) or forbid
    storing (``no-store``; ``private`` when ``shared``), never lengthen it.
    """

    # Fresh for this long after the answer arrived (or was revalidated).
    ttl_s: float = Field(gt=0, allow_inf_nan=False)
    # One entry for every tenant: the answer does not depend on who asks (public data). Else
    # each tenant has its own entries and never reads another's.
    shared: bool = False
    # After ttl_s, answer from the copy (status ``stale``) while one call refreshes it.
    stale_while_revalidate_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    # After ttl_s, answer from the copy (status ``stale``) when the provider cannot answer
    # (retriable failure, open breaker).
    stale_if_error_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    # Parameters whose values the provider compares without case (a GitHub user name): one
    # entry for "Octocat" and "octocat".
    case_insensitive_params: tuple[str, ...] = ()
    # A method other than GET or HEAD that has no side effects.
    safe: bool = False


class CostSpec(_Frozen):
    """Price of one call, plus units read from the JSON response times their unit price."""

    per_call: float = Field(default=0.0, ge=0)
    # JSON path in the response (``usage.total_tokens``) → price per unit.
    per_unit: dict[str, float] = Field(default_factory=dict)


class OperationSpec(_Frozen):
    """One callable operation: method, path template, allowed inputs, response handling."""

    method: HttpMethod = "GET"
    path: str = Field(min_length=1)
    # Constraints for placeholders of ``path``; every placeholder is a required path param.
    path_params: dict[str, ParamSpec] = Field(default_factory=dict)
    query_params: dict[str, ParamSpec] = Field(default_factory=dict)
    body: BodySpec | None = None
    allowed_headers: tuple[str, ...] = ()
    response_type: Literal["json", "text", "bytes"] = "json"
    # How answers are cached (None: never). ``cache_ttl_s = N`` is short for ``cache.ttl_s``.
    cache: CacheSpec | None = None
    cost: CostSpec = CostSpec()
    timeout_s: float | None = Field(default=None, gt=0)
    # None: derived from the method (GET, PUT and DELETE are idempotent). A call that is not
    # idempotent is retried only while it surely has not reached the provider, unless the
    # provider honours an idempotency key (``idempotency_header``).
    idempotent: bool | None = None
    # This operation's own retry limits (None: the worker's [retry] settings).
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    retry_time_budget_s: float | None = Field(default=None, gt=0)
    # This operation's own bulkhead: calls of it at once on one worker (None: it shares its
    # provider's).
    max_concurrent_calls: int | None = Field(default=None, ge=1)
    # Tried in order when the provider cannot answer (breaker open, retries given up): the
    # result is then `fallback`, naming what answered and keeping the provider's failure.
    fallbacks: tuple[FallbackSpec, ...] = ()
    # Its own circuit breaker, apart from its provider's (an endpoint that fails alone: the
    # provider's other operations keep being called).
    own_breaker: bool = False
    # Units (``limits.units``: tokens, records) a call spends. An operation declaring neither
    # of the first two spends none (listing models costs no tokens). A call reserves its
    # estimate before it is sent and settles the actual units from the answer.
    # The estimate per call until answers teach a better one (None: learned only; the first
    # call then reserves the whole burst, so calls go one at a time until an answer).
    units_estimate: int | None = Field(default=None, ge=0)
    # JSON path of the actual units in the response body (``usage.total_tokens``).
    units_from: str | None = None
    # JSON path in the request body of a number the units of its answer cannot exceed (a page
    # ``limit`` when the units are records): it caps the call's estimate.
    units_from_request: str | None = None
    # JSON path in the response body of the units that number does not bound, when the units
    # are more than what it bounds: ``usage.prompt_tokens`` when the units are total tokens and
    # the bound is ``max_tokens`` (the completion's). The cap is then the bound plus a high
    # estimate of these.
    units_unbounded_from: str | None = None

    @field_validator("query_params", "path_params", mode="before")
    @classmethod
    def _names_list(cls, value: Any) -> Any:
        # Shorthand in files: a list of names is a set of optional parameters.
        return {name: {} for name in value} if isinstance(value, list) else value

    @field_validator("path")
    @classmethod
    def _path_shape(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in "?#\\ "):
            raise ValueError("must start with '/' and contain no '?', '#', '\\' or spaces")
        for _, field, spec, conv in string.Formatter().parse(value):
            if field is not None and (not field.isidentifier() or spec or conv):
                raise ValueError(f"placeholder {{{field}}} must be a plain identifier")
        return value

    @field_validator("allowed_headers")
    @classmethod
    def _header_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not is_token(name) or name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} cannot be allowed")
        return value

    @field_validator("units_from", "units_from_request", "units_unbounded_from")
    @classmethod
    def _json_path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(_JSON_PATH, value):
            raise ValueError(f"{value!r} is not a dotted JSON path such as usage.total_tokens")
        return value

    @model_validator(mode="before")
    @classmethod
    def _cache_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "cache_ttl_s" in data:
            data = dict(data)
            ttl = data.pop("cache_ttl_s")
            if "cache" in data:
                raise ValueError("give cache_ttl_s or cache, not both")
            if ttl:  # 0: not cached
                data["cache"] = {"ttl_s": ttl}
        return data

    @model_validator(mode="after")
    def _cache_safe(self) -> OperationSpec:
        if self.cache is not None and self.method not in _SAFE_METHODS and not self.cache.safe:
            raise ValueError(
                f"a {self.method} operation is cached only if it has no side effects: "
                "say so with cache.safe = true"
            )
        if self.cache is not None:
            declared = set(self.path_params) | set(self.query_params)
            if unknown := set(self.cache.case_insensitive_params) - declared:
                raise ValueError(
                    f"cache.case_insensitive_params not declared: {', '.join(sorted(unknown))}"
                )
        return self

    @model_validator(mode="after")
    def _units_consistent(self) -> OperationSpec:
        if self.units_from_request is not None and self.units_from is None:
            raise ValueError("units_from_request needs units_from: a bound of unread units")
        if self.units_unbounded_from is not None and self.units_from_request is None:
            raise ValueError("units_unbounded_from needs units_from_request: the bound it adds to")
        return self

    @property
    def spends_units(self) -> bool:
        """Whether calls of it count against ``limits.units``."""
        return self.units_estimate is not None or self.units_from is not None

    @model_validator(mode="after")
    def _params_consistent(self) -> OperationSpec:
        placeholders = set(self.placeholders)
        if unknown := set(self.path_params) - placeholders:
            raise ValueError(f"path_params not in path: {', '.join(sorted(unknown))}")
        if both := placeholders & set(self.query_params):
            raise ValueError(f"names used as path and query params: {', '.join(sorted(both))}")
        return self

    @property
    def placeholders(self) -> tuple[str, ...]:
        return tuple(f for _, f, _, _ in string.Formatter().parse(self.path) if f is not None)

    @property
    def is_idempotent(self) -> bool:
        return self.method in _IDEMPOTENT_METHODS if self.idempotent is None else self.idempotent


class UnitLimitSpec(_Frozen):
    """A limit on units (tokens, records) rather than requests: ``per_minute`` or
    ``rate_per_s`` sustained, and at most ``burst`` units at once.

    The burst defaults to one minute's worth. LLM providers state tokens per minute and refill
    continuously: OpenAI's TPM is a rolling minute, its headers report a remaining count that
    grows back over up to a minute (``x-ratelimit-reset-tokens``), i.e. a bucket holding a
    minute's tokens. A provider that enforces over shorter slices ("quantized" limits)
    declares a smaller burst.
    """

    # The dimension's name, as in rate_limit_headers ("tokens"): metrics and logs use it, and
    # the answers' rate-limit dimension of this name (openai's x-ratelimit-*-tokens) informs
    # the units bucket instead of the request one.
    name: str = Field(pattern=_NAME)
    per_minute: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    rate_per_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    burst: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_rate(self) -> UnitLimitSpec:
        if (self.per_minute is None) == (self.rate_per_s is None):
            raise ValueError("give per_minute or rate_per_s, exactly one of them")
        return self

    @property
    def per_s(self) -> float:
        """The sustained rate in units per second."""
        return self.rate_per_s if self.rate_per_s is not None else (self.per_minute or 0.0) / 60

    @property
    def capacity(self) -> int:
        """The burst: as declared, else one minute's worth (at least 1)."""
        return self.burst if self.burst is not None else max(1, math.floor(self.per_s * 60))


class LimitsSpec(_Frozen):
    """The provider's request rate (and units rate), as the pipeline should enforce it."""

    rate_per_s: float = Field(default=10.0, gt=0)
    burst: int = Field(default=10, ge=1)
    # The limit applies to each credential (API key) rather than to the provider as a whole.
    per_credential: bool = False
    # The wait after a 429 that names none (no Retry-After or reset header): the documented
    # window, e.g. 60 for a per-minute limit.
    retry_after_s: float | None = Field(default=None, ge=0)
    # The longest wait the provider's own answer may impose (Retry-After, rate-limit reset
    # headers); longer ones are clamped to it and logged, so one bad header cannot freeze a
    # limit key for years.
    max_retry_after_s: float = Field(default=3600.0, gt=0)
    # A second dimension: units per window (tokens per minute), spent by the operations that
    # declare units (OperationSpec.units_*).
    units: UnitLimitSpec | None = None


class RateLimitHeaders(_Frozen):
    """How one rate-limit dimension is read from answers: a style's preset, header names, or
    both (the fields given override the preset's)."""

    # A preset (providers/rate_limit_styles.py): the style's dimension of this entry's name,
    # or its only one. "ietf" also reads the structured RateLimit and RateLimit-Policy fields.
    style: RateLimitStyle | None = None
    limit: str | None = None
    remaining: str | None = None
    reset: str | None = None
    # epoch_s: Unix time; delta_s: seconds from now; duration: "1m30s"/"250ms" (OpenAI).
    reset_kind: Literal["epoch_s", "delta_s", "duration"] = "delta_s"
    # The length of the provider's window (60 for a per-minute limit), when the answer does
    # not say it (IETF RateLimit-Policy "w" does; GitHub's style knows its hour).
    window_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @field_validator("limit", "remaining", "reset")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return None if value is None else check_header_name(value)


def rate_limit_dimensions(
    style: RateLimitStyle | None, declared: Mapping[str, RateLimitHeaders]
) -> dict[str, RateLimitHeaders]:
    """Every dimension read from answers, presets filled in; the first is the primary one.

    The provider-wide ``style``'s dimensions come first, then the other ``declared`` ones.
    A declared entry overrides, field by field, the preset of its own ``style`` or else of the
    provider-wide style's dimension of the same name. Idempotent.

    Raises:
        ValueError: an entry's style has no dimension for it (one line).
    """
    presets = style_dimensions(style) if style is not None else {}
    names = [*presets, *(name for name in declared if name not in presets)]
    out: dict[str, RateLimitHeaders] = {}
    for name in names:
        entry = declared.get(name)
        dim_style = entry.style if entry is not None and entry.style else None
        if dim_style is None and name in presets:
            dim_style = style
        base = preset_for(dim_style, name) if dim_style is not None else {}
        given = {f: getattr(entry, f) for f in entry.model_fields_set} if entry else {}
        out[name] = RateLimitHeaders.model_validate({**base, **given, "style": dim_style})
    return out


class ErrorShape(_Frozen):
    """Where a provider puts its error message and code, and what its codes mean."""

    # JSON path of a boolean that is false on failure even with HTTP 200 (Slack's ``ok``).
    ok_field: str | None = None
    code_field: str | None = None
    message_field: str | None = None
    # Provider error code → outcome, overriding the HTTP status (e.g. slack "ratelimited").
    codes: dict[str, ErrorReason] = Field(default_factory=dict)
    # A response header saying "true"/"false" whether to retry (Stripe-Should-Retry).
    retry_header: str | None = None

    @field_validator("retry_header")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_header_name(value)


class CheckSpec(_Frozen):
    """The call ``callstream providers check`` makes by default."""

    operation: str
    params: dict[str, str] = Field(default_factory=dict)


class ProviderSpec(_Frozen):
    """A provider, declared as data: the pipeline calls nothing it does not declare."""

    # It embeds AuthConfig: a validation error must never echo a literal secret.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    name: str = Field(pattern=_NAME)
    description: str = ""
    # The only origin (and path prefix) requests may go to.
    base_url: str
    auth: AuthConfig = Field(default_factory=NoAuth)
    # Sent on every call (API version pins, Accept); request events cannot override them.
    headers: dict[str, str] = Field(default_factory=dict)
    operations: dict[str, OperationSpec] = Field(min_length=1)
    limits: LimitsSpec = LimitsSpec()
    retryable_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    timeout_s: float = Field(default=10.0, gt=0)
    capability: str | None = None
    idempotency_header: str | None = None
    request_id_header: str | None = "X-Request-Id"
    # The provider's rate-limit header shape: "github", "openai", "ietf", or "stripe"/"slack"
    # (they send none, only 429s). Its dimensions come first.
    rate_limit_style: RateLimitStyle | None = None
    # Dimension name ("requests", "tokens") → how it is read (a style, header names, or both:
    # names override the style's); the first dimension is the primary one.
    rate_limit_headers: dict[str, RateLimitHeaders] = Field(default_factory=dict)
    max_request_bytes: int = Field(default=1 << 20, ge=0)
    max_response_bytes: int = Field(default=8 << 20, ge=1)
    error_shape: ErrorShape = ErrorShape()
    check: CheckSpec | None = None

    @field_validator("operations")
    @classmethod
    def _operation_names(cls, value: dict[str, OperationSpec]) -> dict[str, OperationSpec]:
        for name in value:
            if not re.match(_OPERATION, name):
                raise ValueError(f"operation name {name!r} must match {_OPERATION}")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must not carry a query, fragment or credentials")
        return value.rstrip("/")

    @field_validator("rate_limit_headers")
    @classmethod
    def _dimension_styles(cls, value: dict[str, RateLimitHeaders]) -> dict[str, RateLimitHeaders]:
        # An entry naming a style must find its dimension in it (openai has two).
        for name, entry in value.items():
            if entry.style is not None:
                preset_for(entry.style, name)
        return value

    @field_validator("retryable_statuses")
    @classmethod
    def _statuses(cls, value: frozenset[int]) -> frozenset[int]:
        if bad := sorted(s for s in value if not 400 <= s <= 599):
            raise ValueError(f"not HTTP error statuses: {bad}")
        return value

    @field_validator("headers")
    @classmethod
    def _static_headers(cls, value: dict[str, str]) -> dict[str, str]:
        # Values may be secret references (env:, file:, dir:), resolved when the registry
        # builds the provider; names may not be ones the pipeline or the HTTP stack sets.
        for name, val in value.items():
            check_header_value(check_header_name(name, reserved=_RESERVED_HEADERS), val)
        return value

    @field_validator("request_id_header", "idempotency_header")
    @classmethod
    def _sent_header_names(cls, value: str | None) -> str | None:
        return None if value is None else check_header_name(value, reserved=_RESERVED_HEADERS)

    @model_validator(mode="after")
    def _check_exists(self) -> ProviderSpec:
        if self.check is not None and self.check.operation not in self.operations:
            raise ValueError(f"check.operation: {self.check.operation!r} is not an operation")
        return self

    @model_validator(mode="after")
    def _units_limited(self) -> ProviderSpec:
        if self.limits.units is None:
            for name, op in self.operations.items():
                if op.spends_units:
                    raise ValueError(f"operation {name!r} spends units, but limits.units is absent")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    def with_overrides(self, changes: Mapping[str, Any]) -> ProviderSpec:
        """A validated copy with top-level fields replaced; mappings merge into nested models."""
        data: dict[str, Any] = dict(self)
        for key, value in changes.items():
            current = data.get(key)
            if isinstance(value, Mapping) and isinstance(current, BaseModel):
                value = type(current).model_validate({**dict(current), **value})
            data[key] = value
        return type(self).model_validate(data)
