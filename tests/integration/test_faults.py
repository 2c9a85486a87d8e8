"""Faults a controller meets in production, injected against the real servers while objects are
created and updated: connections reset, the API server stalled while etcd is compacted, the
manager's RBAC revoked and restored, the watched CRD deleted and created again. Each test
checks that every object's last change reaches Reconcile, that no key is in two workers at
once, that the manager stays up, and that the records and ``explain`` name the fault and the
recovery. (The API server restart is in test_faults_restart.py: it needs a control plane of
its own.)"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ctrltrace import Stage
from ctrltrace.envtest import ApiError, ControlPlane, FaultProxy
from ctrltrace.envtest.pytest_plugin import MintIdentity, unique_name
from ctrltrace.journal import JournalWriter
from ctrltrace.transport import Timeouts, Transport, load_configuration

from .conftest import WIDGET_CRD, Running, install_crd
from .faultload import Tally, Workload, explain_json, manager_via, start_counting, survive

pytestmark = pytest.mark.integration

NAMES = [f"obj-{i}" for i in range(8)]


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[JournalWriter]:
    with JournalWriter(tmp_path / "journal.sqlite") as writer:
        yield writer


def via_proxy(plane: ControlPlane, proxy: FaultProxy, tmp_path: Path) -> Path:
    return plane.admin_kubeconfig_via(f"https://{proxy.address}", tmp_path / "via.kubeconfig")


def outcomes(running: Running) -> list[str]:
    return [record.outcome for record in running.records.where(Stage.WATCH)]


def last(outcomes: list[str], outcome: str) -> int:
    return max(index for index, seen in enumerate(outcomes) if seen == outcome)


def test_connections_reset_again_and_again_lose_no_change(
    control_plane: ControlPlane,
    kube_namespace: str,
    fault_proxy: FaultProxy,
    journal: JournalWriter,
    tmp_path: Path,
) -> None:
    tally = Tally("v1", "ConfigMap")
    load = Workload(control_plane, f"/api/v1/namespaces/{kube_namespace}/configmaps", NAMES)

    async def scenario() -> Running:
        mgr = manager_via(via_proxy(control_plane, fault_proxy, tmp_path), kube_namespace)
        running = await start_counting(mgr, tally, load, journal)

        async def resets() -> None:
            for cut in range(1, 5):
                assert fault_proxy.reset() >= 1
                await running.until(lambda cut=cut: outcomes(running).count("resumed") == cut)  # type: ignore[misc]

        return await survive(running, tally, load, resets)

    running = asyncio.run(scenario())

    watch = outcomes(running)
    assert watch.count("disconnected") >= 4 and watch.count("resumed") == 4
    assert "gone" not in watch  # resumed where it was every time: nothing to list again
    answer = explain_json(journal, f"{kube_namespace}/obj-0", "--kind", "configmap")
    assert answer["verdict"]["code"] == "reconciled"
    assert answer["verdict"]["warnings"] == []  # the watch is healthy again


def test_a_stall_while_etcd_is_compacted_ends_in_410_and_one_list(
    control_plane: ControlPlane,
    kube_namespace: str,
    fault_proxy: FaultProxy,
    journal: JournalWriter,
    tmp_path: Path,
) -> None:
    # PodTemplates are served from etcd, not the watch cache: compaction reaches the watch.
    tally = Tally("v1", "PodTemplate")
    collection = f"/api/v1/namespaces/{kube_namespace}/podtemplates"
    container = {"name": "c", "image": "busybox"}
    load = Workload(
        control_plane, collection, NAMES, {"template": {"spec": {"containers": [container]}}}
    )

    during: list[dict[str, Any]] = []  # what explain said while the fault lasted

    async def scenario() -> Running:
        configuration = await load_configuration(
            str(via_proxy(control_plane, fault_proxy, tmp_path))
        )
        # A stalled connection is noticed by the client's own timeouts alone.
        transport = Transport(configuration, Timeouts(connect=2.0, read=5.0, watch_inactivity=4.0))
        mgr = manager_via(control_plane.kubeconfig, kube_namespace)
        running = await start_counting(mgr, tally, load, journal, transport)

        async def stall() -> None:
            fault_proxy.stall(10)
            await running.until(lambda: "disconnected" in outcomes(running), within=10)
            during.append(explain_json(journal, f"{kube_namespace}/obj-0", "--kind", "podtemplate"))
            await asyncio.sleep(2)  # writes go on meanwhile
            latest = control_plane.request("GET", collection)["metadata"]["resourceVersion"]
            control_plane.compact(latest)
            await running.until(lambda: "gone" in outcomes(running), within=30)

        try:
            return await survive(running, tally, load, stall)
        finally:
            await transport.close()

    running = asyncio.run(scenario())

    watch = outcomes(running)
    assert watch.count("gone") == 1
    first_failure = watch.index("disconnected")
    assert watch.index("gone") > first_failure
    gone = running.records.where(Stage.WATCH, "gone")[0]
    assert "listing again" in gone.reason
    (stalled,) = during[0]["verdict"]["warnings"]
    assert stalled["code"] == "watch_disconnected" and "Timeout" in stalled["message"]
    answer = explain_json(journal, f"{kube_namespace}/obj-0", "--kind", "podtemplate")
    assert answer["verdict"]["code"] == "reconciled" and answer["verdict"]["warnings"] == []


def test_rbac_revoked_then_restored(
    control_plane: ControlPlane,
    kube_namespace: str,
    fault_proxy: FaultProxy,
    mint_identity: MintIdentity,
    journal: JournalWriter,
    tmp_path: Path,
) -> None:
    identity = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}],
        namespace=kube_namespace,
    )
    kubeconfig = control_plane.kubeconfig_via(
        identity.kubeconfig, f"https://{fault_proxy.address}", tmp_path / "restricted.kubeconfig"
    )
    bindings = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{kube_namespace}/rolebindings"
    binding = control_plane.request("GET", f"{bindings}/ctrltrace-{identity.name}")
    tally = Tally("v1", "ConfigMap")
    load = Workload(control_plane, f"/api/v1/namespaces/{kube_namespace}/configmaps", NAMES)

    during: list[dict[str, Any]] = []  # what explain said while the fault lasted

    async def scenario() -> Running:
        mgr = manager_via(kubeconfig, kube_namespace)
        running = await start_counting(mgr, tally, load, journal)

        async def revoke_then_restore() -> None:
            control_plane.request("DELETE", f"{bindings}/ctrltrace-{identity.name}")
            fault_proxy.reset()  # an open watch outlives its permission; a new one does not
            await running.until(lambda: outcomes(running).count("forbidden") >= 2, within=30)
            during.append(explain_json(journal, f"{kube_namespace}/obj-0", "--kind", "configmap"))
            control_plane.request("POST", bindings, restored(binding))

        return await survive(running, tally, load, revoke_then_restore)

    running = asyncio.run(scenario())

    watch = outcomes(running)
    refused = running.records.where(Stage.WATCH, "forbidden")
    assert "cannot" in refused[0].reason and identity.name in refused[0].reason
    assert watch.index("forbidden") < last(watch, "resumed")  # and then it recovered
    (refusal,) = during[0]["verdict"]["warnings"]
    assert refusal["code"] == "watch_forbidden" and identity.name in refusal["message"]
    answer = explain_json(journal, f"{kube_namespace}/obj-0", "--kind", "configmap")
    assert answer["verdict"]["code"] == "reconciled" and answer["verdict"]["warnings"] == []


def restored(binding: dict[str, Any]) -> dict[str, Any]:
    again = copy.deepcopy(binding)
    metadata = again["metadata"]
    again["metadata"] = {"name": metadata["name"], "namespace": metadata["namespace"]}
    return again


def test_the_watched_crd_deleted_then_created_again(
    control_plane: ControlPlane, kube_namespace: str, journal: JournalWriter
) -> None:
    group = f"{unique_name('faults')}.example.com"
    crd = copy.deepcopy(WIDGET_CRD)
    crd["metadata"]["name"] = f"gadgets.{group}"
    crd["spec"].update(
        group=group, names={"plural": "gadgets", "singular": "gadget", "kind": "Gadget"}
    )
    install_crd(control_plane, crd)
    api_version = f"{group}/v1"
    tally = Tally(api_version, "Gadget")
    load = Workload(
        control_plane,
        f"/apis/{api_version}/namespaces/{kube_namespace}/gadgets",
        NAMES,
        {"apiVersion": api_version, "kind": "Gadget"},
    )
    crd_path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.{group}"

    during: list[dict[str, Any]] = []  # what explain said while the fault lasted

    async def scenario() -> Running:
        mgr = manager_via(control_plane.kubeconfig, kube_namespace)
        running = await start_counting(mgr, tally, load, journal)

        async def delete_then_create() -> None:
            control_plane.request("DELETE", crd_path)
            await running.until(crd_gone, within=30)
            await running.until(lambda: "kind_not_found" in outcomes(running), within=30)
            during.append(explain_json(journal, f"{kube_namespace}/obj-0", "--kind", "gadget"))
            await asyncio.to_thread(install_crd, control_plane, crd)

        def crd_gone() -> bool:
            try:
                control_plane.request("GET", crd_path)
            except ApiError as error:
                return error.status == 404
            return False

        return await survive(running, tally, load, delete_then_create)

    running = asyncio.run(scenario())

    watch = outcomes(running)
    missing = running.records.where(Stage.WATCH, "kind_not_found")
    assert missing and "Gadget" in missing[0].reason
    assert last(watch, "kind_not_found") < last(watch, "resumed")
    deleted = [
        record
        for record in running.records.where(Stage.EVENT, "DELETED")
        if record.object and record.object.name == "obj-0"
    ]
    assert deleted  # the CRD took its objects with it, and the controller saw them go
    assert "was deleted" in during[0]["verdict"]["message"]
    answer = explain_json(journal, f"{kube_namespace}/obj-0", "--kind", "gadget")
    assert answer["verdict"]["code"] == "reconciled" and answer["verdict"]["warnings"] == []
    assert "was deleted" not in answer["verdict"]["message"]
