"""Issue 19, the rest of the user-mistake list, through ``callstream``'s own entry point and
without a broker: the commands' wiring, on fakes of what they call.

- ``dlq replay``: a filter matching nothing moves the group only with ``--commit-empty`` (the
  replay stage's own rule, and the flag reaching it); the CLI says the group did not move.
- ``dlq stats`` prints how many letters were replayed and failed again.
- ``results tail --dlq`` shows each dead letter's error message, escaped.
- ``providers validate``: every error is one ``callstream: error:`` line, exit code 2, and
  never the text of the line it failed on.

(tests/integration/cli/test_cli_mistakes.py runs the replay and the stats on Kafka.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

import streams.composition_dlq
import streams.sdk
from agents.dlq_replay.reading import Batch
from agents.dlq_replay.replay import _Republisher
from agents.dlq_replay.tally import DeadLetterStats, ReplaySummary
from schemas.models import DeadLetterEvent, RequestEvent
from streams.__main__ import main

TOPIC = "callstream.dead-letters.v1"
TP = TopicPartition(TOPIC, 0)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("callstream: error: "), err
    assert err.count("\n") == 1, err
    return err


def letter(message: str = "fake: item 'abc' not found") -> DeadLetterEvent:
    request = RequestEvent(provider="fake", operation="get_item", request_id="r1")
    return DeadLetterEvent(
        request_id="r1", original_raw=b"x", original=request, source_topic="requests",
        source_partition=0, source_offset=1, reason="not_found", error_type="NotFound",
        error_message=message, first_failure_at_ms=1, last_failure_at_ms=1, stage="caller",
    )  # fmt: skip


# --- dlq replay: nothing matched, nothing moved ----------------------------------------------


class RecordingConsumer:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


class RecordingClient:
    def __init__(self) -> None:
        self.published: list[RequestEvent] = []

    async def publish_many(self, requests: list[RequestEvent]) -> list[str]:
        self.published.extend(requests)
        return [r.request_id for r in requests]

    async def publish_raw(self, value: bytes, key: bytes | None = None) -> None:
        raise AssertionError("no raw letter here")


def republisher(commit_empty: bool) -> tuple[_Republisher, RecordingConsumer, RecordingClient]:
    consumer, client = RecordingConsumer(), RecordingClient()
    spans = {TP: (0, 5)}
    replayer = _Republisher(
        client,  # type: ignore[arg-type]
        consumer,
        spans,
        "g",
        "requests",
        commit_empty=commit_empty,
    )
    return replayer, consumer, client


async def test_a_read_that_matched_nothing_commits_nothing() -> None:
    replayer, consumer, client = republisher(commit_empty=False)
    await replayer.publish(Batch(letters=[], positions={TP: 5}))
    await replayer.commit_ends()
    assert (consumer.commits, client.published, replayer.committed) == ([], [], False)


async def test_commit_empty_moves_the_group_past_what_was_read() -> None:
    replayer, consumer, _ = republisher(commit_empty=True)
    await replayer.publish(Batch(letters=[], positions={TP: 5}))
    await replayer.commit_ends()
    assert consumer.commits and consumer.commits[-1] == {TP: 5}
    assert replayer.committed


async def test_a_read_that_replayed_a_letter_commits_it() -> None:
    replayer, consumer, client = republisher(commit_empty=False)
    await replayer.publish(Batch(letters=[letter()], positions={TP: 5}))
    assert [r.request_id for r in client.published] == ["r1"]
    assert consumer.commits == [{TP: 5}] and replayer.committed


def summary(**fields: Any) -> ReplaySummary:
    values: dict[str, Any] = {
        "group_id": "callstream.dlq-replay", "dry_run": False, "read": 3, "replayed": 0,
        "skipped": 3, "duplicates": 0, "unreadable": 0, "by_reason": {}, "request_ids": (),
        "request_ids_truncated": False, "complete": True, "committed": False,
    }  # fmt: skip
    return ReplaySummary(**{**values, **fields})


@pytest.mark.parametrize("flag", [[], ["--commit-empty"]])
def test_replay_passes_commit_empty_only_when_asked_and_says_nothing_moved(
    flag: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[bool] = []

    async def fake_replay(settings: Any, replay_filter: Any, **options: Any) -> ReplaySummary:
        asked.append(options["commit_empty"])
        return summary(committed=options["commit_empty"])

    monkeypatch.setattr(streams.composition_dlq, "replay_dead_letters", fake_replay)
    assert main(["dlq", "replay", "--reason", "auth_failed", *flag]) == 0
    out = capsys.readouterr().out
    assert asked == [bool(flag)]
    nothing_moved = "nothing matched: the group's position did not move (--commit-empty"
    assert (nothing_moved in out) is (not flag), out


# --- dlq stats: replayed and failed again ------------------------------------------------------


def test_stats_print_the_letters_that_failed_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def fake_stats(settings: Any, **options: Any) -> DeadLetterStats:
        return DeadLetterStats(
            read=4, letters=3, requests=2, failed_again=1, duplicates=1, unreadable=0,
            undecodable=0, retriable=0, by_reason={"not_found": 3}, by_stage={"caller": 3},
        )  # fmt: skip

    monkeypatch.setattr(streams.composition_dlq, "dead_letter_stats", fake_stats)
    assert main(["dlq", "stats"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("3 dead letters in ") and " for 2 requests " in first
    assert "(1 replayed and failed again;" in first
    assert "1 duplicates" in first


# --- results tail --dlq: the error message, escaped ---------------------------------------------


class TailClient:
    """Stands in for CallstreamClient: one dead letter on the dead-letter topic, no result."""

    def __init__(self, settings: Any, *args: Any, **kwargs: Any) -> None:
        pass

    async def __aenter__(self) -> TailClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def dead_letters(self, **options: Any) -> AsyncIterator[DeadLetterEvent]:
        yield letter("fake: item 'abc'\r\n2026 CRITICAL forged\x1b[2J not found")

    async def results(self, **options: Any) -> AsyncIterator[Any]:
        raise AssertionError("--dlq reads dead letters")
        yield  # pragma: no cover


def test_results_tail_dlq_shows_the_error_message_escaped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(streams.sdk, "CallstreamClient", TailClient)
    assert main(["results", "tail", "--dlq"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "\x1b" not in out and "\r" not in out
    assert out == (
        "r1  dead_letter  reason=not_found stage=caller error=NotFound: "
        "fake: item 'abc'\\r\\n2026 CRITICAL forged\\x1b[2J not found\n"
    )


# --- providers validate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "acme.toml",
            'name = "acme"\nbase_url = "https://x.test"\n'
            'auth = { type = "bearer", token = "TOML_LITERAL_SECRET_9\n',
            "acme.toml: ",
        ),
        (
            "acme.yaml",
            "name: acme\nbase_url: https://x.test\nauth:\n  type: bearer\n"
            "  token: YAML_LITERAL_SECRET_q1w2e3 : oops\noperations:\n  get: {path: /x}\n",
            "acme.yaml: invalid YAML: mapping values are not allowed here (line 5, column 37)",
        ),
        (
            "acme.toml",
            'name = "acme"\nbase_url = "https://x.test"\n[operations.get]\nmethod = "FETCH"\n'
            'path = "/a"\n',
            "acme.toml: operations.get.method",
        ),
    ],
)
def test_providers_validate_errors_are_one_callstream_error_line(
    tmp_path: Path, name: str, text: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert main(["providers", "validate", str(path)]) == 2
    err = one_error_line(capsys)
    assert expected in err
    assert "LITERAL_SECRET" not in err


def test_providers_validate_of_a_missing_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["providers", "validate", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml" in one_error_line(capsys)
