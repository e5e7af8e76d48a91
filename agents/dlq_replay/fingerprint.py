"""What a read remembers of each request's first dead letter, to tell repeats from forgeries (pure).

Two letters with the same :func:`~schemas.models.dead_letter_key` are legitimate when they carry
the same request: the same letter written twice (outcomes are published at least once), or the
request's next attempt after a replay that failed again. A letter whose request differs in
anything but ``attempt`` was written by someone else (security review 2026-12-02, finding 17b):
it conflicts, and nothing silently picks one of the two.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from schemas.models import DeadLetterEvent

# A digest per key keeps the memory small; 8 bytes make an accidental collision (a forgery
# missed) about one in 2**64 per pair.
_DIGEST_BYTES = 8


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record was read: topic, partition and offset."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Mark:
    """What a read keeps of a key's first letter: its request's digest, and where it was read.

    ``digest`` is None for a letter whose bytes were truncated: there is nothing to compare.
    """

    digest: bytes | None
    at: Position | None = None


@dataclass(frozen=True)
class Conflict:
    """Two letters with one key but different requests; the first one read is the one kept."""

    key: str
    first: Position | None
    second: Position | None


def digest(letter: DeadLetterEvent) -> bytes | None:
    """A short digest of the letter's request, ``attempt`` left out; None when truncated.

    An undecodable letter's digest is of its raw bytes, so it never equals a decoded one's.
    """
    if letter.original_truncated:
        return None
    if letter.original is None:
        return _hash(b"raw\0" + letter.original_raw)
    fields = letter.original.model_dump(exclude={"attempt"})
    return _hash(b"request\0" + repr(_canonical(fields)).encode())


def conflicts(earlier: Mark, later: Mark) -> bool:
    """True when both letters carry a request and the requests differ."""
    return None not in (earlier.digest, later.digest) and earlier.digest != later.digest


def _canonical(value: Any) -> Any:
    """``value`` with every mapping as its sorted items: equal requests give one ``repr``."""
    if isinstance(value, dict):
        return sorted((key, _canonical(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST_BYTES).digest()


class Marks:
    """A bounded memory of each key's first letter, oldest forgotten first (like ``SeenIds``)."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self._marks: OrderedDict[str, Mark] = OrderedDict()
        self._capacity = capacity

    def remember(self, key: str, mark: Mark) -> Mark | None:
        """Keep ``mark`` for a new key; for a key seen before, the mark kept then (unchanged)."""
        earlier = self._marks.get(key)
        if earlier is not None:
            return earlier
        self._marks[key] = mark
        if len(self._marks) > self._capacity:
            self._marks.popitem(last=False)
        return None
