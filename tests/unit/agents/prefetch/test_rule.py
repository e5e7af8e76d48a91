"""The static rule: refresh iff the entry was read since its last fetch (the miss that fetched
it does not count)."""

from __future__ import annotations

import pytest

from agents.prefetch.features import KeyFeatures
from agents.prefetch.rule import should_refresh

T0 = 1_700_000_000.0


def after(*steps: str) -> KeyFeatures:
    state = KeyFeatures()
    for i, step in enumerate(steps):
        now = T0 + i
        if step == "refresh":
            state = state.refreshed(now, expires_s=now + 300)
        else:
            state = state.observe(now, hit=step == "hit", expires_s=now + 300)
    return state


@pytest.mark.parametrize(
    ("steps", "refresh"),
    [
        ((), False),
        (("miss",), False),
        (("miss", "hit"), True),
        (("miss", "hit", "hit"), True),
        (("miss", "hit", "refresh"), False),
        (("miss", "hit", "refresh", "hit"), True),
        (("miss", "hit", "miss"), False),
    ],
)
def test_the_rule(steps, refresh):
    assert should_refresh(after(*steps)) is refresh
