"""Where providers come from (catalog, entry points, declaration files) and which are active."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr, ValidationError

from providers.auth.errors import AuthConfigError
from providers.auth.oauth2_flow import FetchToken
from providers.auth.secrets import resolve_values
from providers.base import Provider
from providers.catalog import catalog_files
from providers.declaration import ProviderSpec
from providers.errors import UnknownProvider
from providers.spec_file import SPEC_SUFFIXES, SpecError, load_spec_file, summarise
from providers.trust import check_secret_refs

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "callstream.providers"
# Test doubles (the fake provider). Never part of the known set a worker activates by default:
# loaded only when asked, by name (settings that select it) or with ``dev_providers=True``.
DEV_ENTRY_POINT_GROUP = "callstream.dev_providers"
# The field of each auth type that a settings-level ``secret`` replaces.
_SECRET_FIELD = {
    "api_key": "key", "bearer": "token", "basic": "password",
    "oauth2_client_credentials": "client_secret", "hmac": "secret", "mtls": "key_password",
}  # fmt: skip


class ProviderOverrides(Protocol):
    """Per-provider settings (``streams.settings.ProviderSettings`` fits)."""

    @property
    def enabled(self) -> bool: ...
    @property
    def base_url(self) -> str | None: ...
    @property
    def timeout_s(self) -> float | None: ...
    @property
    def rate_per_s(self) -> float | None: ...
    @property
    def burst(self) -> int | None: ...
    @property
    def secret(self) -> SecretStr | None: ...


Overrides = ProviderOverrides | Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Registration:
    """A known provider: its spec and class, or why it cannot be used."""

    name: str
    source: str
    spec: ProviderSpec | None = None
    factory: type[Provider] = Provider
    error: str | None = None
    # From DEV_ENTRY_POINT_GROUP: a test double, never served unless asked for.
    dev: bool = False


class ProviderRegistry:
    """Known providers by name; later sources win: catalog < entry points < directories.

    Files from ``spec_dirs`` are as trusted as code; ``secret_refs`` (glob patterns, such as
    ``dir:*``) limits the secret references they may name, and a file naming another is
    refused. The catalog, entry points and settings overrides are not limited.

    Test doubles (``callstream.dev_providers``) are not known by default: ``names()`` and so a
    worker's default selection never include them. They are loaded when asked for: by name
    (``registration``, ``create``, ``activate`` of a name the product does not declare, as
    ``callstream dev``, the benchmarks and the tests do through ``[providers.fake]``), or all of
    them with ``dev_providers=True`` (``callstream providers list --dev``).
    """

    def __init__(
        self,
        *,
        spec_dirs: Iterable[Path] = (),
        use_entry_points: bool = True,
        use_catalog: bool = True,
        dev_providers: bool = False,
        fetch_token: FetchToken | None = None,
        secret_refs: Sequence[str] = (),
    ) -> None:
        self._spec_dirs = tuple(Path(d) for d in spec_dirs)
        self._secret_refs = tuple(secret_refs)
        self._use_entry_points, self._use_catalog = use_entry_points, use_catalog
        self._dev_providers = dev_providers
        self._fetch_token = fetch_token
        self._known: dict[str, Registration] | None = None
        self._asked: dict[str, Registration | None] = {}  # dev providers looked up by name
        self._active: dict[str, Provider] = {}

    @property
    def registrations(self) -> Mapping[str, Registration]:
        if self._known is None:
            self._known = self._discover()
        return self._known

    def names(self) -> list[str]:
        return sorted(self.registrations)

    def registration(self, name: str) -> Registration:
        """The registration of ``name``, or UnknownProvider listing the known names."""
        reg = self.registrations.get(name) or self._dev_registration(name)
        if reg is None:
            known = ", ".join(self.names()) or "(none)"
            raise UnknownProvider(f"unknown provider {name!r}; known: {known}")
        return reg

    def spec(self, name: str) -> ProviderSpec:
        """The declared spec, or SpecError when its source is broken."""
        reg = self.registration(name)
        if reg.spec is None:
            raise SpecError(f"{name} ({reg.source}): {reg.error}")
        return reg.spec

    def create(self, name: str, *overrides: Overrides) -> Provider:
        """A new provider with overrides applied in order and its signer built.

        Raises:
            UnknownProvider: no such name; SpecError: broken source, bad override or secret.
        """
        spec = self.spec(name)
        for layer in overrides:
            spec = apply_overrides(spec, layer)
        try:
            if spec.headers:  # static header values may be secret references too
                spec = spec.model_copy(update={"headers": resolve_values(spec.headers)})
            return self.registration(name).factory(spec, fetch_token=self._fetch_token)
        except AuthConfigError as exc:
            raise SpecError(f"{name}: {exc}") from None

    def activate(self, selection: Mapping[str, Overrides] | Iterable[str]) -> dict[str, Provider]:
        """Create the selected providers (skipping ``enabled=False``); they replace the active set.

        Raises:
            UnknownProvider or SpecError for the first name that cannot be activated.
        """
        chosen = selection if isinstance(selection, Mapping) else dict.fromkeys(selection)
        self._active = {
            name: self.create(name, o) for name, o in chosen.items() if _enabled(o)
        }  # fmt: skip
        for name in self._active:
            if self.registration(name).dev:
                log.warning("provider %s is a test double (%s): not for production use",
                            name, DEV_ENTRY_POINT_GROUP)  # fmt: skip
        return dict(self._active)

    def get(self, name: str) -> Provider:
        """An active provider (the per-request lookup), or UnknownProvider."""
        provider = self._active.get(name)
        if provider is None:
            active = ", ".join(sorted(self._active)) or "(none)"
            raise UnknownProvider(f"provider {name!r} is not active; active: {active}")
        return provider

    def _dev_registration(self, name: str) -> Registration | None:
        """The test double called ``name``, looked up only because it was asked for."""
        if not self._use_entry_points or self._dev_providers:
            return None  # not wanted, or already among the known
        if name not in self._asked:
            found = _from_entry_points(DEV_ENTRY_POINT_GROUP, only=name)
            self._asked[name] = _without_duplicates(found).get(name)
        return self._asked[name]

    def _discover(self) -> dict[str, Registration]:
        known: dict[str, Registration] = {}
        use_dev = self._use_entry_points and self._dev_providers
        layers = [
            _from_files(catalog_files(), "catalog", short=True) if self._use_catalog else [],
            _from_entry_points(ENTRY_POINT_GROUP) if self._use_entry_points else [],
            _from_entry_points(DEV_ENTRY_POINT_GROUP) if use_dev else [],
            *(_from_files(_spec_files(d), str(d), self._secret_refs) for d in self._spec_dirs),
        ]
        for layer in layers:
            known.update(_without_duplicates(layer))
        return known


def apply_overrides(spec: ProviderSpec, overrides: Overrides) -> ProviderSpec:
    """``spec`` with settings applied (a mapping replaces top-level fields, merging tables)."""
    if overrides is None:
        return spec
    changes = dict(overrides) if isinstance(overrides, Mapping) else _changes(spec, overrides)
    changes.pop("enabled", None)
    if not changes:
        return spec
    try:
        return spec.with_overrides(changes)
    except ValidationError as exc:
        raise SpecError(f"{spec.name} (settings): {summarise(exc)}") from None


def _changes(spec: ProviderSpec, o: ProviderOverrides) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if o.base_url is not None:
        changes["base_url"] = o.base_url
    if o.timeout_s is not None:
        changes["timeout_s"] = o.timeout_s
    limits = {"rate_per_s": o.rate_per_s, "burst": o.burst}
    if any(v is not None for v in limits.values()):
        changes["limits"] = {k: v for k, v in limits.items() if v is not None}
    if o.secret is not None:
        field = _SECRET_FIELD.get(spec.auth.type)
        if field is None:
            raise SpecError(f"{spec.name} (settings): secret given but auth type is none")
        changes["auth"] = {field: o.secret}
    return changes


def _enabled(overrides: Overrides) -> bool:
    if overrides is None:
        return True
    if isinstance(overrides, Mapping):
        return bool(overrides.get("enabled", True))
    return overrides.enabled


def _spec_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise SpecError(f"provider directory {directory} does not exist")
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in SPEC_SUFFIXES)


def _from_files(
    paths: Iterable[Path], source: str, secret_refs: Sequence[str] = (), *, short: bool = False
) -> list[Registration]:
    out = []
    for path in paths:
        where = f"{source}/{path.name}" if short else str(path)
        try:
            spec = load_spec_file(path)
        except SpecError as exc:
            out.append(Registration(path.stem, where, error=str(exc)))
            continue
        try:
            check_secret_refs(spec, secret_refs, source=path.name)
        except SpecError as exc:  # under its own name: it must not fall back to the catalog's
            out.append(Registration(spec.name, where, error=str(exc)))
            continue
        out.append(Registration(spec.name, where, spec))
    return out


def _from_entry_points(group: str, *, only: str | None = None) -> list[Registration]:
    out = []
    dev = group == DEV_ENTRY_POINT_GROUP
    for ep in entry_points(group=group):
        if only is not None and ep.name != only:
            continue
        source = f"{'dev ' if dev else ''}entry point {ep.value}"
        try:
            spec, factory = _resolve(ep.load(), ep.name)
        except Exception as exc:  # a broken plugin must not hide the others
            # Reported when the name is listed or activated, not at every discovery.
            log.info("provider entry point %s is unusable: %s", ep.name, exc)
            error = f"{type(exc).__name__}: {exc}"
            out.append(Registration(ep.name, source, error=error, dev=dev))
            continue
        out.append(Registration(ep.name, source, spec, factory, dev=dev))
    return out


def _resolve(value: object, name: str) -> tuple[ProviderSpec, type[Provider]]:
    """An entry point's value: a spec, a Provider subclass, or a callable returning either."""
    if callable(value) and not isinstance(value, type):
        value = value()
    if isinstance(value, ProviderSpec):
        spec, factory = value, Provider
    elif isinstance(value, type) and issubclass(value, Provider) and value.default_spec:
        spec, factory = value.default_spec, value
    else:
        raise TypeError(f"expected a ProviderSpec or a Provider subclass with default_spec, "
                        f"got {type(value).__name__}")  # fmt: skip
    if spec.name != name:
        raise ValueError(f"entry point name {name!r} differs from spec name {spec.name!r}")
    return spec, factory


def _without_duplicates(layer: list[Registration]) -> dict[str, Registration]:
    seen: dict[str, Registration] = {}
    for reg in layer:
        if (first := seen.get(reg.name)) is not None:
            error = f"declared twice: {first.source} and {reg.source}"
            reg = Registration(reg.name, reg.source, error=error, dev=reg.dev)
        seen[reg.name] = reg
    return seen
