"""`callstream worker`: run one worker process, composed by ``streams.composition``."""

from __future__ import annotations

import asyncio

from streams.cli.common import BootstrapOption, ConfigOption, settings_from, use_event_loop


def worker(config: ConfigOption = None, bootstrap: BootstrapOption = None) -> None:
    """Run a worker: consume request events, call providers, publish outcomes."""
    from streams.composition import run_worker  # imported here: `callstream --help` stays fast

    settings = settings_from(config, bootstrap)
    use_event_loop(settings.caller.event_loop)
    run_worker(settings, asyncio.new_event_loop())
