"""One declared operation, compiled once, turning request events into safe prepared requests."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote, urlsplit

from providers.auth.request import PreparedRequest
from providers.declaration import OperationSpec, ParamSpec, ProviderSpec
from providers.errors import BadRequest, BodyTooLarge, NotAllowed
from schemas.models import RequestEvent

# A value that a URL parser would read as an absolute or scheme-relative URL: "//evil",
# "\\evil", "x-app://evil", and for the WHATWG special schemes any "http:evil", "https:/evil",
# "https:\\evil" (browsers and Node.js read all of them as http(s)://evil). Matched on the
# value as WHATWG reads it (``_as_url_parser_reads``).
_URLISH = re.compile(
    r"[\\/]{2}|[A-Za-z][A-Za-z0-9+.\-]*:[\\/]{2}|(?:https?|wss?|ftp|file):", re.IGNORECASE
)
# WHATWG URL parsing strips C0 controls and spaces at both ends and drops tab and newline
# anywhere ("h\ttp://evil" is "http://evil").
_C0_AND_SPACE = "".join(map(chr, range(0x21)))
_TAB_AND_NEWLINE = str.maketrans("", "", "\t\n\r")
# What aiohttp refuses in a header value (it raises ValueError at send time; tab is allowed).
_UNSAFE_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Segments that URL normalisation (client, proxy or server) would resolve away.
_DOT_SEGMENTS = frozenset({"", ".", ".."})
_USER_AGENT = "callstream/0.1"


class InputLimits(NamedTuple):
    """Per-value caps on what a request event may make us send (``caller.*`` settings)."""

    # Characters of one path or query parameter value (before percent-encoding).
    max_param_chars: int = 2048
    # Characters of one allowed header value, or of the content type.
    max_header_value_chars: int = 8192
    # A ceiling over every provider's own max_request_bytes; None: the provider's alone.
    max_body_bytes: int | None = None


DEFAULT_INPUT_LIMITS = InputLimits()


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

    def build(
        self, event: RequestEvent, limits: InputLimits = DEFAULT_INPUT_LIMITS
    ) -> PreparedRequest:
        """The request for ``event``, or NotAllowed/BadRequest/BodyTooLarge; never any I/O.

        Args:
            limits: caps on parameter and header values and on the body.
        """
        params = event.params
        if not params.keys() <= self._known:
            unknown = ", ".join(sorted(params.keys() - self._known))
            raise NotAllowed(f"{self.name}: undeclared parameters: {unknown}")
        max_chars = limits.max_param_chars
        url = self._prefix + self._path(params, max_chars)
        query = self._query_string(params, max_chars)
        if query:
            url = f"{url}?{query}"
        headers = self._headers(event, limits.max_header_value_chars)
        body = self._body_of(event, headers, limits)
        return PreparedRequest(method=self.method, url=url, headers=headers, body=body)

    def _path(self, params: Mapping[str, str], max_chars: int) -> str:
        out = []
        for literal, name in self._pieces:
            out.append(literal)
            if name is not None:
                param = self._path_params[name]
                value = params.get(name, param.default)
                if value is None:
                    raise BadRequest(f"{self.name}: missing path parameter {name!r}")
                self._check(param, value, max_chars)
                if value in _DOT_SEGMENTS:
                    raise NotAllowed(f"{self.name}: path parameter {name!r} is empty or a dot")
                out.append(_encode(value))
        return "".join(out)

    def _query_string(self, params: Mapping[str, str], max_chars: int) -> str:
        pairs = []
        for param in self._query:
            value = params.get(param.name, param.default)
            if value is None:
                if param.required:
                    raise BadRequest(f"{self.name}: missing query parameter {param.name!r}")
                continue
            self._check(param, value, max_chars)
            pairs.append(f"{param.encoded_name}={_encode(value)}")
        return "&".join(pairs)

    def _check(self, param: _Param, value: str, max_chars: int) -> None:
        if len(value) > max_chars:
            raise BadRequest(
                f"{self.name}: parameter {param.name!r} of {len(value)} characters over {max_chars}"
            )
        if param.pattern is not None and not param.pattern.fullmatch(value):
            raise BadRequest(f"{self.name}: parameter {param.name!r} does not match its pattern")
        if param.allow_urls or not ("/" in value or "\\" in value or ":" in value):
            return  # no URL without one of these: plain values skip the work below
        read = _as_url_parser_reads(value)
        if _URLISH.match(read) and not self._same_host(read):
            raise NotAllowed(f"{self.name}: parameter {param.name!r} names another host")

    def _same_host(self, read: str) -> bool:
        try:
            parts = urlsplit(read.replace("\\", "/"))
        except ValueError:
            return False
        # Only the full "scheme://host" form can name our host; "https:host" never does.
        return parts.netloc != "" and parts.hostname == self._host

    def _headers(self, event: RequestEvent, max_chars: int) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in event.headers.items():
            canonical = self._allowed_headers.get(name.lower())
            if canonical is None:
                raise NotAllowed(f"{self.name}: header {name!r} is not on the allow-list")
            _check_header_value(self.name, f"header {name!r}", value, max_chars)
            headers[canonical] = value
        headers.update(self._static_headers)
        if self._request_id_header:
            headers[self._request_id_header] = event.request_id
        if self._idempotency_header:
            headers[self._idempotency_header] = event.effective_idempotency_key()
        return headers

    def _body_of(
        self, event: RequestEvent, headers: dict[str, str], limits: InputLimits
    ) -> bytes | None:
        body, spec = event.body, self._body
        if spec is None:
            if body is not None or event.content_type is not None:
                raise NotAllowed(f"{self.name}: operation takes no body")
            return None
        if body is None:
            if spec.required:
                raise BadRequest(f"{self.name}: body required")
            return None
        max_body = self._max_body
        if limits.max_body_bytes is not None and limits.max_body_bytes < max_body:
            max_body = limits.max_body_bytes
        if len(body) > max_body:
            raise BodyTooLarge(f"{self.name}: body of {len(body)} bytes over {max_body}")
        content_type = event.content_type or spec.content_types[0]
        _check_header_value(self.name, "content type", content_type, limits.max_header_value_chars)
        media = content_type.split(";", 1)[0].strip().lower()
        if media not in spec.content_types:
            raise NotAllowed(f"{self.name}: content type {media!r} not declared")
        headers["Content-Type"] = content_type
        return body


def _check_header_value(operation: str, what: str, value: str, max_chars: int) -> None:
    """NotAllowed for a character aiohttp would refuse; BadRequest when over ``max_chars``."""
    if _UNSAFE_HEADER_VALUE.search(value):
        raise NotAllowed(f"{operation}: {what} has a control character")
    if len(value) > max_chars:
        raise BadRequest(f"{operation}: {what} of {len(value)} characters over {max_chars}")


def _as_url_parser_reads(value: str) -> str:
    """``value`` as a WHATWG URL parser sees it: ends stripped of C0 controls and spaces,
    tab and newline dropped anywhere."""
    return value.strip(_C0_AND_SPACE).translate(_TAB_AND_NEWLINE)


def _encode(value: str) -> str:
    """Percent-encode everything but unreserved characters; plain words skip the work."""
    if value.isascii() and value.isalnum():
        return value
    # safe="" encodes '/', '?', '#', '%' and '@': a value stays one path segment or query value.
    return quote(value, safe="")
