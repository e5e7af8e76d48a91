"""What a replay or a count of the dead letters reports: progress, summary and tallies (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from agents.dlq_replay.fingerprint import Conflict, Mark, Marks, Position, conflicts, digest
from agents.dlq_replay.selection import ReplayFilter, Verdict, judge, screen
from schemas.models import DeadLetterEvent, dead_letter_key

# The summary lists replayed request ids for the operator; a huge replay lists the first ones.
MAX_LISTED_IDS = 1000


@dataclass(frozen=True)
class ReadProgress:
    """How far a read of the dead-letter topic is; ``total`` counts offsets, an upper bound."""

    read: int
    total: int


@dataclass(frozen=True)
class ReplayProgress(ReadProgress):
    replayed: int
    skipped: int
    unreadable: int


@dataclass(frozen=True)
class ReplaySummary:
    """What one replay did (or, for a dry run, would have done).

    ``read == replayed + skipped + duplicates + conflicting + unreadable`` always holds.
    """

    group_id: str
    dry_run: bool
    read: int
    replayed: int
    skipped: int  # decodable dead letters the filter did not match
    duplicates: int  # repeats of a letter already replayed in this run
    unreadable: int  # records of the topic that are not dead-letter events at all
    by_reason: dict[str, int]  # replayed letters by reason
    request_ids: tuple[str, ...]  # of replayed letters, the first MAX_LISTED_IDS
    request_ids_truncated: bool
    # False when --limit stopped the run before the end offsets captured at its start.
    complete: bool
    # Whether the group's position moved: not for a dry run, nor (unless asked) when nothing
    # matched, so a mistyped filter does not silently mark every letter as replayed.
    committed: bool = False
    # Letters with the key of one read before in this run but another request: not replayed
    # (the first one was). Someone else than the workers wrote to the dead-letter topic.
    conflicting: int = 0


@dataclass(frozen=True)
class DeadLetterStats:
    """Counts over the whole dead-letter topic, each letter once.

    A letter is a request's failed attempt: a replayed request that failed again is a second
    letter of the same request (``failed_again``), not a duplicate. Duplicates are the same
    attempt's letter written twice (outcomes are published at least once). A letter with the
    key of an earlier one but another request is ``conflicting``, and counted nowhere else.
    """

    read: int
    letters: int
    requests: int  # distinct requests (or undecodable records) among the letters
    failed_again: int  # letters of a request that already had one: replayed and failed again
    duplicates: int
    unreadable: int
    undecodable: int  # letters without a decoded original (only replayable raw)
    retriable: int
    by_reason: dict[str, int]
    by_stage: dict[str, int]
    conflicting: int = 0


@dataclass
class ReplayTally:
    """The counts of a replay in progress; it selects each record it counts.

    ``marks`` remembers each dead-letter key's first letter; ``limit`` caps the letters
    replayed; ``on_conflict`` hears of each conflicting letter (to warn the operator).
    """

    replay_filter: ReplayFilter
    limit: int | None = None
    marks: Marks = field(default_factory=Marks)
    on_conflict: Callable[[Conflict], None] | None = None
    read: int = 0
    replayed: int = 0
    skipped: int = 0
    duplicates: int = 0
    conflicting: int = 0
    unreadable: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    request_ids: list[str] = field(default_factory=list)
    request_ids_truncated: bool = False

    def full(self) -> bool:
        """True once ``limit`` letters were replayed: the run reads no further."""
        return self.limit is not None and self.replayed >= self.limit

    def count(self, letter: DeadLetterEvent | None, at: Position | None = None) -> bool:
        """Count one record (None: not a dead letter) read at ``at``; True when it is to be
        replayed."""
        self.read += 1
        verdict = screen(letter, self.replay_filter)
        if verdict is None and letter is not None:
            verdict = self._judge(letter, at)
        if verdict is Verdict.REPLAY and letter is not None:
            self._replay(letter)
            return True
        if verdict is Verdict.UNREADABLE:
            self.unreadable += 1
        elif verdict is Verdict.SKIP:
            self.skipped += 1
        elif verdict is Verdict.CONFLICTING:
            self.conflicting += 1
        else:
            self.duplicates += 1
        return False

    def _judge(self, letter: DeadLetterEvent, at: Position | None) -> Verdict:
        key = dead_letter_key(letter)
        mark = Mark(digest(letter), at)
        earlier = self.marks.remember(key, mark)
        verdict = judge(earlier, mark)
        if verdict is Verdict.CONFLICTING and earlier is not None and self.on_conflict:
            self.on_conflict(Conflict(key, earlier.at, at))
        return verdict

    def _replay(self, letter: DeadLetterEvent) -> None:
        self.replayed += 1
        self.by_reason[letter.reason] += 1
        if letter.request_id is None:
            return
        if len(self.request_ids) < MAX_LISTED_IDS:
            self.request_ids.append(letter.request_id)
        else:
            self.request_ids_truncated = True

    def progress(self, total: int) -> ReplayProgress:
        return ReplayProgress(self.read, total, self.replayed, self.skipped, self.unreadable)

    def summary(
        self, group_id: str, *, dry_run: bool, complete: bool, committed: bool = False
    ) -> ReplaySummary:
        return ReplaySummary(
            group_id=group_id,
            dry_run=dry_run,
            read=self.read,
            replayed=self.replayed,
            skipped=self.skipped,
            duplicates=self.duplicates,
            unreadable=self.unreadable,
            by_reason=dict(self.by_reason),
            request_ids=tuple(self.request_ids),
            request_ids_truncated=self.request_ids_truncated,
            complete=complete,
            committed=committed,
            conflicting=self.conflicting,
        )


@dataclass
class StatsTally:
    """The counts of a read of the whole topic: every letter once, none replayed.

    ``first_time`` remembers string keys (False for a key seen before); it is given each
    letter's (request key, attempt) key. ``marks`` remembers each request key's first letter;
    ``on_conflict`` hears of each conflicting letter.
    """

    first_time: Callable[[str], bool]
    marks: Marks = field(default_factory=Marks)
    on_conflict: Callable[[Conflict], None] | None = None
    read: int = 0
    failed_again: int = 0
    duplicates: int = 0
    conflicting: int = 0
    unreadable: int = 0
    undecodable: int = 0
    retriable: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_stage: Counter[str] = field(default_factory=Counter)

    def full(self) -> bool:
        return False

    def count(self, letter: DeadLetterEvent | None, at: Position | None = None) -> bool:
        """Count one record (None: not a dead letter) read at ``at``; False, as nothing is
        replayed."""
        self.read += 1
        if letter is None:
            self.unreadable += 1
            return False
        key = dead_letter_key(letter)
        mark = Mark(digest(letter), at)
        earlier = self.marks.remember(key, mark)
        if earlier is not None and conflicts(earlier, mark):
            self.conflicting += 1
            if self.on_conflict is not None:
                self.on_conflict(Conflict(key, earlier.at, at))
            return False
        attempt = letter.original.attempt if letter.original is not None else 0
        if not self.first_time(f"attempt {attempt} of {key}"):
            self.duplicates += 1
            return False
        if earlier is not None:
            self.failed_again += 1
        self.by_reason[letter.reason] += 1
        self.by_stage[letter.stage] += 1
        self.undecodable += letter.original is None
        self.retriable += letter.retriable
        return False

    def progress(self, total: int) -> ReadProgress:
        return ReadProgress(self.read, total)

    def stats(self) -> DeadLetterStats:
        letters = self.read - self.duplicates - self.conflicting - self.unreadable
        return DeadLetterStats(
            read=self.read,
            letters=letters,
            requests=letters - self.failed_again,
            failed_again=self.failed_again,
            duplicates=self.duplicates,
            unreadable=self.unreadable,
            undecodable=self.undecodable,
            retriable=self.retriable,
            by_reason=dict(self.by_reason),
            by_stage=dict(self.by_stage),
            conflicting=self.conflicting,
        )
