"""The one typed settings object: environment (``CALLSTREAM_*``), an optional TOML file, defaults.

Build it once in ``main()`` with :func:`load_settings` and pass sub-models to the components that
need them. Nothing here runs at import time.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from streams.errors import ConfigurationError

CONFIG_FILE_ENV = "CALLSTREAM_CONFIG"
# What a result holds besides the response body (ids, headers, trace, error): the room
# caller.max_response_bytes must leave under topics.max_outcome_bytes.
OUTCOME_ROOM_BYTES = 64 * 1024
# A record's key and Kafka framing on top of its value (aiokafka's estimate is ~100 bytes).
RECORD_OVERHEAD_BYTES = 16 * 1024


class _Section(BaseModel):
    # Errors never echo the value given: it may be a secret (issue 19).
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class KafkaSettings(_Section):
    """How to reach the cluster, and the consumer-group timings that matter for failover."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    # A SIGKILLed worker keeps its partitions until this expires: it bounds failover time.
    session_timeout_s: float = Field(default=10.0, gt=0)
    heartbeat_interval_s: float = Field(default=2.0, gt=0)
    # The embedded Tansu broker lacks idempotent producers; real Kafka has them.
    idempotent_producer: bool = False
    # Record finished-out-of-order offsets in commit metadata so the next owner skips them
    # (no repeated calls on a graceful handover). Tansu does not keep commit metadata.
    commit_metadata: bool = True
    producer_linger_ms: int = Field(default=5, ge=0)
    max_poll_records: int = Field(default=2000, ge=1)
    # A fetch waits for this many bytes or fetch_max_wait_ms, whichever comes first. Fuller
    # fetches cost the broker and the worker less per record, at up to the wait in latency.
    fetch_min_bytes: int = Field(default=1, ge=1)
    fetch_max_wait_ms: int = Field(default=100, ge=0)


class TopicSettings(_Section):
    """Topic names, sizes and retention. Names are versioned with the wire contract."""

    requests: str = "callstream.requests.v1"
    results: str = "callstream.results.v1"
    dead_letters: str = "callstream.dlq.v1"
    # What the response cache saw, for the predictive cache (with prefetch.enabled).
    access: str = "callstream.access.v1"
    # Accesses are worth hours, not days: the predictive cache reads them as they come.
    access_retention_ms: int = Field(default=6 * 3600 * 1000, ge=60_000)
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=60_000)
    # Dead letters wait for an operator: keep them longer.
    dead_letter_retention_ms: int = Field(default=30 * 24 * 3600 * 1000, ge=60_000)
    create: bool = True
    # Topics a request may name in ``reply_to``; any other is refused (dead letter, not_allowed).
    reply_topics: list[str] = Field(default_factory=list)
    # The largest encoded result or dead letter the worker writes (issue 19). A bigger one is
    # published reduced (README, "Outcome"). It also sets the producer's max_request_size and
    # the topics' max.message.bytes, both plus RECORD_OVERHEAD_BYTES for key and framing.
    max_outcome_bytes: int = Field(default=1_000_000, ge=2 * OUTCOME_ROOM_BYTES)

    @property
    def max_record_bytes(self) -> int:
        """The producer's ``max_request_size`` and the topics' ``max.message.bytes``."""
        return self.max_outcome_bytes + RECORD_OVERHEAD_BYTES


