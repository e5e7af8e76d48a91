"""`callstream worker`: run one worker process, composed by ``streams.composition``."""

from __future__ import annotations

import asyncio

from streams.cli.common import BootstrapOption, ConfigOption, settings_from, use_event_loop


def worker(config: ConfigOption = None, bootstrap: BootstrapOption = None) -> None:
    """Run a worker: consume request events, call providers, publish outcomes."""
    from streams.app import check_web_port
    from streams.composition import run_worker

    settings = settings_from(config, bootstrap)
    check_web_port(settings.web)
    use_event_loop(settings.caller.event_loop)
    run_worker(settings, asyncio.new_event_loop())
