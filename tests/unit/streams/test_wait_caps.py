"""The waiting room's caps: derived from a partition's share unless set (issue 20)."""

from __future__ import annotations

import logging

import pytest

from streams.composition import wait_caps
from streams.settings import Settings


def test_unset_caps_never_bind_before_the_partition_pauses() -> None:
    caps = wait_caps(Settings())  # 20,000 pending over 6 partitions: a share of 3,333
    assert (caps.per_key, caps.per_tenant) == (3333, 3333)
    assert caps.default_max_wait_s == 300.0


def test_with_tenants_declared_a_tenant_may_fill_a_quarter_of_the_share() -> None:
    caps = wait_caps(Settings(tenants={"A": {}, "B": {}}))
    assert (caps.per_key, caps.per_tenant) == (3333, 833)


def test_the_per_partition_bound_caps_the_share() -> None:
    settings = Settings(
        caller={"max_pending": 100_000, "max_pending_per_partition": 400}, tenants={"A": {}}
    )
    caps = wait_caps(settings)
    assert (caps.per_key, caps.per_tenant) == (400, 100)


def test_caps_set_are_kept_and_one_at_or_above_the_share_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(limiter={"max_waiting_per_key": 500, "max_waiting_per_tenant": 4000})
    with caplog.at_level(logging.WARNING):
        caps = wait_caps(settings)
    assert (caps.per_key, caps.per_tenant) == (500, 4000)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "max_waiting_per_tenant (4000)" in warning and "(3333)" in warning
