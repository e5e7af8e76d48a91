"""Probe p10 (security review 2026-12-02, finding 4): the test provider ``fake`` is not active
in a worker that names no provider.

On the old main ``fake`` was a regular entry point with the literal key ``fake-api-key``, so a
worker with no ``[providers.*]`` section activated it, and any publisher could make the worker
GET ``127.0.0.1:8080/v1/items/{id}`` and read the answer back from its result ("get_item:
status=ok body returned to requester=b'{"internal_admin": "db_password=hunter2"}'").
Now it is a test double (``callstream.dev_providers``), active only when settings name it.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from agents.provider_caller.caller import Caller
from agents.provider_caller.gateway import HttpGateway
from providers.http import ProviderClient
from providers.registry import ProviderRegistry
from schemas.codec import Codecs
from schemas.models import DeadLetterEvent, RequestEvent
from streams.composition import activate_providers
from streams.metrics import Metrics
from streams.settings import Settings
from streams.stage.records import Outcome, SourceRecord

CODECS = Codecs()


@pytest.fixture
def default_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("CALLSTREAM_CONFIG", "CALLSTREAM_PROVIDERS", "GITHUB_TOKEN", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.providers == {}  # no [providers.*] section: "every known provider"
    return settings


def test_a_worker_naming_no_provider_does_not_activate_the_test_double(
    default_settings: Settings,
) -> None:
    active = activate_providers(ProviderRegistry(), default_settings.providers)
    assert active, "the default selection ran"
    assert "fake" not in active
    loopback = [name for name, p in active.items() if "127.0.0.1" in p.spec.base_url]
    assert loopback == []


@pytest.mark.parametrize(
    "event",
    [
        RequestEvent(tenant="any", provider="fake", operation="get_item",
                     params={"item_id": "config"}),
        RequestEvent(tenant="any", provider="fake", operation="echo", body=b'{"cmd":"shutdown"}',
                     content_type="application/json"),
    ],
)  # fmt: skip
async def test_a_request_for_fake_is_refused_before_anything_is_sent(
    default_settings: Settings, event: RequestEvent
) -> None:
    active = activate_providers(ProviderRegistry(), default_settings.providers)
    gateway = HttpGateway(active, ProviderClient(), Metrics.create(CollectorRegistry()))
    try:
        outcome = await Caller(gateway, CODECS.request).handle(
            SourceRecord("req", 0, 0, CODECS.request.encode(event))
        )
    finally:
        await gateway.close()
    assert isinstance(outcome, Outcome)
    letter = outcome.event
    assert isinstance(letter, DeadLetterEvent)
    assert (letter.reason, letter.stage) == ("unknown_provider", "admission")
