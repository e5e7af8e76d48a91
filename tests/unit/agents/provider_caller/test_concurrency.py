"""Adaptive concurrency: latency over its baseline lowers calls in flight; places are exact."""

from __future__ import annotations

import asyncio

import pytest

from agents.provider_caller.concurrency import ConcurrencyLimit, ConcurrencyLimits, GradientLimit


def test_steady_latency_keeps_a_used_limit() -> None:
    limit = GradientLimit(50.0, max_limit=50.0)
    for _ in range(100):
        limit.update(0.05, in_flight=50)
    assert limit.limit == 50.0


def test_latency_doubling_past_the_tolerance_lowers_the_limit() -> None:
    limit = GradientLimit(50.0, max_limit=50.0)
    for _ in range(20):
        limit.update(0.05, in_flight=50)
    for _ in range(10):
        limit.update(0.5, in_flight=50)  # ten times the baseline
    assert limit.limit < 40.0  # 30% less within ten windows (200 calls)


def test_jitter_within_the_tolerance_does_not_bind() -> None:
    limit = GradientLimit(50.0, max_limit=50.0)
    for i in range(200):
        limit.update(0.05 if i % 2 else 0.09, in_flight=50)
    assert limit.limit == 50.0


def test_a_lowered_limit_recovers_once_latency_settles() -> None:
    limit = GradientLimit(50.0, max_limit=50.0)
    for _ in range(20):
        limit.update(0.05, in_flight=50)
    for _ in range(10):
        limit.update(0.5, in_flight=50)
    low = limit.limit
    for _ in range(100):
        limit.update(0.05, in_flight=int(limit.limit))
    assert limit.limit > low
    assert limit.limit == pytest.approx(50.0)


def test_an_unused_limit_does_not_grow() -> None:
    limit = GradientLimit(10.0, max_limit=100.0)
    for _ in range(50):
        limit.update(0.05, in_flight=1)
    assert limit.limit == 10.0


def test_the_floor_holds() -> None:
    limit = GradientLimit(10.0, min_limit=2.0)
    for _ in range(100):
        limit.update(10.0 * 2**_, in_flight=10)
    assert limit.limit >= 2.0


async def test_places_are_never_over_the_limit_and_cancelled_waiters_take_none() -> None:
    limit = ConcurrencyLimit(2)
    await limit.acquire()
    await limit.acquire()
    waiter = asyncio.create_task(limit.acquire())
    cancelled = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    assert limit.in_flight == 2 and not waiter.done()
    cancelled.cancel()
    await asyncio.sleep(0)
    limit.release(None)
    await asyncio.sleep(0)
    assert waiter.done() and limit.in_flight == 2
    limit.release(None)
    limit.release(None)
    assert limit.in_flight == 0


async def test_slow_calls_shrink_a_key_and_leave_the_others() -> None:
    limits = ConcurrencyLimits(20)
    slow, fast = limits["slow"], limits["fast"]
    for latency in [0.05] * 400 + [1.0] * 400:
        await slow.acquire()
        slow.release(latency)
        await fast.acquire()
        fast.release(0.05)
    assert limits.limits()["slow"] < 20  # in flight stays 1, but latency rose: it shrinks
    assert limits.limits()["fast"] == 20


async def test_a_cancelled_waiter_dropped_by_a_release_before_it_wakes_ends_cancelled() -> None:
    # A revocation cancels every request that has not called yet, waiters and place holders
    # alike: a holder's release can drop a cancelled waiter before that waiter wakes. It must
    # still end cancelled (its record stays unfinished for the next owner), not fail.
    limit = ConcurrencyLimit(1)
    await limit.acquire()
    waiter = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    limit.release(None)  # before the waiter runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limit.in_flight == 0
    assert limit.try_acquire()


async def hold_a_place(limit: ConcurrencyLimit, until: asyncio.Event) -> None:
    """A request with its place, waiting for a call slot, as in ``Caller._send``."""
    await limit.acquire()
    try:
        await until.wait()
    finally:
        limit.release(None)


@pytest.mark.parametrize("order", ["holders_first", "waiters_first", "interleaved"])
async def test_a_revocation_cancels_every_request_and_leaves_no_place_taken(order: str) -> None:
    limit = ConcurrencyLimit(3)
    never = asyncio.Event()
    holders = [asyncio.create_task(hold_a_place(limit, never)) for _ in range(3)]
    waiters = [asyncio.create_task(hold_a_place(limit, never)) for _ in range(5)]
    await asyncio.sleep(0)
    assert limit.in_flight == 3
    h, w = holders, waiters
    tasks = {
        "holders_first": h + w,
        "waiters_first": w + h,
        "interleaved": [w[0], h[0], w[1], h[1], w[2], h[2], w[3], w[4]],
    }[order]
    for task in tasks:  # as StageLoop.drain does, in the order of its task set
        task.cancel()
    results = await asyncio.gather(*holders, *waiters, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results
    assert limit.in_flight == 0
    assert limit.try_acquire()
