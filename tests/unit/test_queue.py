from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ctrltrace.clock import FakeClock
from ctrltrace.queue import AddOutcome, QueueShutDown, WorkQueue
from ctrltrace.request import Request

Scenario = Callable[[], Coroutine[Any, Any, None]]


def run(scenario: Scenario) -> None:
    """Run ``scenario`` on a fresh event loop and check it left no task behind."""

    async def checked() -> None:
        await scenario()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(checked())


def make_queue() -> tuple[FakeClock, WorkQueue[str]]:
    clock = FakeClock()
    return clock, WorkQueue(clock)


async def settle(clock: FakeClock) -> None:
    """Let woken tasks run until they block again, without moving time."""
    await clock.advance(0)


class FixedDelays:
    """A rate limiter that is not the default one, to show the queue uses what it is given."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.asked: list[str] = []
        self.forgotten: list[str] = []

    def when(self, item: str) -> float:
        self.asked.append(item)
        return self.delay

    def forget(self, item: str) -> None:
        self.forgotten.append(item)

    def retries(self, item: str) -> int:
        return self.asked.count(item)


def test_add_of_a_waiting_key_is_deduplicated() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        assert queue.add("a") == AddOutcome.QUEUED
        assert queue.add("a") == AddOutcome.DEDUPLICATED
        assert len(queue) == 1
        assert await queue.get() == ("a", 0.0)
        assert len(queue) == 0
        waiter = asyncio.create_task(queue.get())
        await settle(clock)
        assert not waiter.done()  # the duplicate was not queued
        queue.shutdown()
        with pytest.raises(QueueShutDown):
            await waiter

    run(scenario)


def test_keys_are_handed_out_in_fifo_order() -> None:
    async def scenario() -> None:
        _, queue = make_queue()
        for key in ("c", "a", "b"):
            queue.add(key)
        assert [(await queue.get())[0] for _ in range(3)] == ["c", "a", "b"]

    run(scenario)


def test_burst_of_adds_while_processing_requeues_once_after_done() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        queue.add("a")
        key, _ = await queue.get()
        outcomes = [queue.add(key) for _ in range(50)]
        assert outcomes[0] == AddOutcome.REQUEUED_AFTER_PROCESSING
        assert set(outcomes[1:]) == {AddOutcome.DEDUPLICATED}
        assert len(queue) == 0  # not handed out while its worker still holds it
        queue.done(key)
        assert len(queue) == 1
        assert (await queue.get())[0] == "a"
        queue.done("a")
        assert len(queue) == 0
        assert queue.processing_count == 0
        waiter = asyncio.create_task(queue.get())
        await settle(clock)
        assert not waiter.done()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    run(scenario)


def test_done_without_adds_meanwhile_does_not_requeue() -> None:
    async def scenario() -> None:
        _, queue = make_queue()
        queue.add("a")
        await queue.get()
        queue.done("a")
        queue.done("a")  # a second done is ignored
        assert (len(queue), queue.processing_count) == (0, 0)
        queue.add("b")
        queue.done("b")  # waiting, not processing: done must not queue it twice
        assert len(queue) == 1

    run(scenario)


def test_two_getters_never_hold_the_same_key() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        first = asyncio.create_task(queue.get())
        second = asyncio.create_task(queue.get())
        await settle(clock)
        queue.add("a")
        await settle(clock)
        holder, other = (first, second) if first.done() else (second, first)
        assert holder.result()[0] == "a"
        assert queue.add("a") == AddOutcome.REQUEUED_AFTER_PROCESSING
        await settle(clock)
        assert not other.done()  # "a" is dirty but still being processed
        queue.done("a")
        await settle(clock)
        assert other.result()[0] == "a"
        queue.done("a")

    run(scenario)


def test_concurrent_workers_never_overlap_on_a_key_and_miss_no_add() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        held: set[str] = set()
        started: dict[str, int] = {}  # key -> step at which a worker last took it
        last_add: dict[str, int] = {}
        step = 0
        rng = random.Random(7)

        async def worker() -> None:
            while True:
                try:
                    key, _ = await queue.get()
                except QueueShutDown:
                    return
                assert key not in held, f"{key} handed to two workers"
                held.add(key)
                started[key] = step
                for _ in range(rng.randint(0, 3)):
                    await asyncio.sleep(0)
                held.remove(key)
                queue.done(key)

        workers = [asyncio.create_task(worker()) for _ in range(4)]
        for step in range(1, 2001):
            key = f"k{rng.randint(0, 9)}"
            queue.add(key)
            last_add[key] = step
            if rng.random() < 0.5:
                await asyncio.sleep(0)
        await settle(clock)
        assert (len(queue), queue.processing_count) == (0, 0)
        # Every key was handed out again after its last add.
        assert all(started[key] >= added for key, added in last_add.items())
        queue.shutdown()
        await asyncio.gather(*workers)

    run(scenario)


def test_add_after_keeps_the_earliest_time() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        now = clock.monotonic()
        assert queue.add_after("a", 10) == AddOutcome.DELAYED
        assert queue.add_after("a", 5) == AddOutcome.DELAYED
        assert queue.scheduled_at("a") == now + 5
        assert queue.add_after("b", 5) == AddOutcome.DELAYED
        assert queue.add_after("b", 10) == AddOutcome.DEDUPLICATED
        assert queue.add_after("b", 5) == AddOutcome.DEDUPLICATED
        assert queue.scheduled_at("b") == now + 5
        assert queue.delayed_count == 2
        assert len(queue) == 0
        await clock.advance(5)
        assert (len(queue), queue.delayed_count) == (2, 0)
        assert queue.scheduled_at("a") is None
        await clock.advance(10)  # the superseded time for "a" adds nothing
        assert len(queue) == 2

    run(scenario)


def test_add_after_of_a_waiting_key_schedules_it_again() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        queue.add("a")
        assert queue.add_after("a", 5) == AddOutcome.DELAYED
        assert (len(queue), queue.delayed_count) == (1, 1)
        await queue.get()
        queue.done("a")
        await clock.advance(5)
        assert len(queue) == 1  # processed meanwhile, so its time brings it back

    run(scenario)


def test_delayed_time_of_a_key_still_waiting_is_deduplicated() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        queue.add("a")
        queue.add_after("a", 5)
        await clock.advance(5)
        assert (len(queue), queue.delayed_count) == (1, 0)
        assert await queue.get() == ("a", 5.0)  # still timed from the first add
        assert len(queue) == 0

    run(scenario)


def test_non_positive_delay_is_a_plain_add() -> None:
    async def scenario() -> None:
        _, queue = make_queue()
        assert queue.add_after("a", 0) == AddOutcome.QUEUED
        assert queue.add_after("a", -1) == AddOutcome.DEDUPLICATED
        assert (len(queue), queue.delayed_count) == (1, 0)

    run(scenario)


def test_delayed_key_is_not_handed_out_before_its_time() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        getter = asyncio.create_task(queue.get())
        await settle(clock)
        queue.add_after("a", 5)
        await clock.advance(4.999)
        assert not getter.done()
        await clock.advance(0.001)
        assert getter.done()
        assert getter.result() == ("a", 0.0)

    run(scenario)


def test_a_getter_woken_while_sleeping_on_a_delay_leaves_no_task_behind() -> None:
    async def scenario() -> None:
        _, queue = make_queue()
        queue.add_after("late", 60)
        asyncio.get_running_loop().call_soon(queue.add, "a")
        assert (await queue.get())[0] == "a"
        # Checked right away: the getter's clock sleep must already be gone.
        assert asyncio.all_tasks() == {asyncio.current_task()}

    run(scenario)


def test_waiting_getter_notices_an_earlier_delay() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        queue.add_after("late", 10)
        getter = asyncio.create_task(queue.get())
        await settle(clock)
        queue.add_after("soon", 2)
        await clock.advance(2)
        assert getter.result() == ("soon", 0.0)

    run(scenario)


def test_idle_getters_take_turns_watching_delays() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        getters = [asyncio.create_task(queue.get()) for _ in range(3)]
        await settle(clock)
        queue.add_after("a", 5)
        queue.add_after("b", 10)
        await clock.advance(5)
        assert sorted(g.result()[0] for g in getters if g.done()) == ["a"]
        await clock.advance(5)
        assert sorted(g.result()[0] for g in getters if g.done()) == ["a", "b"]
        queue.shutdown()
        results = await asyncio.gather(*getters, return_exceptions=True)
        assert sum(isinstance(r, QueueShutDown) for r in results) == 1

    run(scenario)


def test_due_keys_are_queued_in_time_order() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        queue.add_after("a", 3)
        queue.add_after("b", 1)
        queue.add_after("c", 2)
        await clock.advance(2.5)
        queue.add("d")  # added after "b" and "c" became due, before "a" did
        await clock.advance(1)
        got = [await queue.get() for _ in range(4)]
        assert got == [("b", 2.5), ("c", 1.5), ("d", 1.0), ("a", 0.5)]

    run(scenario)


def test_queue_wait_is_measured_on_the_clock() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        queue.add("a")
        await clock.advance(3)
        assert await queue.get() == ("a", 3.0)
        await clock.advance(1)
        queue.add("a")  # while processing: the wait starts now
        await clock.advance(2)
        queue.done("a")
        await clock.advance(4)
        assert await queue.get() == ("a", 6.0)
        queue.add_after("b", 5)
        await clock.advance(7)
        assert await queue.get() == ("b", 2.0)  # from its ready time

    run(scenario)


def test_add_rate_limited_uses_the_back_off_delay() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        key = "a"
        assert queue.add_rate_limited(key) == pytest.approx(0.005)
        assert queue.scheduled_at(key) == pytest.approx(clock.monotonic() + 0.005)
        assert queue.retries(key) == 1
        await clock.advance(0.005)
        await queue.get()
        queue.done(key)
        assert queue.add_rate_limited(key) == pytest.approx(0.01)
        assert queue.add_rate_limited(key) == pytest.approx(0.02)
        # The later time does not replace the earlier one.
        assert queue.scheduled_at(key) == pytest.approx(clock.monotonic() + 0.01)
        assert queue.retries(key) == 3
        queue.forget(key)
        assert queue.retries(key) == 0
        assert queue.add_rate_limited(key) == pytest.approx(0.005)

    run(scenario)


def test_queue_uses_the_rate_limiter_it_is_given() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        limiter = FixedDelays(7.0)
        queue: WorkQueue[str] = WorkQueue(clock, limiter)
        assert queue.add_rate_limited("a") == 7.0
        assert queue.scheduled_at("a") == clock.monotonic() + 7.0
        assert queue.retries("a") == 1
        queue.forget("a")
        assert (limiter.asked, limiter.forgotten) == (["a"], ["a"])

    run(scenario)


def test_shutdown_wakes_blocked_getters_and_ignores_later_adds() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        plain = asyncio.create_task(queue.get())
        queue.add_after("x", 60)  # so one of the getters sleeps on the clock
        timed = asyncio.create_task(queue.get())
        await settle(clock)
        assert not plain.done() and not timed.done()
        queue.shutdown()
        for getter in (plain, timed):
            with pytest.raises(QueueShutDown):
                await getter
        assert queue.add("a") == AddOutcome.SHUT_DOWN
        assert queue.add_after("a", 1) == AddOutcome.SHUT_DOWN
        assert (len(queue), queue.delayed_count) == (0, 0)
        with pytest.raises(QueueShutDown):
            await queue.get()

    run(scenario)


def test_shutdown_drops_waiting_keys_but_keeps_processing_ones_until_done() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        queue.add("a")
        queue.add("b")
        await queue.get()
        queue.add("a")  # dirty while processing
        queue.shutdown()
        assert (len(queue), queue.processing_count) == (0, 1)
        await clock.advance(2)
        assert queue.unfinished_work_seconds() == 2.0
        queue.done("a")
        assert (len(queue), queue.processing_count) == (0, 0)

    run(scenario)


def test_a_woken_getter_that_is_cancelled_passes_the_item_on() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        first = asyncio.create_task(queue.get())
        await settle(clock)
        second = asyncio.create_task(queue.get())
        await settle(clock)
        queue.add("a")  # wakes the first getter ...
        first.cancel()  # ... which is cancelled before it runs
        await settle(clock)
        assert first.cancelled()
        assert second.result()[0] == "a"

    run(scenario)


def test_a_cancelled_timekeeper_hands_over_the_delays() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        queue.add_after("a", 5)
        timekeeper = asyncio.create_task(queue.get())
        await settle(clock)
        other = asyncio.create_task(queue.get())
        await settle(clock)
        timekeeper.cancel()
        await settle(clock)
        await clock.advance(5)
        assert other.result() == ("a", 0.0)
        assert timekeeper.cancelled()

    run(scenario)


def test_unfinished_and_longest_running_work() -> None:
    async def scenario() -> None:
        clock, queue = make_queue()
        assert (queue.unfinished_work_seconds(), queue.longest_running_seconds()) == (0.0, 0.0)
        queue.add("a")
        queue.add("b")
        await queue.get()
        await clock.advance(2)
        await queue.get()
        await clock.advance(3)
        assert queue.processing_count == 2
        assert queue.unfinished_work_seconds() == 8.0
        assert queue.longest_running_seconds() == 5.0
        queue.done("a")
        assert queue.unfinished_work_seconds() == 3.0
        assert queue.longest_running_seconds() == 3.0
        queue.done("b")
        assert (queue.unfinished_work_seconds(), queue.longest_running_seconds()) == (0.0, 0.0)

    run(scenario)


def test_requests_are_queue_keys() -> None:
    async def scenario() -> None:
        queue: WorkQueue[Request] = WorkQueue(FakeClock())
        assert queue.add(Request("ns", "a")) == AddOutcome.QUEUED
        assert queue.add(Request("ns", "a")) == AddOutcome.DEDUPLICATED
        assert queue.add(Request("other", "a")) == AddOutcome.QUEUED
        assert len(queue) == 2

    run(scenario)


def test_outcomes_are_the_record_vocabulary() -> None:
    assert [str(o) for o in AddOutcome] == [
        "queued",
        "deduplicated",
        "requeued_after_processing",
        "delayed",
        "shut_down",
    ]