class CallerSettings(_Section):
    """The call stage: how many calls run at once and how often progress is committed."""

    # Provider calls running at once, per worker.
    max_in_flight: int = Field(default=512, ge=1)
    # Each provider's bulkhead unless it sets its own (max_concurrent_calls): a provider whose
    # latency balloons holds at most this many of the max_in_flight calls. None: half of them.
    max_in_flight_per_provider: int | None = Field(default=None, ge=1)
    # Requests read and not finished yet (waiting for tokens, or calling), per worker, shared
    # equally among the partitions it owns, each share at most max_pending_per_partition. A
    # partition that fills its share is paused (consumer.pause), never the fetch loop: a slow
    # provider's backlog stops only its own partition (issue 20). It resumes at half its share.
    max_pending: int = Field(default=20_000, ge=1)
    max_pending_per_partition: int = Field(default=5_000, ge=1)
    commit_interval_s: float = Field(default=0.2, gt=0)
    # On a graceful rebalance in-flight calls finish and their offsets are committed before the
    # partitions are released, so the next owner never repeats them; this caps that wait.
    drain_timeout_s: float = Field(default=30.0, gt=0)
    # A ceiling over every provider's own max_request_bytes (request bodies): body_too_large.
    max_request_bytes: int = Field(default=1_000_000, ge=1)
    # A request record larger than this is refused before decoding (dead letter too_large):
    # decoding a huge event costs the event loop more than it is worth.
    max_request_event_bytes: int = Field(default=1_000_000, ge=1)
    # Characters of one path or query parameter value, and of one header value a request sets
    # (the request model caps header values at 8192 anyway): bad_request past them.
    max_param_chars: int = Field(default=2048, ge=1)
    max_header_value_chars: int = Field(default=8192, ge=1)
    # Below topics.max_outcome_bytes by at least OUTCOME_ROOM_BYTES (checked): a response at
    # the cap still fits its result.
    max_response_bytes: int = Field(default=900_000, ge=1)
    connection_limit: int = Field(default=512, ge=1)
    # The event loop of the worker process: uvloop (libuv) or the standard library's.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"


class WebSettings(_Section):
    """The worker's HTTP endpoint (``/metrics``, ``/healthz``); loopback unless told otherwise."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=6066, ge=0, le=65535)


class ProviderSettings(_Section):
    """Per-provider overrides of the provider's own declaration."""

    enabled: bool = True
    base_url: str | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    rate_per_s: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)
    # Overrides a secret the declaration references (e.g. the API key or token).
    secret: SecretStr | None = None
    # Split the limit into this many shards (rate/N, burst/N each) on different partitions,
    # when one worker cannot serve the whole quota.
    shards: int = Field(default=1, ge=1, le=1024)
    # Its bulkhead: calls to it at once on one worker (None: caller.max_in_flight_per_provider).
    max_concurrent_calls: int | None = Field(default=None, ge=1)


class QuotaRule(_Section):
    """A tenant's quota on a provider; ``*`` matches any. The most specific rule applies."""

    tenant: str = "*"
    provider: str = "*"
    per_second: int | None = Field(default=None, ge=0)
    per_minute: int | None = Field(default=None, ge=0)
    per_day: int | None = Field(default=None, ge=0)
    # reject: a `rejected` result with reason quota_exceeded; queue: wait for the window reset.
    on_exceed: Literal["reject", "queue"] = "reject"


class AdaptiveSettings(_Section):
    """Learning each limit key's real rate from the provider's answers (README, "Adaptive
    rate limits"): the enforced rate moves between a floor and the declared rate (higher when
    the provider's own headers show more)."""

    # off: enforce the declared rate (a 429 only delays its request and holds the key for the
    # provider's Retry-After); aimd: additive increase, multiplicative decrease; cubic: a
    # decrease on a 429 then a cubic probe back to the rate that was refused and, past it,
    # beyond; both grow at least additively (README, "Adaptive rate limits": within a point
    # of each other on bench adaptive; cubic kept more at 200 ms of latency, simulated).
    mode: Literal["off", "aimd", "cubic"] = "cubic"
    # The rate after a 429 is this share of the rate that was refused. 0.9 with recovery_s 12:
    # in a simulation of 60, 80 then 40/s behind a declared 100/s (tests/unit/agents/
    # rate_limiter/simulated_provider.py), cubic kept 94.8% of the real limit with 0.5% of
    # calls refused at 20 ms of latency, 93.4% with 2.0% at 200 ms, each change settled within
    # 17 s; recovery 8 s refused 2.5% at 200 ms; 0.7 swung 30% below the limit.
    decrease: float = Field(default=0.9, gt=0, lt=1)
    # The floor, as a share of the declared rate: never slower than this.
    floor_ratio: float = Field(default=0.05, gt=0, le=1)
    # How far above the declared rate the provider's headers may lift the ceiling.
    max_ceiling_ratio: float = Field(default=2.0, ge=1, le=100)
    # Backlogged seconds a cubic probe takes to climb back to the refused rate; the additive
    # increase under it (and aimd's) climbs from decrease x declared to declared as long.
    recovery_s: float = Field(default=12.0, gt=0, le=600)
    # A 429's Retry-After holds the whole key only when longer than this: "1" (the shortest
    # whole-second answer a token-bucket provider can give) says "soon", and holding the key
    # a second per 429 cost a third of the real limit; the refused request itself always
    # waits its Retry-After.
    hold_retry_after_over_s: float = Field(default=1.0, ge=0)
    # Warn when the learned limit stays below this share of the declared one.
    warn_below_ratio: float = Field(default=0.5, gt=0, le=1)
    # Calls in flight per limit key adapt to latency (agents/provider_caller/concurrency.py):
    # when a key's recent latency exceeds latency_tolerance times its slow average, its
    # limit (at most caller.max_in_flight) shrinks, before the provider starts refusing.
    concurrency: bool = True
    latency_tolerance: float = Field(default=2.0, ge=1.1, le=100)


