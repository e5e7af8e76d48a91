"""The `callstream` command line: registers the commands (the worker is composed in
``streams.composition``)."""

from __future__ import annotations

import logging
import sys
from importlib import import_module
from typing import NamedTuple

import typer

from streams.errors import CallstreamError


class CommandEntry(NamedTuple):
    """Where a command lives, and its one-line help for `callstream --help`."""

    module: str
    attribute: str
    group: bool  # a Typer of subcommands, else one command function
    help: str


# Only the command being run is imported (issue 19: `callstream --help` imported every command
# and its dependencies, Kafka and HTTP clients included); the others are listed from here. A
# unit test checks that each help line matches the command's own.
COMMANDS: dict[str, CommandEntry] = {
    "publish": CommandEntry(
        "streams.cli.publish_cmd",
        "publish",
        False,
        "Publish request events and print their request ids, one per line.",
    ),
    "results": CommandEntry("streams.cli.results_cmd", "results_app", True, "Read outcomes."),
    "dlq": CommandEntry("streams.cli.dlq_cmd", "dlq_app", True, "Inspect and replay dead letters."),
    "breakers": CommandEntry(
        "streams.cli.breakers_cmd",
        "breakers",
        False,
        "Show every circuit breaker's last published state.",
    ),
    "broker": CommandEntry("streams.cli.dev.broker_cmd", "broker_app", True, "Run a local broker."),
    "providers": CommandEntry(
        "streams.cli.providers_cmd",
        "providers_app",
        True,
        "Inspect, validate and check provider declarations.",
    ),
    "bench": CommandEntry(
        "streams.cli.dev.bench_cmd", "bench_app", True, "Benchmarks that print figures."
    ),
    "worker": CommandEntry(
        "streams.cli.worker_cmd",
        "worker",
        False,
        "Run a worker: consume request events, call providers, publish outcomes.",
    ),
    "prefetcher": CommandEntry(
        "streams.cli.prefetcher_cmd",
        "prefetcher",
        False,
        "Run the predictive cache: refresh hot cache entries before they expire.",
    ),
    "dev": CommandEntry(
        "streams.cli.dev.dev_cmd",
        "dev",
        False,
        "Run the whole pipeline locally on the embedded broker with a demo workload.",
    ),
}


def build_app(argv: list[str]) -> typer.Typer:
    """The CLI with the command named in ``argv`` loaded, and every other one as a stub that
    only shows its help line."""
    app = typer.Typer(
        name="callstream",
        help="A Kafka-native pipeline for calling third-party web APIs.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, entry in COMMANDS.items():
        if name == chosen:
            _add_real(app, name, entry)
        elif entry.group:
            app.add_typer(typer.Typer(), name=name, help=entry.help)
        else:
            app.command(name, help=entry.help)(_stub)
    return app


def _add_real(app: typer.Typer, name: str, entry: CommandEntry) -> None:
    target = getattr(import_module(entry.module), entry.attribute)
    if entry.group:
        app.add_typer(target, name=name)
    else:
        app.command(name)(target)


def _stub() -> None:
    """Never run: build_app loads the real command when it is named."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; errors end as one line on stderr and exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    # aiokafka logs a failed connection itself; the command's own error line says it once.
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())
    try:
        app = build_app(args)
        # Without standalone mode, an Exit(code) raised by a command comes back as the return
        # value rather than as an exception.
        code = app(args=args, prog_name="callstream", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("callstream: aborted", err=True)
        return 130
    except typer.TyperException as exc:  # usage errors: bad flag, bad value, missing argument
        if not exc.format_message():  # a group called without a command: help was shown
            return 2
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        typer.echo(f"callstream: error: {exc.format_message()}{hint}", err=True)
        return 2
    except CallstreamError as exc:
        typer.echo(f"callstream: error: {_one_line(exc)}", err=True)
        return 2
    return code if isinstance(code, int) else 0


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
