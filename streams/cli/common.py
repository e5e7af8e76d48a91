"""Shared pieces of the command line: settings from flags, one-line errors, asyncio entry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from streams.settings import Settings, load_settings

T = TypeVar("T")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML config file (also CALLSTREAM_CONFIG).",
        exists=False,
        dir_okay=False,
    ),
]
BootstrapOption = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        "-b",
        help="Kafka bootstrap servers (also CALLSTREAM_KAFKA__BOOTSTRAP_SERVERS).",
    ),
]


def settings_from(config: Path | None, bootstrap: str | None = None, **extra: Any) -> Settings:
    """Settings from file and environment, with command-line flags taking precedence."""
    base = load_settings(config)
    if bootstrap is None and not extra:
        return base
    kafka = (
        base.kafka.model_copy(update={"bootstrap_servers": bootstrap}) if bootstrap else base.kafka
    )
    return base.model_copy(update={"kafka": kafka, **extra})


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; Ctrl-C ends it quietly."""
    return asyncio.run(coro)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiokafka reports every rebalance step at INFO; operators need the warnings.
    logging.getLogger("aiokafka").setLevel(
        max(logging.WARNING, logging.getLevelName(level.upper()))
    )


def use_event_loop(kind: str) -> None:
    """Install the event-loop policy for loops created from now on in this process."""
    if kind == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