class LimiterSettings(_Section):
    """Rate limits (from each provider's declaration) and tenant quotas."""

    enabled: bool = True
    adaptive: AdaptiveSettings = AdaptiveSettings()
    # Arrival-time jitter between our send and the provider's clock that the limiter absorbs
    # by keeping this much burst in reserve (see agents/rate_limiter/bucket.py).
    jitter_s: float = Field(default=0.05, ge=0, le=5)
    quotas: list[QuotaRule] = Field(default_factory=list)
    # Requests waiting in one partition's waiting room for a token, per limit key and per
    # tenant; past either cap a request is `rejected` with reason queue_full at once. None
    # (the default) derives them from the smallest share of caller.max_pending a partition
    # can get (min(max_pending_per_partition, max_pending / topics.partitions)): the whole
    # share per key (the partition pauses first: the backlog stays in Kafka) and, with
    # [tenants.*] declared, a quarter of it per tenant, so that one tenant's flood is refused
    # before it pauses a partition that other tenants share.
    max_waiting_per_key: int | None = Field(default=None, ge=1)
    max_waiting_per_tenant: int | None = Field(default=None, ge=1)
    # A request without a deadline waits at most this long (`expired`, reason
    # max_wait_exceeded); one with a deadline waits until its deadline.
    default_max_wait_s: float = Field(default=300.0, gt=0)


class RetrySettings(_Section):
    """Retries of retriable failures (5xx, timeouts, connection errors, 429): durable, jittered,
    budgeted (README, "Retries and durable delays"). An operation's declaration may set its own
    ``max_attempts`` and ``retry_time_budget_s``."""

    # Calls per request, the first included; 1 never retries.
    # 7: at 30% transient failures, 0.3**7 = 0.02% of requests fail every attempt (bench retries).
    max_attempts: int = Field(default=7, ge=1, le=100)
    # Full-jitter exponential backoff: attempt n waits a uniform draw in
    # [0, min(max_delay_s, base_delay_s * 2**(n-1))], and never less than the provider's
    # Retry-After (clamped by its declared limits.max_retry_after_s).
    base_delay_s: float = Field(default=0.2, gt=0)
    max_delay_s: float = Field(default=30.0, gt=0)
    # No attempt starts later than this after the first; always within the request's deadline.
    time_budget_s: float = Field(default=120.0, gt=0)
    # Retry budget per limit key (as Finagle's): retries at most this share of first calls,
    # plus budget_min_per_s, so a failing provider gets at most about (1 + budget_ratio) calls
    # per request, while a quiet key can still retry its rare failure.
    budget_ratio: float = Field(default=0.5, ge=0)
    budget_min_per_s: float = Field(default=10.0, ge=0)

    @model_validator(mode="after")
    def _delays_ordered(self) -> RetrySettings:
        if self.base_delay_s > self.max_delay_s:
            raise ValueError("retry.base_delay_s must be at most retry.max_delay_s")
        return self


