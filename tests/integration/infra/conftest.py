"""Skips the launcher tests only where Java or Maven is absent; CI has both, so it never skips."""

from __future__ import annotations

import pytest

from infra.errors import ToolMissing
from infra.kafka import resolve_jars
from infra.kafka.node import find_java


@pytest.fixture(scope="session")
def kafka_runtime() -> None:
    """Resolve the jars once per session so the first test's timing is the broker's alone."""
    try:
        find_java()
        resolve_jars()
    except ToolMissing as exc:
        pytest.skip(str(exc))
