"""The Azure LLM trace loader: offsets from the first arrival, token counts, time compression."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from streams.cli.dev.llm_trace import AZURE_CONV_TRACE, TraceRow, read_llm_trace

SAMPLE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:51.2224670,879,55
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_are_offsets_from_the_first_arrival(tmp_path):
    rows = list(read_llm_trace(write(tmp_path, SAMPLE)))
    assert [(r.context_tokens, r.generated_tokens, r.total_tokens) for r in rows] == [
        (374, 44, 418), (396, 109, 505), (879, 55, 934),
    ]  # fmt: skip
    assert [r.offset_s for r in rows] == pytest.approx([0.0, 4.314579, 4.541877])


def test_speedup_compresses_time_not_tokens(tmp_path):
    rows = list(read_llm_trace(write(tmp_path, SAMPLE), speedup=10, limit=2))
    assert rows == [TraceRow(0.0, 374, 44), TraceRow(pytest.approx(0.4314579), 396, 109)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time,a,b\n", "header"),
        (SAMPLE + "2023-11-16 18:15:52.0,12\n", "trace.csv:5: malformed row"),
        (SAMPLE + "yesterday,1,2\n", "trace.csv:5: malformed row"),
        (SAMPLE + "2023-11-16 18:15:52.0,-1,2\n", "trace.csv:5: malformed row"),
        (SAMPLE + "2023-11-16 18:15:52.0,1,2,3\n", "trace.csv:5: malformed row"),
        (SAMPLE + "2023-11-16 18:15:40.0,1,2\n", "trace.csv:5: arrival before"),
    ],
)
def test_a_malformed_trace_is_named_by_line(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        list(read_llm_trace(write(tmp_path, text)))


@pytest.mark.parametrize(("speedup", "limit"), [(0, None), (float("inf"), None), (1, -1)])
def test_bad_arguments_are_refused(tmp_path, speedup, limit):
    with pytest.raises(ValueError, match="must be"):
        list(read_llm_trace(write(tmp_path, SAMPLE), speedup=speedup, limit=limit))


@pytest.mark.skipif(not AZURE_CONV_TRACE.exists(), reason="needs ../shared/traces")
def test_the_shared_trace_starts_as_its_readme_says():
    first = list(itertools.islice(read_llm_trace(speedup=60), 4))
    assert [(r.context_tokens, r.generated_tokens) for r in first] == [
        (374, 44), (396, 109), (879, 55), (91, 16),
    ]  # fmt: skip
    assert first[3].offset_s == pytest.approx((51.3910170 - 46.6805900) / 60, abs=1e-6)
