"""`ctrltrace doctor` against a real apiserver: each check failing, then passing.

Identities are minted with exactly the rules a case needs, so a denial is the apiserver's own
SelfSubjectAccessReview answer, not a fake.
"""

from __future__ import annotations

import datetime
import json
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ctrltrace.cli import ExitCode
from ctrltrace.doctor import doctor_command
from ctrltrace.envtest import ControlPlane
from ctrltrace.envtest.pytest_plugin import MintIdentity

READ = ["get", "list", "watch"]
LEASES = {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"]}
EVENTS = {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}


def _app(tmp_path: Path, body: str, writes: str = "RBAC_WRITES = []") -> str:
    """An app module whose ``mgr`` is built by ``body``; by default it declares no writes."""
    source = (
        "import ctrltrace as ct\nfrom ctrltrace import predicates\n\n"
        "async def reconcile(ctx, request):\n    return None\n\n"
        f"{textwrap.dedent(body)}\n{writes}\n"
    )
    path = tmp_path / "doctorapp.py"
    path.write_text(source)
    return f"{path}:mgr"


CONFIGMAPS_APP = """
mgr = ct.Manager(name="cm")
mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
"""


def _doctor(app: str, kubeconfig: Path, *options: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        doctor_command, [app, "--kubeconfig", str(kubeconfig), "--json", *options]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def _check(report: dict[str, Any], title: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in report["checks"] if c["title"] == title]
    assert found, f"no check {title!r} in:\n" + "\n".join(c["title"] for c in report["checks"])
    return found[0]


def _failed(report: dict[str, Any]) -> list[str]:
    return [check["title"] for check in report["checks"] if check["status"] == "fail"]


def test_a_clean_app_passes_every_check_and_exits_0(
    control_plane: ControlPlane, kube_namespace: str, mint_identity: MintIdentity, tmp_path: Path
) -> None:
    identity = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": READ}, EVENTS],
        namespace=kube_namespace,
    )
    app = _app(tmp_path, CONFIGMAPS_APP)
    result = CliRunner().invoke(
        doctor_command,
        [app, "--kubeconfig", str(identity.kubeconfig), "--namespace", kube_namespace],
    )
    assert result.exit_code == ExitCode.OK, result.output
    assert result.stdout.splitlines()[-1] == "0 failed, 0 warnings, 6 ok"
    assert "as system:serviceaccount:" not in result.stdout  # a user, not a service account
    assert f"as {identity.name}" in result.stdout
    assert f"  ✓ may get, list, watch configmaps in namespace {kube_namespace}" in result.stdout


def test_a_missing_crd_is_named_and_an_installed_one_passes(
    control_plane: ControlPlane, kube_namespace: str, widget_crd: str, tmp_path: Path
) -> None:
    app = _app(
        tmp_path,
        """
        mgr = ct.Manager(name="mixed")
        mgr.controller().for_("example.com/v1", "Widget").complete(reconcile)
        mgr.controller().for_("gadgets.test/v1", "Gadget").complete(reconcile)
        mgr.controller().for_("example.com/v2", "Widget").named("v2").complete(reconcile)
        mgr.controller().for_("apps/v1", "Deploymnet").complete(reconcile)
        """,
    )
    code, report = _doctor(app, control_plane.kubeconfig, "--namespace", kube_namespace)
    assert code == ExitCode.FAILED
    assert _check(report, "Widget.example.com is served as widgets (namespaced)")["status"] == "ok"
    gadget = _check(report, "Gadget.gadgets.test (gadgets.test/v1) is not served")
    assert gadget["detail"] == "the cluster serves no API group gadgets.test"
    assert gadget["fix"].startswith(
        "install the CustomResourceDefinition (likely gadgets.gadgets.test)"
    )
    v2 = _check(report, "Widget.example.com (example.com/v2) is not served")
    assert v2["detail"] == "example.com is served in v1 only"
    assert v2["fix"].startswith("use one of the served versions, or serve v2 in the CRD")
    typo = _check(report, "Deploymnet.apps (apps/v1) is not served")
    assert typo["fix"].startswith("check apiVersion 'apps/v1' and kind 'Deploymnet'")
    assert len([t for t in _failed(report) if t.endswith("is not served")]) == 3


def test_watch_access_names_the_verbs_denied_and_passes_once_granted(
    kube_namespace: str, mint_identity: MintIdentity, tmp_path: Path
) -> None:
    app = _app(tmp_path, CONFIGMAPS_APP)
    getter = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        namespace=kube_namespace,
    )
    code, report = _doctor(app, getter.kubeconfig, "--namespace", kube_namespace)
    assert code == ExitCode.FAILED
    assert _failed(report) == [f"may not list, watch configmaps in namespace {kube_namespace}"]
    denied = _check(report, _failed(report)[0])
    assert denied["section"] == "Access: watched kinds"
    assert (
        denied["detail"] == "needed for ConfigMap: for_() in controller configmap; get is allowed"
    )
    assert denied["fix"] == (
        f'grant {getter.name} this rule in a Role in {kube_namespace}: apiGroups [""], '
        "resources [configmaps], verbs [get, list, watch] "
        "(`ctrltrace rbac` prints every rule the manager needs)"
    )
    # The same identity, but for a manager that caches every namespace: a Role is not enough.
    code, report = _doctor(app, getter.kubeconfig)
    assert _failed(report) == ["may not get, list, watch configmaps in all namespaces"]
    assert "in a ClusterRole" in _check(report, _failed(report)[0])["fix"]

    reader = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": READ}, EVENTS],
        namespace=kube_namespace,
    )
    code, report = _doctor(app, reader.kubeconfig, "--namespace", kube_namespace)
    assert code == ExitCode.OK
    title = f"may get, list, watch configmaps in namespace {kube_namespace}"
    assert _check(report, title)["status"] == "ok"


