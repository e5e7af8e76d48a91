"""Stopping broker processes together, with a SIGKILL fallback, and quoting their logs."""

from __future__ import annotations

import atexit
import logging
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)

# A single Kafka node exits 1.6-2.2 s after SIGTERM; ten seconds leaves room on a busy CI box.
STOP_GRACE_S = 10.0


def terminate_all(
    processes: Iterable[subprocess.Popen[bytes]], *, grace_s: float = STOP_GRACE_S
) -> None:
    """SIGTERM every live process at once, then SIGKILL whatever is left after `grace_s`.

    Signalling together matters for KRaft: stopped one at a time, the last node loses its quorum
    and never finishes a controlled shutdown.
    """
    alive = [p for p in processes if p.poll() is None]
    for proc in alive:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in alive:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("pid %s ignored SIGTERM for %.0f s; sending SIGKILL", proc.pid, grace_s)
            proc.kill()
            proc.wait()


def _is_stack_frame(line: str) -> bool:
    # JVM stack frames ("\tat ...", "\t... 12 more") bury the message lines that explain a crash.
    return line.startswith(("\tat ", "\t... "))


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of `path` without JVM stack frames; "" when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    kept = [line for line in text.splitlines() if not _is_stack_frame(line)]
    return "\n".join(kept[-lines:])


def quote_logs(paths: Iterable[Path], lines: int = 30) -> str:
    """Tails of every non-empty log in `paths`, each under a header naming the file."""
    parts = []
    for path in paths:
        text = tail(path, lines)
        if text:
            parts.append(f"--- last {lines} lines of {path} (stack frames left out) ---\n{text}")
    return "\n".join(parts)


class Stoppable(Protocol):
    """Anything that owns processes and can stop them."""

    def stop(self) -> None: ...


# Strong references on purpose: a launcher dropped without stop() must still be stopped at exit,
# or its JVM outlives the test session holding ~400 MB.
_running: set[Stoppable] = set()
_hook_installed = False


def _stop_all() -> None:
    for owner in list(_running):
        owner.stop()


def stop_at_exit(owner: Stoppable) -> None:
    """Make sure `owner.stop()` runs when the interpreter exits, unless it was stopped already."""
    global _hook_installed
    if not _hook_installed:
        atexit.register(_stop_all)
        _hook_installed = True
    _running.add(owner)


def forget_at_exit(owner: Stoppable) -> None:
    """Undo `stop_at_exit` once `owner` has stopped."""
    _running.discard(owner)
