"""`callstream publish`: one request from flags, or many from a JSON-lines file.

Every request is checked against the provider catalog before anything is sent (issue 19): a
request a worker would turn into a dead letter at once (unknown provider or operation, a
missing or invalid parameter, a provider the settings do not activate) is one line and exit
code 2 here instead.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from schemas.models import RequestEvent, now_ms
from streams.cli.common import BootstrapOption, ConfigOption, run, settings_from
from streams.errors import CallstreamError
from streams.settings import Settings, describe_validation_error

if TYPE_CHECKING:
    from providers.base import Provider


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


class CatalogCheck:
    """Checks requests the way a worker with the same settings would admit and build them.

    Secrets are not resolved (the publisher's machine rarely has them): each provider is built
    with a signer that signs nothing, so only its declaration and the request are checked.
    """

    def __init__(self, settings: Settings) -> None:
        from providers.registry import ProviderRegistry

        self._settings = settings
        self._registry = ProviderRegistry(
            spec_dirs=settings.provider_dirs, secret_refs=settings.provider_secret_refs
        )
        self._built: dict[str, Provider] = {}

    def check(self, request: RequestEvent) -> None:
        """Raises:
        InputError: the worker would dead-letter ``request`` without calling anyone.
        """
        from providers.errors import ProviderError

        provider = self._provider(request.provider)
        reply_topics = self._settings.topics.reply_topics
        if request.reply_to is not None and request.reply_to not in reply_topics:
            raise InputError(f"reply_to topic {request.reply_to!r} is not in topics.reply_topics")
        try:
            provider.build_request(request)
        except ProviderError as exc:
            raise InputError(f"{exc.reason}: {exc}") from None

    def _provider(self, name: str) -> Provider:
        if name not in self._built:
            self._built[name] = self._build(name)
        return self._built[name]

    def _build(self, name: str) -> Provider:
        from providers.auth.signer import NoAuthSigner
        from providers.errors import UnknownProvider
        from providers.registry import apply_overrides
        from providers.spec_file import SpecError

        self._check_configured(name)
        try:
            registration = self._registry.registration(name)
            spec = apply_overrides(self._registry.spec(name), self._settings.providers.get(name))
            return registration.factory(spec, signer=NoAuthSigner())
        except (UnknownProvider, SpecError) as exc:
            raise InputError(str(exc)) from None

    def _check_configured(self, name: str) -> None:
        selection = self._settings.providers
        if not selection:  # workers activate every known provider (never a test double)
            known = self._registry.names()
            if name not in known:
                raise InputError(f"unknown provider {name!r}; known: {', '.join(known)}")
            return
        chosen = selection.get(name)
        if chosen is None or not chosen.enabled:
            active = ", ".join(sorted(n for n, o in selection.items() if o.enabled)) or "(none)"
            raise InputError(
                f"provider {name!r} is not configured (active in these settings: {active}); "
                "workers would dead-letter it as unknown_provider"
            )


def check_requests(requests: Sequence[RequestEvent], settings: Settings, where: str = "") -> None:
    """Check every request before any is sent; the first bad one is named.

    Raises:
        InputError: one line naming the request (its line with ``--file``) and the problem.
    """
    checker = CatalogCheck(settings)
    for number, request in enumerate(requests, start=1):
        try:
            checker.check(request)
        except InputError as exc:
            prefix = f"{where}:{number}: " if where else ""
            raise InputError(f"{prefix}{exc}") from None


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
    no_validate: Annotated[
        bool,
        typer.Option(
            "--no-validate",
            help="Skip the check against the provider catalog (for publishers that cannot "
            "see it); a bad request then becomes a dead letter.",
        ),
    ] = False,
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
    if not no_validate:
        check_requests(requests, settings, str(file) if file is not None else "")

    async def send() -> list[str]:
        from streams.sdk import CallstreamClient

        async with CallstreamClient(settings) as client:
            return await client.publish_many(requests)

    for request_id in run(send()):
        typer.echo(request_id)
