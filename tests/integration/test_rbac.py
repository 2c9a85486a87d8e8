"""`ctrltrace rbac` end to end: apply what it prints, run the sample controller under it.

The sample is ``examples/widgets.py`` with its writes declared (RBAC_WRITES appended), run in
this process as a fresh service account that has nothing but the generated roles.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from ctrltrace import Stage
from ctrltrace.cli import ExitCode
from ctrltrace.doctor import doctor_command
from ctrltrace.envtest import ControlPlane, Identity
from ctrltrace.envtest.pytest_plugin import MintIdentity, unique_name
from ctrltrace.loader import load_manager
from ctrltrace.rbac import Rule, rbac_command

from .conftest import start, stop, widget

WIDGETS = Path(__file__).parents[2] / "examples" / "widgets.py"
WRITES = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch"]}]
CONFIGMAPS_WATCH = Rule(("",), ("configmaps",), ("get", "list", "watch"))
RBAC = "/apis/rbac.authorization.k8s.io/v1"


@pytest.fixture
def widgets_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The sample controller, declaring the writes its reconcile makes."""
    path = tmp_path / "widgets_sample.py"
    path.write_text(f"{WIDGETS.read_text()}\nRBAC_WRITES = {WRITES!r}\n")
    monkeypatch.delitem(sys.modules, "widgets_sample", raising=False)
    return f"{path}:mgr"


