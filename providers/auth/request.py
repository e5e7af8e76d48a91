"""The client-agnostic request providers build and signers sign: cheap to copy, safe to print."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class PreparedRequest(NamedTuple):
    """An HTTP request ready to send with any client (a NamedTuple: built and re-built per
    call, and a frozen dataclass costs about three times as much to build).

    ``url`` is absolute with its query already percent-encoded, so clients must send it as is
    (aiohttp: ``yarl.URL(url, encoded=True)``): HMAC signatures cover these exact bytes.
    ``headers`` is treated as immutable; the ``with_*`` helpers return a new request.
    """

    method: str
    url: str
    headers: Mapping[str, str] = _NO_HEADERS
    body: bytes | None = None

    def with_headers(
        self, headers: Mapping[str, str] = _NO_HEADERS, /, **more: str
    ) -> PreparedRequest:
        """Return a copy with headers added (replacing same-named ones, exact case).

        ``with_headers({"X-API-Key": k})`` for any name; ``with_headers(Authorization=v)`` for
        names that are identifiers.
        """
        return PreparedRequest(
            self.method, self.url, {**self.headers, **headers, **more}, self.body
        )

    def with_url(self, url: str) -> PreparedRequest:
        return PreparedRequest(self.method, url, self.headers, self.body)

    def with_query_fragment(self, encoded: str) -> PreparedRequest:
        """Return a copy with ``encoded`` (``name=value``, percent-encoded) added to the query."""
        url = self.url
        base, hash_, fragment = url.partition("#")
        joiner = "&" if "?" in base else "?"
        if base.endswith(("?", "&")):
            joiner = ""
        return self.with_url(f"{base}{joiner}{encoded}{hash_}{fragment}")

    @property
    def path_and_query(self) -> str:
        """The origin-form target (``/path?query``) exactly as it goes on the wire."""
        return path_and_query(self.url)

    def __repr__(self) -> str:
        # Header values, query values and bodies can carry credentials: show only their shape.
        base, _, query = self.url.partition("?")
        names = "&".join(part.partition("=")[0] for part in query.split("&")) if query else ""
        shown_url = f"{base}?{names}" if query else base
        size = "None" if self.body is None else f"<{len(self.body)} bytes>"
        return (
            f"PreparedRequest(method={self.method!r}, url={shown_url!r}, "
            f"headers={sorted(self.headers)!r}, body={size})"
        )

    def __str__(self) -> str:
        return repr(self)


def path_and_query(url: str) -> str:
    """Return ``/path?query`` of an absolute URL without parsing it (hot path: no urlsplit)."""
    scheme_end = url.find("://")
    authority_at = scheme_end + 3 if scheme_end >= 0 else 0
    slash = url.find("/", authority_at)
    query_at = url.find("?", authority_at)
    if query_at >= 0 and (slash < 0 or query_at < slash):
        target = "/" + url[query_at:]  # "https://host?q" has an empty path, sent as "/"
    elif slash >= 0:
        target = url[slash:]
    else:
        target = "/"
    return target.partition("#")[0]
