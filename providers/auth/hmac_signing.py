"""HMAC request signing and its pure verifier (the fake provider checks signatures with it).

Canonical string, one field per line::

    METHOD\\n/path?query\\nTIMESTAMP\\nhex(sha256(body))

``/path?query`` is the request target exactly as sent (percent-encoding untouched), the
timestamp is integer epoch seconds. The signature is HMAC(secret, canonical) in hex or base64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal

from providers.auth.request import PreparedRequest, path_and_query
from providers.auth.signer import StaticSigner, secret_forms

Algorithm = Literal["sha256", "sha512"]
Encoding = Literal["hex", "base64"]

_EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()


def body_digest(body: bytes | None) -> str:
    """Hex SHA-256 of the body; no body hashes like an empty one."""
    return hashlib.sha256(body).hexdigest() if body else _EMPTY_BODY_SHA256


def canonical_string(method: str, target: str, timestamp: str, body: bytes | None) -> bytes:
    """Return the bytes that get signed."""
    return f"{method.upper()}\n{target}\n{timestamp}\n{body_digest(body)}".encode()


def compute_signature(
    secret: bytes,
    *,
    method: str,
    target: str,
    timestamp: str,
    body: bytes | None,
    algorithm: Algorithm = "sha256",
    encoding: Encoding = "hex",
) -> str:
    """Return the signature of one request.

    Args:
        secret: the shared secret.
        method: HTTP method (case-insensitive).
        target: ``/path?query`` as sent on the wire.
        timestamp: integer epoch seconds, as text.
        body: request body, or None.
        algorithm: HMAC digest.
        encoding: text form of the MAC.

    Returns:
        The MAC in hex or standard base64.
    """
    mac = hmac.new(secret, canonical_string(method, target, timestamp, body), algorithm)
    if encoding == "hex":
        return mac.hexdigest()
    return base64.b64encode(mac.digest()).decode("ascii")


def verify_hmac(
    secret: bytes,
    *,
    method: str,
    target: str,
    body: bytes | None,
    signature: str | None,
    timestamp: str | None,
    now: float,
    max_skew_s: float = 300.0,
    algorithm: Algorithm = "sha256",
    encoding: Encoding = "hex",
) -> bool:
    """Check a signed request: signature matches and timestamp within ``max_skew_s`` of ``now``.

    Args:
        secret: the shared secret.
        method: HTTP method as received.
        target: ``/path?query`` as received (aiohttp: ``request.raw_path``).
        body: the received body.
        signature: value of the signature header, None if absent.
        timestamp: value of the timestamp header, None if absent.
        now: the verifier's epoch seconds.
        max_skew_s: accepted clock difference either way (limits replay of captured requests).
        algorithm: HMAC digest.
        encoding: text form of the MAC.

    Returns:
        True only if both checks pass; never raises on malformed input.
    """
    # isascii: str.isdigit() also accepts digits such as "²" that int() rejects.
    if not signature or not timestamp or len(timestamp) > 20:
        return False
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs(now - int(timestamp)) > max_skew_s:
        return False
    expected = compute_signature(
        secret,
        method=method,
        target=target,
        timestamp=timestamp,
        body=body,
        algorithm=algorithm,
        encoding=encoding,
    )
    # Constant time, so response timing does not reveal how many leading characters matched.
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


class HmacSigner(StaticSigner):
    """Signs each request with timestamp, key id and HMAC headers."""

    __slots__ = (
        "_algorithm",
        "_encoding",
        "_forms",
        "_key_id",
        "_key_id_header",
        "_secret",
        "_signature_header",
        "_timestamp_header",
    )

    def __init__(
        self,
        *,
        key_id: str,
        secret: str,
        algorithm: Algorithm = "sha256",
        encoding: Encoding = "hex",
        signature_header: str = "X-Signature",
        timestamp_header: str = "X-Timestamp",
        key_id_header: str = "X-Key-Id",
    ) -> None:
        self._key_id = key_id
        self._secret = secret.encode()
        self._forms = secret_forms(secret)
        self._algorithm: Algorithm = algorithm
        self._encoding: Encoding = encoding
        self._signature_header = signature_header
        self._timestamp_header = timestamp_header
        self._key_id_header = key_id_header

    def apply(self, request: PreparedRequest, *, now: float) -> PreparedRequest:
        timestamp = str(int(now))
        signature = compute_signature(
            self._secret,
            method=request.method,
            target=path_and_query(request.url),
            timestamp=timestamp,
            body=request.body,
            algorithm=self._algorithm,
            encoding=self._encoding,
        )
        return request.with_headers(self._headers_for(signature, timestamp))

    def secret_forms(self) -> tuple[str, ...]:
        """The shared secret (never sent, but a provider's debug output may still show it)."""
        return self._forms

    def _headers_for(self, signature: str, timestamp: str) -> Mapping[str, str]:
        return {
            self._key_id_header: self._key_id,
            self._timestamp_header: timestamp,
            self._signature_header: signature,
        }

    def __repr__(self) -> str:
        return f"HmacSigner(key_id={self._key_id!r}, algorithm={self._algorithm!r})"
