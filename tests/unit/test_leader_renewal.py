"""Lease renewal on the fake clock: a renewal that needed retries is said, one that ran out of
the renew deadline loses the lease."""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

import pytest

from ctrltrace import Collect, FakeClock, LeaderLost, LeaseTiming, Recorder, Stage
from ctrltrace.leaderelection import LeaderElector
from ctrltrace.transport import Json, NotFound, Transport


class FlakyLeases:
    """One Lease in memory; the next ``failing`` writes time out."""

    def __init__(self) -> None:
        self.lease: Json | None = None
        self.failing = 0

    async def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> Json:
        if method == "GET":
            if self.lease is None:
                raise NotFound(404, "NotFound", "leases not found", method, path)
            return copy.deepcopy(self.lease)
        if self.failing:
            self.failing -= 1
            raise TimeoutError
        self.lease = copy.deepcopy(body)
        return copy.deepcopy(body)


def _elector(leases: FlakyLeases, records: Collect, clock: FakeClock) -> LeaderElector:
    return LeaderElector(
        cast(Transport, leases),
        name="web",
        namespace="ops",
        identity="me",
        recorder=Recorder(records),
        clock=clock,
        timing=LeaseTiming(lease_duration=15, renew_deadline=10, retry_period=2),
    )


def test_a_renewal_that_needed_retries_is_recorded_as_late() -> None:
    leases, records, clock = FlakyLeases(), Collect(), FakeClock()

    async def scenario() -> None:
        elector = _elector(leases, records, clock)
        await elector.acquire()
        holding = asyncio.create_task(elector.hold())
        await clock.advance(2.0)  # one renewal on time
        leases.failing = 2
        await clock.advance(6.0)  # two failed tries, then the third lands
        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)

    asyncio.run(scenario())
    outcomes = [record.outcome for record in records.where(Stage.LEASE)]
    assert outcomes[:2] == ["attempting", "acquired"]
    (late,) = records.where(Stage.LEASE, "renewed_late")
    assert late.reason == "renewed after 3 attempts, 4.0s of the 10s renew deadline"
    assert records.where(Stage.LEASE, "lost") == []


def test_a_renewal_past_the_deadline_loses_the_lease() -> None:
    leases, records, clock = FlakyLeases(), Collect(), FakeClock()

    async def scenario() -> None:
        elector = _elector(leases, records, clock)
        await elector.acquire()
        holding = asyncio.create_task(elector.hold())
        await clock.advance(2.0)
        leases.failing = 100
        await clock.advance(12.0)
        with pytest.raises(LeaderLost):
            await holding

    asyncio.run(scenario())
    assert [r.outcome for r in records.where(Stage.LEASE)][-1] == "lost"
    assert records.where(Stage.LEASE, "renewed_late") == []
