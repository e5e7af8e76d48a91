"""API key, bearer, basic and no-auth signers: what each adds, and that it is precomputed."""

from __future__ import annotations

import base64

import pytest

from providers.auth.api_key import ApiKeySigner
from providers.auth.basic import BasicSigner, basic_header_value
from providers.auth.bearer import BearerSigner
from providers.auth.request import PreparedRequest
from providers.auth.signer import NoAuthSigner, Signer, StaticSigner, SyncSigner

REQUEST = PreparedRequest("GET", "https://api.test/v1/items?a=1", {"Accept": "json"})


@pytest.mark.parametrize(
    ("signer", "headers", "url"),
    [
        (NoAuthSigner(), {}, REQUEST.url),
        (ApiKeySigner(name="X-API-Key", key="k1"), {"X-API-Key": "k1"}, REQUEST.url),
        (
            ApiKeySigner(name="appid", key="k 1&x", in_="query"),
            {},
            REQUEST.url + "&appid=k%201%26x",
        ),
        (BearerSigner(token="t0k"), {"Authorization": "Bearer t0k"}, REQUEST.url),
        (
            BasicSigner(username="user", password="pässword"),
            {"Authorization": "Basic " + base64.b64encode("user:pässword".encode()).decode()},
            REQUEST.url,
        ),
        (
            BasicSigner(username="sk_test_1", password=""),
            {"Authorization": "Basic " + base64.b64encode(b"sk_test_1:").decode()},
            REQUEST.url,
        ),
    ],
)
async def test_signer_adds_credentials(signer, headers, url):
    signed = await signer.sign(REQUEST, now=0.0)
    assert signed.headers == {"Accept": "json", **headers}
    assert signed.url == url
    assert signer.apply(REQUEST, now=0.0) == signed
    assert REQUEST.headers == {"Accept": "json"}, "the input request is never modified"
    assert isinstance(signer, SyncSigner)
    assert isinstance(signer, Signer)


def test_basic_header_matches_rfc7617_example():
    # RFC 7617 §2: "Aladdin" / "open sesame".
    assert basic_header_value("Aladdin", "open sesame") == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="


def test_static_signers_ignore_401():
    signer = BearerSigner(token="t")
    signer.on_unauthorized(REQUEST)
    signer.on_unauthorized()
    assert signer.apply(REQUEST, now=0).headers["Authorization"] == "Bearer t"


def test_header_value_is_built_once():
    signer = BearerSigner(token="t")
    first = signer.apply(REQUEST, now=0).headers["Authorization"]
    second = signer.apply(REQUEST, now=1).headers["Authorization"]
    assert first is second


@pytest.mark.parametrize(
    "signer",
    [
        ApiKeySigner(name="X-Key", key="s3cr3t"),
        BearerSigner(token="s3cr3t"),
        BasicSigner(username="s3cr3t", password="s3cr3t"),
        NoAuthSigner(),
    ],
)
def test_repr_hides_credentials(signer: StaticSigner) -> None:
    assert "s3cr3t" not in repr(signer)
    assert "s3cr3t" not in str(signer)