WRITES = 'RBAC_WRITES = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]'


def test_declared_writes_are_checked_and_undeclared_ones_are_a_warning(
    kube_namespace: str, mint_identity: MintIdentity, tmp_path: Path
) -> None:
    reader = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": READ}], namespace=kube_namespace
    )
    declared = _app(tmp_path, CONFIGMAPS_APP, WRITES)
    code, report = _doctor(declared, reader.kubeconfig, "--namespace", kube_namespace)
    assert code == ExitCode.FAILED
    assert _failed(report) == [f"may not create configmaps in namespace {kube_namespace}"]
    denied = _check(report, _failed(report)[0])
    assert denied["section"] == "Access: declared writes"
    assert denied["detail"] == "needed for declared in RBAC_WRITES"

    writer = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": [*READ, "create"]}, EVENTS],
        namespace=kube_namespace,
    )
    code, report = _doctor(declared, writer.kubeconfig, "--namespace", kube_namespace)
    assert code == ExitCode.OK
    assert _check(report, f"may create configmaps in namespace {kube_namespace}")["status"] == "ok"

    undeclared = _app(tmp_path, CONFIGMAPS_APP, writes="")
    code, report = _doctor(undeclared, writer.kubeconfig, "--namespace", kube_namespace)
    assert code == ExitCode.WARNINGS
    warning = _check(report, "the app declares no writes, so its writes were not checked")
    assert warning["status"] == "warn"


LEADER_APP = """
mgr = ct.Manager(name="leader", leader_election=True, leader_election_id="leader.example.com")
mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
"""


def test_events_are_checked_once_and_a_denial_is_a_warning(
    kube_namespace: str, mint_identity: MintIdentity, tmp_path: Path
) -> None:
    events_write = (
        'RBAC_WRITES = [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]'
    )
    app = _app(tmp_path, CONFIGMAPS_APP, events_write)
    reader = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": READ}],
        namespace=kube_namespace,
    )
    code, report = _doctor(app, reader.kubeconfig, "--namespace", kube_namespace)
    assert code == ExitCode.WARNINGS
    about_events = [c for c in report["checks"] if "events" in c["title"]]
    assert [(c["status"], c["section"], c["title"]) for c in about_events] == [
        ("warn", "Access: Events", f"may not create, patch events in namespace {kube_namespace}")
    ]
    assert "reconciles still run" in about_events[0]["detail"]

    sender = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": READ}, EVENTS],
        namespace=kube_namespace,
    )
    code, report = _doctor(app, sender.kubeconfig, "--namespace", kube_namespace)
    assert code == ExitCode.OK, _failed(report)
    assert [c["title"] for c in report["checks"] if "events" in c["title"]] == [
        f"may create, patch events in namespace {kube_namespace}"
    ]


