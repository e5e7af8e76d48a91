"""The composition root of `callstream dlq`: the DLQ replay stage, built from its options.

Beside :mod:`streams.composition`, the only streams module that imports ``agents`` (checked by
``lint-imports``); the command imports it lazily, so other commands never load the stage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from agents.dlq_replay.replay import dead_letter_stats, replay_dead_letters
from agents.dlq_replay.selection import ReplayFilter, unknown_values
from agents.dlq_replay.tally import DeadLetterStats, ReadProgress, ReplayProgress, ReplaySummary
from streams.errors import CallstreamError
from streams.settings import Settings

# The count needs no wiring, and the command prints the stage's reports.
__all__ = [
    "DeadLetterStats",
    "ReadProgress",
    "ReplayProgress",
    "ReplaySummary",
    "UnknownFilterValue",
    "check_filter",
    "dead_letter_stats",
    "replay",
]


class UnknownFilterValue(CallstreamError):
    """A replay filter names a reason or stage no dead letter can have (a typo, most likely)."""


def check_filter(reasons: Iterable[str], stages: Iterable[str]) -> None:
    """Raises:
    UnknownFilterValue: a reason or stage that can never match, with the known ones.
    """
    problems = unknown_values(reasons, stages)
    if problems:
        raise UnknownFilterValue("; ".join(problems))


async def replay(
    settings: Settings,
    *,
    reasons: Iterable[str],
    stages: Iterable[str],
    request_ids: Iterable[str],
    since_ms: int | None,
    include_undecodable: bool,
    group_id: str,
    dry_run: bool,
    limit: int | None,
    progress: Callable[[ReplayProgress], None],
    commit_empty: bool = False,
) -> ReplaySummary:
    """Replay the dead letters the options select (see :func:`replay_dead_letters`).

    Raises:
        UnknownFilterValue: before anything is read (see :func:`check_filter`).
    """
    reasons, stages = tuple(reasons), tuple(stages)
    check_filter(reasons, stages)
    replay_filter = ReplayFilter(
        reasons=frozenset(reasons),
        stages=frozenset(stages),
        request_ids=frozenset(request_ids),
        since_ms=since_ms,
        include_undecodable=include_undecodable,
    )
    return await replay_dead_letters(
        settings,
        replay_filter,
        group_id=group_id,
        dry_run=dry_run,
        limit=limit,
        progress=progress,
        commit_empty=commit_empty,
    )
