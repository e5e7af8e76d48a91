"""`callstream results tail`: print outcomes from the result (or dead-letter) topic."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

import typer

from schemas.models import DeadLetterEvent, ResultEvent
from streams.cli.common import BootstrapOption, ConfigOption, run, settings_from

results_app = typer.Typer(help="Read outcomes.", no_args_is_help=True)


def to_jsonable(event: ResultEvent | DeadLetterEvent) -> dict[str, Any]:
    """JSON-safe form: bodies that are UTF-8 stay text, others become base64."""
    data = event.model_dump(mode="python")
    _text_or_base64(data)
    return data


def _text_or_base64(data: dict[str, Any]) -> None:
    for name, value in list(data.items()):
        if isinstance(value, bytes):
            try:
                data[name] = value.decode()
            except UnicodeDecodeError:
                data[name] = {"base64": base64.b64encode(value).decode()}
        elif isinstance(value, dict):
            _text_or_base64(value)


def printable(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\r``, ``\\x1b``, ``\\u2028``):
    a publisher chooses ids and names, and must not move the cursor or forge lines on the
    reader's terminal (security review, finding 11)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    escaped = repr(char)[1:-1]
    if escaped != char:  # \n, \t, \x1b...
        return escaped
    return f"\\u{ord(char):04x}"  # printable to repr() but not to str.isprintable()


def one_line(event: ResultEvent | DeadLetterEvent) -> str:
    """One line per outcome; everything a publisher or provider chose is escaped."""
    if isinstance(event, DeadLetterEvent):
        message = printable(event.error_message)
        return (
            f"{printable(event.request_id or '-')}  dead_letter  reason={printable(event.reason)} "
            f"stage={printable(event.stage)} error={printable(event.error_type)}: {message}"
        )
    extra = f" reason={printable(event.reason)}" if event.reason else ""
    error = f" error={printable(event.error_message)}" if event.error_message else ""
    return (
        f"{printable(event.request_id)}  {event.status}  "
        f"{printable(event.provider)}.{printable(event.operation)} "
        f"http={event.http_status or '-'} {event.latency_ms:.1f}ms{extra}{error}"
    )


@results_app.command("tail")
def tail(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-F", help="Keep waiting for new outcomes.")
    ] = False,
    count: Annotated[
        int | None, typer.Option("--count", "-n", min=1, help="Stop after N outcomes.")
    ] = None,
    dlq: Annotated[
        bool, typer.Option("--dlq", help="Read dead letters instead of results.")
    ] = False,
    config: ConfigOption = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Print outcomes from the beginning of the topic, each request id once."""
    settings = settings_from(config, bootstrap)

    async def read() -> None:
        from streams.sdk import CallstreamClient

        printed = 0
        async with CallstreamClient(settings) as client:
            stream = (
                client.dead_letters(follow=follow, idle_timeout_s=2.0)
                if dlq
                else client.results(follow=follow, idle_timeout_s=2.0)
            )
            async for event in stream:
                typer.echo(json.dumps(to_jsonable(event)) if as_json else one_line(event))
                printed += 1
                if count is not None and printed >= count:
                    return

    run(read())
