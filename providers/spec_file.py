"""Reading provider declarations from TOML and YAML files, with one-line error summaries."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from providers.declaration import ProviderSpec

SPEC_SUFFIXES = frozenset({".toml", ".yaml", ".yml"})


class SpecError(ValueError):
    """A provider declaration that cannot be used; the message is one line for operators.

    Operator action: fix the named field in the named file (``callstream providers validate``).
    """


def load_spec_file(path: str | Path) -> ProviderSpec:
    """Read and validate one provider declaration.

    Args:
        path: a ``.toml``, ``.yaml`` or ``.yml`` file.

    Returns:
        The validated spec.

    Raises:
        SpecError: unreadable file, bad syntax or an invalid field, as one line naming both.
    """
    path = Path(path)
    return parse_spec(_read(path), source=path.name)


def parse_spec(data: Any, *, source: str) -> ProviderSpec:
    """Validate already-parsed data; ``source`` names it in error messages."""
    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: expected a table of provider fields at the top level")
    try:
        return ProviderSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{source}: {summarise(exc)}") from None


def summarise(exc: ValidationError) -> str:
    """The first error as ``field.path: message``, plus how many more there are."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    # Whole-model checks have no location; their messages name the fields themselves.
    return f"{where}: {message}{more}" if where else f"{message}{more}"


def _read(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in SPEC_SUFFIXES:
        raise SpecError(f"{path.name}: not a provider file (expected .toml, .yaml or .yml)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path.name}: cannot read: {exc}") from None
    try:
        return tomllib.loads(text) if suffix == ".toml" else yaml.safe_load(text)
    except tomllib.TOMLDecodeError as exc:  # "Invalid value (at line 3, column 7)": no text
        raise SpecError(f"{path.name}: invalid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path.name}: invalid YAML: {yaml_problem(exc)}") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """The problem and where, as ``mapping values are not allowed here (line 5, column 37)``.

    Never ``str(exc)``: PyYAML quotes the offending line, and that line can hold a literal
    secret (review finding 16).
    """
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None)
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem or type(exc).__name__}{where}"
