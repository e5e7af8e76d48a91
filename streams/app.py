"""The Faust app that hosts a worker: lifecycle, signals, the web endpoint, and its services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from faust.app import BootStrategy
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.metrics import Metrics
from streams.settings import Settings


class HostBootStrategy(BootStrategy):
    """Faust hosts the worker's lifecycle, signals, sensors and web endpoint, not its Kafka I/O.

    The call stage runs its own aiokafka clients (see ``streams.stage.loop``) and
    the app declares no Faust agents, topics or tables, so Faust's consumer, producer and
    conductor would only join a group of their own and poll it: measured, that thread alone
    took ~3% of a busy worker's CPU. A stage built on Faust agents must turn these back on.
    """

    enable_kafka = False


class WorkerApp(faust.App):
    """A Faust app that knows its metrics bundle."""

    BootStrategy = HostBootStrategy

    metrics: Metrics
    # Set by the composition root: whether the worker is ready to process, and details.
    health_probe: Callable[[], dict[str, Any]] = staticmethod(lambda: {"ready": False})


def create_app(settings: Settings, metrics: Metrics) -> WorkerApp:
    """Build the app from settings; services (the call stage) are attached by the caller."""
    app = WorkerApp(**settings.faust_options())
    app.metrics = metrics

    @app.page("/metrics")  # type: ignore[arg-type]  # Faust types views as View methods
    async def prometheus_metrics(
        web: faust.web.Web, request: faust.web.Request
    ) -> faust.web.Response:
        # aiohttp refuses a charset in content_type=; the header carries Prometheus' full type.
        return web.bytes(
            generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    @app.page("/healthz")  # type: ignore[arg-type]
    async def health(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
        state = app.health_probe()
        # Ready means the call stage owns partitions or has at least joined its group.
        return web.json(state, status=200 if state.get("ready") else 503)

    return app
