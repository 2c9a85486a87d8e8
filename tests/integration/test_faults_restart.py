"""The API server killed and started again (same etcd, port and certificates) while objects are
created and updated: on a control plane of the test's own, so no other test sees it go."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ctrltrace import Stage
from ctrltrace.envtest import ControlPlane
from ctrltrace.journal import JournalWriter

from .conftest import Running
from .faultload import Tally, Workload, explain_json, manager_via, start_counting, survive

pytestmark = pytest.mark.integration


def test_the_api_server_killed_and_restarted(
    private_control_plane: ControlPlane, tmp_path: Path
) -> None:
    plane = private_control_plane
    namespace = "restarted"
    plane.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    tally = Tally("v1", "ConfigMap")
    load = Workload(
        plane, f"/api/v1/namespaces/{namespace}/configmaps", [f"obj-{i}" for i in range(8)]
    )
    server_before = plane.server

    async def scenario(journal: JournalWriter) -> Running:
        mgr = manager_via(plane.kubeconfig, namespace)
        running = await start_counting(mgr, tally, load, journal)
        return await survive(
            running, tally, load, lambda: asyncio.to_thread(plane.restart_apiserver)
        )

    with JournalWriter(tmp_path / "journal.sqlite") as journal:
        running = asyncio.run(scenario(journal))
        answer = explain_json(journal, f"{namespace}/obj-0", "--kind", "configmap")
    assert plane.server == server_before
    watch = [record.outcome for record in running.records.where(Stage.WATCH)]
    assert "disconnected" in watch and watch[-1] == "resumed", watch
    lost = running.records.where(Stage.WATCH, "disconnected")[0]
    assert "connection" in lost.reason
    assert answer["verdict"]["code"] == "reconciled"
