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
OTHER = ProviderSpec.model_validate(
    {"name": "other", "base_url": "http://127.0.0.1:9", "operations": {"get": {"path": "/x"}}}
)
# Two providers: each keeps room for the other.
PROVIDERS = {
    "acme": Provider(SPEC, signer=NoAuthSigner()),
    "other": Provider(OTHER, signer=NoAuthSigner()),
}


def test_half_of_max_in_flight_with_several_providers_and_an_operations_own() -> None:
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


def test_a_lone_provider_gets_all_of_max_in_flight_by_default() -> None:
    sizes = bulkhead_sizes(Settings(caller={"max_in_flight": 200}), {"acme": PROVIDERS["acme"]})
    assert sizes("acme", "get") == ("acme", 200)
