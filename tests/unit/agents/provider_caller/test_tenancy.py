"""Tenancy: the topic decides the tenant, the table decides what it may call and how urgently."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.provider_caller.tenancy import (
    DEFAULT_TENANT,
    TenantGate,
    TenantRule,
    TenantTable,
    decide,
)
from providers.errors import NotAllowed
from schemas.models import RequestEvent
from streams.errors import ConfigurationError
from streams.settings import Settings, TenantSettings
from streams.stage.records import SourceRecord

SHARED = "callstream.requests.v1"
EU_TOPIC = "callstream.requests.shop-eu.v1"
US_TOPIC = "callstream.requests.shop-us.v1"


@dataclass(frozen=True)
class Spec:
    topic: str | None = None
    providers: list[str] = field(default_factory=lambda: ["*"])
    operations: list[str] = field(default_factory=lambda: ["*"])
    max_priority: int = 9


def table() -> TenantTable:
    return TenantTable(
        {
            "shop-eu": Spec(topic=EU_TOPIC, providers=["open_meteo", "git*"], max_priority=5),
            "shop-us": Spec(topic=US_TOPIC, operations=["get_*", "stripe.create_refund"]),
            "batch": Spec(max_priority=2),
            DEFAULT_TENANT: Spec(providers=["open_meteo"], max_priority=3),
        },
        pipeline_topics=(SHARED, "results", "dlq"),
    )


def request(**fields: object) -> RequestEvent:
    base: dict[str, object] = {"provider": "open_meteo", "operation": "get_forecast"}
    return RequestEvent(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("topic", "claimed", "priority", "tenant", "bound_priority", "mismatch"),
    [
        # A tenant topic decides the tenant, whatever the event says.
        (EU_TOPIC, "shop-eu", 5, "shop-eu", 5, False),
        (EU_TOPIC, "shop-us", 5, "shop-eu", 5, True),
        (EU_TOPIC, "default", 9, "shop-eu", 5, True),
        (US_TOPIC, "shop-eu", 9, "shop-us", 9, True),
        # The shared topic keeps a known claim and charges unknown names as the default.
        (SHARED, "shop-eu", 9, "shop-eu", 5, False),
        (SHARED, "batch", 7, "batch", 2, False),
        (SHARED, "noisy-1", 9, DEFAULT_TENANT, 3, False),
        (SHARED, "noisy-2", 1, DEFAULT_TENANT, 1, False),
        (SHARED, DEFAULT_TENANT, 5, DEFAULT_TENANT, 3, False),
        # Any topic the table does not know is read like the shared one.
        ("elsewhere", "shop-us", 9, "shop-us", 9, False),
    ],
)
def test_the_topic_binds_the_tenant_and_the_table_caps_priority(
    topic: str, claimed: str, priority: int, tenant: str, bound_priority: int, mismatch: bool
) -> None:
    binding = decide(table(), topic, request(tenant=claimed, priority=priority))

    assert (binding.tenant, binding.priority, binding.mismatch) == (
        tenant,
        bound_priority,
        mismatch,
    )
    assert binding.refusal is None


@pytest.mark.parametrize(
    ("topic", "claimed", "provider", "operation", "allowed"),
    [
        (EU_TOPIC, "shop-eu", "open_meteo", "get_forecast", True),
        (EU_TOPIC, "shop-eu", "github", "create_issue", True),  # "git*"
        (EU_TOPIC, "shop-eu", "stripe", "get_balance", False),
        (EU_TOPIC, "shop-us", "stripe", "get_balance", False),  # the claim changes nothing
        (US_TOPIC, "shop-us", "stripe", "get_balance", True),  # "get_*" on any provider
        (US_TOPIC, "shop-us", "stripe", "create_refund", True),  # "stripe.create_refund"
        (US_TOPIC, "shop-us", "acme", "create_refund", False),
        (US_TOPIC, "shop-us", "github", "delete_repo", False),
        (SHARED, "someone", "open_meteo", "get_forecast", True),
        (SHARED, "someone", "github", "get_user", False),  # the default rule's providers
        (SHARED, "batch", "github", "get_user", True),
    ],
)
def test_allow_lists_are_globs_on_providers_and_operations(
    topic: str, claimed: str, provider: str, operation: str, allowed: bool
) -> None:
    binding = decide(
        table(), topic, request(tenant=claimed, provider=provider, operation=operation)
    )

    assert (binding.refusal is None) is allowed
    if not allowed:
        assert f"may not call {provider}.{operation}" in (binding.refusal or "")


def test_an_empty_allow_list_allows_nothing_and_a_missing_default_allows_everything() -> None:
    closed = TenantTable({"locked": Spec(providers=[])})

    assert decide(closed, SHARED, request(tenant="locked")).refusal is not None
    open_default = decide(closed, SHARED, request(tenant="anyone", provider="x", priority=9))
    assert (open_default.tenant, open_default.priority, open_default.refusal) == (
        DEFAULT_TENANT,
        9,
        None,
    )


def test_two_tenants_on_one_topic_or_a_tenant_on_a_pipeline_topic_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="share the topic"):
        TenantTable({"a": Spec(topic="t"), "b": Spec(topic="t")})
    with pytest.raises(ConfigurationError, match="pipeline topic"):
        TenantTable({"a": Spec(topic=SHARED)}, pipeline_topics=(SHARED,))


def test_the_table_lists_tenant_topics_and_bad_priorities_are_refused() -> None:
    assert table().topics == (EU_TOPIC, US_TOPIC)
    with pytest.raises(ValueError, match="max_priority"):
        TenantRule("x", max_priority=10)


def test_settings_give_the_table_from_toml_shaped_data() -> None:
    settings = Settings(
        tenants={
            "shop-eu": {"topic": EU_TOPIC, "operations": ["get_*"], "max_priority": 4},
            "default": {"providers": []},
        }
    )
    built = TenantTable(settings.tenants)

    assert settings.tenants["shop-eu"] == TenantSettings(
        topic=EU_TOPIC, operations=["get_*"], max_priority=4
    )
    assert decide(built, EU_TOPIC, request(tenant="x", priority=9)).priority == 4
    assert decide(built, SHARED, request(tenant="x")).refusal is not None


# -- the gate: what the caller's hook does with a record ------------------------------------


def encode(event: RequestEvent) -> bytes:
    return event.model_dump_json().encode()


def source(topic: str, event: RequestEvent) -> SourceRecord:
    return SourceRecord(topic, 3, 42, encode(event))


def test_the_gate_leaves_a_truthful_record_untouched() -> None:
    gate = TenantGate(table(), encode)
    event = request(tenant="shop-eu", priority=5)
    record = source(EU_TOPIC, event)

    assert gate.bind(record, event) == (record, event)
    assert (gate.mismatches, gate.clamped, gate.defaulted, gate.refused) == (0, 0, 0, 0)


def test_the_gate_rewrites_a_forged_claim_into_the_request_and_the_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = TenantGate(table(), encode)
    forged = request(tenant="shop-us", priority=9)
    record = source(EU_TOPIC, forged)

    bound = gate.bind(record, forged)

    assert not isinstance(bound, NotAllowed)
    new_record, new_request = bound
    assert (new_request.tenant, new_request.priority) == ("shop-eu", 5)
    assert new_request.request_id == forged.request_id
    # A forward of this record to the shared topic carries the bound tenant, not the claim.
    assert json.loads(new_record.value)["tenant"] == "shop-eu"
    assert new_record[:3] == record[:3]
    assert (gate.mismatches, gate.clamped) == (1, 1)
    assert "claims tenant 'shop-us'" in caplog.text


def test_the_gate_refuses_with_not_allowed_and_counts_defaults() -> None:
    gate = TenantGate(table(), encode)
    refused = gate.bind(*_pair(SHARED, request(tenant="rotating-7", provider="github")))
    kept = gate.bind(*_pair(SHARED, request(tenant="rotating-8", priority=1)))

    assert isinstance(refused, NotAllowed)
    assert refused.reason == "not_allowed"
    assert "tenant 'default' may not call github.get_forecast" in str(refused)
    assert not isinstance(kept, NotAllowed)
    assert kept[1].tenant == DEFAULT_TENANT
    assert (gate.refused, gate.defaulted) == (1, 1)


def _pair(topic: str, event: RequestEvent) -> tuple[SourceRecord, RequestEvent]:
    return source(topic, event), event


def test_mismatch_logging_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    gate = TenantGate(table(), encode)
    for i in range(300):
        gate.bind(*_pair(EU_TOPIC, request(tenant=f"forged-{i}")))

    assert gate.mismatches == 300
    assert caplog.text.count("claims tenant") == 100


# -- invariants --------------------------------------------------------------------------------

names = st.sampled_from(["shop-eu", "shop-us", "batch", DEFAULT_TENANT]) | st.text(
    "abcdefgh-0123456789", min_size=1, max_size=12
)
topics = st.sampled_from([EU_TOPIC, US_TOPIC, SHARED, "other"])
providers = st.sampled_from(["open_meteo", "github", "stripe", "acme"])
operations = st.sampled_from(["get_forecast", "get_user", "create_refund", "delete_repo"])


@given(topic=topics, claimed=names, priority=st.integers(0, 9), p=providers, op=operations)
def test_binding_invariants(topic: str, claimed: str, priority: int, p: str, op: str) -> None:
    built = table()
    event = request(tenant=claimed, priority=priority, provider=p, operation=op)
    binding = decide(built, topic, event)
    rule_of = built.named(binding.tenant)

    # Identities are only the configured ones: rotating names never mints a new one.
    assert binding.tenant in {"shop-eu", "shop-us", "batch", DEFAULT_TENANT}
    # A tenant topic always wins over the claim.
    owner = built.of_topic(topic)
    if owner is not None:
        assert binding.tenant == owner.name
    # Priority is never raised and never above the tenant's cap.
    assert binding.priority <= min(priority, rule_of.max_priority)
    assert binding.priority == min(priority, rule_of.max_priority)
    # Refused exactly when the tenant's allow-list says no.
    assert (binding.refusal is None) is rule_of.allows(p, op)


@given(topic=topics, claimed=names, priority=st.integers(0, 9), p=providers, op=operations)
def test_binding_is_stable_across_a_forward(
    topic: str, claimed: str, priority: int, p: str, op: str
) -> None:
    """A record forwarded to the shared topic, rewritten by the gate, binds the same again."""
    gate = TenantGate(table(), encode)
    event = request(tenant=claimed, priority=priority, provider=p, operation=op)
    first = gate.bind(source(topic, event), event)
    if isinstance(first, NotAllowed):
        return
    forwarded = RequestEvent.model_validate_json(first[0].value)
    again = gate.bind(source(SHARED, forwarded), forwarded)

    assert again == (source(SHARED, forwarded), forwarded)
