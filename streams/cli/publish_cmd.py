"""`callstream publish`: one request from flags, or many from a JSON-lines file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from schemas.models import RequestEvent, now_ms
from streams.cli.common import BootstrapOption, ConfigOption, run, settings_from
from streams.errors import CallstreamError
from streams.sdk import CallstreamClient
from streams.settings import describe_validation_error


class InputError(CallstreamError):
    """A request given on the command line or in a file is invalid."""


def parse_params(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError(f"--param expects NAME=VALUE, got {pair!r}")
        params[name] = value
    return params


def request_from_json(line: str, where: str) -> RequestEvent:
    """A request from one JSON object; ``body`` may be a string (sent as UTF-8)."""
    try:
        data: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object")
    if isinstance(data.get("body"), str):
        data["body"] = data["body"].encode()
    try:
        return RequestEvent.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{where}: {describe_validation_error(exc)}") from None


def read_requests(path: Path) -> list[RequestEvent]:
    """Every request of a JSON-lines file ('-' is stdin), all validated before any is sent."""
    if str(path) == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
    return [
        request_from_json(line, f"{path}:{number}")
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]


def publish(
    provider: Annotated[str | None, typer.Option(help="Provider name.")] = None,
    operation: Annotated[str | None, typer.Option(help="Operation of the provider.")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE, repeatable.")
    ] = None,
    tenant: Annotated[str, typer.Option(help="Tenant the request is made for.")] = "default",
    priority: Annotated[int, typer.Option(min=0, max=9, help="0 (prefetch) .. 9.")] = 5,
    deadline_ms: Annotated[int | None, typer.Option(help="Deadline, ms from now.")] = None,
    body: Annotated[str | None, typer.Option(help="Request body (UTF-8).")] = None,
    content_type: Annotated[str | None, typer.Option(help="Content type of the body.")] = None,
    idempotency_key: Annotated[str, typer.Option(help="Defaults to the request id.")] = "",
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="JSON-lines file of requests; '-' reads stdin."),
    ] = None,
    config: ConfigOption = None,
    bootstrap: BootstrapOption = None,
) -> None:
    """Publish request events and print their request ids, one per line."""
    if file is not None:
        requests = read_requests(file)
    else:
        if not provider or not operation:
            raise InputError("give --provider and --operation, or --file")
        fields: dict[str, Any] = {
            "provider": provider,
            "operation": operation,
            "params": parse_params(param or []),
            "tenant": tenant,
            "priority": priority,
            "body": body.encode() if body else None,
            "content_type": content_type,
            "idempotency_key": idempotency_key,
        }
        if deadline_ms is not None:
            fields["deadline_at_ms"] = now_ms() + deadline_ms
        try:
            requests = [RequestEvent.model_validate(fields)]
        except ValidationError as exc:
            raise InputError(describe_validation_error(exc)) from None
    settings = settings_from(config, bootstrap)

    async def send() -> list[str]:
        async with CallstreamClient(settings) as client:
            return await client.publish_many(requests)

    for request_id in run(send()):
        typer.echo(request_id)
