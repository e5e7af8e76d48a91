"""`callstream prefetcher`: run the predictive-cache agent, composed by
``streams.composition_prefetch``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from streams.cli.common import BootstrapOption, ConfigOption, settings_from, use_event_loop

WebPortOption = Annotated[
    int | None,
    typer.Option(
        "--web-port",
        min=0,
        max=65535,
        help="Port of its /metrics and /healthz endpoint (default: web.port + 1).",
    ),
]


def prefetcher(
    config: ConfigOption = None, bootstrap: BootstrapOption = None, web_port: WebPortOption = None
) -> None:
    """Run the predictive cache: refresh hot cache entries before they expire."""
    from streams.composition_prefetch import check_port, prefetcher_web, run_prefetcher

    settings = settings_from(config, bootstrap)
    web = prefetcher_web(settings, web_port)
    check_port(web)
    use_event_loop(settings.caller.event_loop)
    run_prefetcher(settings, asyncio.new_event_loop(), web=web)
