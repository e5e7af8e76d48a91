"""The built-in catalog: provider declarations shipped as TOML files beside this module."""

from __future__ import annotations

from pathlib import Path

CATALOG_DIR = Path(__file__).resolve().parent


def catalog_files() -> list[Path]:
    """The catalog's declaration files, sorted by name."""
    return sorted(CATALOG_DIR.glob("*.toml"))