class BreakerSettings(_Section):
    """Circuit breakers, one per limit key (issue 21; agents/breaker/state.py says how they
    differ from resilience4j's defaults). Failures are the provider's own: 5xx, timeouts,
    connection errors and invalid answers; a caller's 4xx and a 429 do not count."""

    enabled: bool = True
    window: Literal["count", "time"] = "time"
    # Calls (count) or seconds (time) the failure and slow-call rates are measured over.
    window_size: int = Field(default=10, ge=1, le=3600)
    minimum_calls: int = Field(default=20, ge=1)
    failure_rate_threshold: float = Field(default=0.5, gt=0, le=1)
    slow_call_threshold_s: float = Field(default=5.0, gt=0)
    slow_call_rate_threshold: float = Field(default=1.0, gt=0, le=1)
    # Open this long, then half-open: half_open_calls probes decide between closed and open.
    wait_in_open_s: float = Field(default=30.0, gt=0)
    half_open_calls: int = Field(default=3, ge=1, le=1000)


class CacheSettings(_Section):
    """The response cache (issue 23; README "Response cache"): only operations that declare
    ``cache`` (or ``cache_ttl_s``) are cached. L1 is in the worker's memory, shared by its
    partitions; L2 is each partition's changelogged RocksDB store, kept across restarts and
    handovers."""

    enabled: bool = True
    # L1's eviction policy: s3fifo was chosen on real traces (agents/cache/simulate.py);
    # the others are there to compare (`callstream bench cache`).
    policy: Literal["s3fifo", "lru", "sieve", "wtinylfu"] = "s3fifo"
    l1_max_bytes: int = Field(default=64 << 20, ge=0)
    # 0 turns L2 off (no table, no changelog topic).
    l2_max_bytes_per_partition: int = Field(default=256 << 20, ge=0)
    # An answer larger than this is passed on but not kept.
    max_entry_bytes: int = Field(default=1 << 20, ge=1)
    # Whether an answer from the cache counts toward the tenant's quota (it never takes a
    # rate-limit token: the provider is not called).
    hits_count_toward_quota: bool = False


class PrefetchSettings(_Section):
    """The predictive cache (issue 24; README "Predictive cache"). The worker publishes what its
    cache sees to ``topics.access`` and serves the prefetch requests the predictive-cache agent
    (`callstream prefetcher`) sends back: only on a spare token, within the budget."""

    enabled: bool = False
    # Prefetch calls of a limit key: at most this share of its calls for requests, plus
    # budget_min_per_s, so the predictive cache never costs more than it is told to.
    budget_share: float = Field(default=0.25, ge=0, le=10)
    budget_min_per_s: float = Field(default=1.0, ge=0)
    # Access events are sent in batches: every flush_ms, or at max_batch events.
    flush_ms: int = Field(default=200, ge=10, le=60_000)
    max_batch: int = Field(default=1000, ge=1, le=100_000)
    # The agent (`callstream prefetcher`): how long before an entry expires it decides, and
    # how: "rule" (refresh if read since the last fetch) or "model" (the online model).
    lead_s: float = Field(default=2.0, gt=0, le=3600)
    decider: Literal["rule", "model"] = "rule"


class TenantSettings(_Section):
    """One tenant (``[tenants.NAME]``): the topic that proves it, what it may call, how urgent
    it may be. Configuring any tenant charges every name not configured as ``default``."""

    # Records read from this topic are this tenant's, whatever they claim; Kafka ACLs say who
    # may write it. Same partition count as topics.requests (checked at start-up).
    topic: str | None = Field(default=None, min_length=1, max_length=249)
    # Globs; an operation glob with a dot matches "provider.operation". [] allows nothing.
    providers: list[str] = Field(default_factory=lambda: ["*"])
    operations: list[str] = Field(default_factory=lambda: ["*"])
    # A higher priority is lowered to this (clamped, not refused).
    max_priority: int = Field(default=9, ge=0, le=9)
    # Its share of a limit key's calls against other tenants waiting in the same priority
    # band (fair queuing, agents/rate_limiter/waiting_room.py). Names not in the table: 1.
    weight: float = Field(default=1.0, gt=0, le=1000)


