"""Replay input for token-limit benchmarks: the Azure LLM inference trace (2023, conversation).

One row per request: its arrival and its token counts (``TIMESTAMP,ContextTokens,
GeneratedTokens``, 19,366 rows over about an hour, microsecond stamps; CC-BY-4.0, from
Azure/AzurePublicDataset, kept in ``../shared/traces``; see its README). Rows come out as
offsets from the first arrival, optionally compressed in time (``speedup``), so a benchmark can
replay the hour's shape in a minute at the same tokens per request.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

__all__ = ["AZURE_CONV_TRACE", "TraceRow", "read_llm_trace"]

# Beside the repository: <workspace>/shared/traces, next to <workspace>/main.
AZURE_CONV_TRACE = (
    Path(__file__).resolve().parents[3].parent
    / "shared"
    / "traces"
    / "azure_llm_inference_2023_conv.csv"
)
_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


class TraceRow(NamedTuple):
    """One request of the trace."""

    # Seconds after the first request, divided by the speedup.
    offset_s: float
    # Prompt tokens (input) and completion tokens (output).
    context_tokens: int
    generated_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.context_tokens + self.generated_tokens


def read_llm_trace(
    path: Path = AZURE_CONV_TRACE, *, speedup: float = 1.0, limit: int | None = None
) -> Iterator[TraceRow]:
    """The trace's rows in file order (arrival order), lazily.

    Args:
        path: a CSV with the Azure trace's header.
        speedup: time compression: 60 replays an hour in a minute. Token counts are kept.
        limit: at most this many rows.

    Raises:
        ValueError: a bad ``speedup`` or ``limit``, a header other than the Azure trace's, or a
            malformed row (named by its line number). Arrivals out of order are malformed.
        OSError: the file cannot be read.
    """
    if not speedup > 0 or speedup == float("inf"):
        raise ValueError(f"speedup must be positive and finite, got {speedup}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    with path.open(newline="", encoding="utf-8") as file:
        rows = csv.reader(file)
        header = tuple(next(rows, ()))
        if header != _HEADER:
            raise ValueError(f"{path.name}: header {header} is not {_HEADER}")
        start: datetime | None = None
        previous = 0.0
        for count, row in enumerate(rows):
            if limit is not None and count >= limit:
                return
            line = count + 2
            try:
                at, context, generated = datetime.fromisoformat(row[0]), int(row[1]), int(row[2])
            except (IndexError, ValueError):
                raise ValueError(f"{path.name}:{line}: malformed row {row}") from None
            if len(row) != len(_HEADER) or context < 0 or generated < 0:
                raise ValueError(f"{path.name}:{line}: malformed row {row}")
            start = start or at
            offset = (at - start).total_seconds()
            if offset < previous:
                raise ValueError(f"{path.name}:{line}: arrival before the previous row's")
            previous = offset
            yield TraceRow(offset / speedup, context, generated)
