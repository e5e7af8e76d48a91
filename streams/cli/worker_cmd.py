"""`callstream worker`: build every component from settings and run them in one process."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import faust

from agents.provider_caller.agent import CallerService
from agents.provider_caller.caller import Caller
from agents.provider_caller.gateway import HttpGateway
from providers.base import Provider
from providers.errors import UnknownProvider
from providers.http import ClientConfig, ProviderClient
from providers.registry import ProviderRegistry
from providers.spec_file import SpecError
from schemas.codec import Codecs
from schemas.models import DeadLetterEvent, ResultEvent
from streams.app import PipelineApp, create_app
from streams.cli.common import BootstrapOption, ConfigOption, settings_from
from streams.errors import ConfigurationError
from streams.metrics import Metrics
from streams.settings import ProviderSettings, Settings

log = logging.getLogger(__name__)


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


def build_worker(settings: Settings) -> tuple[PipelineApp, CallerService]:
    """The composition root: every component, wired, nothing started."""
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    metrics = Metrics.create()
    codecs = Codecs()
    client = ProviderClient(ClientConfig(limit=settings.caller.connection_limit,
                                         max_response_bytes=settings.caller.max_response_bytes))
    registry = ProviderRegistry(spec_dirs=settings.provider_dirs, fetch_token=client.fetch_token)
    providers = activate_providers(registry, settings.providers)
    if not providers:
        raise ConfigurationError("no provider is active: configure at least one provider")
    gateway = HttpGateway(providers, client, metrics)
    caller = Caller(gateway, codecs.request, reply_topics=settings.topics.reply_topics)
    service = CallerService(settings, caller, CodecEncoder(codecs), metrics,
                            known_providers=gateway.provider_names, closers=[gateway.close])
    app = create_app(settings, metrics)
    app.health_probe = service.health
    log.info("providers active: %s", ", ".join(sorted(providers)))
    return app, service


def worker(config: ConfigOption = None, bootstrap: BootstrapOption = None) -> None:
    """Run a worker: consume request events, call providers, publish outcomes."""
    settings = settings_from(config, bootstrap)
    app, service = build_worker(settings)
    runner = faust.Worker(app, service, loglevel=settings.log_level, quiet=True)
    # Faust's terminal spinner sets the root logger to DEBUG so that it can spin on every
    # record: every debug call in every library then builds a LogRecord (measured: ~8% of the
    # worker's CPU on the call path). Workers log at the level they are given instead.
    runner.spinner = None
    runner.execute_from_commandline()
