"""The work queue between event handlers and reconcile workers.

Owns which keys are waiting, being processed or delayed, with client-go's semantics while it
runs: a waiting key is never queued twice, a key being processed is never handed to a second
worker (an add meanwhile marks it dirty and ``done`` queues it again, once), and
``add_after`` keeps the earliest time. Shutdown is controller-runtime's priority queue's, not
client-go's: ``shutdown()`` drops the keys still waiting or delayed (client-go's ``ShutDown``
hands waiting keys out until none is left) and refuses later adds; keys being processed
finish. It neither records nor logs (callers record the returned ``AddOutcome``) and decides
no retries. No I/O.

There is no background task. A getter with nothing to take waits for an add; one of the
waiting getters, the timekeeper, also sleeps on the clock until the earliest delayed key is
due, so a fake clock drives every delay in tests and nothing is left running after shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import itertools
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from ctrltrace.clock import Clock, SystemClock
from ctrltrace.ratelimit import ItemExponentialBackoff, RateLimiter
from ctrltrace.vocabulary import DispatchOutcome

T = TypeVar("T", bound=Hashable)


class AddOutcome(enum.StrEnum):
    # The dispatch record's outcome (``vocabulary.DispatchOutcome`` says what each means).
    QUEUED = DispatchOutcome.QUEUED
    DEDUPLICATED = DispatchOutcome.DEDUPLICATED
    REQUEUED_AFTER_PROCESSING = DispatchOutcome.REQUEUED_AFTER_PROCESSING
    DELAYED = DispatchOutcome.DELAYED
    SHUT_DOWN = DispatchOutcome.SHUT_DOWN


class QueueShutDown(Exception):
    """Raised by ``WorkQueue.get`` once the queue is shut down."""


class WorkQueue(Generic[T]):
    """client-go's rate-limited delaying work queue, for asyncio (with the shutdown of
    controller-runtime's priority queue: waiting keys are dropped).

    Not thread-safe: use it from the event loop that runs its getters.
    """

    def __init__(
        self, clock: Clock | None = None, rate_limiter: RateLimiter[T] | None = None
    ) -> None:
        self._clock: Clock = SystemClock() if clock is None else clock
        self._rate_limiter: RateLimiter[T] = (
            ItemExponentialBackoff() if rate_limiter is None else rate_limiter
        )
        self._queue: deque[T] = deque()
        # Keys with a run pending: waiting in _queue, or being processed and due back on done.
        self._dirty: set[T] = set()
        self._added_at: dict[T, float] = {}  # per dirty key: when its pending run was asked for
        self._processing: dict[T, float] = {}  # key -> when a getter took it
        self._delayed: dict[T, tuple[float, int, T]] = {}  # key -> its live entry in _heap
        # (ready_at, tie-breaker, key); entries superseded by an earlier time are skipped lazily.
        self._heap: list[tuple[float, int, T]] = []
        self._order = itertools.count()
        self._getters: deque[asyncio.Future[None]] = deque()  # idle getters, not yet woken
        self._timekeeper: asyncio.Future[None] | None = None
        self._timekeeper_deadline = 0.0
        self._shut_down = False

    def add(self, item: T) -> AddOutcome:
        if self._shut_down:
            return AddOutcome.SHUT_DOWN
        return self._add(item, self._catch_up())

    def add_after(self, item: T, delay: float) -> AddOutcome:
        """Add ``item`` in ``delay`` seconds, or at its earlier scheduled time if it has one.

        A key already waiting or being processed is scheduled all the same, as in client-go:
        when its time comes the ``add`` rules apply.
        """
        if delay <= 0:
            return self.add(item)
        if self._shut_down:
            return AddOutcome.SHUT_DOWN
        ready_at = self._catch_up() + delay
        scheduled = self._delayed.get(item)
        if scheduled is not None and scheduled[0] <= ready_at:
            return AddOutcome.DEDUPLICATED
        entry = (ready_at, next(self._order), item)
        self._delayed[item] = entry
        heapq.heappush(self._heap, entry)
        self._keep_time()
        return AddOutcome.DELAYED

    def add_rate_limited(self, item: T) -> float:
        """Add ``item`` after its back-off delay, counting one more failure; return the delay.

        After shutdown the add is ignored (see ``shut_down``).
        """
        delay = self._rate_limiter.when(item)
        self.add_after(item, delay)
        return delay

    @property
    def shut_down(self) -> bool:
        """Whether ``shutdown()`` was called: every add is then ignored."""
        return self._shut_down

    def forget(self, item: T) -> None:
        self._rate_limiter.forget(item)

    def retries(self, item: T) -> int:
        return self._rate_limiter.retries(item)

    def scheduled_at(self, item: T) -> float | None:
        """When the delayed ``item`` will be added (clock monotonic seconds), if it is delayed."""
        self._catch_up()
        entry = self._delayed.get(item)
        return None if entry is None else entry[0]

    async def get(self) -> tuple[T, float]:
        """Wait for a key; return it and the seconds it waited to be handed out.

        The wait is counted from the add that made the key wait, or from its ready time if it
        was delayed. The key is processing until ``done``. Raises ``QueueShutDown``.
        """
        try:
            while not self._shut_down:
                now = self._catch_up()
                if self._queue:
                    return self._hand_out(now)
                await self._wait()
            raise QueueShutDown
        finally:
            # This getter may have been the timekeeper; another idle one must take over.
            self._keep_time()

    def done(self, item: T) -> None:
        """Finish processing ``item``; queue it again if it was added meanwhile.

        A no-op for a key that is not being processed.
        """
        if self._processing.pop(item, None) is None or item not in self._dirty:
            return
        self._catch_up()
        self._push(item)

    def shutdown(self) -> None:
        """Drop every waiting and delayed key, wake all getters with ``QueueShutDown``.

        Keys being processed stay counted until their ``done``.
        """
        self._shut_down = True
        self._queue.clear()
        self._dirty.clear()
        self._added_at.clear()
        self._delayed.clear()
        self._heap.clear()
        while self._getters:
            self._wake_one()

    def __len__(self) -> int:
        """Keys ready to be handed out (not delayed, not being processed)."""
        self._catch_up()
        return len(self._queue)

    @property
    def delayed_count(self) -> int:
        self._catch_up()
        return len(self._delayed)

    @property
    def processing_count(self) -> int:
        return len(self._processing)

    def unfinished_work_seconds(self) -> float:
        now = self._clock.monotonic()
        return sum(now - started for started in self._processing.values())

    def longest_running_seconds(self) -> float:
        if not self._processing:
            return 0.0
        return self._clock.monotonic() - min(self._processing.values())

    def _add(self, item: T, at: float) -> AddOutcome:
        if item in self._dirty:
            return AddOutcome.DEDUPLICATED
        self._dirty.add(item)
        self._added_at[item] = at
        if item in self._processing:
            return AddOutcome.REQUEUED_AFTER_PROCESSING
        self._push(item)
        return AddOutcome.QUEUED

    def _push(self, item: T) -> None:
        self._queue.append(item)
        self._wake_one()

    def _catch_up(self) -> float:
        """Add every delayed key whose time has come, in time order; return now."""
        now = self._clock.monotonic()
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            ready_at, _, item = entry
            if self._delayed.get(item) is entry:
                del self._delayed[item]
                self._add(item, ready_at)
        return now

    def _next_deadline(self) -> float | None:
        heap = self._heap
        while heap and self._delayed.get(heap[0][2]) is not heap[0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _hand_out(self, now: float) -> tuple[T, float]:
        item = self._queue.popleft()
        self._dirty.remove(item)
        self._processing[item] = now
        return item, now - self._added_at.pop(item)

    def _wake_one(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    def _keep_time(self) -> None:
        """Make sure an idle getter sleeps until the earliest delayed key is due."""
        if not self._getters:
            return
        deadline = self._next_deadline()
        if deadline is None:
            return
        timekeeper = self._timekeeper
        if timekeeper is None:
            self._wake_one()  # it comes back as the timekeeper
        elif not timekeeper.done() and deadline < self._timekeeper_deadline:
            self._getters.remove(timekeeper)
            timekeeper.set_result(None)  # it comes back with the earlier deadline

    async def _wait(self) -> None:
        getter = asyncio.get_running_loop().create_future()
        self._getters.append(getter)
        try:
            deadline = self._next_deadline()
            if deadline is None or self._timekeeper is not None:
                await getter
            else:
                await self._wait_as_timekeeper(getter, deadline)
        except asyncio.CancelledError:
            if getter.done() and not getter.cancelled() and self._queue:
                self._wake_one()  # the wake-up this getter will not use must not be lost
            raise
        finally:
            getter.cancel()  # a no-op if it was woken
            if getter.cancelled():
                # Never woken: withdraw it so no wake-up is spent on it. A waker may already
                # have dropped it.
                with contextlib.suppress(ValueError):
                    self._getters.remove(getter)

    async def _wait_as_timekeeper(self, getter: asyncio.Future[None], deadline: float) -> None:
        self._timekeeper, self._timekeeper_deadline = getter, deadline
        sleeper = asyncio.create_task(self._sleep_until(deadline), name="workqueue-timekeeper")
        try:
            await asyncio.wait((getter, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._timekeeper = None
            if sleeper.cancel():
                await asyncio.wait((sleeper,))  # so no task outlives this getter

    async def _sleep_until(self, deadline: float) -> None:
        # Measured when the task starts, not when it was created: the clock may move between.
        await self._clock.sleep(deadline - self._clock.monotonic())
