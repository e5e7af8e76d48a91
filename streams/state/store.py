"""One partition's local state: a rocksdict, its changelog checkpoint, and unacknowledged writes."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

log = logging.getLogger(__name__)

# The changelog offset of the last record reflected in the store. It lives in the store itself
# and goes into the same WriteBatch as the data it covers, so after any crash the data and the
# checkpoint agree (RocksDB applies a batch atomically, and its WAL replays in order).
CHECKPOINT_KEY = b"\x00callstream\x00changelog-offset"
_OFFSET = struct.Struct(">q")


class Pending:
    """A write sent to the changelog and not yet acknowledged (compared by identity)."""

    __slots__ = ("key", "value")

    def __init__(self, key: bytes, value: bytes | None) -> None:
        self.key = key
        self.value = value

    def __repr__(self) -> str:
        return f"Pending(key={self.key!r}, value={self.value!r})"


class PartitionStore:
    """Local state of one changelog partition.

    A value reaches RocksDB only once the broker has acknowledged its changelog record, so the
    store is always a prefix of the changelog: replaying from the checkpoint can only add what it
    lacks. Until then the value sits in ``_pending`` so that :meth:`get` sees the caller's own
    writes (a read-modify-write by the next event must not read the value from before).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = _open(path)
        self._pending: dict[bytes, Pending] = {}
        self._checkpoint = _read_checkpoint(self._db)
        # After a failed delivery the changelog may hold a record this store never saw (a
        # timeout does not prove the broker refused it), so the checkpoint stops moving and the
        # next assignment replays from before the failure.
        self._frozen = False
        self.closed = False

    def __repr__(self) -> str:
        return (
            f"PartitionStore({str(self.path)!r}, checkpoint={self._checkpoint}, "
            f"pending={len(self._pending)}, frozen={self._frozen})"
        )

    @property
    def checkpoint(self) -> int | None:
        """Offset of the last changelog record in the store; ``None`` for a new store."""
        return self._checkpoint

    def get(self, key: bytes) -> bytes | None:
        pending = self._pending.get(key)
        if pending is not None:
            return pending.value
        value: bytes | None = self._db.get(key)
        return value

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every stored pair, the checkpoint excluded: a full scan, not for the event loop."""
        for key, value in self._db.items():
            if isinstance(key, bytes) and key != CHECKPOINT_KEY:  # raw mode: always bytes
                yield key, value

    def stage(self, key: bytes, value: bytes | None) -> Pending:
        """Record a write about to be sent; ``value=None`` is a delete."""
        if key == CHECKPOINT_KEY:
            raise ValueError(f"key {key!r} is reserved for the changelog checkpoint")
        pending = Pending(key, value)
        self._pending[key] = pending
        return pending

    def settle(self, pending: Pending, offset: int) -> None:
        """The broker stored ``pending`` at ``offset``: make it durable with the checkpoint."""
        self._write([(pending.key, pending.value)], None if self._frozen else offset)
        # Only now: should the write fail, get() keeps returning the acknowledged value.
        if self._pending.get(pending.key) is pending:
            del self._pending[pending.key]

    def discard(self, pending: Pending) -> None:
        """The delivery of ``pending`` failed: forget it and stop moving the checkpoint."""
        if self._pending.get(pending.key) is pending:
            del self._pending[pending.key]
        if not self._frozen:
            log.warning(
                "changelog write failed for %s: checkpoint held at %s",
                self.path.name,
                self._checkpoint,
            )
        self._frozen = True

    def apply(self, records: Iterable[tuple[bytes, bytes | None]], last_offset: int) -> int:
        """Apply changelog records up to ``last_offset`` (recovery); returns how many."""
        return self._write(records, last_offset)

    def wipe(self) -> None:
        """Delete everything, checkpoint included: the next replay starts from the beginning."""
        if self._checkpoint is None and self._is_empty():
            return  # a new store: reopening would block the event loop ~50 ms for nothing
        self._db.close()
        Rdict.destroy(str(self.path))
        self._db = _open(self.path)
        self._pending.clear()
        self._checkpoint = None
        self._frozen = False

    def _is_empty(self) -> bool:
        return next(iter(self._db.keys()), None) is None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._db.close()

    def _write(self, records: Iterable[tuple[bytes, bytes | None]], offset: int | None) -> int:
        batch = WriteBatch(raw_mode=True)
        count = 0
        for key, value in records:
            if key == CHECKPOINT_KEY:
                log.warning(
                    "ignoring a changelog record with the reserved key in %s", self.path.name
                )
            elif value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
            count += 1
        # Offsets of one partition are acknowledged in order; max() keeps a stray late
        # acknowledgement from moving the checkpoint back.
        advance = offset is not None and (self._checkpoint is None or offset > self._checkpoint)
        if advance:
            batch.put(CHECKPOINT_KEY, _OFFSET.pack(offset))
        self._db.write(batch)
        if advance:
            self._checkpoint = offset
        return count


def _open(path: Path) -> Rdict:
    options = Options(raw_mode=True)  # bytes in, bytes out: no pickling
    options.create_if_missing(True)
    return Rdict(str(path), options)


def _read_checkpoint(db: Rdict) -> int | None:
    raw: bytes | None = db.get(CHECKPOINT_KEY)
    if raw is None:
        return None
    offset: int = _OFFSET.unpack(raw)[0]
    return offset
