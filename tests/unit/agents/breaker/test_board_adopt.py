"""The board's ``adopt``: a state published by another board (or this one) is taken if news."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from agents.breaker.board import BreakerBoard
from agents.breaker.state import (
    BreakerPolicy,
    BreakerState,
    CallResult,
    Mode,
    PermitKind,
    from_bytes,
    to_bytes,
)
from agents.breaker.window import empty
from streams.metrics import Metrics

POLICY = BreakerPolicy(window="count", window_size=4, minimum_calls=4, wait_in_open_s=10.0)
KEY = "fake"


class Board:
    """A board on a fixed clock, with its metrics and what it published."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now
        self.registry = CollectorRegistry()
        self.published: list[tuple[str, bytes]] = []
        self.board = BreakerBoard(
            lambda _key: POLICY,
            Metrics.create(self.registry),
            clock=lambda: self.now,
            on_transition=lambda key, raw: self.published.append((key, raw)),
        )

    def gauge(self) -> float | None:
        return self.registry.get_sample_value("callstream_breaker_state", {"breaker": KEY})

    def entered(self, mode: Mode) -> float:
        labels = {"breaker": KEY, "to": mode}
        return self.registry.get_sample_value("callstream_breaker_transitions_total", labels) or 0

    def mode(self) -> str:
        return str(dict(self.board.snapshots())[KEY]["mode"])

    def open_itself(self) -> bytes:
        """Fail enough calls to open the breaker here; what the board published."""
        for _ in range(POLICY.minimum_calls):
            assert self.board.permit(KEY).allowed
            self.board.record(KEY, CallResult.FAILURE, 0.01, probe=False)
        assert self.mode() == "open"
        return self.published[-1][1]


def published(mode: Mode, opened_at: float, **probes: int) -> bytes:
    return to_bytes(BreakerState(mode, empty(POLICY.window), opened_at, **probes))


@pytest.mark.parametrize("local_opened_at", [None, 900.0])  # never opened here; opened earlier
def test_a_later_opening_is_adopted(local_opened_at: float | None) -> None:
    b = Board()
    if local_opened_at is not None:
        b.board.adopt(KEY, published("closed", local_opened_at))
    b.board.adopt(KEY, published("open", 995.0))
    assert b.mode() == "open"
    refused = b.board.permit(KEY)
    assert refused.kind is PermitKind.REFUSE
    assert refused.retry_at == 995.0 + POLICY.wait_in_open_s
    assert b.board.is_open(KEY) == 995.0 + POLICY.wait_in_open_s


def test_the_same_opening_further_on_its_way_back_is_adopted() -> None:
    b = Board()
    b.board.adopt(KEY, published("open", 995.0))
    b.board.adopt(KEY, published("half_open", 995.0, probes_in_flight=2))
    assert b.mode() == "half_open"
    # The other board's probes are not ours: this one may send its own.
    assert dict(b.board.snapshots())[KEY]["probes_in_flight"] == 0
    assert b.board.permit(KEY).kind is PermitKind.PROBE
    b.board.adopt(KEY, published("closed", 995.0))
    assert b.mode() == "closed"
    assert b.board.permit(KEY).kind is PermitKind.CALL
    assert [b.entered(mode) for mode in ("open", "half_open", "closed")] == [1, 1, 1]


@pytest.mark.parametrize(
    ("stale_mode", "stale_opened_at"),
    [
        ("open", 990.0),  # an earlier opening
        ("closed", 990.0),  # the end of an earlier opening
        ("half_open", 990.0),
        ("open", 995.0),  # the same opening, but behind on its way back
    ],
)
def test_older_news_is_ignored(stale_mode: Mode, stale_opened_at: float) -> None:
    b = Board()
    b.board.adopt(KEY, published("open", 995.0))
    b.board.adopt(KEY, published("half_open", 995.0))
    b.board.adopt(KEY, published(stale_mode, stale_opened_at))
    assert b.mode() == "half_open"
    assert b.gauge() == 1


def test_the_boards_own_echo_is_ignored() -> None:
    b = Board()
    echo = b.open_itself()
    assert b.published == [(KEY, echo)]
    opened_at = b.board.permit(KEY).retry_at
    b.board.adopt(KEY, echo)
    assert b.mode() == "open"
    assert b.board.permit(KEY).retry_at == opened_at
    assert b.entered("open") == 1
    assert b.published == [(KEY, echo)]


def test_adopted_changes_update_the_metrics_but_are_not_published() -> None:
    b = Board()
    b.board.adopt(KEY, published("open", 995.0))
    assert b.gauge() == 2
    assert b.entered("open") == 1
    b.board.adopt(KEY, published("half_open", 995.0))
    assert b.gauge() == 1
    b.board.adopt(KEY, published("closed", 995.0))
    assert b.gauge() == 0
    assert b.entered("closed") == 1
    assert b.published == []


def test_what_the_board_decides_after_adopting_is_published() -> None:
    b = Board()
    b.board.adopt(KEY, published("open", 995.0))
    b.now = 995.0 + POLICY.wait_in_open_s
    assert b.board.permit(KEY).kind is PermitKind.PROBE  # open -> half-open, decided here
    assert [(key, from_bytes(raw).mode) for key, raw in b.published] == [(KEY, "half_open")]


def test_a_closed_breaker_adopting_a_later_close_keeps_its_own_window() -> None:
    b = Board()
    for _ in range(POLICY.minimum_calls - 1):
        b.board.record(KEY, CallResult.FAILURE, 0.01, probe=False)
    b.board.adopt(KEY, published("closed", 995.0))  # another board opened and closed again
    assert b.mode() == "closed"
    assert b.entered("closed") == 0  # no change of mode here
    b.board.record(KEY, CallResult.FAILURE, 0.01, probe=False)  # the window still held 3
    assert b.mode() == "open"


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x07" + bytes(40), published("open", 995.0)[:10], b"not a breaker state at all"],
)
def test_an_invalid_value_is_ignored_with_a_warning(
    raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    b = Board()
    b.board.adopt(KEY, published("open", 995.0))
    with caplog.at_level(logging.WARNING, logger="agents.breaker.board"):
        b.board.adopt(KEY, raw)
    assert b.mode() == "open"
    assert b.gauge() == 2
    assert b.published == []
    assert any("ignoring a published state" in r.getMessage() for r in caplog.records)