class Settings(BaseSettings):
    """Everything a callstream process can be told."""

    model_config = SettingsConfigDict(
        env_prefix="CALLSTREAM_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,
    )

    app_id: str = Field(default="callstream", pattern=r"^[A-Za-z0-9._-]+$")
    data_dir: Path = Path("var")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    caller: CallerSettings = CallerSettings()
    web: WebSettings = WebSettings()
    limiter: LimiterSettings = LimiterSettings()
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    cache: CacheSettings = CacheSettings()
    prefetch: PrefetchSettings = PrefetchSettings()
    # Providers to activate (by registry name) and their overrides. Empty = every known one.
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    # Tenants bound to topics, their allow-lists and priority caps. Empty = tenant and priority
    # are what publishers write (agents/provider_caller/tenancy.py).
    tenants: dict[str, TenantSettings] = Field(default_factory=dict)
    # Extra directories of provider declaration files (TOML/YAML). They are as trusted as code:
    # a file can name any env var or file as its secret and any base_url to send it to.
    provider_dirs: list[Path] = Field(default_factory=list)
    # Secret references files from provider_dirs may name, as glob patterns ("dir:*",
    # "env:CALLSTREAM_SECRET_*"); a file naming another is refused. Empty = no restriction.
    # The catalog, entry points and [providers.*] settings are operator config, never limited.
    provider_secret_refs: list[str] = Field(default_factory=list)
    # Refuse calls to loopback, private, link-local, unique-local, multicast and unspecified
    # addresses, checked on the resolved address at connect time (defeats DNS rebinding).
    deny_private_networks: bool = False

    @model_validator(mode="after")
    def _responses_fit_outcomes(self) -> Settings:
        """A response at the caller's cap must leave room in its result (issue 19)."""
        room = self.topics.max_outcome_bytes - OUTCOME_ROOM_BYTES
        if self.caller.max_response_bytes > room:
            raise ValueError(
                f"caller.max_response_bytes ({self.caller.max_response_bytes}) must be at most "
                f"topics.max_outcome_bytes - {OUTCOME_ROOM_BYTES} ({room}), so that a response "
                "at the cap still fits its result. Operator action: lower "
                "caller.max_response_bytes or raise topics.max_outcome_bytes."
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then environment, then the config file.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    def faust_options(self) -> dict[str, Any]:
        """The Faust configuration for the worker's host app."""
        return {
            "id": self.app_id,
            "broker": f"kafka://{self.kafka.bootstrap_servers}",
            "store": "memory://",
            "datadir": str(self.data_dir / "faust"),
            "autodiscover": False,
            "web_enabled": self.web.enabled,
            "web_host": self.web.host,
            "web_port": self.web.port,
            "web_bind": self.web.host,
            "broker_session_timeout": self.kafka.session_timeout_s,
            "broker_heartbeat_interval": self.kafka.heartbeat_interval_s,
            "topic_replication_factor": self.topics.replication_factor,
            "producer_linger": self.kafka.producer_linger_ms / 1000,
        }


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings once, turning every validation problem into one clear line.

    Raises:
        ConfigurationError: the file is missing or unreadable, or a value is invalid.
    """
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigurationError(f"config file not found: {config_file}")
        os.environ[CONFIG_FILE_ENV] = str(config_file)
    else:
        _check_config_env()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from None
    except SettingsError as exc:  # a value the environment source cannot parse, e.g. '{'
        raise ConfigurationError(f"invalid setting: {_first_line(exc)}") from None
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigurationError(f"cannot read config file: {exc}") from None


def _check_config_env() -> None:
    """A ``CALLSTREAM_CONFIG`` naming no file is a mistake, not "no config file" (issue 19)."""
    named = os.environ.get(CONFIG_FILE_ENV)
    if named and not Path(named).is_file():
        raise ConfigurationError(f"config file not found: {named} (from {CONFIG_FILE_ENV})")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first bad field, like ``kafka.session_timeout_s: must be > 0``."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "settings"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"invalid setting {where}: {first['msg']}{more}"
