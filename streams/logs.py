"""Logging helpers shared by the CLI and the SDK."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def quiet(logger_name: str) -> Iterator[None]:
    """Silence a library's own error lines while our code reports the failure in one line."""
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)
