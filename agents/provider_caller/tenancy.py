"""Who a request is for, decided by where it was read rather than by what it says (pure).

A request's ``tenant`` and ``priority`` are written by its publisher. With a tenant table
configured (``[tenants.NAME]``), the worker decides them instead:

- a record read from a tenant's own topic belongs to that tenant, whatever its ``tenant``
  field claims (Kafka ACLs say who may write each topic, so the topic is the identity);
- a record read from the shared request topic keeps the tenant it names if the table knows
  it, and is charged as :data:`DEFAULT_TENANT` otherwise, so rotating made-up names shares
  one quota instead of minting fresh ones;
- the priority is capped at the tenant's ``max_priority`` (clamped, not refused: a priority
  is a hint, and the cap alone stops a tenant from jumping the queue);
- a provider or operation outside the tenant's globs is refused (``not_allowed``) before it
  spends a quota count or a token.

No Kafka here: the caller hands each record to :meth:`TenantGate.bind`, which costs one dict
lookup and one compiled-pattern match per record, and re-encodes the record only when it
changed it (so a forward to the shared topic carries the bound tenant, not the claimed one).
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from providers.errors import NotAllowed
from schemas.models import RequestEvent
from streams.errors import ConfigurationError
from streams.stage.records import SourceRecord

log = logging.getLogger(__name__)

# The schema's default tenant: what publishers that name none already get, and what every
# name the table does not know is charged as.
DEFAULT_TENANT = "default"
MAX_PRIORITY = 9
# Distinct (topic, claimed tenant) mismatches logged; past this they are only counted.
_LOGGED_MISMATCHES = 100


class TenantRuleLike(Protocol):
    """One tenant as settings give it (``streams.settings.TenantSettings`` fits)."""

    @property
    def topic(self) -> str | None: ...
    @property
    def providers(self) -> Sequence[str]: ...
    @property
    def operations(self) -> Sequence[str]: ...
    @property
    def max_priority(self) -> int: ...


def _compile(globs: Sequence[str]) -> re.Pattern[str] | None:
    """One regex for a list of case-sensitive globs; None when ``*`` makes it match anything."""
    if "*" in globs:
        return None
    if not globs:
        return re.compile(r"(?!)")  # an empty list allows nothing
    return re.compile("|".join(f"(?:{fnmatch.translate(glob)})" for glob in globs))


@dataclass(frozen=True)
class TenantRule:
    """What one tenant may call and how urgent its requests may be; globs compiled once."""

    name: str
    topic: str | None = None
    providers: tuple[str, ...] = ("*",)
    # A glob on the operation name, or on ``provider.operation`` when it contains a dot.
    operations: tuple[str, ...] = ("*",)
    max_priority: int = MAX_PRIORITY
    _providers_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _operations_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.max_priority <= MAX_PRIORITY:
            raise ValueError(f"max_priority must be 0..{MAX_PRIORITY}, not {self.max_priority}")
        qualified = [op if "." in op else f"*.{op}" for op in self.operations]
        object.__setattr__(self, "_providers_re", _compile(self.providers))
        object.__setattr__(self, "_operations_re", _compile(qualified))

    def allows(self, provider: str, operation: str) -> bool:
        if self._providers_re is not None and self._providers_re.fullmatch(provider) is None:
            return False
        pattern = self._operations_re
        return pattern is None or pattern.fullmatch(f"{provider}.{operation}") is not None


def rule(
    name: str,
    *,
    topic: str | None = None,
    providers: Sequence[str] = ("*",),
    operations: Sequence[str] = ("*",),
    max_priority: int = MAX_PRIORITY,
) -> TenantRule:
    return TenantRule(name, topic, tuple(providers), tuple(operations), max_priority)


class TenantTable:
    """The configured tenants, by name and by topic, and the rule unknown names fall under.

    Raises:
        ConfigurationError: two tenants share a topic, or a tenant's topic is one of the
            pipeline's own topics (requests, results, dead letters).
    """

    def __init__(
        self, tenants: Mapping[str, TenantRuleLike], *, pipeline_topics: Collection[str] = ()
    ) -> None:
        self._rules = {
            name: rule(
                name,
                topic=spec.topic,
                providers=spec.providers,
                operations=spec.operations,
                max_priority=spec.max_priority,
            )
            for name, spec in tenants.items()
        }
        self._default = self._rules.get(DEFAULT_TENANT) or rule(DEFAULT_TENANT)
        self._by_topic: dict[str, TenantRule] = {}
        for tenant in self._rules.values():
            if tenant.topic is None:
                continue
            if tenant.topic in pipeline_topics:
                raise ConfigurationError(
                    f"tenants.{tenant.name}.topic {tenant.topic!r} is a pipeline topic: give "
                    "the tenant a topic of its own"
                )
            other = self._by_topic.setdefault(tenant.topic, tenant)
            if other is not tenant:
                raise ConfigurationError(
                    f"tenants {other.name!r} and {tenant.name!r} share the topic {tenant.topic!r}"
                )

    @property
    def topics(self) -> tuple[str, ...]:
        """The tenant topics, sorted: the worker reads them beside the shared request topic."""
        return tuple(sorted(self._by_topic))

    def of_topic(self, topic: str) -> TenantRule | None:
        """The tenant a topic proves, or None for the shared topic (and any other)."""
        return self._by_topic.get(topic)

    def named(self, tenant: str) -> TenantRule:
        """The rule for a claimed name: its own if configured, else the default tenant's."""
        return self._rules.get(tenant, self._default)


