"""`callstream dlq replay` and `dlq stats` show conflicting letters (finding 17b), no broker."""

from __future__ import annotations

from typing import Any

import pytest

import streams.composition_dlq
from agents.dlq_replay.tally import DeadLetterStats, ReplaySummary
from streams.__main__ import main
from streams.cli.dlq_cmd import summary_lines

DLQ = "callstream.dlq.v1"  # the default topic (streams.settings)
CHECK_WRITERS = f"Operator action: check who can write {DLQ}; only workers should."


def summary(**fields: Any) -> ReplaySummary:
    values: dict[str, Any] = {
        "group_id": "g", "dry_run": False, "read": 4, "replayed": 2, "skipped": 0,
        "duplicates": 0, "unreadable": 0, "by_reason": {"not_found": 2}, "request_ids": ("a", "b"),
        "request_ids_truncated": False, "complete": True, "committed": True,
    }  # fmt: skip
    return ReplaySummary(**{**values, **fields})


def test_summary_lines_show_conflicts_beside_duplicates_and_warn_only_when_there_are_some() -> None:
    lines = summary_lines(summary(conflicting=2), "requests", None, DLQ)
    duplicates = next(i for i, line in enumerate(lines) if line.startswith("  duplicates"))
    assert lines[duplicates + 1].split()[:2] == ["conflicting", "2"]
    [warning] = [line for line in lines if line.startswith("warning: ")]
    assert warning.startswith("warning: 2 conflicting letters: ")
    assert warning.endswith(CHECK_WRITERS)
    quiet = summary_lines(summary(), "requests", None, DLQ)
    assert "  conflicting        0" in "\n".join(quiet)
    assert not [line for line in quiet if line.startswith("warning: ")]


def test_replay_prints_the_conflicts_and_names_the_dead_letter_topic(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def fake_replay(settings: Any, replay_filter: Any, **options: Any) -> ReplaySummary:
        return summary(read=5, conflicting=1)

    monkeypatch.setattr(streams.composition_dlq, "replay_dead_letters", fake_replay)
    assert main(["dlq", "replay"]) == 0  # a warning, not an error
    out = capsys.readouterr().out
    assert "warning: 1 conflicting letters: " in out and CHECK_WRITERS in out
    assert main(["dlq", "replay", "--json"]) == 0
    assert '"conflicting": 1' in capsys.readouterr().out


def test_stats_print_the_conflicts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def fake_stats(settings: Any, **options: Any) -> DeadLetterStats:
        return DeadLetterStats(
            read=5, letters=3, requests=2, failed_again=1, duplicates=1, unreadable=0,
            undecodable=0, retriable=0, by_reason={"not_found": 3}, by_stage={"caller": 3},
            conflicting=1,
        )  # fmt: skip

    monkeypatch.setattr(streams.composition_dlq, "dead_letter_stats", fake_stats)
    assert main(["dlq", "stats"]) == 0
    first, second = capsys.readouterr().out.splitlines()[:2]
    assert "1 duplicates" in first and "1 conflicting (" in first
    assert second.startswith("warning: 1 conflicting letters: ") and second.endswith(CHECK_WRITERS)
