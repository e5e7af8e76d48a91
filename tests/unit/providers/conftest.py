"""Spec and provider factories for the provider unit tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from providers.auth.signer import NoAuthSigner
from providers.base import Provider
from providers.declaration import ProviderSpec

SpecFactory = Callable[..., ProviderSpec]


def make_spec(**fields: Any) -> ProviderSpec:
    """A small valid spec; keyword arguments replace top-level fields."""
    data: dict[str, Any] = {
        "name": "acme",
        "base_url": "https://api.acme.test/v1",
        "idempotency_header": "Idempotency-Key",
        "operations": {
            "get_item": {
                "path": "/items/{owner}/{item}",
                "query_params": {
                    "page": {},
                    "per_page": {"default": "50"},
                    "q": {"required": False, "pattern": "[a-z ]{0,20}"},
                },
                "allowed_headers": ["If-None-Match", "Accept-Language"],
            },
            "create_item": {
                "method": "POST",
                "path": "/items",
                "body": {"content_types": ["application/json"], "required": True},
            },
            "search": {"path": "/search", "query_params": {"q": {"required": True}}},
            "register_hook": {
                "method": "POST",
                "path": "/hooks",
                "query_params": {"target": {"allow_urls": True}},
            },
        },
    }
    data.update(fields)
    return ProviderSpec.model_validate(data)


@pytest.fixture
def spec_factory() -> SpecFactory:
    return make_spec


@pytest.fixture
def provider_factory() -> Callable[..., Provider]:
    def build(**fields: Any) -> Provider:
        return Provider(make_spec(**fields), signer=NoAuthSigner())

    return build


@pytest.fixture
def provider(provider_factory: Callable[..., Provider]) -> Provider:
    return provider_factory()
