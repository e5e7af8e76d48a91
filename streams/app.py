"""The Faust app that hosts a worker: lifecycle, signals, the web endpoint, and its services."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

import faust
from faust.app import BootStrategy
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streams.errors import ConfigurationError
from streams.metrics import Metrics
from streams.settings import Settings, WebSettings


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


def check_web_port(web: WebSettings) -> None:
    """Check, before anything starts, that the worker's web endpoint can bind its port.

    A second worker on one host otherwise died with a traceback from deep inside Faust's web
    server after joining its consumer group (issue 19).

    Raises:
        ConfigurationError: the port is taken, naming the setting that moves it.
    """
    if not web.enabled or web.port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((web.host, web.port))
        except OSError as exc:
            what = "is already in use" if exc.errno == errno.EADDRINUSE else f"fails: {exc}"
            raise ConfigurationError(
                f"web.port: binding {web.host}:{web.port} {what} (another worker on this "
                "host?). Operator action: give each worker its own port with "
                "CALLSTREAM_WEB__PORT (web.port), or turn the endpoint off with "
                "CALLSTREAM_WEB__ENABLED=false"
            ) from None


def add_metrics_page(app: faust.App, registry: CollectorRegistry) -> None:
    """Serve ``registry`` on the app's ``/metrics`` (the worker's, the prefetcher's)."""

    @app.page("/metrics")  # type: ignore[arg-type]  # Faust types views as View methods
    async def prometheus_metrics(
        web: faust.web.Web, request: faust.web.Request
    ) -> faust.web.Response:
        # aiohttp refuses a charset in content_type=; the header carries Prometheus' full type.
        return web.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(settings: Settings, metrics: Metrics) -> WorkerApp:
    """Build the app from settings; services (the call stage) are attached by the caller."""
    app = WorkerApp(**settings.faust_options())
    app.metrics = metrics

    add_metrics_page(app, metrics.registry)

    @app.page("/healthz")  # type: ignore[arg-type]
    async def health(web: faust.web.Web, request: faust.web.Request) -> faust.web.Response:
        state = app.health_probe()
        # Ready means the call stage owns partitions or has at least joined its group.
        return web.json(state, status=200 if state.get("ready") else 503)

    return app
