"""Pure pieces of bounded trust: the wait ceiling, input limits, signer redaction."""

from __future__ import annotations

import logging

import pytest

from providers.auth.basic import BasicSigner
from providers.auth.signer import NoAuthSigner
from providers.base import Provider
from providers.errors import BadRequest, BodyTooLarge, NotAllowed
from providers.operation import InputLimits
from providers.response import WaitCeiling
from schemas.models import RequestEvent


def test_the_ceiling_clamps_only_longer_waits_and_logs_once_a_minute(caplog):
    ceiling = WaitCeiling("acme", 60.0)
    with caplog.at_level(logging.WARNING):
        assert [ceiling(w, "retry-after") for w in (None, 0.0, 59.9, 60.0)] == [
            None,
            0.0,
            59.9,
            60.0,
        ]
        assert [ceiling(w, "retry-after") for w in (61.0, 1e9, float("inf"))] == [60.0] * 3
    assert len(caplog.records) == 1


@pytest.mark.parametrize(
    ("limits", "fields", "error"),
    [
        (InputLimits(max_param_chars=3), {"params": {"owner": "abcd", "item": "1"}}, BadRequest),
        (InputLimits(max_header_value_chars=3), {"headers": {"If-None-Match": "abcd"}}, BadRequest),
        (InputLimits(), {"headers": {"If-None-Match": "a\x1bb"}}, NotAllowed),
    ],
)
def test_input_limits_refuse_at_build(provider: Provider, limits, fields, error):
    event = RequestEvent(
        provider="acme", operation="get_item", **{"params": {"owner": "o", "item": "1"}, **fields}
    )
    with pytest.raises(error):
        provider.build_request(event, limits)
    provider.build_request(
        event.model_copy(update={"headers": {}, "params": {"owner": "o", "item": "1"}}), limits
    )


def test_the_body_ceiling_is_the_lower_of_the_two(provider: Provider):
    event = RequestEvent(provider="acme", operation="create_item", body=b"x" * 10)
    provider.build_request(event, InputLimits(max_body_bytes=10))
    with pytest.raises(BodyTooLarge, match="over 9"):
        provider.build_request(event, InputLimits(max_body_bytes=9))


def test_basic_redacts_the_pair_and_each_half():
    signer = BasicSigner(username="sk_live_abc", password="pw_secret")
    text = "sent Basic c2tfbGl2ZV9hYmM6cHdfc2VjcmV0 as sk_live_abc with pw_secret"
    assert signer.redact(text) == "sent Basic [redacted] as [redacted] with [redacted]"
    assert NoAuthSigner().redact(text) == text
