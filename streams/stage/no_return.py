"""Which request tasks have passed the point of no return: their provider call has started."""

from __future__ import annotations

import asyncio


class PointOfNoReturn:
    """Marks tasks that started a provider call, so a revocation cancels only the others.

    When a partition is revoked, a request that has not called its provider yet (waiting for a
    token or a call slot) is cancelled: its offset stays uncommitted and the next owner calls it
    once. A request whose call has started must finish and publish its outcome before the
    partition is released, or the next owner would call the provider a second time.
    """

    def __init__(self) -> None:
        self._calling: set[asyncio.Task[object]] = set()

    def mark_passed(self) -> None:
        """Called by the task itself right before it sends the request."""
        task = asyncio.current_task()
        if task is not None:
            self._calling.add(task)
            task.add_done_callback(self._calling.discard)

    def has_passed(self, task: asyncio.Task[object]) -> bool:
        return task in self._calling

    def cancelled_before_call(self) -> bool:
        """Whether the current task was asked to cancel (a revocation's drain) before its call.

        A handler that turns every unexpected error into a dead letter asks this first: an
        error raised while the cancellation unwinds (a bug in some waiting primitive) must not
        finish, as a dead letter, a request that was never called and that the partition's next
        owner would otherwise call once.
        """
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0 and task not in self._calling
