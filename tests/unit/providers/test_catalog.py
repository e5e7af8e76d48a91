"""The built-in catalog: every file validates, references its secrets, and builds requests."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from providers.auth.signer import NoAuthSigner
from providers.base import Provider
from providers.catalog import catalog_files
from providers.spec_file import load_spec_file
from schemas.models import RequestEvent

FILES = {path.stem: path for path in catalog_files()}


def test_the_six_real_providers_are_shipped() -> None:
    assert {"github", "stripe", "openai", "open_meteo", "slack", "openweathermap"} <= set(FILES)


@pytest.mark.parametrize("name", sorted(FILES))
def test_file_is_valid_and_named_after_its_provider(name: str) -> None:
    spec = load_spec_file(FILES[name])
    assert spec.name == name
    assert spec.check is not None
    assert spec.base_url.startswith("https://")
    for value in dict(spec.auth).values():
        if isinstance(value, SecretStr):  # a reference, never a literal key
            assert value.get_secret_value().startswith("env:")


@pytest.mark.parametrize(
    ("name", "operation", "params", "url"),
    [
        ("github", "get_repo", {"owner": "python", "repo": "cpython"},
         "https://api.github.com/repos/python/cpython"),
        ("stripe", "get_customer", {"id": "cus_123"}, "https://api.stripe.com/v1/customers/cus_123"),
        ("openai", "list_models", {}, "https://api.openai.com/v1/models"),
        ("open_meteo", "get_forecast", {"latitude": "52.52", "longitude": "13.41"},
         "https://api.open-meteo.com/v1/forecast?latitude=52.52&longitude=13.41"),
        ("slack", "users_info", {"user": "U123"}, "https://slack.com/api/users.info?user=U123"),
        ("openweathermap", "get_current_weather", {"q": "London"},
         "https://api.openweathermap.org/data/2.5/weather?q=London&units=metric"),
    ],
)  # fmt: skip
def test_sample_requests(name: str, operation: str, params: dict[str, str], url: str) -> None:
    provider = Provider(load_spec_file(FILES[name]), signer=NoAuthSigner())
    event = RequestEvent(provider=name, operation=operation, params=params)
    assert provider.build_request(event).url == url


def test_stripe_posts_carry_an_idempotency_key() -> None:
    stripe = Provider(load_spec_file(FILES["stripe"]), signer=NoAuthSigner())
    event = RequestEvent(
        provider="stripe", operation="create_customer", body=b"email=a%40b.test",
        idempotency_key="order-42",
    )  # fmt: skip
    request = stripe.build_request(event)
    assert request.headers["Idempotency-Key"] == "order-42"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
