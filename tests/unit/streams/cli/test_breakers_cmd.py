"""`callstream breakers`: its rows, its table cells, and the command on a topic read by a fake."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import pytest

import streams.state.topic
from agents.breaker.state import BreakerState, to_bytes
from agents.breaker.window import empty
from streams.__main__ import main
from streams.cli import breakers_cmd
from streams.cli.breakers_cmd import cells, iso_utc, rows

Hold = Callable[[dict[bytes, bytes] | None], None]
OPENED_AT = 1_780_000_000.25  # 2026-05-28T20:26:40.250Z


def report(
    mode: str, *, opened_at: float = OPENED_AT, until: float | None = None, **extra: Any
) -> dict[str, Any]:
    base = {
        "mode": mode,
        "calls": 0,
        "failure_rate": 0.0,
        "slow_rate": 0.0,
        "probes_in_flight": 0,
        "seconds_until_half_open": until,
        "opened_at": opened_at,
    }
    return {**base, **extra}


def test_iso_utc_is_to_the_millisecond_and_none_for_never() -> None:
    assert iso_utc(OPENED_AT) == "2026-05-28T20:26:40.250Z"
    assert iso_utc(-math.inf) is None


def test_rows_are_by_provider_with_probes_only_in_half_open() -> None:
    shown = rows(
        {
            "weather": report("half_open", calls=1, probes_in_flight=2),
            "acme": report("open", until=12.34567),
            "fake": report("closed", opened_at=-math.inf, calls=7, probes_in_flight=0),
        }
    )
    assert [row["provider"] for row in shown] == ["acme", "fake", "weather"]
    assert shown[0] == {
        "provider": "acme",
        "mode": "open",
        "opened_at": "2026-05-28T20:26:40.250Z",
        "seconds_until_half_open": 12.346,
        "probes_in_flight": 0,
        "probes_reported": 0,
    }
    assert shown[1]["opened_at"] is None
    assert shown[1]["probes_reported"] == 0  # a closed breaker's calls are not probes
    assert (shown[2]["probes_in_flight"], shown[2]["probes_reported"]) == (2, 1)
    json.dumps(shown, allow_nan=False)  # strict JSON: no -Infinity for "never opened"


@pytest.mark.parametrize(
    ("one", "expected"),
    [
        (report("open", until=12.34), ("acme", "open", "2026-05-28T20:26:40.250Z", "12.3 s", "-")),
        (report("open", until=0.0), ("acme", "open", "2026-05-28T20:26:40.250Z", "due", "-")),
        (
            report("half_open", calls=1, probes_in_flight=2),
            ("acme", "half-open", "2026-05-28T20:26:40.250Z", "-", "2 out, 1 reported"),
        ),
        (report("closed", opened_at=-math.inf), ("acme", "closed", "never", "-", "-")),
    ],
)
def test_cells(one: dict[str, Any], expected: tuple[str, ...]) -> None:
    assert cells(rows({"acme": one})[0]) == expected


def test_cells_escape_a_key_that_would_move_the_cursor() -> None:
    assert cells(rows({"a\x1b[2Jb": report("open", until=1.0)})[0])[0] == "a\\x1b[2Jb"


@pytest.fixture
def topic_holds(monkeypatch: pytest.MonkeyPatch) -> Hold:
    """Make the breakers topic hold these values (None: the topic does not exist)."""

    def hold(values: dict[bytes, bytes] | None) -> None:
        async def partitions(_kafka: object, _topic: str) -> int | None:
            return None if values is None else 1

        async def last_values(_kafka: object, _topic: str, _partitions: int) -> dict[bytes, bytes]:
            return values or {}

        monkeypatch.setattr(streams.state.topic, "changelog_partitions", partitions)
        monkeypatch.setattr(breakers_cmd, "last_values", last_values)

    monkeypatch.setenv("CALLSTREAM_APP_ID", "unit")
    monkeypatch.setenv("CALLSTREAM_BREAKER__WAIT_IN_OPEN_S", "60")
    return hold


def test_the_command_prints_one_json_line(
    topic_holds: Hold, capsys: pytest.CaptureFixture[str]
) -> None:
    opened = BreakerState("open", empty("time"), time.time() - 5)
    topic_holds({b"fake": to_bytes(opened), b"acme": to_bytes(BreakerState())})
    assert main(["breakers", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    [line] = out.splitlines()
    shown = json.loads(line)["breakers"]
    modes = [(row["provider"], row["mode"]) for row in shown]
    assert modes == [("acme", "closed"), ("fake", "open")]
    # The settings' wait in open (60 s), not the default 30 s.
    assert 50 < shown[1]["seconds_until_half_open"] <= 55


def test_an_unreadable_value_is_skipped_with_a_warning(
    topic_holds: Hold, capsys: pytest.CaptureFixture[str]
) -> None:
    topic_holds({b"fake": b"\x09garbage", b"acme": to_bytes(BreakerState())})
    assert main(["breakers"]) == 0
    out, err = capsys.readouterr()
    assert "acme" in out
    assert "fake" not in out
    assert err.startswith("callstream: warning: unit.breakers.v1: the state of fake is unreadable")


def test_an_empty_topic_says_so(topic_holds: Hold, capsys: pytest.CaptureFixture[str]) -> None:
    topic_holds({})
    assert main(["breakers"]) == 0
    assert (
        capsys.readouterr().out == "no breaker has changed mode yet (unit.breakers.v1 is empty)\n"
    )
    assert main(["breakers", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"breakers": []}


def test_a_missing_topic_is_one_line_and_exit_code_1(
    topic_holds: Hold, capsys: pytest.CaptureFixture[str]
) -> None:
    topic_holds(None)
    assert main(["breakers", "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("callstream: error: no breakers topic unit.breakers.v1: ")
    assert err.count("\n") == 1
