"""Fixtures shared by every test: a clean CALLSTREAM_* environment."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the environment: a developer's CALLSTREAM_* must not leak into tests."""
    for name in list(os.environ):
        if name.startswith("CALLSTREAM_") and name not in (
            "CALLSTREAM_TEST_BOOTSTRAP",
            "CALLSTREAM_CACHE_DIR",
        ):
            monkeypatch.delenv(name)
