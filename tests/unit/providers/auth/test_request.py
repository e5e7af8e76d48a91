"""PreparedRequest: copy helpers, the wire target, and a repr that hides credentials."""

from __future__ import annotations

import pytest

from providers.auth.request import PreparedRequest, path_and_query

BASE = PreparedRequest("GET", "https://api.test/v1/items?a=1", {"Accept": "json"})


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("https://api.test/v1/items?a=1&b=%20", "/v1/items?a=1&b=%20"),
        ("https://api.test", "/"),
        ("https://api.test?x=1", "/?x=1"),
        ("https://api.test?x=/y", "/?x=/y"),
        ("http://127.0.0.1:8080/p#frag", "/p"),
        ("https://api.test/p/?q=a#f", "/p/?q=a"),
    ],
)
def test_path_and_query(url, target):
    assert path_and_query(url) == target


def test_with_headers_keyword_form():
    assert BASE.with_headers(Authorization="Bearer x").headers == {
        "Accept": "json",
        "Authorization": "Bearer x",
    }


def test_with_headers_copies_and_overrides():
    signed = BASE.with_headers({"Authorization": "Bearer x", "Accept": "xml"})
    assert signed.headers == {"Accept": "xml", "Authorization": "Bearer x"}
    assert BASE.headers == {"Accept": "json"}
    assert (signed.method, signed.url, signed.body) == (BASE.method, BASE.url, BASE.body)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.test/v1", "https://api.test/v1?k=v"),
        ("https://api.test/v1?a=1", "https://api.test/v1?a=1&k=v"),
        ("https://api.test/v1?", "https://api.test/v1?k=v"),
        ("https://api.test/v1#top", "https://api.test/v1?k=v#top"),
    ],
)
def test_with_query_fragment(url, expected):
    assert BASE.with_url(url).with_query_fragment("k=v").url == expected


def test_is_frozen():
    with pytest.raises(AttributeError):
        BASE.url = "https://elsewhere.test/"  # type: ignore[misc]


def test_repr_shows_shape_not_values():
    request = PreparedRequest(
        "POST",
        "https://api.test/v1?appid=s3cr3t&q=x",
        {"Authorization": "Bearer s3cr3t"},
        b"client_secret=s3cr3t",
    )
    for text in (repr(request), str(request)):
        assert "s3cr3t" not in text
        assert "appid" in text
        assert "Authorization" in text
        assert "<20 bytes>" in text
