"""API key in a header or a query parameter, encoded once at construction."""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from providers.auth.request import PreparedRequest
from providers.auth.signer import StaticSigner, secret_forms


class ApiKeySigner(StaticSigner):
    """Adds a static key as ``name: key`` header or ``?name=key`` query parameter."""

    __slots__ = ("_forms", "_header", "_in", "_name", "_query")

    def __init__(self, *, name: str, key: str, in_: Literal["header", "query"] = "header") -> None:
        self._in = in_
        self._name = name
        self._header = {name: key}
        self._query = f"{quote(name, safe='')}={quote(key, safe='')}"
        self._forms = secret_forms(key)

    def secret_forms(self) -> tuple[str, ...]:
        return self._forms

    def apply(self, request: PreparedRequest, *, now: float) -> PreparedRequest:
        if self._in == "header":
            return request.with_headers(self._header)
        return request.with_query_fragment(self._query)

    def __repr__(self) -> str:
        return f"ApiKeySigner(in_={self._in!r}, name={self._name!r})"
