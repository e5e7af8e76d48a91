"""Request coalescing: one call per key in the air, every waiter gets its outcome, and no
leader's failure or waiter's cancellation strands or breaks the others."""

from __future__ import annotations

import asyncio

import pytest

from agents.cache.flights import Flights, Outcome
from providers.response import ProviderReply

KEY = b"acme\x1fget\x1ft\x1f" + bytes(16)
OTHER = b"acme\x1fget\x1ft\x1f" + bytes(15) + b"\x01"
REPLY = ProviderReply(200, b"{}", provider="acme")


async def waiters(flights: Flights, key: bytes, n: int) -> list[asyncio.Task[Outcome]]:
    tasks = [asyncio.create_task(flights.join(key)) for _ in range(n)]
    await asyncio.sleep(0)  # let them all start waiting
    return tasks


async def test_200_concurrent_misses_make_one_call_and_share_its_reply():
    flights, calls = Flights(), 0
    release = asyncio.Event()

    async def miss() -> Outcome:
        nonlocal calls
        flight = flights.lead(KEY)
        if flight is None:
            return await flights.join(KEY)
        with flight:
            calls += 1
            await release.wait()
            flight.land(REPLY)
        return REPLY

    tasks = [asyncio.create_task(miss()) for _ in range(200)]
    await asyncio.sleep(0)
    assert len(flights) == 1
    assert flights.waiting(KEY) == 199
    release.set()
    outcomes = await asyncio.gather(*tasks)
    assert calls == 1
    assert all(outcome is REPLY for outcome in outcomes)
    assert len(flights) == 0
    assert flights.waiting(KEY) == 0


async def test_keys_fly_apart():
    flights = Flights()
    first, second = flights.lead(KEY), flights.lead(OTHER)
    assert first is not None and second is not None
    assert flights.lead(KEY) is None
    assert len(flights) == 2
    first.land(REPLY)
    assert len(flights) == 1
    assert flights.lead(OTHER) is None


async def test_the_calls_error_reaches_every_waiter():
    flights = Flights()
    flight = flights.lead(KEY)
    assert flight is not None
    tasks = await waiters(flights, KEY, 20)
    error = TimeoutError("provider timed out")
    flight.land(error)
    assert all(outcome is error for outcome in await asyncio.gather(*tasks))


async def test_a_leader_that_raises_lands_none_and_the_key_can_lead_again():
    flights = Flights()
    flight = flights.lead(KEY)
    assert flight is not None
    tasks = await waiters(flights, KEY, 5)
    with pytest.raises(RuntimeError), flight:
        raise RuntimeError("a bug in the caller")
    assert await asyncio.gather(*tasks) == [None] * 5
    assert flights.lead(KEY) is not None


async def test_a_cancelled_leader_lands_none():
    flights = Flights()
    started = asyncio.Event()

    async def leader() -> None:
        flight = flights.lead(KEY)
        assert flight is not None
        with flight:
            started.set()
            await asyncio.sleep(3600)
            flight.land(REPLY)

    task = asyncio.create_task(leader())
    await started.wait()
    joined = await waiters(flights, KEY, 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.gather(*joined) == [None, None, None]
    assert len(flights) == 0


async def test_a_cancelled_waiter_leaves_the_flight_and_the_others_alone():
    flights = Flights()
    flight = flights.lead(KEY)
    assert flight is not None
    tasks = await waiters(flights, KEY, 10)
    tasks[3].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[3]
    assert flights.waiting(KEY) == 9
    assert len(flights) == 1
    flight.land(REPLY)
    rest = await asyncio.gather(*(t for i, t in enumerate(tasks) if i != 3))
    assert all(outcome is REPLY for outcome in rest)


async def test_a_waiter_timing_out_leaves_the_flight_alone():
    flights = Flights()
    flight = flights.lead(KEY)
    assert flight is not None
    patient = await waiters(flights, KEY, 1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await flights.join(KEY)
    flight.land(REPLY)
    assert await patient[0] is REPLY


async def test_landing_twice_is_a_no_op():
    flights = Flights()
    flight = flights.lead(KEY)
    assert flight is not None
    tasks = await waiters(flights, KEY, 2)
    flight.land(REPLY)
    flight.land(None)
    with flight:  # exiting lands None: also a no-op now
        pass
    assert await asyncio.gather(*tasks) == [REPLY, REPLY]
    assert flight.landed


async def test_a_landed_flight_does_not_remove_the_next_one():
    flights = Flights()
    first = flights.lead(KEY)
    assert first is not None
    first.land(None)
    second = flights.lead(KEY)
    assert second is not None
    first.land(REPLY)  # late and repeated: must not touch the flight now in the air
    assert len(flights) == 1
    tasks = await waiters(flights, KEY, 1)
    second.land(REPLY)
    assert await tasks[0] is REPLY


async def test_join_without_a_flight_is_none_at_once():
    assert await Flights().join(KEY) is None


def test_a_flight_with_no_waiters_needs_no_event_loop():
    flights = Flights()
    flight = flights.lead(KEY)
    assert flight is not None
    flight.land(REPLY)
    assert len(flights) == 0
    assert "landed" in repr(flight)