class Binding(NamedTuple):
    """What the table decided for one request."""

    tenant: str
    priority: int
    # Why the request may not be made, or None.
    refusal: str | None
    # The topic's tenant differs from the one the request claims.
    mismatch: bool


def decide(table: TenantTable, topic: str, request: RequestEvent) -> Binding:
    """The tenant, priority and permission of ``request`` as read from ``topic``."""
    bound = table.of_topic(topic)
    tenant = bound if bound is not None else table.named(request.tenant)
    priority = min(request.priority, tenant.max_priority)
    refusal = None
    if not tenant.allows(request.provider, request.operation):
        refusal = (
            f"tenant {tenant.name!r} may not call {request.provider}.{request.operation} "
            f"(allowed providers {list(tenant.providers)}, operations {list(tenant.operations)})"
        )
    mismatch = bound is not None and bound.name != request.tenant
    return Binding(tenant.name, priority, refusal, mismatch)


class TenantGate:
    """The caller's hook: applies the table to each record, counting what it changed."""

    def __init__(self, table: TenantTable, encode: Callable[[RequestEvent], bytes]) -> None:
        """Args:
        table: the configured tenants.
        encode: RequestEvent to bytes (the request codec), for records it rewrites.
        """
        self._table = table
        self._encode = encode
        self._logged: set[tuple[str, str]] = set()
        self.mismatches = 0
        self.defaulted = 0
        self.clamped = 0
        self.refused = 0

    @property
    def table(self) -> TenantTable:
        return self._table

    def bind(
        self, source: SourceRecord, request: RequestEvent
    ) -> tuple[SourceRecord, RequestEvent] | NotAllowed:
        """The record and request as the worker will treat them, or why they are refused.

        A changed request is re-encoded into the record, so that a forward (the record went
        to a partition that does not own its limit key) carries the bound tenant and priority.
        """
        binding = decide(self._table, source.topic, request)
        if binding.refusal is not None:
            self.refused += 1
            return NotAllowed(binding.refusal)
        if binding.tenant == request.tenant and binding.priority == request.priority:
            return source, request
        self._count(source.topic, request, binding)
        bound = request.model_copy(update={"tenant": binding.tenant, "priority": binding.priority})
        return source._replace(value=self._encode(bound)), bound

    def _count(self, topic: str, request: RequestEvent, binding: Binding) -> None:
        if binding.priority != request.priority:
            self.clamped += 1
        if binding.mismatch:
            self.mismatches += 1
            seen = (topic, request.tenant)
            if seen not in self._logged and len(self._logged) < _LOGGED_MISMATCHES:
                self._logged.add(seen)
                log.warning(
                    "a record on %s claims tenant %r; counted as %r (the topic's tenant)",
                    topic,
                    request.tenant[:64],
                    binding.tenant,
                )
        elif binding.tenant != request.tenant:
            self.defaulted += 1
