"""PrefetchBudget: a share of the key's request calls, plus a floor per second, bounded."""

from __future__ import annotations

from agents.provider_caller.prefetch_budget import PrefetchBudget


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_prefetches_are_a_share_of_calls() -> None:
    clock = Clock()
    budget = PrefetchBudget(0.25, 0.0, clock=clock)
    assert not budget.allows("k")
    for _ in range(8):
        budget.called("k")
    spent = 0
    while budget.allows("k"):
        budget.spend("k")
        spent += 1
    assert spent == 2
    assert not budget.allows("other")  # per key


def test_the_floor_grows_with_time_up_to_the_burst() -> None:
    clock = Clock()
    budget = PrefetchBudget(0.0, 1.0, burst=3.0, clock=clock)
    assert not budget.allows("k")  # first seen: the floor starts accruing now
    clock.now = 1000.0
    spent = 0
    while budget.allows("k"):
        budget.spend("k")
        spent += 1
    assert spent == 3
