"""Limit keys ("provider/credential#shard") and the stable cache-key-to-shard hash."""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

__all__ = ["LimitKey", "limit_key", "parse_limit_key", "shard_for"]

# Names are restricted rather than escaped: a key is also a Kafka message key, a metrics
# label and a log field, and "/" and "#" must stay unambiguous separators.
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


class LimitKey(NamedTuple):
    """The parts of a limit key: one bucket, owned by exactly one partition."""

    provider: str
    credential: str | None = None
    shard: int | None = None

    def __str__(self) -> str:
        return limit_key(self.provider, self.credential, self.shard)


def limit_key(provider: str, credential: str | None = None, shard: int | None = None) -> str:
    """Build "provider", "provider/credential", "provider#3" or "provider/credential#3"."""
    _check_name("provider", provider)
    key = provider
    if credential is not None:
        _check_name("credential", credential)
        key = f"{key}/{credential}"
    if shard is not None:
        if shard < 0:
            raise ValueError(f"shard must be >= 0, got {shard}")
        key = f"{key}#{shard}"
    return key


def parse_limit_key(key: str) -> LimitKey:
    """Split a key built by `limit_key`; raise ValueError for anything it would not build."""
    head, hashmark, shard_text = key.partition("#")
    shard = _parse_shard(shard_text) if hashmark else None
    provider, slash, credential = head.partition("/")
    parsed = LimitKey(provider, credential if slash else None, shard)
    if str(parsed) != key:  # also rejects bad names, since limit_key validates them
        raise ValueError(f"not a canonical limit key: {key!r}")
    return parsed


def shard_for(cache_key: str | bytes, n: int) -> int:
    """The shard in [0, n) for a cache key: stable across processes and releases.

    Python's `hash` is salted per process, so it cannot route. BLAKE2b gives 64 well-mixed
    bits, and jump consistent hashing (Lamping and Veach, 2014, arXiv:1406.2294) maps them to
    a shard so that growing n to n + 1 moves only 1/(n + 1) of the keys, keeping most of each
    shard's cache warm.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    data = cache_key.encode() if isinstance(cache_key, str) else cache_key
    return _jump(int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big"), n)


def _jump(key: int, n: int) -> int:
    # The paper's linear congruential walk: each step jumps to the next bucket that would
    # claim this key as the bucket count grows, until the jump passes n.
    bucket, candidate = -1, 0
    while candidate < n:
        bucket = candidate
        key = (key * 2862933555777941757 + 1) % (1 << 64)
        candidate = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


def _check_name(what: str, name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{what} name must match {_NAME.pattern}, got {name!r}")


def _parse_shard(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"shard must be decimal digits, got {text!r}")
    return int(text)


def request_limit_key(provider: str, request_id: str, shards: int = 1) -> str:
    """The limit key a request spends tokens from, which is also its Kafka message key.

    With one shard it is the provider's name, so one partition owns the provider's bucket;
    with N shards a request goes to shard ``shard_for(request_id, N)``.
    """
    if shards <= 1:
        return limit_key(provider)
    return limit_key(provider, shard=shard_for(request_id, shards))
