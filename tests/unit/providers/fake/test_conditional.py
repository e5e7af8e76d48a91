"""Item validators and the conditional GET decision (RFC 9110 13.1.2, 13.1.3, 13.2.2)."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import pytest

from providers.fake.conditional import http_date, none_match, not_modified, validators


def test_validators_derive_from_id_and_version():
    etag, last_modified_s = validators("42", 1)
    assert validators("42", 1) == (etag, last_modified_s)
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith('W/"')
    assert validators("43", 1)[0] != etag
    etag_2, last_modified_2 = validators("42", 2)
    assert etag_2 != etag
    assert last_modified_2 > last_modified_s, "a new version is later (If-Modified-Since)"


@pytest.mark.parametrize("item_id", ['a"b', "with space", "ünï", "x" * 500, ""])
def test_etag_is_valid_for_any_id(item_id):
    etag, _ = validators(item_id, 7)
    opaque = etag[1:-1]
    assert etag == f'"{opaque}"'
    assert all(c == "\x21" or "\x23" <= c <= "\x7e" for c in opaque)  # RFC 9110 etagc


def test_last_modified_is_a_past_http_date():
    _, last_modified_s = validators("42", 1_000_000)
    assert last_modified_s < time.time()
    text = http_date(last_modified_s)
    assert text.endswith(" GMT")
    assert parsedate_to_datetime(text).timestamp() == last_modified_s


ETAG = '"abc-v1"'


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        ('"abc-v1"', True),
        ("*", True),
        (" * ", True),
        ('W/"abc-v1"', True),  # weak comparison: W/ ignored
        ('"other", "abc-v1"', True),
        ('"other",W/"abc-v1" ,"more"', True),
        ('"abc-v2"', False),
        ('"abc-v1', False),
        ("abc-v1", False),
        ('"other"', False),
        ("", False),
    ],
)
def test_none_match(header, matches):
    assert none_match(header, ETAG) is matches


def test_none_match_with_our_tag_weak():
    assert none_match('"abc-v1"', 'W/"abc-v1"')


LAST_MODIFIED_S = 1_600_000_000  # Sun, 13 Sep 2020 12:26:40 GMT


@pytest.mark.parametrize(
    ("if_none_match", "if_modified_since", "expected"),
    [
        (None, None, False),
        ('"abc-v1"', None, True),
        ('"abc-v2"', None, False),
        (None, "Sun, 13 Sep 2020 12:26:40 GMT", True),  # at Last-Modified
        (None, "Mon, 14 Sep 2020 00:00:00 GMT", True),  # after it
        (None, "Sun, 13 Sep 2020 12:26:39 GMT", False),  # one second before
        (None, "not a date", False),  # ignored: the full answer
        (None, "", False),
        # If-None-Match decides when present, whatever the date says (RFC 9110 13.2.2).
        ('"abc-v2"', "Mon, 14 Sep 2020 00:00:00 GMT", False),
        ('"abc-v1"', "Sun, 13 Sep 2020 00:00:00 GMT", True),
    ],
)
def test_not_modified(if_none_match, if_modified_since, expected):
    assert not_modified(if_none_match, if_modified_since, ETAG, LAST_MODIFIED_S) is expected