def test_lease_access_is_checked_in_the_lease_namespace(
    kube_namespace: str, mint_identity: MintIdentity, tmp_path: Path
) -> None:
    app = _app(tmp_path, LEADER_APP)
    options = ("--namespace", kube_namespace, "--leader-election-namespace", kube_namespace)
    configmaps = {"apiGroups": [""], "resources": ["configmaps"], "verbs": READ}
    without = mint_identity([configmaps, {**LEASES, "verbs": ["get"]}], namespace=kube_namespace)
    code, report = _doctor(app, without.kubeconfig, *options)
    assert code == ExitCode.FAILED
    title = f"may not create, update leases.coordination.k8s.io in namespace {kube_namespace}"
    assert _failed(report) == [title]
    assert _check(report, title)["section"] == "Access: leader election Lease"

    # A rule limited to the Lease's name is enough for get and update; create needs no name.
    named = {**LEASES, "resourceNames": ["leader.example.com"], "verbs": ["get", "update"]}
    holder = mint_identity(
        [configmaps, EVENTS, named, {**LEASES, "verbs": ["create"]}], namespace=kube_namespace
    )
    code, report = _doctor(app, holder.kubeconfig, *options)
    assert code == ExitCode.OK, _failed(report)
    title = f"may get, create, update leases.coordination.k8s.io in namespace {kube_namespace}"
    assert _check(report, title)["status"] == "ok"


