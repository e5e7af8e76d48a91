"""Fallback answers as declared: the first one per operation, none for the others."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from providers.auth.signer import NoAuthSigner
from providers.base import Provider
from providers.declaration import ProviderSpec
from streams.composition import static_fallbacks


def spec(**get_item: object) -> ProviderSpec:
    return ProviderSpec.model_validate({
        "name": "acme", "base_url": "http://127.0.0.1:9",
        "operations": {"get": {"path": "/items", **get_item}, "put": {"path": "/x"}},
    })  # fmt: skip


def test_the_first_declared_answer_of_an_operation() -> None:
    declared = spec(fallbacks=[{"static": {"body": '{"items": []}'}}, {"static": {"body": "2"}}])
    answers = static_fallbacks({"acme": Provider(declared, signer=NoAuthSigner())})
    first = answers("acme", "get")
    assert first is not None and (first.status, first.body) == (200, '{"items": []}')
    assert answers("acme", "put") is None and answers("other", "get") is None


def test_a_fallback_must_be_a_success() -> None:
    with pytest.raises(ValidationError, match="status"):
        spec(fallbacks=[{"static": {"status": 503}}])
