"""Lease leader election against the real apiserver: one leader, takeover after SIGKILL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable

import aiohttp

from ctrltrace import Context, LeaseTiming, Manager, Request, Stage
from ctrltrace.envtest import ControlPlane

from .conftest import Running, start, stop

ManagerFactory = Callable[..., Manager]
FAST = LeaseTiming(lease_duration=3, renew_deadline=2, retry_period=0.5)


async def _noop(ctx: Context, request: Request) -> None:
    return None


def _elected(factory: ManagerFactory, namespace: str, lease: str) -> Manager:
    mgr = factory(
        namespaces=[namespace],
        leader_election=True,
        leader_election_id=lease,
        leader_election_namespace=namespace,
        lease_timing=FAST,
    )
    mgr.controller().for_("v1", "ConfigMap").complete(_noop)
    return mgr


def _reconciled(running: Running, request: str) -> bool:
    return any(r.request == request for r in running.records.where(Stage.RECONCILE))


def _seen(running: Running, name: str) -> bool:
    events = running.records.where(Stage.EVENT)
    return any(r.object is not None and r.object.name == name for r in events)


def test_only_the_leader_reconciles_and_the_standby_says_who_leads(
    control_plane: ControlPlane, kube_namespace: str, manager_factory: ManagerFactory
) -> None:
    configmaps = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    lease = f"/apis/coordination.k8s.io/v1/namespaces/{kube_namespace}/leases/pair.example.com"
    control_plane.request("POST", configmaps, {"metadata": {"name": "watched"}})

    async def scenario() -> None:
        first = await start(_elected(manager_factory, kube_namespace, "pair.example.com"))
        await first.until(lambda: bool(first.records.where(Stage.LEASE, "acquired")))
        second = await start(_elected(manager_factory, kube_namespace, "pair.example.com"))
        await second.until(lambda: bool(second.records.where(Stage.LEASE, "standby")))
        await first.until(lambda: bool(first.records.where(Stage.RECONCILE)))
        await second.until(lambda: bool(second.records.where(Stage.WATCH, "synced")))
        # An event both replicas see, reconciled by the leader; and the leader renewing the
        # lease twice meanwhile (several of the standby's retry periods): the standby stays out.
        control_plane.request("POST", configmaps, {"metadata": {"name": "late"}})
        await first.until(lambda: _reconciled(first, f"{kube_namespace}/late"))
        await second.until(lambda: _seen(second, "late"))
        renewals: set[str] = set()

        def renewed_twice() -> bool:
            renewals.add(control_plane.request("GET", lease)["spec"]["renewTime"])
            return len(renewals) >= 3

        await first.until(renewed_twice)
        url = f"http://127.0.0.1:{second.manager.health_port}/readyz"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            ready_status, ready_text = response.status, await response.text()
        await stop(second)
        await stop(first)

        assert second.records.where(Stage.RECONCILE_START) == []
        standby = second.records.where(Stage.LEASE, "standby")[0]
        assert first.manager.elector is not None
        assert standby.attrs["holder"] == first.manager.elector.identity
        assert first.records.where(Stage.LEASE, "lost") == []
        # A standby is ready (to take over); its readiness body says who leads.
        assert ready_status == 200
        assert (
            f"[+]lease {kube_namespace}/pair.example.com: standby, held by "
            f"{first.manager.elector.identity}"
        ) in ready_text.splitlines()

    asyncio.run(scenario())


_LEADER = textwrap.dedent(
    """
    import sys
    import ctrltrace as ct

    async def reconcile(ctx, request):
        return None

    def announce(record):
        if record.stage == ct.Stage.RECONCILE:
            print("reconciled", flush=True)

    mgr = ct.Manager(
        kubeconfig=sys.argv[1], namespaces=[sys.argv[2]], leader_election=True,
        leader_election_id="takeover.example.com", leader_election_namespace=sys.argv[2],
        lease_timing=ct.LeaseTiming(lease_duration=3, renew_deadline=2, retry_period=0.5),
        health_probe_bind_address="0",
    )
    mgr.add_sink(announce)
    mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
    mgr.run()
    """
)


def test_the_standby_takes_over_after_the_leader_is_killed(
    control_plane: ControlPlane, kube_namespace: str, manager_factory: ManagerFactory
) -> None:
    path = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    control_plane.request("POST", path, {"metadata": {"name": "before"}})
    leader = subprocess.Popen(
        [sys.executable, "-c", _LEADER, str(control_plane.kubeconfig), kube_namespace],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert leader.stdout is not None
        assert leader.stdout.readline().strip() == "reconciled"

        async def scenario() -> None:
            standby = await start(_elected(manager_factory, kube_namespace, "takeover.example.com"))
            await standby.until(lambda: bool(standby.records.where(Stage.LEASE, "standby")))
            assert standby.records.where(Stage.RECONCILE_START) == []
            leader.kill()
            leader.wait()
            await standby.until(
                lambda: bool(standby.records.where(Stage.LEASE, "acquired")), within=15
            )
            await standby.until(lambda: bool(standby.records.where(Stage.RECONCILE)))
            await stop(standby)
            acquired = standby.records.where(Stage.LEASE, "acquired")[0]
            first_start = standby.records.where(Stage.RECONCILE_START)[0]
            assert first_start.time >= acquired.time

        asyncio.run(scenario())
    finally:
        if leader.poll() is None:
            leader.kill()
        leader.wait()
