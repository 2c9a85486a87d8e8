"""explain on owned children, as real controllers meet them: a child the controller rightly
does not map, and a deleted child whose own story must not hide behind its owner's reconciles."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ctrltrace import Context, Manager, Request, Stage
from ctrltrace.envtest import ControlPlane
from ctrltrace.journal import JournalWriter

from .conftest import start, stop
from .test_verdicts import explain, journal  # noqa: F401  # the fixture, shared

ManagerFactory = Callable[..., Manager]


async def _noop(ctx: Context, request: Request) -> None:
    return None


def _secret(plane: ControlPlane, namespace: str, name: str, *owners: dict[str, Any]) -> None:
    metadata: dict[str, Any] = {"name": name, "ownerReferences": list(owners)}
    plane.request("POST", f"/api/v1/namespaces/{namespace}/secrets", {"metadata": metadata})


def _parent(plane: ControlPlane, namespace: str) -> dict[str, Any]:
    created: dict[str, Any] = plane.request(
        "POST", f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {"name": "parent"}}
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "parent",
        "uid": created["metadata"]["uid"],
        "controller": True,
    }


def test_a_child_rightly_not_mapped_is_not_told_to_add_controller_true(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,  # noqa: F811
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "uid": "6a1c7f0e-0000-4000-8000-000000000001",
        "controller": True,
    }

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.add_sink(journal)
        mgr.controller().for_("v1", "ConfigMap").owns("v1", "Secret").complete(_noop)
        run = await start(mgr)
        await run.until(lambda: len(run.records.where(Stage.WATCH, "synced")) == 2)
        _secret(control_plane, kube_namespace, "loose")
        _secret(control_plane, kube_namespace, "theirs", deployment)
        await run.until(lambda: len(run.records.where(Stage.DISPATCH, "not_mapped")) == 2)
        await stop(run)
        return (
            explain(journal, f"{kube_namespace}/loose", "--kind", "secret"),
            explain(journal, f"{kube_namespace}/theirs", "--kind", "secret"),
        )

    loose, theirs = asyncio.run(scenario())
    assert loose["verdict"]["code"] == theirs["verdict"]["code"] == "not_mapped"
    assert "no ownerReferences" in loose["verdict"]["message"]
    assert loose["verdict"]["fix"].startswith(
        "Nothing to fix if configmap did not create this object"
    )
    assert "controlled by apps/Deployment web" in theirs["verdict"]["message"]
    assert theirs["verdict"]["fix"].startswith("Nothing to fix if this object is not configmap's")
    assert "Do not add controller: true" in theirs["verdict"]["fix"]
    for answer in (loose, theirs):
        assert "set controller: true on the ownerReference" not in answer["verdict"]["fix"]


def test_a_deleted_childs_own_events_come_first_and_the_limit_is_a_flag(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,  # noqa: F811
) -> None:
    path = f"/api/v1/namespaces/{kube_namespace}/secrets/child"

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.add_sink(journal)
        mgr.controller().for_("v1", "ConfigMap").owns("v1", "Secret").complete(_noop)
        run = await start(mgr)
        await run.until(lambda: len(run.records.where(Stage.WATCH, "synced")) == 2)
        _secret(control_plane, kube_namespace, "child", _parent(control_plane, kube_namespace))
        for edit in range(6):  # each edit: an event, its dispatch, the owner's reconcile
            control_plane.patch(path, {"metadata": {"labels": {"edit": str(edit)}}})
        control_plane.request("DELETE", path)

        def reconciled_after_the_deletion() -> bool:
            deleted = [r for r in run.records.where(Stage.EVENT) if r.outcome == "DELETED"]
            ends = run.records.where(Stage.RECONCILE)
            return bool(deleted) and any(end.time >= deleted[0].time for end in ends)

        await run.until(reconciled_after_the_deletion)
        await stop(run)
        target = f"{kube_namespace}/child"
        return (
            explain(journal, target, "--kind", "secret", "--limit", "6"),
            explain(journal, target, "--kind", "secret", "--limit", "0"),
        )

    limited, whole = asyncio.run(scenario())

    def own_events(answer: dict[str, Any]) -> list[str]:
        return [
            entry["outcome"]
            for entry in answer["timeline"]
            if entry["stage"] == "event" and f"Secret {kube_namespace}/child" in entry["what"]
        ]

    assert own_events(whole)[0] == "ADDED" and own_events(whole)[-1] == "DELETED"
    assert whole["timeline_omitted"] == 0
    # Six records, half of them kept for the child's own latest events: DELETED among them,
    # and the owner's reconciles after it; the rest are counted, not lost silently.
    assert limited["timeline_omitted"] > 0
    assert len(limited["timeline"]) >= 6
    assert own_events(limited)[-1] == "DELETED" and len(own_events(limited)) == 3
    assert "DELETED" in limited["verdict"]["message"] or "deleted" in limited["verdict"]["message"]
