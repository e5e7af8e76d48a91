"""HMAC signing and verification: a fixed vector, the skew window, tamper detection."""

from __future__ import annotations

import base64
import hashlib
import hmac as std_hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.auth.hmac_signing import (
    HmacSigner,
    canonical_string,
    compute_signature,
    verify_hmac,
)
from providers.auth.request import PreparedRequest

SECRET = b"shared-secret"
NOW = 1_700_000_000.0


def test_canonical_string_layout():
    body_hash = hashlib.sha256(b'{"a":1}').hexdigest()
    assert canonical_string("post", "/v1/x?b=2", "1700000000", b'{"a":1}') == (
        f"POST\n/v1/x?b=2\n1700000000\n{body_hash}".encode()
    )
    assert canonical_string("GET", "/", "1", None) == canonical_string("GET", "/", "1", b"")


@pytest.mark.parametrize("encoding", ["hex", "base64"])
def test_signature_matches_stdlib(encoding):
    message = canonical_string("GET", "/v1/items/1", "1700000000", None)
    mac = std_hmac.new(SECRET, message, "sha256")
    expected = mac.hexdigest() if encoding == "hex" else base64.b64encode(mac.digest()).decode()
    assert (
        compute_signature(
            SECRET,
            method="GET",
            target="/v1/items/1",
            timestamp="1700000000",
            body=None,
            encoding=encoding,
        )
        == expected
    )


async def test_signer_sets_headers_over_the_wire_target():
    signer = HmacSigner(key_id="key-1", secret="shared-secret")
    request = PreparedRequest("POST", "https://api.test/v1/echo?x=%2F", {}, b"hello")
    signed = await signer.sign(request, now=NOW + 0.9)
    headers = signed.headers
    assert headers["X-Key-Id"] == "key-1"
    assert headers["X-Timestamp"] == "1700000000"
    assert verify_hmac(
        SECRET,
        method="POST",
        target="/v1/echo?x=%2F",
        body=b"hello",
        signature=headers["X-Signature"],
        timestamp=headers["X-Timestamp"],
        now=NOW,
    )


@pytest.mark.parametrize(
    ("timestamp", "now", "ok"),
    [
        ("1700000000", NOW + 300, True),
        ("1700000000", NOW - 300, True),
        ("1700000000", NOW + 301, False),
        ("1700000000", NOW - 301, False),
        ("17000000x0", NOW, False),
        ("²", NOW, False),
        ("9" * 40, NOW, False),
        (None, NOW, False),
    ],
)
def test_skew_window_and_malformed_timestamps(timestamp, now, ok):
    signature = compute_signature(
        SECRET, method="GET", target="/", timestamp="1700000000", body=None
    )
    assert (
        verify_hmac(
            SECRET,
            method="GET",
            target="/",
            body=None,
            signature=signature,
            timestamp=timestamp,
            now=now,
        )
        is ok
    )


def test_missing_or_garbage_signature():
    for signature in (None, "", "zz", "é" * 64):
        assert not verify_hmac(
            SECRET,
            method="GET",
            target="/",
            body=None,
            signature=signature,
            timestamp="1700000000",
            now=NOW,
        )


methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])
targets = st.from_regex(r"/[a-z0-9/%._-]{0,40}(\?[a-z0-9=&%]{0,30})?", fullmatch=True)
bodies = st.one_of(st.none(), st.binary(max_size=256))
secrets_ = st.binary(min_size=1, max_size=64)
encodings = st.sampled_from(["hex", "base64"])
algorithms = st.sampled_from(["sha256", "sha512"])


@given(
    secret=secrets_,
    method=methods,
    target=targets,
    body=bodies,
    encoding=encodings,
    algorithm=algorithms,
    skew=st.integers(-300, 300),
)
def test_round_trip(secret, method, target, body, encoding, algorithm, skew):
    signature = compute_signature(
        secret,
        method=method,
        target=target,
        timestamp="1700000000",
        body=body,
        algorithm=algorithm,
        encoding=encoding,
    )
    assert verify_hmac(
        secret,
        method=method,
        target=target,
        body=body,
        signature=signature,
        timestamp="1700000000",
        now=NOW + skew,
        algorithm=algorithm,
        encoding=encoding,
    )


@given(secret=secrets_, method=methods, target=targets, body=bodies, data=st.data())
def test_any_tampering_is_detected(secret, method, target, body, data):
    signature = compute_signature(
        secret, method=method, target=target, timestamp="1700000000", body=body
    )
    fields = {
        "secret": secret,
        "method": method,
        "target": target,
        "body": body,
        "timestamp": "1700000000",
        "signature": signature,
    }
    field = data.draw(st.sampled_from(sorted(fields)))
    tampered = dict(fields)
    if field == "secret":
        tampered["secret"] = secret + b"x"
    elif field == "method":
        tampered["method"] = data.draw(methods.filter(lambda m: m != method))
    elif field == "target":
        tampered["target"] = target + "x"
    elif field == "body":
        tampered["body"] = (body or b"") + b"x"
    elif field == "timestamp":
        tampered["timestamp"] = "1700000001"
    else:
        flipped = "0" if signature[0] != "0" else "1"
        tampered["signature"] = flipped + signature[1:]
    assert not verify_hmac(tampered.pop("secret"), now=NOW, **tampered)


def test_repr_hides_secret():
    signer = HmacSigner(key_id="key-1", secret="s3cr3t")
    assert "s3cr3t" not in repr(signer)
    assert "key-1" in repr(signer)
