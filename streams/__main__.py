"""The `callstream` command line: registers the commands (the worker is composed in
``streams.composition``)."""

from __future__ import annotations

import sys

import typer

from streams.cli.dlq_cmd import dlq_app
from streams.cli.publish_cmd import publish
from streams.cli.results_cmd import results_app
from streams.errors import CallstreamError

app = typer.Typer(
    name="callstream",
    help="A Kafka-native pipeline for calling third-party web APIs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("publish")(publish)
app.add_typer(results_app, name="results")
app.add_typer(dlq_app, name="dlq")


def _register_optional_commands() -> None:
    # Imported here so `callstream --help` stays fast and a broken optional part
    # cannot stop the others from loading.
    from streams.cli.dev.bench_cmd import bench_app
    from streams.cli.dev.broker_cmd import broker_app
    from streams.cli.dev.dev_cmd import dev
    from streams.cli.providers_cmd import providers_app
    from streams.cli.worker_cmd import worker

    app.add_typer(broker_app, name="broker")
    app.add_typer(providers_app, name="providers")
    app.add_typer(bench_app, name="bench")
    app.command("worker")(worker)
    app.command("dev")(dev)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; errors end as one line on stderr and exit code 2."""
    _register_optional_commands()
    try:
        # Without standalone mode, an Exit(code) raised by a command comes back as the return
        # value rather than as an exception.
        code = app(args=argv, prog_name="callstream", standalone_mode=False)
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
        typer.echo(f"callstream: error: {exc}", err=True)
        return 2
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
