"""Resolve secret references (``env:NAME``, ``file:/path``, ``dir:NAME``, literal) to secrets."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from providers.auth.errors import SecretResolutionError

SECRETS_DIR_ENV = "CALLSTREAM_SECRETS_DIR"
# An escape for literal secrets that happen to start with one of the prefixes.
LITERAL_PREFIX = "literal:"
# The schemes that reach outside the declaration: what ``provider_secret_refs`` restricts.
REF_SCHEMES = frozenset({"env", "file", "dir"})


def resolve_secret(ref: str | SecretStr) -> SecretStr:
    """Resolve a secret reference.

    Args:
        ref: ``env:NAME`` (environment variable), ``file:/path`` (file content),
            ``dir:NAME`` (file ``NAME`` in ``$CALLSTREAM_SECRETS_DIR``, e.g. a Kubernetes
            secret volume), ``literal:VALUE``, or any other string, taken literally.

    Returns:
        The secret; file contents lose one trailing newline.

    Raises:
        SecretResolutionError: the variable, directory or file is missing; the message names
            it but never contains a secret value.
    """
    raw = ref.get_secret_value() if isinstance(ref, SecretStr) else ref
    scheme, sep, rest = raw.partition(":")
    if not sep:
        return SecretStr(raw)
    if scheme == "env":
        return SecretStr(_from_env(rest))
    if scheme == "file":
        return SecretStr(_read(Path(rest), f"file:{rest}"))
    if scheme == "dir":
        return SecretStr(_from_dir(rest))
    if scheme == "literal":
        return SecretStr(rest)
    return SecretStr(raw)


def is_secret_ref(value: str) -> bool:
    """Whether ``value`` names a secret elsewhere (``env:``, ``file:``, ``dir:``)."""
    return value.partition(":")[0] in REF_SCHEMES


def is_reference(value: str) -> bool:
    """Whether ``value`` is written as a reference, ``literal:`` included (shown redacted)."""
    return is_secret_ref(value) or value.startswith(LITERAL_PREFIX)


def canonical_ref(value: str) -> str:
    """``value`` in the form allow-lists match: ``file:`` paths normalised (no ``..`` tricks)."""
    scheme, _, rest = value.partition(":")
    return f"file:{posixpath.normpath(rest)}" if scheme == "file" and rest else value


def resolve_values(values: Mapping[str, str]) -> dict[str, str]:
    """``values`` with every reference resolved; other strings stay as they are.

    Raises:
        SecretResolutionError: a reference does not resolve (the message names it, never a value).
    """
    return {
        key: resolve_secret(v).get_secret_value() if is_reference(v) else v
        for key, v in values.items()
    }


def describe_ref(ref: str | SecretStr) -> str:
    """Name a reference for messages: ``env:NAME`` stays, a literal becomes ``<literal>``."""
    raw = ref.get_secret_value() if isinstance(ref, SecretStr) else ref
    scheme = raw.partition(":")[0]
    return raw if scheme in {"env", "file", "dir"} else "<literal>"


def _from_env(name: str) -> str:
    try:
        return os.environ[name]
    except KeyError:
        raise SecretResolutionError(
            f"secret env:{name}: environment variable {name} is not set"
        ) from None


def _from_dir(name: str) -> str:
    base = os.environ.get(SECRETS_DIR_ENV)
    if not base:
        raise SecretResolutionError(f"secret dir:{name}: {SECRETS_DIR_ENV} is not set")
    # A name is one path component: "dir:../../etc/passwd" must not escape the directory.
    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        raise SecretResolutionError(f"secret dir:{name}: not a plain file name")
    return _read(Path(base) / name, f"dir:{name}")


def _read(path: Path, label: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretResolutionError(f"secret {label}: file {path} not found") from None
    except IsADirectoryError:
        raise SecretResolutionError(f"secret {label}: {path} is a directory") from None
    except PermissionError:
        raise SecretResolutionError(f"secret {label}: file {path} is not readable") from None
    except UnicodeDecodeError:
        raise SecretResolutionError(f"secret {label}: file {path} is not UTF-8") from None
    # Editors and `echo` add one newline; it is never part of the secret.
    return text.removesuffix("\n").removesuffix("\r")