def _rbac(app: str, plane: ControlPlane, *options: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(
        rbac_command, [app, "--kubeconfig", str(plane.kubeconfig), *options]
    )
    assert result.exit_code == ExitCode.OK, result.output  # served kinds, declared writes
    return list(yaml.safe_load_all(result.stdout))


def _apply(plane: ControlPlane, documents: list[dict[str, Any]]) -> None:
    """What `kubectl apply -f` would do with fresh objects: POST each as the admin."""
    for document in documents:
        namespace = document["metadata"].get("namespace")
        scope = f"{RBAC}/namespaces/{namespace}" if namespace else RBAC
        plane.request("POST", f"{scope}/{document['kind'].lower()}s", document)


def _doctor(app: str, identity: Identity, *options: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        doctor_command, [app, "--kubeconfig", str(identity.kubeconfig), "--json", *options]
    )
    return result.exit_code, json.loads(result.stdout)


def _failed(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [check for check in report["checks"] if check["status"] == "fail"]


def _doctor_until(app: str, identity: Identity, code: int, *options: str) -> dict[str, Any]:
    """Doctor's report once it exits with ``code``: the authorizer sees RBAC edits a moment late."""
    deadline = time.monotonic() + 10
    while True:
        found, report = _doctor(app, identity, *options)
        if found == code or time.monotonic() > deadline:
            assert found == code, _failed(report)
            return report
        time.sleep(0.2)


async def _run_as(identity: Identity, app: str, namespace: str, until: Any) -> Any:
    """Run the app's manager as ``identity`` in ``namespace`` until ``until(records)`` holds."""
    manager = load_manager(app)
    options = manager.options
    options.namespaces = (namespace,)
    options.kubeconfig = str(identity.kubeconfig)
    options.leader_election = True
    options.leader_election_namespace = namespace
    options.leader_election_release_on_cancel = True  # the next run takes the Lease at once
    options.health_probe_bind_address = "127.0.0.1:0"
    running = await start(manager)
    try:
        await running.until(lambda: until(running.records))
    finally:
        await stop(running)
    return running.records


def test_the_generated_role_runs_the_sample_and_doctor_names_a_removed_rule(
    control_plane: ControlPlane,
    kube_namespace: str,
    widget_crd: str,
    mint_identity: MintIdentity,
    widgets_app: str,
) -> None:
    namespace = kube_namespace
    account = mint_identity([], namespace=namespace, service_account=True)  # no rules of its own
    options = ("--namespace", namespace, "--leader-elect", "--leader-election-namespace", namespace)
    name = unique_name("widgets-rbac")  # ClusterRoles are cluster-wide: never reuse a name
    documents = _rbac(
        widgets_app, control_plane, *options, "--name", name,
        "--service-account", f"{namespace}/{account.name}",
    )  # fmt: skip
    assert [(d["kind"], d["metadata"].get("namespace")) for d in documents] == [
        ("ClusterRole", None),  # the debug endpoint's token and access reviews
        ("ClusterRoleBinding", None),
        ("Role", namespace),
        ("RoleBinding", namespace),
        ("ClusterRole", None),  # the debug endpoint's readers, unbound
    ]
    _apply(control_plane, documents)
    for role in documents[0], documents[2]:  # the two bound to the account
        control_plane.wait_until_granted(
            account.subject, role["rules"], namespace=role["metadata"].get("namespace")
        )

    widgets = f"/apis/example.com/v1/namespaces/{namespace}/widgets"

    def reconciled(records: Any) -> bool:
        if records.where(Stage.LEASE, "acquired") and not records.where(Stage.EVENT):
            control_plane.request("POST", widgets, widget(namespace, "w1", replicas=3))
        # The sample asks to be requeued after each reconcile that succeeds.
        return bool(records.where(Stage.RECONCILE, "requeue_after"))

    records = asyncio.run(_run_as(account, widgets_app, namespace, reconciled))
    assert not records.where(Stage.WATCH, "forbidden")
    assert not records.where(Stage.RECONCILE, "error")
    assert [r.object.name for r in records.where(Stage.WRITE, "create") if r.object] == [
        "w1-config"
    ]
    configmap = control_plane.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/w1-config")
    assert configmap["data"] == {"replicas": "3"}
    # Doctor agrees: nothing fails (the sample's GenerationChanged on for_ is a warning).
    report = _doctor_until(widgets_app, account, ExitCode.WARNINGS, *options)
    assert [c["section"] for c in report["checks"] if c["status"] == "warn"] == ["Known traps"]

    role_path = f"{RBAC}/namespaces/{namespace}/roles/{name}"
    role = control_plane.request("GET", role_path)
    removed = CONFIGMAPS_WATCH.as_policy()
    assert removed in role["rules"]
    role["rules"].remove(removed)
    control_plane.request("PUT", role_path, role)

    report = _doctor_until(widgets_app, account, ExitCode.FAILED, *options)
    [failed] = _failed(report)
    assert failed["title"] == f"may not get, list, watch configmaps in namespace {namespace}"
    assert failed["fix"].startswith(
        f"grant system:serviceaccount:{namespace}:{account.name} this rule in a Role in "
        f'{namespace}: apiGroups [""], resources [configmaps], verbs [get, list, watch] '
    )
    assert str(CONFIGMAPS_WATCH) in failed["fix"]

    def forbidden(records: Any) -> bool:
        return any(
            r.attrs.get("resource") == "configmaps" for r in records.where(Stage.WATCH, "forbidden")
        )

    records = asyncio.run(_run_as(account, widgets_app, namespace, forbidden))
    [first, *_] = [
        r for r in records.where(Stage.WATCH, "forbidden") if r.attrs["resource"] == "configmaps"
    ]
    assert first.attrs["status"] == 403 and first.attrs["kind"] == "ConfigMap"
    assert '"configmaps"' in first.reason and account.name in first.reason
    # The Widget informer is still allowed: only the removed rule fails.
    assert all(r.attrs["resource"] == "configmaps" for r in records.where(Stage.WATCH, "forbidden"))


def test_a_cluster_wide_manager_gets_a_cluster_role_that_doctor_finds_sufficient(
    control_plane: ControlPlane,
    kube_namespace: str,
    widget_crd: str,
    mint_identity: MintIdentity,
    widgets_app: str,
) -> None:
    account = mint_identity([], namespace=kube_namespace, service_account=True)
    name = unique_name("widgets-rbac")  # ClusterRoles are cluster-wide: never reuse a name
    options = ("--leader-elect", "--leader-election-namespace", kube_namespace)
    documents = _rbac(
        widgets_app, control_plane, *options, "--name", name,
        "--service-account", f"{kube_namespace}/{account.name}",
    )  # fmt: skip
    assert [(d["kind"], d["metadata"].get("namespace")) for d in documents] == [
        ("ClusterRole", None),
        ("ClusterRoleBinding", None),
        ("Role", kube_namespace),  # the Lease only: no cluster-wide Lease access
        ("RoleBinding", kube_namespace),
        ("ClusterRole", None),
    ]
    assert documents[2]["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    code, report = _doctor(widgets_app, account, *options)
    assert code == ExitCode.FAILED  # nothing granted yet
    _apply(control_plane, documents)
    report = _doctor_until(widgets_app, account, ExitCode.WARNINGS, *options)
    titles = [c["title"] for c in report["checks"] if c["status"] == "ok"]
    assert "may get, list, watch configmaps in all namespaces" in titles
    assert "may create, patch configmaps in all namespaces" in titles
