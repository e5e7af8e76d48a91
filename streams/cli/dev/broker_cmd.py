"""`callstream broker start`: a local broker, embedded (Tansu) or Apache Kafka in KRaft mode."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Literal

import typer

from infra.broker import start_broker
from infra.errors import BrokerStartError, InfraError

broker_app = typer.Typer(help="Run a local broker.", no_args_is_help=True)


@broker_app.command("start")
def start(
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="embedded (Tansu, in the wheel) or kafka (Apache Kafka 4.4 from Maven Central).",
        ),
    ] = "embedded",
    nodes: Annotated[int, typer.Option(help="Kafka nodes: 1 or 3.")] = 1,
    port: Annotated[int | None, typer.Option(help="Port of the (first) node.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep data here (kafka only); default: a temporary dir.")
    ] = None,
) -> None:
    """Start a broker on loopback and keep it running until Ctrl-C or SIGTERM."""
    if kind not in ("embedded", "kafka"):
        raise typer.BadParameter("must be 'embedded' or 'kafka'", param_hint="--kind")
    if nodes not in (1, 3) or (kind == "embedded" and nodes != 1):
        raise typer.BadParameter("1 or 3 (kafka only)", param_hint="--nodes")
    chosen: Literal["embedded", "kafka"] = "kafka" if kind == "kafka" else "embedded"
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        broker = start_broker(chosen, nodes=nodes, port=port, data_dir=data_dir)
    except InfraError as exc:
        # One line; a start error's log tail stays in the log file the line names.
        head = InfraError.__str__(exc) if isinstance(exc, BrokerStartError) else str(exc)
        typer.echo(f"callstream: error: {' '.join(head.split())}", err=True)
        raise typer.Exit(2) from None
    try:
        typer.echo(f"{kind} broker ready: bootstrap servers {broker.bootstrap_servers}")
        typer.echo(f"export CALLSTREAM_KAFKA__BOOTSTRAP_SERVERS={broker.bootstrap_servers}")
        stop.wait()
    finally:
        typer.echo("stopping broker...")
        broker.stop()