def _micro_time(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_lease_held_by_another_replica_is_a_warning_and_an_expired_one_is_not(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    app = _app(tmp_path, LEADER_APP)
    options = ("--namespace", kube_namespace, "--leader-election-namespace", kube_namespace)
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{kube_namespace}/leases"
    code, report = _doctor(app, control_plane.kubeconfig, *options)
    free = f"the Lease {kube_namespace}/leader.example.com is free (not created yet)"
    assert code == ExitCode.OK and _check(report, free)["status"] == "ok"

    now = datetime.datetime.now(datetime.UTC)
    lease = control_plane.request(
        "POST",
        lease_path,
        {
            "metadata": {"name": "leader.example.com"},
            "spec": {
                "holderIdentity": "other-replica",
                "leaseDurationSeconds": 60,
                "renewTime": _micro_time(now),
            },
        },
    )
    code, report = _doctor(app, control_plane.kubeconfig, *options)
    assert code == ExitCode.WARNINGS
    held = _check(report, f"the Lease {kube_namespace}/leader.example.com is held by other-replica")
    assert held["status"] == "warn" and held["section"] == "Leader election"

    lease["spec"]["renewTime"] = _micro_time(now - datetime.timedelta(hours=1))
    control_plane.request("PUT", f"{lease_path}/leader.example.com", lease)
    code, report = _doctor(app, control_plane.kubeconfig, *options)
    assert code == ExitCode.OK
    title = f"the Lease {kube_namespace}/leader.example.com can be taken (expired or free)"
    assert _check(report, title)["status"] == "ok"


def test_leader_election_id_and_namespace_fail_until_valid_and_set(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    app = _app(tmp_path, LEADER_APP)
    code, report = _doctor(
        app, control_plane.kubeconfig, "--namespace", kube_namespace,
        "--leader-election-id", "Leader_ID",
    )  # fmt: skip
    assert code == ExitCode.FAILED
    assert _failed(report) == [
        "the leader election id 'Leader_ID' is not a valid DNS subdomain (lower-case letters, "
        "digits, '-' and '.', starting and ending with a letter or digit)",
        "the leader election namespace is not set",
    ]
    code, report = _doctor(
        app, control_plane.kubeconfig, "--namespace", kube_namespace,
        "--leader-election-namespace", kube_namespace,
    )  # fmt: skip
    assert code == ExitCode.OK
    assert _check(report, f"the Lease's namespace is set: {kube_namespace}")["status"] == "ok"


def test_builder_problems_fail_with_the_words_of_start_up(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    app = _app(
        tmp_path,
        """
        mgr = ct.Manager(name="broken")
        mgr.controller().named("orphan").owns("v1", "ConfigMap").complete(reconcile)
        mgr.controller().for_("v1", "Secret").complete(reconcile)
        mgr.controller().for_("v1", "Secret").complete(reconcile)
        """,
    )
    code, report = _doctor(app, control_plane.kubeconfig)
    assert code == ExitCode.FAILED
    assert _failed(report) == [
        "orphan: owns() needs for_(): owned objects map to the for_ kind",
        "controller name 'secret' is used more than once; names must be unique",
    ]
    assert {check["section"] for check in report["checks"] if check["status"] == "fail"} == {
        "Start-up validation"
    }

    fixed = _app(tmp_path, CONFIGMAPS_APP)
    code, report = _doctor(fixed, control_plane.kubeconfig)
    assert _check(report, "1 controller passes start-up validation")["status"] == "ok"


def test_known_traps_are_warnings_and_a_clean_build_has_none(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    app = _app(
        tmp_path,
        """
        mgr = ct.Manager(
            name="traps", leader_election=True, leader_election_id="traps.example.com"
        )
        (
            mgr.controller()
            .for_("apps/v1", "Deployment", predicates.GenerationChanged())
            .owns("v1", "Pod")
            .complete(reconcile)
        )
        """,
    )
    options = ("--namespace", kube_namespace, "--leader-election-namespace", "ops")
    code, report = _doctor(app, control_plane.kubeconfig, *options)
    assert code == ExitCode.WARNINGS
    warnings = [c["title"] for c in report["checks"] if c["section"] == "Known traps"]
    assert warnings == [
        "GenerationChanged on for_(Deployment.apps) in controller deployment drops "
        "status-only updates and the update that sets deletionTimestamp",
        "controller deployment owns Pod, but Pods are usually controlled by the built-in "
        "ReplicaSet.apps, StatefulSet.apps, DaemonSet.apps or Job.batch, not by Deployment.apps",
        f"the Lease's namespace ops is not one the manager caches ({kube_namespace})",
    ]

    accepted = [f"--accept-trap={code}" for code in {c["code"] for c in report["checks"]} - {""}]
    code, report = _doctor(app, control_plane.kubeconfig, *options, *accepted)
    assert code == ExitCode.OK
    traps = [c for c in report["checks"] if c["section"] == "Known traps"]
    assert [c["status"] for c in traps] == ["ok"] * 3
    assert all(c["title"].startswith("accepted (") for c in traps)

    code, report = _doctor(_app(tmp_path, CONFIGMAPS_APP), control_plane.kubeconfig)
    assert code == ExitCode.OK
    assert _check(report, "none of the known traps applies")["status"] == "ok"


def test_envtest_checks_against_a_control_plane_of_its_own(tmp_path: Path) -> None:
    result = CliRunner().invoke(doctor_command, [_app(tmp_path, CONFIGMAPS_APP), "--envtest"])
    assert result.exit_code == ExitCode.OK, result.output
    assert "local control plane ready" in result.stderr
    assert "as ctrltrace-admin" in result.stdout


def test_what_stops_doctor_before_any_check_is_one_line_with_its_exit_code(
    tmp_path: Path,
) -> None:
    app = _app(tmp_path, CONFIGMAPS_APP)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    cases = [
        ([app, "--kubeconfig", str(kubeconfig)], ExitCode.UNREACHABLE, "cannot reach"),
        ([app, "--kubeconfig", str(tmp_path / "none")], ExitCode.KUBECONFIG, "does not exist"),
        (["no-colon"], ExitCode.USAGE, "expected MODULE:ATTR"),
        ([f"{tmp_path / 'doctorapp.py'}:nothing"], ExitCode.APP, "has no attribute"),
    ]
    for arguments, code, words in cases:
        result = CliRunner().invoke(doctor_command, arguments)
        assert result.exit_code == code, (arguments, result.output)
        assert result.stdout == ""
        [line] = result.stderr.splitlines()
        assert line.startswith("ctrltrace: error: ") and words in line


@pytest.fixture(autouse=True)
def _fresh_app_module(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each test writes its own doctorapp.py; never reuse a module another test imported.
    monkeypatch.delitem(sys.modules, "doctorapp", raising=False)
