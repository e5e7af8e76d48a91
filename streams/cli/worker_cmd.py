"""`callstream worker`: build every component from settings and run them in one process."""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping

import faust
from aiokafka import AIOKafkaProducer

from agents.provider_caller.agent import CallerService
from agents.provider_caller.caller import Caller
from agents.provider_caller.gateway import HttpGateway
from agents.provider_caller.guard import CallGuard
from agents.provider_caller.runtime import PartitionListener
from agents.rate_limiter.agent import LimiterPartitions, limit_book
from agents.rate_limiter.limiter import Limiter, MemoryQuotaStore
from providers.base import Provider
from providers.errors import UnknownProvider
from providers.http import ClientConfig, ProviderClient
from providers.registry import ProviderRegistry
from providers.spec_file import SpecError
from schemas.codec import Codecs
from schemas.models import DeadLetterEvent, ResultEvent
from streams.app import PipelineApp, create_app
from streams.cli.common import (
    BootstrapOption,
    ConfigOption,
    run,
    settings_from,
    use_event_loop,
)
from streams.errors import ConfigurationError
from streams.logs import quiet
from streams.metrics import Metrics
from streams.routing import PartitionRouter
from streams.settings import ProviderSettings, Settings
from streams.state.table import ChangelogTable
from streams.state.topic import ensure_changelog_topic
from streams.topics import ensure_topics, pipeline_topics

log = logging.getLogger(__name__)

# Allocations (net) between young collections; CPython's default is 700. Every request keeps
# its objects for a whole provider call (50 ms and more) while ~200 others run, so at 700 they
# all survive two young collections and pile into the old generation, whose full collections
# then walk the whole heap several times a second. Measured (bench throughput, 50 ms): the
# collector took ~25% of the worker's time at the default, ~2% with this.
GC_YOUNG_THRESHOLD = 50_000
GC_MIDDLE_THRESHOLD = 20


class CodecEncoder:
    """The publisher's encoder, over the Avro codecs."""

    def __init__(self, codecs: Codecs) -> None:
        self._codecs = codecs

    def encode_result(self, event: ResultEvent) -> bytes:
        return self._codecs.result.encode(event)

    def encode_dead_letter(self, event: DeadLetterEvent) -> bytes:
        return self._codecs.dead_letter.encode(event)


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


async def quota_table(settings: Settings, producer: AIOKafkaProducer) -> ChangelogTable:
    """The quota counts table: rocksdict per partition, compacted changelog topic."""
    topic = f"{settings.app_id}.quotas.changelog.v1"
    await ensure_changelog_topic(
        settings.kafka, topic, settings.topics.partitions, settings.topics.replication_factor
    )
    return ChangelogTable(
        "quotas",
        changelog_topic=topic,
        directory=settings.data_dir / "tables",
        producer=producer,
        kafka=settings.kafka,
    )


def build_worker(settings: Settings) -> tuple[PipelineApp, CallerService]:
    """The composition root: every component, wired, nothing started."""
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    metrics = Metrics.create()
    codecs = Codecs()
    client = ProviderClient(
        ClientConfig(
            limit=settings.caller.connection_limit,
            max_response_bytes=settings.caller.max_response_bytes,
        )
    )
    registry = ProviderRegistry(spec_dirs=settings.provider_dirs, fetch_token=client.fetch_token)
    providers = activate_providers(registry, settings.providers)
    if not providers:
        raise ConfigurationError("no provider is active: configure at least one provider")
    gateway = HttpGateway(providers, client, metrics)
    limiter = (
        Limiter(limit_book(settings, providers), MemoryQuotaStore(), metrics)
        if settings.limiter.enabled
        else None
    )
    router = PartitionRouter()
    guard = CallGuard()  # shared: the loop cancels on revocation only what has not called
    caller = Caller(
        gateway,
        codecs.request,
        reply_topics=settings.topics.reply_topics,
        limiter=limiter,
        owner_of=router.owner_of,
        max_in_flight=settings.caller.max_in_flight,
        guard=guard,
    )

    async def partition_state(producer: AIOKafkaProducer) -> list[PartitionListener]:
        if limiter is None:
            return []
        table = await quota_table(settings, producer)
        limiter.use_quota_store(table)
        return [LimiterPartitions(limiter, table)]

    service = CallerService(
        settings,
        caller,
        CodecEncoder(codecs),
        metrics,
        known_providers=gateway.provider_names,
        router=router,
        guard=guard,
        listener_factory=partition_state,
        gauges=limiter.update_gauges if limiter else None,
        closers=[gateway.close],
    )
    app = create_app(settings, metrics)
    app.health_probe = service.health
    log.info("providers active: %s", ", ".join(sorted(providers)))
    return app, service


def worker(config: ConfigOption = None, bootstrap: BootstrapOption = None) -> None:
    """Run a worker: consume request events, call providers, publish outcomes."""
    settings = settings_from(config, bootstrap)
    use_event_loop(settings.caller.event_loop)
    # Checked before Faust starts, so an unreachable broker or a refused topic is one line
    # from the CLI instead of a traceback from inside the worker.
    topics = pipeline_topics(settings.topics)
    with quiet("aiokafka"):
        run(ensure_topics(settings.kafka, topics, create=settings.topics.create))
    app, service = build_worker(settings)
    runner = faust.Worker(app, service, loglevel=settings.log_level, quiet=True)
    # Faust's terminal spinner sets the root logger to DEBUG so that it can spin on every
    # record: every debug call in every library then builds a LogRecord (measured: ~8% of the
    # worker's CPU on the call path). Workers log at the level they are given instead.
    runner.spinner = None
    tune_gc()
    runner.execute_from_commandline()


def tune_gc() -> None:
    """Keep the cyclic collector off the call path (see ``GC_YOUNG_THRESHOLD``).

    Everything built so far (modules, schemas, the app) lives as long as the process: frozen,
    full collections no longer walk it.
    """
    gc.collect()
    gc.freeze()
    _, _, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, GC_MIDDLE_THRESHOLD, oldest)
