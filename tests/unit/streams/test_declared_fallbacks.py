"""Fallbacks as declared: in order per operation; calls to providers not active are dropped."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from providers.auth.signer import NoAuthSigner
from providers.base import Provider
from providers.declaration import ProviderSpec
from streams.composition import declared_fallbacks


def spec(**get_item: object) -> ProviderSpec:
    return ProviderSpec.model_validate({
        "name": "acme", "base_url": "http://127.0.0.1:9",
        "operations": {"get": {"path": "/items", **get_item}, "put": {"path": "/x"}},
    })  # fmt: skip


def test_fallbacks_in_order_without_calls_to_inactive_providers() -> None:
    declared = spec(
        fallbacks=[
            {"call": {"provider": "gone", "operation": "x"}},
            {"static": {"body": '{"items": []}'}},
            {"call": {"provider": "acme", "operation": "put"}},
        ]
    )
    plans = declared_fallbacks({"acme": Provider(declared, signer=NoAuthSigner())})
    static, call = plans("acme", "get")
    assert static.static is not None and static.static.body == '{"items": []}'
    assert call.call is not None and call.call.operation == "put"
    assert plans("acme", "put") == () and plans("other", "get") == ()


def test_a_fallback_is_static_or_a_call() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        spec(fallbacks=[{}])


def test_a_static_fallback_must_be_a_success() -> None:
    with pytest.raises(ValidationError, match="status"):
        spec(fallbacks=[{"static": {"status": 503}}])
