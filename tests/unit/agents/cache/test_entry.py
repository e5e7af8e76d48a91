"""Cached entries: built from a reply, refreshed by a 304, sized, and their L2 bytes (round
trips of any entry; garbage, truncations and unknown versions read as None)."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.cache.entry import (
    ENTRY_OVERHEAD_BYTES,
    FORMAT_VERSION,
    CachedResponse,
    decode_entry,
    encode_entry,
    from_reply,
)
from agents.cache.freshness import Lifetime
from providers.response import ProviderReply

CHECK = settings(database=None, deadline=None, max_examples=300)
NOW = 1_700_000_000.0
LIFE = Lifetime(NOW + 60, NOW + 120, NOW + 600)
HEADERS = {
    "content-type": "application/json",
    "etag": '"v1"',
    "cache-control": "max-age=60",
    "x-request-id": "abc",
}


def entry(**fields: Any) -> CachedResponse:
    reply = ProviderReply(200, b'{"login":"octocat"}', HEADERS, provider="github")
    return from_reply(reply, LIFE, NOW)._replace(**fields)


def test_from_reply_keeps_what_answers_a_request():
    reply = ProviderReply(
        203, b"hi", {"content-type": "text/plain"}, cost=1.5, response_type="text", provider="p"
    )
    assert from_reply(reply, LIFE, NOW) == CachedResponse(
        203, b"hi", {"content-type": "text/plain"}, "p", "text", NOW, LIFE
    )


def test_size_counts_body_header_characters_and_the_overhead():
    e = entry(body=b"x" * 1000, headers={"etag": '"v1"'})
    assert e.size == 1000 + len("etag") + len('"v1"') + ENTRY_OVERHEAD_BYTES


def test_age():
    assert entry().age_s(NOW + 12.5) == 12.5
    assert entry().age_s(NOW - 5) == 0.0  # a clock gone back


def test_revalidation_replaces_headers_of_the_same_name_and_keeps_the_body():
    later = Lifetime(NOW + 160, NOW + 220, NOW + 700)
    refreshed = entry().revalidated(
        {"ETag": '"v2"', "cache-control": "max-age=90", "date": "now", "content-type": "text/html"},
        later,
        NOW + 100,
    )
    assert refreshed.body == b'{"login":"octocat"}'
    assert refreshed.status == 200
    assert refreshed.headers == {
        "content-type": "application/json",  # describes the body kept: not replaced
        "etag": '"v2"',
        "cache-control": "max-age=90",
        "x-request-id": "abc",
        "date": "now",
    }
    assert refreshed.stored_at == NOW + 100
    assert refreshed.life == later
    assert entry().headers == HEADERS  # the stored entry is untouched


def test_repr_does_not_print_the_body():
    assert "<19 bytes>" in repr(entry())


# --- the L2 format -------------------------------------------------------------------------


def test_round_trip():
    e = entry()
    raw = encode_entry(e)
    assert raw[0] == FORMAT_VERSION
    assert decode_entry(raw) == e


def test_the_format_is_compact():
    e = entry(body=b"")
    header_bytes = sum(len(k) + len(v) for k, v in HEADERS.items())
    fixed = 1 + 2 + 4 * 8 + 3 * 2 + 4
    assert len(encode_entry(e)) == fixed + len("github") + len("json") + 6 * 4 + header_bytes


def test_lone_surrogates_round_trip():
    # aiohttp reads undecodable header bytes as surrogate escapes.
    e = entry(headers={"x-raw": "caf\udce9", "x-\ud800": "v"})
    assert decode_entry(encode_entry(e)) == e


# Any text, lone surrogates included (header values may carry undecodable bytes as them).
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
finite = st.floats(allow_nan=False, allow_infinity=False)
entries = st.builds(
    CachedResponse,
    status=st.integers(100, 599),
    body=st.binary(max_size=200),
    headers=st.dictionaries(any_text, any_text, max_size=6),
    provider=any_text,
    response_type=st.sampled_from(["json", "text", "bytes"]) | any_text,
    stored_at=finite,
    life=st.builds(Lifetime, finite, finite, finite),
)


@CHECK
@given(entries)
def test_any_entry_round_trips(e):
    assert decode_entry(encode_entry(e)) == e


@CHECK
@given(st.binary(max_size=300))
def test_garbage_never_raises(raw):
    decoded = decode_entry(raw)
    assert decoded is None or isinstance(decoded, CachedResponse)


@CHECK
@given(st.binary(max_size=300))
def test_garbage_behind_a_valid_version_never_raises(raw):
    decoded = decode_entry(bytes([FORMAT_VERSION]) + raw)
    assert decoded is None or isinstance(decoded, CachedResponse)


@CHECK
@given(e=entries, data=st.data())
def test_every_truncation_or_extension_reads_as_none(e, data):
    raw = encode_entry(e)
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert decode_entry(raw[:cut]) is None
    assert decode_entry(raw + data.draw(st.binary(min_size=1, max_size=4))) is None


@CHECK
@given(e=entries, data=st.data())
def test_a_flipped_byte_never_raises(e, data):
    raw = bytearray(encode_entry(e))
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] ^= data.draw(st.integers(1, 255))
    decoded = decode_entry(bytes(raw))
    assert decoded is None or isinstance(decoded, CachedResponse)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_an_unknown_version_reads_as_none(version):
    raw = encode_entry(entry())
    assert decode_entry(bytes([version]) + raw[1:]) is None


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_numbers_that_are_not_finite_read_as_none(number):
    raw = bytearray(encode_entry(entry()))
    struct.pack_into("<d", raw, 3, number)  # stored_at, after the version and the status
    assert decode_entry(bytes(raw)) is None


def test_invalid_utf8_reads_as_none():
    raw = bytearray(encode_entry(entry(provider="ab")))
    fixed = len(raw) - len(b"ab") - len(b"json") - len(b'{"login":"octocat"}')
    fixed -= sum(6 + len(k) + len(v) for k, v in HEADERS.items())
    raw[fixed] = 0xFF  # the provider's first byte
    assert decode_entry(bytes(raw)) is None


@pytest.mark.parametrize(
    "fields",
    [
        {"status": 70_000},
        {"status": -1},
        {"provider": "p" * 70_000},
        {"headers": {"x" * 70_000: "v"}},
    ],
)
def test_an_entry_that_does_not_fit_the_format_is_a_value_error(fields):
    with pytest.raises(ValueError, match="does not fit format"):
        encode_entry(entry(**fields))
