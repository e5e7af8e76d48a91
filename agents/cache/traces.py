"""The real request traces the cache is judged on (issue 23), as (time, key) requests.

Kept in ``../shared/traces`` beside the repository (its README gives sources and licences;
``ENVIRONMENT.md``, section "Real traces", the parse statistics these loaders reproduce):

- ``nasa``: the NASA KSC web server log of 1995-08-01 (TSV: host, logname, time in unix
  seconds, method, url, response, bytes). The GETs, key = url: 30,873 requests, 2,088 keys.
- ``apache``: an Apache combined log of a real site, 17-20 May 2015. The GETs, key = the
  request target as logged (path and query): 9,952 requests, 1,486 keys. Its lines are in
  order by minute only (shuffled within each), so ``time_s`` can step back by up to 59 s; the
  requests come in file order, as the simulators read them.
- ``web07``: cache2k's e-commerce object accesses, big-endian int32 keys, xz-compressed:
  76,118 requests, 20,484 keys, no timestamps (``time_s`` is None).

``time_s`` is seconds after the trace's earliest request divided by ``speedup``, so a replay
(``bench cache``) can compress a day into minutes with the same order and the same keys.
Loaders yield ``TraceRequest`` rows; ``trace_keys`` gives the key sequence for the simulators.
"""

from __future__ import annotations

import array
import lzma
import re
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "APACHE_TRACE",
    "NASA_TRACE",
    "TRACES",
    "TRACE_DIR",
    "WEB07_TRACE",
    "TraceRequest",
    "read_apache",
    "read_cache2k",
    "read_nasa",
    "trace_keys",
]

# Beside the repository: <workspace>/shared/traces, next to <workspace>/main.
TRACE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "traces"
NASA_TRACE = TRACE_DIR / "nasa_19950801.tsv"
APACHE_TRACE = TRACE_DIR / "elastic_apache_logs_2015.log"
WEB07_TRACE = TRACE_DIR / "cache2k" / "web07.trace.xz"

# host ident user [time] "METHOD target PROTOCOL" ...: the method and the target (a request
# line without a protocol, HTTP/0.9 style, has none).
_APACHE_LINE = re.compile(r'^\S+ \S+ \S+ \[([^\]]+)\] "(\S+) (\S+)[^"]*"')
_APACHE_TIME = "%d/%b/%Y:%H:%M:%S %z"


class TraceRequest(NamedTuple):
    """One request of a trace."""

    # Seconds after the trace's earliest request, divided by the speedup; None: no clock.
    time_s: float | None
    # What the cache is keyed by: a url or request target, or cache2k's object id.
    key: str | int


def read_nasa(path: Path = NASA_TRACE, *, speedup: float = 1.0) -> Iterator[TraceRequest]:
    """The NASA 1995 log's GET requests (key = url), in file order (sorted by time)."""
    _check_speedup(speedup)
    rows: list[tuple[int, str]] = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        header = next(lines, "").rstrip("\n").split("\t")
        if header[2:5] != ["time", "method", "url"]:
            raise ValueError(f"{path}: not the NASA TSV (header {header[:5]})")
        for number, line in enumerate(lines, start=2):
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 5:
                raise ValueError(f"{path}:{number}: {len(fields)} fields, expected 7")
            if fields[3] == "GET":
                rows.append((int(fields[2]), fields[4]))
    yield from _timed(rows, speedup)


def read_apache(path: Path = APACHE_TRACE, *, speedup: float = 1.0) -> Iterator[TraceRequest]:
    """The Apache log's GET requests (key = request target), in file order."""
    _check_speedup(speedup)
    rows: list[tuple[float, str]] = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            match = _APACHE_LINE.match(line)
            if match is None:
                raise ValueError(f"{path}:{number}: not an Apache combined log line")
            stamp, method, target = match.groups()
            if method == "GET":
                rows.append((datetime.strptime(stamp, _APACHE_TIME).timestamp(), target))
    yield from _timed(rows, speedup)


def read_cache2k(path: Path = WEB07_TRACE) -> Iterator[TraceRequest]:
    """A cache2k trace: xz-compressed big-endian int32 object ids, no timestamps."""
    data = lzma.decompress(path.read_bytes())
    if len(data) % 4:
        raise ValueError(f"{path}: {len(data)} bytes, not a whole number of int32 keys")
    keys = array.array("i", data)  # itemsize 4 on every platform CPython supports
    if sys.byteorder == "little":
        keys.byteswap()
    for key in keys:
        yield TraceRequest(None, key)


# The loaders by trace name, the order results are shown in.
TRACES: dict[str, Callable[[], Iterator[TraceRequest]]] = {
    "nasa": read_nasa,
    "apache": read_apache,
    "web07": read_cache2k,
}


def trace_keys(name: str) -> list[str | int]:
    """The key sequence of the named trace (``TRACES``)."""
    return [request.key for request in TRACES[name]()]


def _timed(
    rows: list[tuple[float, str]] | list[tuple[int, str]], speedup: float
) -> Iterator[TraceRequest]:
    if not rows:
        return
    start = min(stamp for stamp, _ in rows)
    for stamp, key in rows:
        yield TraceRequest((stamp - start) / speedup, key)


def _check_speedup(speedup: float) -> None:
    if not speedup > 0:
        raise ValueError(f"speedup must be > 0, got {speedup}")
