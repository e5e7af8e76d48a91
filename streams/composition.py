"""The composition root: the one place that builds a worker from settings and wires the stages.

Only this module imports ``agents`` (checked by ``lint-imports``): everything below it is built
here, inside the event loop the worker will run on (aiokafka's clients bind to it), and handed
over ready. Each component gets only its own part of the settings.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from agents.breaker.board import BreakerBoard
from agents.breaker.state import BreakerPolicy, from_bytes, snapshot
from agents.cache.access import AccessLog
from agents.cache.policy import make_cache
from agents.cache.response_cache import ResponseCache
from agents.cache.tiers import CacheTiers
from agents.provider_caller.bulkhead import Bulkheads
from agents.provider_caller.caller import Caller
from agents.provider_caller.concurrency import ConcurrencyLimits
from agents.provider_caller.fallbacks import Fallbacks
from agents.provider_caller.gateway import HttpGateway
from agents.provider_caller.prefetch_budget import PrefetchBudget
from agents.provider_caller.tenancy import TenantGate, TenantTable
from agents.rate_limiter.adaptive import Mode, RateControl
from agents.rate_limiter.book import LimitBook, ProviderLimit
from agents.rate_limiter.limiter import Limiter, WaitCaps
from agents.rate_limiter.partitions import LimiterPartitions
from agents.rate_limiter.unit_limits import UnitLimits
from agents.retry.planner import RetryPlanner
from providers.base import Provider
from providers.declaration import FallbackSpec, OperationSpec
from providers.errors import UnknownProvider
from providers.http import ClientConfig, ProviderClient
from providers.registry import ProviderRegistry
from providers.spec_file import SpecError
from providers.trust import exposure_warnings
from schemas.codec import Codecs
from streams.app import WorkerApp, create_app
from streams.errors import ConfigurationError
from streams.kafka import consumer_options, producer_options
from streams.logs import quiet
from streams.metrics import Metrics
from streams.routing import PartitionRouter, RouterRefresh
from streams.settings import (
    LimiterSettings,
    ProviderSettings,
    Settings,
    TenantSettings,
)
from streams.stage.delays import DelayLine
from streams.stage.host import StageHost
from streams.stage.loop import PartitionListener, StageLoop
from streams.stage.no_return import PointOfNoReturn
from streams.stage.publisher import OutcomePublisher
from streams.state.broadcast import Broadcast
from streams.state.table import ChangelogTable
from streams.state.topic import ensure_changelog_topic
from streams.topics import (
    access_topic,
    check_copartitioned,
    ensure_topics,
    pipeline_topics,
    tenant_topics,
)

log = logging.getLogger(__name__)

# Allocations (net) between young collections; CPython's default is 700. Every request keeps
# its objects for a whole provider call (50 ms and more) while ~200 others run, so at 700 they
# all survive two young collections and pile into the old generation, whose full collections
# then walk the whole heap several times a second. Measured (bench throughput, 50 ms): the
# collector took ~25% of the worker's time at the default, ~2% with this.
GC_YOUNG_THRESHOLD = 50_000
GC_MIDDLE_THRESHOLD = 20


class Worker(NamedTuple):
    """A composed worker: the Faust app (lifecycle, web) and the stage it hosts."""

    app: WorkerApp
    caller: StageHost


def run_worker(settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
    """Compose a worker on ``loop`` and run it until a signal stops it.

    Raises:
        ConfigurationError, BrokerUnavailable: before anything starts, as one clear line.
    """
    asyncio.set_event_loop(loop)
    with quiet("aiokafka"):
        worker = loop.run_until_complete(compose(settings))
    runner = faust.Worker(
        worker.app, worker.caller, loop=loop, loglevel=settings.log_level, quiet=True
    )
    # Faust's terminal spinner sets the root logger to DEBUG so that it can spin on every
    # record: every debug call in every library then builds a LogRecord (measured: ~8% of the
    # worker's CPU on the call path). Workers log at the level they are given instead.
    runner.spinner = None
    tune_gc()
    runner.execute_from_commandline()


async def compose(settings: Settings) -> Worker:
    """Every component of a worker, wired, nothing started (call inside the worker's loop)."""
    # Checked first, so an unreachable broker or a refused topic is one line from the CLI
    # instead of a traceback from inside the worker.
    tenants = tenant_table(settings)
    bound_topics = list(tenants.topics) if tenants else []  # read beside topics.requests
    access = [access_topic(settings.topics)] if settings.prefetch.enabled else []
    await ensure_topics(
        settings.kafka,
        pipeline_topics(settings.topics) + tenant_topics(settings.topics, bound_topics) + access,
        create=settings.topics.create,
    )
    await check_copartitioned(settings.kafka, settings.topics.requests, bound_topics)
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    metrics = Metrics.create()
    client = ProviderClient(
        ClientConfig(
            limit=settings.caller.connection_limit,
            max_response_bytes=settings.caller.max_response_bytes,
            max_request_bytes=settings.caller.max_request_bytes,
            max_param_chars=settings.caller.max_param_chars,
            max_header_value_chars=settings.caller.max_header_value_chars,
            deny_private_networks=settings.deny_private_networks,
        )
    )
    registry = ProviderRegistry(
        spec_dirs=settings.provider_dirs,
        fetch_token=client.fetch_token,
        secret_refs=settings.provider_secret_refs,
    )
    providers = activate_providers(registry, settings.providers)
    warn_exposure(providers, deny_private_networks=settings.deny_private_networks)
    if not providers:
        raise ConfigurationError("no provider is active: configure at least one provider")
    changelogs = {
        delays_changelog(settings): (settings.topics.partitions, DELAYS_CHANGELOG_CONFIGS)
    }
    if settings.limiter.enabled:
        changelogs[quota_changelog(settings)] = (settings.topics.partitions, {})
    if settings.breaker.enabled:  # every worker reads it whole: one partition
        changelogs[breakers_topic(settings)] = (1, {})
    if cache_l2_on(settings, providers):
        max_bytes = {"max.message.bytes": str(settings.topics.max_record_bytes)}
        changelogs[cache_changelog(settings)] = (settings.topics.partitions, max_bytes)
    for changelog, (partitions, configs) in changelogs.items():
        await ensure_changelog_topic(
            settings.kafka, changelog, partitions, settings.topics.replication_factor, configs
        )
    # Every check is behind us: from here on nothing fails, so no client is left unclosed.
    producer = AIOKafkaProducer(
        **producer_options(settings.kafka, max_record_bytes=settings.topics.max_record_bytes)
    )
    consumer = AIOKafkaConsumer(
        **consumer_options(settings.kafka, group_id=f"{settings.app_id}.caller"),
        **copartitioned(bound_topics),
    )
    router = PartitionRouter()
    listeners: list[PartitionListener] = [
        RouterRefresh(router, lambda: consumer.partitions_for_topic(settings.topics.requests))
    ]
    limiter = None
    if settings.limiter.enabled:
        quotas = quota_table(settings, producer)
        book = limit_book(providers, settings.providers, settings.limiter, settings.tenants)
        limiter = Limiter(
            book,
            quotas,
            metrics,
            caps=wait_caps(settings),
            hold_retry_after_over_s=settings.limiter.adaptive.hold_retry_after_over_s,
            warn_below_ratio=settings.limiter.adaptive.warn_below_ratio,
            units=UnitLimits(
                {name: provider.spec for name, provider in providers.items()},
                book.shards,
                metrics,
                clock=time.time,
                jitter_s=settings.limiter.jitter_s,
            ),
        )
        listeners.append(LimiterPartitions(limiter, quotas))
    gateway = HttpGateway(providers, client, metrics)
    breakers, broadcast = breaker_board(settings, metrics, producer, providers)
    delays = DelayLine(delay_table(settings, producer))

    def delay_gauge() -> None:
        for kind, count in delays.counts().items():
            metrics.delayed.labels(kind).set(count)

    concurrency, concurrency_gauge = concurrency_limits(settings, metrics)
    codecs = Codecs()
    access_log = cache_access_log(settings, metrics, producer, codecs)
    cache = response_cache(settings, metrics, producer, providers, access_log)
    if cache is not None:
        listeners.append(cache.tiers)
    no_return = PointOfNoReturn()  # shared: the loop cancels on revocation only what has not called
    caller = Caller(
        gateway,
        codecs.request,
        reply_topics=settings.topics.reply_topics,
        limiter=limiter,
        owner_of=router.owner_of,
        max_in_flight=settings.caller.max_in_flight,
        max_event_bytes=settings.caller.max_request_event_bytes,
        no_return=no_return,
        tenancy=TenantGate(tenants, codecs.request.encode) if tenants else None,
        retries=RetryPlanner(settings.retry, providers, metrics),
        delays=codecs.delayed,
        encode_request=codecs.request.encode,
        quota_jitter_ms=int(settings.limiter.jitter_s * 1000),
        breakers=breakers,
        max_wait_s=settings.limiter.default_max_wait_s,
        bulkheads=Bulkheads(
            bulkhead_sizes(settings, providers),
            metrics,
            max_in_flight=settings.caller.max_in_flight,
        ),
        fallbacks=Fallbacks(
            declared_fallbacks(providers),
            check=gateway.build,
            limit_key=limiter.limit_key if limiter else lambda request: request.provider,
            encode=codecs.request.encode,
        ),
        concurrency=concurrency,
        cache=cache,
        cache_hits_count_toward_quota=settings.cache.hits_count_toward_quota,
        prefetch_budget=(
            PrefetchBudget(settings.prefetch.budget_share, settings.prefetch.budget_min_per_s)
            if settings.prefetch.enabled
            else None
        ),
    )
    publisher = OutcomePublisher(
        producer,
        codecs,
        metrics,
        results_topic=settings.topics.results,
        dead_letter_topic=settings.topics.dead_letters,
        requests_topic=settings.topics.requests,
        known_providers=gateway.provider_names,
        max_outcome_bytes=settings.topics.max_outcome_bytes,
    )
    loop = StageLoop(
        consumer,
        caller,
        publisher,
        metrics,
        settings.caller,
        listeners=listeners,
        no_return=no_return,
        commit_metadata=settings.kafka.commit_metadata,
        delays=delays,
    )
    host = StageHost(
        "provider_caller",
        consumer=consumer,
        producer=producer,
        loop=loop,
        topics=[settings.topics.requests, *bound_topics],
        gauges=[
            delay_gauge,
            concurrency_gauge,
            *([limiter.update_gauges] if limiter else []),
            *([cache.tiers.update_gauges] if cache else []),
        ],
        closers=[gateway.close],
        background=[
            *([broadcast.follow] if broadcast else []),
            *([limiter.control_forever] if limiter and adaptive_on(settings) else []),
            *([access_log.run_forever] if access_log and cache else []),
        ],
    )
    app = create_app(settings, metrics)
    app.health_probe = host.health
    log.info("providers active: %s", ", ".join(sorted(providers)))
    return Worker(app, host)


def activate_providers(
    registry: ProviderRegistry, selection: Mapping[str, ProviderSettings]
) -> dict[str, Provider]:
    """The providers to serve: those named in settings (fatal if broken), or, when none are
    named, every known provider whose declaration and secrets resolve (others are skipped)."""
    try:
        if selection:
            return registry.activate(selection)
        names = registry.names()
    except (UnknownProvider, SpecError) as exc:
        raise ConfigurationError(str(exc)) from None
    usable = []
    for name in names:
        try:
            registry.create(name)
            usable.append(name)
        except (SpecError, UnknownProvider) as exc:
            log.warning("provider %s skipped: %s", name, exc)
    return registry.activate(usable)


def warn_exposure(providers: Mapping[str, Provider], *, deny_private_networks: bool) -> None:
    """Log, at start-up, providers whose URL is a literal private address or plain http://."""
    specs = (provider.spec for provider in providers.values())
    for line in exposure_warnings(specs, deny_private_networks=deny_private_networks):
        log.warning("%s", line)


def limit_book(
    providers: Mapping[str, Provider],
    overrides: Mapping[str, ProviderSettings],
    limiter: LimiterSettings,
    tenants: Mapping[str, TenantSettings] | None = None,
) -> LimitBook:
    """Each provider's declared limit (settings may override it, and split it into shards),
    the tenant quotas and the tenants' fair-share weights."""
    limits = {
        name: ProviderLimit(
            rate_per_s=provider.spec.limits.rate_per_s,
            burst=provider.spec.limits.burst,
            shards=overrides[name].shards if name in overrides else 1,
        )
        for name, provider in providers.items()
    }
    weights = {name: tenant.weight for name, tenant in (tenants or {}).items()}
    adaptive = limiter.adaptive
    control = RateControl(
        Mode(adaptive.mode),
        declared_per_s=1.0,  # each key's own, in LimitBook.control_for
        decrease=adaptive.decrease,
        floor_ratio=adaptive.floor_ratio,
        max_ceiling_ratio=adaptive.max_ceiling_ratio,
        recovery_s=adaptive.recovery_s,
    )
    return LimitBook(
        limits, limiter.quotas, jitter_s=limiter.jitter_s, weights=weights, adaptive=control
    )


def concurrency_limits(
    settings: Settings, metrics: Metrics
) -> tuple[ConcurrencyLimits | None, Callable[[], None]]:
    """Adaptive calls in flight per limit key (None when off), and their gauge's updater."""
    if not settings.limiter.adaptive.concurrency:
        return None, lambda: None
    limits = ConcurrencyLimits(
        settings.caller.max_in_flight, tolerance=settings.limiter.adaptive.latency_tolerance
    )

    def gauge() -> None:
        for key, limit in limits.limits().items():
            metrics.concurrency_limit.labels(key).set(limit)

    return limits, gauge


def adaptive_on(settings: Settings) -> bool:
    """Whether limit keys learn their real rate (``limiter.adaptive.mode`` not off)."""
    return settings.limiter.adaptive.mode != Mode.OFF.value


def wait_caps(settings: Settings) -> WaitCaps:
    """How much may wait in a partition's waiting room, and for how long (issue 20).

    Unset, the cap per key is a partition's smallest share of ``caller.max_pending`` (a worker
    owning every partition), so it never binds before the partition pauses: the backlog stays
    in Kafka, where it costs nothing. With tenants declared (``[tenants.*]``), a tenant may
    fill a quarter of the share, so one tenant's flood is refused ``queue_full`` before its
    partition pauses with other tenants' records unread behind it. A cap set at or above the
    share is kept, with a warning: it cannot bind before the pause.
    """
    limiter, caller = settings.limiter, settings.caller
    share = max(
        1, min(caller.max_pending_per_partition, caller.max_pending // settings.topics.partitions)
    )
    tenant_share = max(1, share // 4) if settings.tenants else share
    caps = WaitCaps(
        per_key=limiter.max_waiting_per_key or share,
        per_tenant=limiter.max_waiting_per_tenant or tenant_share,
        default_max_wait_s=limiter.default_max_wait_s,
    )
    configured = (("key", limiter.max_waiting_per_key), ("tenant", limiter.max_waiting_per_tenant))
    for name, cap in configured:
        if cap is not None and cap >= share:
            log.warning(
                "limiter.max_waiting_per_%s (%d) is not below a partition's share of "
                "caller.max_pending (%d): the partition pauses before it refuses anything",
                name,
                cap,
                share,
            )
    return caps


def tenant_table(settings: Settings) -> TenantTable | None:
    """The ``[tenants.*]`` table; None when no tenant is configured (no hook on the hot path)."""
    if not settings.tenants:
        return None
    topics = settings.topics
    own = (topics.requests, topics.results, topics.dead_letters, *topics.reply_topics)
    return TenantTable(settings.tenants, pipeline_topics=own)


def copartitioned(bound_topics: list[str]) -> dict[str, Any]:
    """Consumer options giving one worker partition N of the request topic and of every tenant
    topic. Limit keys are owned per partition number (the limiter and quota table see numbers,
    not topics), so the tenant topics must follow the request topic's assignment: the range
    assignor assigns each topic alone, over the same sorted members, so topics with equal
    partition counts are cut the same way; the default round-robin one deals all of them in
    one sequence. Only with tenant topics: switching assignor needs the whole group restarted
    (a mixed group fails to join with InconsistentGroupProtocol, loudly)."""
    if not bound_topics:
        return {}
    return {"partition_assignment_strategy": (RangePartitionAssignor,)}


def quota_changelog(settings: Settings) -> str:
    return f"{settings.app_id}.quotas.changelog.v1"


# Every delay is one record and one tombstone: roll segments hourly (the active segment is never
# compacted) and drop tombstones after an hour, so that an assignment replays about an hour of
# delays plus those still waiting, not a week of tombstones (measured: `callstream bench delays`
# replayed 15,000 records for 5,000 delays waiting).
DELAYS_CHANGELOG_CONFIGS = {"segment.ms": "3600000", "delete.retention.ms": "3600000"}


def declared_fallbacks(
    providers: Mapping[str, Provider],
) -> Callable[[str, str], tuple[FallbackSpec, ...]]:
    """Each operation's declared fallbacks, in order, without calls to providers that are not
    active here (logged: a declaration naming one is a deployment mistake, not a crash)."""
    plans: dict[tuple[str, str], tuple[FallbackSpec, ...]] = {}
    for name, provider in providers.items():
        for operation, spec in provider.spec.operations.items():
            usable = []
            for fallback in spec.fallbacks:
                call = fallback.call
                if call is not None and call.provider not in providers:
                    log.warning(
                        "%s.%s: fallback to %s.%s skipped: %s is not active",
                        name,
                        operation,
                        call.provider,
                        call.operation,
                        call.provider,
                    )
                    continue
                usable.append(fallback)
            if usable:
                plans[name, operation] = tuple(usable)
    return lambda provider, operation: plans.get((provider, operation), ())


def bulkhead_sizes(
    settings: Settings, providers: Mapping[str, Provider]
) -> Callable[[str, str], tuple[str, int]]:
    """The bulkhead of a call: its operation's own when declared, else its provider's
    (``[providers.NAME] max_concurrent_calls``, else ``caller.max_in_flight_per_provider``,
    else half of ``caller.max_in_flight`` when the worker serves several providers, all of it
    when it serves one: a bulkhead keeps room for the others, and a lone provider has none to
    keep; capping it would only cut its throughput, measured at half at 200 in flight)."""
    caller = settings.caller
    default = caller.max_in_flight_per_provider or (
        max(1, caller.max_in_flight // 2) if len(providers) > 1 else caller.max_in_flight
    )

    def bulkhead_for(provider: str, operation: str) -> tuple[str, int]:
        found = providers.get(provider)
        spec = found.spec.operations.get(operation) if found is not None else None
        if spec is not None and spec.max_concurrent_calls is not None:
            return f"{provider}.{operation}", spec.max_concurrent_calls
        override = settings.providers.get(provider)
        size = override.max_concurrent_calls if override is not None else None
        return provider, size or default

    return bulkhead_for


def breaker_board(
    settings: Settings,
    metrics: Metrics,
    producer: AIOKafkaProducer,
    providers: Mapping[str, Provider],
) -> tuple[BreakerBoard | None, Broadcast | None]:
    """One breaker per provider, all with the ``[breaker]`` policy, sharing their changes of
    mode on the breakers topic (agents/breaker/board.py); (None, None) when disabled."""
    if not settings.breaker.enabled:
        return None, None
    policy = BreakerPolicy(**settings.breaker.model_dump(exclude={"enabled"}))
    board: BreakerBoard | None = None

    def adopt(key: bytes, value: bytes) -> None:
        if board is not None:
            board.adopt(key.decode(errors="replace"), value)

    broadcast = Broadcast(
        breakers_topic(settings), kafka=settings.kafka, producer=producer, apply=adopt
    )
    separate = [
        (name, operation)
        for name, provider in providers.items()
        for operation, spec in provider.spec.operations.items()
        if spec.own_breaker
    ]
    board = BreakerBoard(
        lambda _key: policy,
        metrics,
        on_transition=lambda key, raw: broadcast.publish_soon(key.encode(), raw),
        separate=separate,
    )
    return board, broadcast


def breakers_topic(settings: Settings) -> str:
    """Every breaker's last change of mode, keyed by provider (compacted, one partition)."""
    return f"{settings.app_id}.breakers.v1"


def breaker_report(settings: Settings, raw: bytes, *, now: float) -> dict[str, Any]:
    """One value of the breakers topic as `callstream breakers` shows it: its snapshot at
    ``now`` under the ``[breaker]`` policy, and ``opened_at`` (epoch seconds; -inf: never).

    Raises:
        ValueError: ``raw`` is not a breaker state.
    """
    policy = BreakerPolicy(**settings.breaker.model_dump(exclude={"enabled"}))
    state = from_bytes(raw)
    return {**snapshot(state, now=now, policy=policy), "opened_at": state.opened_at}


def cacheable_operations(providers: Mapping[str, Provider]) -> dict[tuple[str, str], OperationSpec]:
    """Every active operation that declares ``cache``, by (provider, operation)."""
    return {
        (name, op_name): op
        for name, provider in providers.items()
        for op_name, op in provider.spec.operations.items()
        if op.cache is not None
    }


def cache_l2_on(settings: Settings, providers: Mapping[str, Provider]) -> bool:
    return (
        settings.cache.enabled
        and settings.cache.l2_max_bytes_per_partition > 0
        and bool(cacheable_operations(providers))
    )


def cache_changelog(settings: Settings) -> str:
    return f"{settings.app_id}.cache.changelog.v1"


def cache_access_log(
    settings: Settings, metrics: Metrics, producer: AIOKafkaProducer, codecs: Codecs
) -> AccessLog | None:
    """Where the cache tells the predictive cache what it saw (None: prefetch disabled)."""
    if not settings.prefetch.enabled:
        return None
    topic = settings.topics.access

    async def send(partition: int, value: bytes) -> object:
        delivery = await producer.send(topic, value=value, partition=partition)
        return await delivery

    return AccessLog(
        send,
        codecs.access.encode,
        metrics,
        partitions=settings.topics.partitions,
        flush_s=settings.prefetch.flush_ms / 1000,
        max_batch=settings.prefetch.max_batch,
    )


def response_cache(
    settings: Settings,
    metrics: Metrics,
    producer: AIOKafkaProducer,
    providers: Mapping[str, Provider],
    access: AccessLog | None = None,
) -> ResponseCache | None:
    """The response cache (agents/cache); None when disabled or nothing is cacheable, so the
    common path pays nothing for it."""
    operations = cacheable_operations(providers)
    if not settings.cache.enabled or not operations:
        return None
    config = settings.cache
    l1 = make_cache(config.policy, config.l1_max_bytes) if config.l1_max_bytes else None
    l2 = None
    if cache_l2_on(settings, providers):
        l2 = ChangelogTable(
            "cache",
            changelog_topic=cache_changelog(settings),
            directory=settings.data_dir / "tables",
            producer=producer,
            kafka=settings.kafka,
        )
    tiers = CacheTiers(l1, l2, metrics, l2_max_bytes=config.l2_max_bytes_per_partition)
    return ResponseCache(
        operations, tiers, metrics, max_entry_bytes=config.max_entry_bytes, access=access
    )


def delays_changelog(settings: Settings) -> str:
    return f"{settings.app_id}.delays.changelog.v1"


def delay_table(settings: Settings, producer: AIOKafkaProducer) -> ChangelogTable:
    """The timer table of durable delays (retries, quota windows): streams/stage/delays.py."""
    return ChangelogTable(
        "delays",
        changelog_topic=delays_changelog(settings),
        directory=settings.data_dir / "tables",
        producer=producer,
        kafka=settings.kafka,
    )


def quota_table(settings: Settings, producer: AIOKafkaProducer) -> ChangelogTable:
    """The quota counts table: rocksdict per partition, compacted changelog topic."""
    return ChangelogTable(
        "quotas",
        changelog_topic=quota_changelog(settings),
        directory=settings.data_dir / "tables",
        producer=producer,
        kafka=settings.kafka,
    )


def tune_gc() -> None:
    """Keep the cyclic collector off the call path (see ``GC_YOUNG_THRESHOLD``).

    Everything built so far (modules, schemas, the app) lives as long as the process: frozen,
    full collections no longer walk it.
    """
    gc.collect()
    gc.freeze()
    _, _, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, GC_MIDDLE_THRESHOLD, oldest)
