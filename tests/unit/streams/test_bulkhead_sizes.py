"""Which bulkhead a call takes, and its size: the operation's, the provider's, the default."""

from __future__ import annotations

from providers.auth.signer import NoAuthSigner
from providers.base import Provider
from providers.declaration import ProviderSpec
from streams.composition import bulkhead_sizes
from streams.settings import Settings

SPEC = ProviderSpec.model_validate({
    "name": "acme", "base_url": "http://127.0.0.1:9",
    "operations": {
        "get": {"path": "/items"},
        "export": {"path": "/export", "max_concurrent_calls": 2},
    },
})  # fmt: skip
PROVIDERS = {"acme": Provider(SPEC, signer=NoAuthSigner())}


def test_half_of_max_in_flight_by_default_and_an_operations_own_when_declared() -> None:
    sizes = bulkhead_sizes(Settings(caller={"max_in_flight": 100}), PROVIDERS)
    assert sizes("acme", "get") == ("acme", 50)
    assert sizes("acme", "export") == ("acme.export", 2)


def test_the_worker_default_and_a_provider_override() -> None:
    settings = Settings(
        caller={"max_in_flight_per_provider": 40},
        providers={"acme": {"max_concurrent_calls": 7}},
    )
    sizes = bulkhead_sizes(settings, PROVIDERS)
    assert sizes("acme", "get") == ("acme", 7)
    assert bulkhead_sizes(Settings(caller={"max_in_flight_per_provider": 40}), PROVIDERS)(
        "acme", "get"
    ) == ("acme", 40)
