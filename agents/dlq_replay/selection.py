"""What a dead-letter replay selects, where it starts reading, and what it republishes (pure).

No Kafka here: :mod:`agents.dlq_replay.replay` reads the topic and acts on these decisions.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from agents.dlq_replay.fingerprint import Mark, conflicts
from providers.errors import ProviderError
from schemas.models import DeadLetterEvent, RequestEvent

# The stages that write dead letters (``DeadLetterEvent.stage``); "retry" is the next wave's.
STAGES = frozenset({"decode", "admission", "caller", "retry"})
# Reasons not carried by a provider error: the decoder's (``schemas.errors.DecodeError``) and
# the caller's for a bug of ours (``agents.provider_caller.caller``).
_OTHER_REASONS = frozenset({"undecodable", "invalid", "internal_error"})
# Avro's long: an attempt this high has no next attempt on the wire (finding 17a).
MAX_ATTEMPT = 2**63 - 1


def known_reasons() -> frozenset[str]:
    """Every reason a dead letter can carry: each ProviderError's (``providers.errors``, and any
    plugin's subclass loaded by now), plus the decoder's and ``internal_error``."""
    reasons = set(_OTHER_REASONS)
    pending: list[type[ProviderError]] = [ProviderError]
    while pending:
        cls = pending.pop()
        reasons.add(cls.reason)
        pending.extend(cls.__subclasses__())
    return frozenset(reasons)


def unknown_values(reasons: Iterable[str], stages: Iterable[str]) -> list[str]:
    """What in a filter can never match, one phrase each (empty when everything can)."""
    known = known_reasons()
    bad_reasons = [reason for reason in reasons if reason not in known]
    bad_stages = [stage for stage in stages if stage not in STAGES]
    problems = []
    if bad_reasons:
        listed = ", ".join(repr(r) for r in bad_reasons)
        problems.append(f"unknown --reason {listed} (known: {', '.join(sorted(known))})")
    if bad_stages:
        listed = ", ".join(repr(s) for s in bad_stages)
        problems.append(f"unknown --stage {listed} (known: {', '.join(sorted(STAGES))})")
    return problems


@dataclass(frozen=True)
class ReplayFilter:
    """Which dead letters to replay. Empty sets and ``None`` mean "no condition".

    Undecodable letters (no ``original``) are left out unless ``include_undecodable``: their
    bytes failed once already and will again unless whatever produced them was fixed. Letters
    whose raw bytes were truncated to fit the topic are never replayed.
    """

    reasons: frozenset[str] = frozenset()
    stages: frozenset[str] = frozenset()
    request_ids: frozenset[str] = frozenset()
    # Only letters whose last failure happened at or after this time (epoch ms).
    since_ms: int | None = None
    include_undecodable: bool = False

    def matches(self, letter: DeadLetterEvent) -> bool:
        """True when every given condition holds for ``letter``."""
        if letter.original_truncated:  # its bytes are not the request any more
            return False
        if letter.original is None and not self.include_undecodable:
            return False
        return (
            _allows(self.reasons, letter.reason)
            and _allows(self.stages, letter.stage)
            and _allows(self.request_ids, letter.request_id)
            and (self.since_ms is None or letter.last_failure_at_ms >= self.since_ms)
        )


def _allows(wanted: frozenset[str], value: str | None) -> bool:
    return not wanted or value in wanted


class Verdict(enum.Enum):
    """What a replay does with one record of the dead-letter topic."""

    REPLAY = "replay"
    SKIP = "skip"  # a dead letter the filter does not match
    DUPLICATE = "duplicate"  # a repeat of a letter already replayed in this run
    # The key of a letter read before in this run, but a different request (finding 17b).
    CONFLICTING = "conflicting"
    UNREADABLE = "unreadable"  # not a dead-letter event, or one with no next attempt


def screen(letter: DeadLetterEvent | None, replay_filter: ReplayFilter) -> Verdict | None:
    """The verdict on a record whatever was read before it (None: a letter to :func:`judge`).

    Args:
        letter: the dead letter, or None for a record that is not one.
        replay_filter: which letters to replay.
    """
    if letter is None or not has_next_attempt(letter):
        return Verdict.UNREADABLE
    if not replay_filter.matches(letter):
        return Verdict.SKIP
    return None


def judge(earlier: Mark | None, mark: Mark) -> Verdict:
    """The verdict on a matching letter, given the first letter with its key in this run.

    Args:
        earlier: what was kept of that first letter; None when this letter is the first.
        mark: this letter's (see :func:`agents.dlq_replay.fingerprint.digest`).
    """
    if earlier is None:
        return Verdict.REPLAY
    if conflicts(earlier, mark):
        return Verdict.CONFLICTING
    return Verdict.DUPLICATE


def has_next_attempt(letter: DeadLetterEvent) -> bool:
    """False for a (forged) letter whose attempt is already the largest the wire can carry."""
    return letter.original is None or letter.original.attempt < MAX_ATTEMPT


def replay_request(letter: DeadLetterEvent) -> RequestEvent | None:
    """The letter's original request as its next attempt; None when it was undecodable.

    The request id and idempotency key stay the same, so a caller waiting for the outcome
    finds it, and a provider that honours Idempotency-Key does not act twice.
    """
    if letter.original is None or not has_next_attempt(letter):
        return None
    return letter.original.model_copy(update={"attempt": letter.original.attempt + 1})


def start_offset(position: int, *, log_start: int, log_end: int) -> int:
    """Where to start reading a partition whose committed (or reset) position is ``position``.

    A position past the log end means the topic was deleted and recreated since the last
    commit: its dead letters are all new, so read them from the start. A position before the
    log start means retention deleted records; the earliest remaining one is next.
    """
    if position > log_end or position < log_start:
        return log_start
    return position
