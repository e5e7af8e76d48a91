"""One declared operation, compiled once, turning request events into safe prepared requests."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from providers.auth.request import PreparedRequest
from providers.declaration import OperationSpec, ParamSpec, ProviderSpec
from providers.errors import BadRequest, BodyTooLarge, NotAllowed
from schemas.models import RequestEvent

# A value that a URL parser would read as an absolute or scheme-relative URL ("//evil", "\\evil").
_URLISH = re.compile(r"^\s*(?:[A-Za-z][A-Za-z0-9+.\-]*:)?[\\/]{2}")
_UNSAFE_HEADER_VALUE = re.compile(r"[\r\n\0]")
# Segments that URL normalisation (client, proxy or server) would resolve away.
_DOT_SEGMENTS = frozenset({"", ".", ".."})
_USER_AGENT = "callstream/0.1"


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    encoded_name: str
    required: bool
    default: str | None
    pattern: re.Pattern[str] | None
    allow_urls: bool

    @classmethod
    def of(cls, name: str, spec: ParamSpec, *, required: bool = False) -> _Param:
        pattern = re.compile(spec.pattern) if spec.pattern else None
        return cls(
            name, quote(name, safe=""), required or spec.required, spec.default, pattern,
            spec.allow_urls,
        )  # fmt: skip


class CompiledOperation:
    """The precomputed parts of one operation; ``build`` does only per-event work."""

    __slots__ = (
        "_allowed_headers", "_body", "_host", "_idempotency_header", "_known", "_max_body",
        "_path_params", "_pieces", "_prefix", "_query", "_request_id_header", "_static_headers",
        "method", "name", "spec", "timeout_s",
    )  # fmt: skip

    def __init__(self, name: str, op: OperationSpec, provider: ProviderSpec) -> None:
        self.name, self.spec, self.method = name, op, op.method
        self.timeout_s = op.timeout_s or provider.timeout_s
        self._prefix, self._host = provider.base_url, provider.host
        self._pieces = tuple((lit, fld) for lit, fld, _, _ in string.Formatter().parse(op.path))
        default = ParamSpec()
        self._path_params = {
            n: _Param.of(n, op.path_params.get(n, default), required=True) for n in op.placeholders
        }
        self._query = tuple(_Param.of(n, p) for n, p in op.query_params.items())
        self._known = frozenset(self._path_params) | frozenset(op.query_params)
        self._allowed_headers = {h.lower(): h for h in op.allowed_headers}
        self._static_headers = {"User-Agent": _USER_AGENT, **provider.headers}
        self._body, self._max_body = op.body, provider.max_request_bytes
        self._request_id_header = provider.request_id_header
        # Keys only matter where a replay could repeat a side effect (Stripe ignores them on GET).
        self._idempotency_header = None if op.is_idempotent else provider.idempotency_header

    def build(self, event: RequestEvent) -> PreparedRequest:
        """The request for ``event``, or NotAllowed/BadRequest/BodyTooLarge; never any I/O."""
        params = event.params
        if not params.keys() <= self._known:
            unknown = ", ".join(sorted(params.keys() - self._known))
            raise NotAllowed(f"{self.name}: undeclared parameters: {unknown}")
        url = self._prefix + self._path(params)
        query = self._query_string(params)
        if query:
            url = f"{url}?{query}"
        headers = self._headers(event)
        body = self._body_of(event, headers)
        return PreparedRequest(method=self.method, url=url, headers=headers, body=body)

    def _path(self, params: Mapping[str, str]) -> str:
        out = []
        for literal, name in self._pieces:
            out.append(literal)
            if name is not None:
                param = self._path_params[name]
                value = params.get(name, param.default)
                if value is None:
                    raise BadRequest(f"{self.name}: missing path parameter {name!r}")
                self._check(param, value)
                if value in _DOT_SEGMENTS:
                    raise NotAllowed(f"{self.name}: path parameter {name!r} is empty or a dot")
                out.append(_encode(value))
        return "".join(out)

    def _query_string(self, params: Mapping[str, str]) -> str:
        pairs = []
        for param in self._query:
            value = params.get(param.name, param.default)
            if value is None:
                if param.required:
                    raise BadRequest(f"{self.name}: missing query parameter {param.name!r}")
                continue
            self._check(param, value)
            pairs.append(f"{param.encoded_name}={_encode(value)}")
        return "&".join(pairs)

    def _check(self, param: _Param, value: str) -> None:
        if param.pattern is not None and not param.pattern.fullmatch(value):
            raise BadRequest(f"{self.name}: parameter {param.name!r} does not match its pattern")
        urlish = ("/" in value or "\\" in value) and _URLISH.match(value)
        if urlish and not param.allow_urls and not self._same_host(value):
            raise NotAllowed(f"{self.name}: parameter {param.name!r} names another host")

    def _same_host(self, value: str) -> bool:
        try:
            return urlsplit(value.strip().replace("\\", "/")).hostname == self._host
        except ValueError:
            return False

    def _headers(self, event: RequestEvent) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in event.headers.items():
            canonical = self._allowed_headers.get(name.lower())
            if canonical is None:
                raise NotAllowed(f"{self.name}: header {name!r} is not on the allow-list")
            if _UNSAFE_HEADER_VALUE.search(value):
                raise NotAllowed(f"{self.name}: header {name!r} has a control character")
            headers[canonical] = value
        headers.update(self._static_headers)
        if self._request_id_header:
            headers[self._request_id_header] = event.request_id
        if self._idempotency_header:
            headers[self._idempotency_header] = event.effective_idempotency_key()
        return headers

    def _body_of(self, event: RequestEvent, headers: dict[str, str]) -> bytes | None:
        body, spec = event.body, self._body
        if spec is None:
            if body is not None or event.content_type is not None:
                raise NotAllowed(f"{self.name}: operation takes no body")
            return None
        if body is None:
            if spec.required:
                raise BadRequest(f"{self.name}: body required")
            return None
        if len(body) > self._max_body:
            raise BodyTooLarge(f"{self.name}: body of {len(body)} bytes over {self._max_body}")
        content_type = event.content_type or spec.content_types[0]
        media = content_type.split(";", 1)[0].strip().lower()
        if media not in spec.content_types or _UNSAFE_HEADER_VALUE.search(content_type):
            raise NotAllowed(f"{self.name}: content type {media!r} not declared")
        headers["Content-Type"] = content_type
        return body


def _encode(value: str) -> str:
    """Percent-encode everything but unreserved characters; plain words skip the work."""
    if value.isascii() and value.isalnum():
        return value
    # safe="" encodes '/', '?', '#', '%' and '@': a value stays one path segment or query value.
    return quote(value, safe="")
