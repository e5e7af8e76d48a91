"""Fallbacks (issue 21): when a provider cannot answer, a declared static answer or an alternate
provider answers instead, in the primary's name, and the failing provider is not called for it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest

from schemas.models import RequestEvent
from streams.settings import ProviderSettings
from tests.integration.conftest import API_KEY
from tests.integration.pipeline.outcomes import collect, publish, run

pytestmark = pytest.mark.integration

# The primary answers 503 to everything; get_item falls back to the alternate provider, and
# get_fixed to a static answer.
PRIMARY_SPEC = """
name = "primary"
base_url = "{url}"
auth = {{ type = "api_key", in = "header", name = "X-API-Key", key = "env:PRIMARY_KEY" }}
[limits]
rate_per_s = 5000
burst = 500
[operations.get_item]
path = "/v1/items/{{item_id}}"
path_params.item_id = {{ pattern = "[A-Za-z0-9._~-]{{1,128}}" }}
[[operations.get_item.fallbacks]]
call = {{ provider = "backup", operation = "fetch", params = {{ id = "{{item_id}}" }} }}
[operations.get_fixed]
path = "/v1/items/{{item_id}}"
path_params.item_id = {{ pattern = "[A-Za-z0-9._~-]{{1,128}}" }}
[[operations.get_fixed.fallbacks]]
static = {{ body = '{{"fixed": true}}' }}
"""
BACKUP_SPEC = """
name = "backup"
base_url = "{url}"
auth = {{ type = "api_key", in = "header", name = "X-API-Key", key = "env:PRIMARY_KEY" }}
[limits]
rate_per_s = 5000
burst = 500
[operations.fetch]
path = "/v1/items/{{id}}"
path_params.id = {{ pattern = "[A-Za-z0-9._~-]{{1,128}}" }}
"""
ITEMS, FIXED = 40, 20


def test_a_failing_provider_is_answered_by_its_fallbacks(
    settings, fake_provider_factory, worker_factory, tmp_path: Path
):
    primary = fake_provider_factory("--latency-ms", "5")
    backup = fake_provider_factory("--latency-ms", "5")
    down = httpx.post(f"{primary.url}/_fake/config", json={"error_mix": {"status_503": 1.0}})
    assert down.status_code == 200, down.text
    specs = tmp_path / "provider_files"
    specs.mkdir()
    (specs / "primary.toml").write_text(PRIMARY_SPEC.format(url=primary.url))
    (specs / "backup.toml").write_text(BACKUP_SPEC.format(url=backup.url))
    worker_factory(
        primary.url,
        CALLSTREAM_PROVIDER_DIRS=f'["{specs}"]',
        CALLSTREAM_PROVIDERS__PRIMARY__ENABLED="true",
        CALLSTREAM_PROVIDERS__BACKUP__ENABLED="true",
        PRIMARY_KEY=API_KEY,
        CALLSTREAM_RETRY__MAX_ATTEMPTS="1",  # give up at once: the fallback answers
    )
    settings = settings.model_copy(
        update={"providers": {"primary": ProviderSettings(), "backup": ProviderSettings()}}
    )
    requests = [
        RequestEvent(provider="primary", operation="get_item", params={"item_id": f"i{n}"})
        for n in range(ITEMS)
    ] + [
        RequestEvent(provider="primary", operation="get_fixed", params={"item_id": f"f{n}"})
        for n in range(FIXED)
    ]
    kind = {r.request_id: r.operation for r in requests}

    run(publish(settings, requests))
    outcomes = run(collect(settings, until_ids=set(kind), timeout_s=60))

    assert not outcomes.dead_letters, outcomes.dead_letters[:3]
    assert Counter(outcomes.ids()) == Counter(set(kind)), "one outcome per request"
    for event in outcomes.results:
        assert (event.status, event.provider, event.operation) == (
            "fallback", "primary", kind[event.request_id],
        ), event  # fmt: skip
        assert event.reason in {"retries_exhausted", "circuit_open"}, event
        if event.operation == "get_item":
            assert (event.provider_used, event.http_status) == ("backup", 200)
            assert event.body and b"i" in event.body
        else:
            assert (event.provider_used, event.body) == ("static", b'{"fixed": true}')
    backup_calls = httpx.get(f"{backup.url}/_fake/stats").json()["calls_total"]
    primary_calls = httpx.get(f"{primary.url}/_fake/stats").json()["calls_total"]
    assert backup_calls == ITEMS, "each get_item answered once by the alternate"
    assert primary_calls <= ITEMS + FIXED, "a fallback never calls the failing provider again"
    print(
        f"fallbacks: {ITEMS} by the alternate, {FIXED} static; the primary got {primary_calls} "
        f"calls, the alternate {backup_calls}"
    )
