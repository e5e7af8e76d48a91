"""`callstream providers`: list, show, validate and check provider declarations."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import SecretStr

from providers.auth.config import BasicAuth
from providers.auth.secrets import describe_ref, is_reference
from providers.auth.signer import NoAuthSigner
from providers.base import Provider
from providers.declaration import ProviderSpec
from providers.errors import AuthFailed, ProviderError, UnknownProvider
from providers.http import ProviderClient
from providers.registry import ProviderRegistry, Registration, apply_overrides
from providers.response import ProviderReply
from providers.spec_file import SpecError, load_spec_file
from providers.trust import exposure_warnings
from schemas.models import RequestEvent
from streams.cli.common import ConfigOption, settings_from
from streams.errors import CallstreamError
from streams.settings import Settings

providers_app = typer.Typer(
    help="Inspect, validate and check provider declarations.", no_args_is_help=True
)

SpecDirOption = Annotated[
    list[Path] | None,
    typer.Option("--spec-dir", help="Extra directory of provider files (repeatable)."),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, no traceback, in the form every command uses."""
    typer.echo(f"callstream: error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


def _context(
    config: Path | None,
    spec_dirs: list[Path] | None,
    client: ProviderClient | None = None,
    *,
    dev: bool = False,
) -> tuple[ProviderRegistry, Settings]:
    try:
        settings = settings_from(config)
    except CallstreamError as exc:
        fail(str(exc))
    dirs = [*settings.provider_dirs, *(spec_dirs or [])]
    fetch_token = client.fetch_token if client is not None else None
    registry = ProviderRegistry(
        spec_dirs=dirs,
        dev_providers=dev,
        fetch_token=fetch_token,
        secret_refs=settings.provider_secret_refs,  # list and check show what a worker refuses
    )
    return registry, settings


@providers_app.command("list")
def list_providers(
    config: ConfigOption = None,
    spec_dir: SpecDirOption = None,
    dev: Annotated[
        bool, typer.Option("--dev", help="Also list the test doubles (the fake provider).")
    ] = False,
) -> None:
    """List every known provider: name, operations, auth, capability, source."""
    registry, _ = _context(config, spec_dir, dev=dev)
    try:
        registrations = registry.registrations
    except SpecError as exc:
        fail(str(exc))
    for name in sorted(registrations):
        typer.echo(_row(registrations[name]))


def _row(reg: Registration) -> str:
    if reg.spec is None:
        return f"{reg.name:<16} BROKEN  {reg.error}"
    spec = reg.spec
    return (
        f"{reg.name:<16} {len(spec.operations):>2} ops  auth={spec.auth.type:<10} "
        f"capability={spec.capability or '-':<13} {spec.base_url}  ({reg.source})"
    )


@providers_app.command("show")
def show(name: str, config: ConfigOption = None, spec_dir: SpecDirOption = None) -> None:
    """Print a provider's effective declaration as JSON, secrets shown only as references."""
    registry, settings = _context(config, spec_dir)
    try:
        spec = apply_overrides(registry.spec(name), settings.providers.get(name))
    except (SpecError, UnknownProvider) as exc:
        fail(str(exc))
    typer.echo(json.dumps(redacted(spec), indent=2, sort_keys=False))


# Static header names whose literal value is likely a credential: shown as <literal> too.
_SECRET_HEADER = re.compile(
    r"auth|token|key|secret|passw|signature|cookie|session|credential", re.I
)


def redacted(spec: ProviderSpec) -> dict[str, Any]:
    """The spec as JSON data, each secret replaced by its reference (``env:NAME``).

    Secrets are auth's secret fields, the Basic username (Stripe's is the secret key) and
    static header values written as references, or with a credential-like name.
    """
    data = spec.model_dump(mode="json", by_alias=True)
    for key, value in dict(spec.auth).items():
        if isinstance(value, SecretStr):
            data["auth"][key] = describe_ref(value)
    if isinstance(spec.auth, BasicAuth):
        data["auth"]["username"] = describe_ref(spec.auth.username)
    data["headers"] = {name: _shown_header(name, v) for name, v in spec.headers.items()}
    return data


def _shown_header(name: str, value: str) -> str:
    if is_reference(value) or _SECRET_HEADER.search(name):
        return describe_ref(value)
    return value


@providers_app.command("validate")
def validate(
    file: Annotated[Path, typer.Argument(help="A .toml, .yaml or .yml file.")],
    config: ConfigOption = None,
) -> None:
    """Check one declaration file; print ``ok: NAME (N operations)`` or the first bad field.

    The warnings a worker logs at start-up for this provider (a private address or plain
    http:// in its URLs) go to stderr as ``warning:`` lines; they do not change the exit code.
    """
    try:
        spec = load_spec_file(file)
        Provider(spec, signer=NoAuthSigner())  # compiles every operation
    except SpecError as exc:
        fail(str(exc))
    try:  # whether a worker would refuse the private addresses, as its warning says
        deny_private_networks = settings_from(config).deny_private_networks
    except CallstreamError as exc:
        fail(str(exc))
    for line in exposure_warnings([spec], deny_private_networks=deny_private_networks):
        typer.echo(f"warning: {line}", err=True)
    typer.echo(f"ok: {spec.name} ({len(spec.operations)} operations)")


@providers_app.command("check")
def check(
    name: str,
    operation: Annotated[str | None, typer.Option(help="Operation to call.")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Parameter k=v (repeatable).")] = None,
    base_url: Annotated[str | None, typer.Option(help="Call this base URL instead.")] = None,
    config: ConfigOption = None,
    spec_dir: SpecDirOption = None,
) -> None:
    """Make one real call and report the HTTP status, whether auth was accepted, the latency."""
    client = ProviderClient()  # its session opens inside the event loop, in _call_and_report
    registry, settings = _context(config, spec_dir, client)
    try:
        provider = registry.create(
            name, settings.providers.get(name), {"base_url": base_url} if base_url else None
        )
    except (SpecError, UnknownProvider) as exc:
        fail(str(exc))
    event = _check_event(provider.spec, operation, param or [])
    raise typer.Exit(asyncio.run(_call_and_report(client, provider, event)))


def _check_event(spec: ProviderSpec, operation: str | None, pairs: list[str]) -> RequestEvent:
    default = spec.check
    op = operation or (default.operation if default else next(iter(spec.operations)))
    if op not in spec.operations:
        fail(f"{spec.name} has no operation {op!r}; operations: {', '.join(spec.operations)}")
    params = dict(default.params) if default and op == default.operation else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--param expects key=value, got {pair!r}")
        params[key] = value
    return RequestEvent(provider=spec.name, operation=op, params=params)


async def _call_and_report(client: ProviderClient, provider: Provider, event: RequestEvent) -> int:
    started = time.perf_counter()
    async with client:
        try:
            result = await client.call(provider, event)
        except ProviderError as exc:
            elapsed_ms = (time.perf_counter() - started) * 1000
            typer.echo(_failure_line(provider, event, exc, elapsed_ms), err=True)
            return 1
    typer.echo(_success_line(provider, event, result))
    return 0


def _auth_word(provider: Provider, accepted: bool) -> str:
    if provider.spec.auth.type == "none":
        return "no auth"
    return "auth accepted" if accepted else "auth REJECTED"


def _success_line(provider: Provider, event: RequestEvent, reply: ProviderReply) -> str:
    limits = ", ".join(
        f"{dim} {info.remaining}/{info.limit}"
        + (f" resets in {info.reset_after_s:.0f} s" if info.reset_after_s is not None else "")
        for dim, info in reply.rate_limits.items()
    )
    return (
        f"{provider.name}.{event.operation}: HTTP {reply.status}, "
        f"{_auth_word(provider, True)}, {reply.latency_s * 1000:.0f} ms"
        + (f", rate limit {limits}" if limits else "")
        + (f", cost {reply.cost:g}" if reply.cost else "")
    )


def _failure_line(
    provider: Provider, event: RequestEvent, exc: ProviderError, elapsed_ms: float
) -> str:
    status = f"HTTP {exc.http_status}" if exc.http_status is not None else "no HTTP answer"
    auth = _auth_word(provider, not isinstance(exc, AuthFailed))
    if exc.http_status is None and not isinstance(exc, AuthFailed):
        auth = "auth not tried"
    message = " ".join(str(exc).split())
    return (
        f"{provider.name}.{event.operation}: {status}, {auth}, {elapsed_ms:.0f} ms: "
        f"{exc.reason}: {message}"
    )
