"""Each catalog provider against the fake server of its flavor: right key, wrong key, 429."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from providers.auth.config import ApiKeyAuth, BearerAuth, NoAuth
from providers.base import Provider
from providers.errors import AuthFailed, RateLimited
from providers.fake.config import FakeAuth, FakeProviderConfig, RateLimit
from providers.fake.server import FakeProviderServer
from providers.http import ProviderClient
from providers.registry import ProviderRegistry
from schemas.models import RequestEvent

pytestmark = pytest.mark.integration

GOOD, WRONG = "good-secret-123", "wrong-secret-456"


@dataclass(frozen=True)
class Case:
    name: str
    env: str | None
    operation: str
    params: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    # Rate-limit dimensions the flavor reports on a success (with a bucket configured).
    dimensions: frozenset[str] = frozenset()
    # The wait a 429 from a 1-per-20-s bucket should yield.
    retry_after_s: float = 20.0

    def fake_auth(self) -> FakeAuth:
        if self.env is None:
            return NoAuth()
        if self.name == "openweathermap":
            return ApiKeyAuth.model_validate({"in": "query", "name": "appid", "key": GOOD})
        return BearerAuth.model_validate({"token": GOOD})


CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi" * 40}]})
CASES = [
    Case("github", "GITHUB_TOKEN", "get_repo", {"owner": "python", "repo": "cpython"},
         dimensions=frozenset({"core"})),
    Case("stripe", "STRIPE_SECRET_KEY", "get_balance", retry_after_s=1.0),
    Case("openai", "OPENAI_API_KEY", "create_chat_completion", body=CHAT.encode(),
         dimensions=frozenset({"requests", "tokens"})),
    Case("open_meteo", None, "get_forecast",
         {"latitude": "52.52", "longitude": "13.41", "current": "temperature_2m"},
         retry_after_s=60.0),
    Case("slack", "SLACK_BOT_TOKEN", "auth_test"),
    Case("openweathermap", "OPENWEATHERMAP_API_KEY", "get_current_weather", {"q": "London"},
         retry_after_s=60.0),
]  # fmt: skip
IDS = [case.name for case in CASES]


@pytest.fixture
async def client() -> AsyncIterator[ProviderClient]:
    async with ProviderClient() as c:
        yield c


async def provider_for(
    case: Case, server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch, secret: str
) -> Provider:
    if case.env is not None:
        monkeypatch.setenv(case.env, secret)
    registry = ProviderRegistry(use_entry_points=False)
    # Keep the declared path prefix (/v1, /api): only the origin moves to the fake.
    prefix = urlsplit(registry.spec(case.name).base_url).path
    return registry.create(case.name, {"base_url": server.url + prefix})


def fake(case: Case, **config: Any) -> FakeProviderServer:
    return FakeProviderServer(
        FakeProviderConfig(flavor=case.name, auth=case.fake_auth(), **config)  # type: ignore[arg-type]
    )


def event(case: Case) -> RequestEvent:
    content_type = "application/json" if case.body else None
    return RequestEvent(provider=case.name, operation=case.operation, params=case.params,
                        body=case.body, content_type=content_type)  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_right_credentials(
    case: Case, client: ProviderClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fake(case, rate_limit=RateLimit(rate_per_s=100, burst=50)) as server:
        provider = await provider_for(case, server, monkeypatch, GOOD)
        result = await client.call(provider, event(case))
    response = result
    assert response.status == 200
    assert result.sends == 1
    assert set(response.rate_limits) == case.dimensions
    for info in response.rate_limits.values():
        assert info.limit is not None
        assert info.remaining is not None
        assert 0 <= info.remaining <= info.limit
    if case.name == "github":
        core = response.rate_limits["core"]
        assert (core.limit, core.remaining) == (50, 49)
        assert core.reset_after_s is not None
        assert 0 <= core.reset_after_s <= 1.5  # epoch seconds, rounded up by the provider
    if case.name == "openai":
        usage = response.json()["usage"]
        expected = usage["prompt_tokens"] * 0.00000015 + usage["completion_tokens"] * 0.0000006
        assert response.cost == pytest.approx(expected)
        assert response.cost > 0
    else:
        assert response.cost == 0.0


@pytest.mark.parametrize("case", [c for c in CASES if c.env], ids=[c.name for c in CASES if c.env])
async def test_wrong_credentials(
    case: Case, client: ProviderClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fake(case) as server:
        provider = await provider_for(case, server, monkeypatch, WRONG)
        with pytest.raises(AuthFailed) as info:
            await client.call(provider, event(case))
        assert server.stats.auth_failures == 1  # static credentials: no second attempt
    assert WRONG not in str(info.value)


@pytest.mark.parametrize("case", CASES, ids=IDS)
async def test_rate_limited(
    case: Case, client: ProviderClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fake(case, rate_limit=RateLimit(rate_per_s=0.05, burst=1)) as server:
        provider = await provider_for(case, server, monkeypatch, GOOD)
        await client.call(provider, event(case))
        with pytest.raises(RateLimited) as info:
            await client.call(provider, event(case))
    assert info.value.retry_after_s == pytest.approx(case.retry_after_s, abs=1.5)


async def test_stripe_replays_a_post_with_the_same_idempotency_key(
    client: ProviderClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[1]
    async with fake(case) as server:
        provider = await provider_for(case, server, monkeypatch, GOOD)
        create = RequestEvent(provider="stripe", operation="create_customer",
                              body=b"email=a%40b.test", idempotency_key="order-42")  # fmt: skip
        first = await client.call(provider, create)
        again = await client.call(provider, create.model_copy(update={"request_id": "retry-2"}))
        assert server.stats.idempotent_replays == 1
    assert first.json()["id"] == again.json()["id"]


async def test_slack_application_errors_in_a_200(
    client: ProviderClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[4]
    async with fake(case) as server:
        provider = await provider_for(case, server, monkeypatch, GOOD)
        post = RequestEvent(provider="slack", operation="post_message",
                            body=b'{"channel": "C404", "text": "hi"}')  # fmt: skip
        with pytest.raises(Exception, match="channel_not_found") as info:
            await client.call(provider, post)
    assert info.value.reason == "not_found"  # type: ignore[attr-defined]
