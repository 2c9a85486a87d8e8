"""The leader elector on the fake clock: a replica stands by while another holds a live lease
and takes it once it expires, a renewal that needed retries is said, one that ran out of the
renew deadline loses the lease, and a release on shutdown clears the holder."""

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


def test_a_replica_stands_by_while_another_holds_the_lease_and_takes_it_once_it_expires() -> None:
    leases, records, clock = FlakyLeases(), Collect(), FakeClock()
    leases.lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "web", "namespace": "ops"},
        "spec": {"holderIdentity": "other", "leaseDurationSeconds": 15, "leaseTransitions": 4},
    }

    async def scenario() -> LeaderElector:
        elector = _elector(leases, records, clock)
        acquiring = asyncio.create_task(elector.acquire())
        for _ in range(14):  # the holder stopped renewing: its lease runs out after 15 s
            await clock.advance(1.0)
        assert not elector.is_leader.is_set()
        for _ in range(10):
            await clock.advance(1.0)
        await asyncio.wait_for(acquiring, 1)
        return elector

    elector = asyncio.run(scenario())
    assert elector.is_leader.is_set()
    # Standing by is said once, however many retries it took.
    assert [r.outcome for r in records.where(Stage.LEASE)] == ["attempting", "standby", "acquired"]
    assert records.where(Stage.LEASE, "standby")[0].attrs["holder"] == "other"
    assert leases.lease is not None
    assert leases.lease["spec"]["holderIdentity"] == "me"
    assert leases.lease["spec"]["leaseTransitions"] == 5


def test_a_leader_that_releases_on_cancel_clears_the_holder_and_says_so() -> None:
    leases, records, clock = FlakyLeases(), Collect(), FakeClock()

    async def scenario() -> None:
        elector = LeaderElector(
            cast(Transport, leases),
            name="web",
            namespace="ops",
            identity="me",
            recorder=Recorder(records),
            clock=clock,
            release_on_cancel=True,
        )
        await elector.acquire()
        holding = asyncio.create_task(elector.hold())
        await clock.advance(2.0)
        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)
        assert not elector.is_leader.is_set()

    asyncio.run(scenario())
    assert [r.outcome for r in records.where(Stage.LEASE)] == ["attempting", "acquired", "released"]
    assert leases.lease is not None
    assert leases.lease["spec"]["holderIdentity"] == ""
