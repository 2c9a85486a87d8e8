"""What `ctrltrace run --log-format json` says on the console, as a user (or kubectl logs) sees
it: a healthy start and shutdown, a forbidden watch, a kind not served with a cache-sync
timeout, and a lost lease — against the real API server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ctrltrace.cli import ExitCode
from ctrltrace.envtest import ControlPlane
from ctrltrace.envtest.pytest_plugin import MintIdentity

Line = dict[str, Any]


class LoggedRun:
    """``ctrltrace run`` in a process of its own, its stderr read as JSON lines as they come."""

    def __init__(self, tmp_path: Path, app: str, *args: str) -> None:
        (tmp_path / "voiceapp.py").write_text(app)
        command = [
            sys.executable, "-m", "ctrltrace", "run", "voiceapp:mgr", "--log-format", "json",
            "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
            "--debug-bind-address", "0", *args,
        ]  # fmt: skip
        self.lines: list[Line] = []
        self.raw: list[str] = []
        self.process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.raw.append(line.rstrip("\n"))
            if line.startswith("{"):
                self.lines.append(json.loads(line))

    def wait_for(self, event: str, count: int = 1, within: float = 30.0) -> list[Line]:
        deadline = time.monotonic() + within
        while len(found := self.events(event)) < count:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {count} x {event!r} in:\n" + "\n".join(self.raw))
            time.sleep(0.05)
        return found

    def events(self, event: str) -> list[Line]:
        return [line for line in self.lines if line.get("event") == event]

    def finish(self, sig: int | None = None, within: float = 30.0) -> int:
        if sig is not None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(within)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join()
        return code

    def order(self, *events: str) -> list[int]:
        names = [line.get("event") for line in self.lines]
        return [names.index(event) for event in events]


@pytest.fixture
def logged_run(tmp_path: Path) -> Any:
    runs: list[LoggedRun] = []

    def start(app: str, *args: str) -> LoggedRun:
        runs.append(LoggedRun(tmp_path, app, *args))
        return runs[-1]

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.finish(signal.SIGKILL)


RunFactory = Callable[..., LoggedRun]

NOOP_APP = """
import ctrltrace as ct

mgr = ct.Manager()

async def reconcile(ctx, request):
    return None

mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
"""


def test_a_healthy_start_and_a_sigterm_are_told_at_info(
    control_plane: ControlPlane, kube_namespace: str, logged_run: RunFactory
) -> None:
    control_plane.request(
        "POST", f"/api/v1/namespaces/{kube_namespace}/configmaps", {"metadata": {"name": "a"}}
    )
    run = logged_run(
        NOOP_APP, "--kubeconfig", str(control_plane.kubeconfig), "--namespace", kube_namespace
    )
    run.wait_for("Starting workers")
    assert run.finish(signal.SIGTERM) == 0
    source, synced, workers = (
        run.events(e)[0] for e in ("Starting EventSource", "Caches synced", "Starting workers")
    )
    assert source["kind"] == "ConfigMap" and source["namespace"] == kube_namespace
    assert synced["objects"] == 1 and synced["seconds"] >= 0
    assert workers["controller"] == "configmap" and workers["worker_count"] == 1
    assert run.events("Starting Controller")[0]["watches"] == "ConfigMap"
    stopping = run.events("Stopping and waiting for in-flight reconciles")[0]
    assert stopping["reason"] == "received SIGTERM" and stopping["in_flight"] == 0
    positions = run.order(
        "Starting manager",
        "Starting EventSource",
        "Caches synced",
        "Starting workers",
        "Stopping and waiting for in-flight reconciles",
        "All reconciles finished",
        "Manager stopped",
        "Journal flushed",
    )
    assert positions == sorted(positions)
    assert run.order("Starting Controller")[0] < run.order("Starting workers")[0]
    assert {line["level"] for line in run.lines} == {"info"}
    assert all("timestamp" in line for line in run.lines)


def test_a_forbidden_watch_is_one_warning_with_the_rule_to_grant(
    kube_namespace: str, mint_identity: MintIdentity, logged_run: RunFactory
) -> None:
    identity = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        namespace=kube_namespace,
    )
    run = logged_run(
        NOOP_APP, "-v", "--kubeconfig", str(identity.kubeconfig), "--namespace", kube_namespace
    )
    # Each retry (re-list, refused watch) shows at debug; the warning is said once.
    run.wait_for("Watch failing again", count=3)
    assert run.finish(signal.SIGINT) == 0
    (warning,) = [line for line in run.lines if line["level"] == "warning"]
    assert warning["event"] == "Watch failing" and warning["problem"] == "forbidden"
    assert warning["status"] == 403 and warning["kind"] == "ConfigMap"
    assert (
        f"{identity.name} cannot watch configmaps in namespace {kube_namespace}"
        in (warning["error"])
    )
    assert (
        f"kubectl create role ctrltrace-configmaps -n {kube_namespace} --verb=get,list,watch "
        "--resource=configmaps" in warning["fix"]
    )
    # Listing is allowed, so the cache syncs and the workers start (changes come by re-list).
    run.wait_for("Starting workers")


GIZMO_APP = """
import ctrltrace as ct

mgr = ct.Manager()

async def reconcile(ctx, request):
    return None

(
    mgr.controller()
    .for_("v1", "ConfigMap")
    .owns("gizmos.example.com/v1", "Gizmo")
    .with_options(cache_sync_timeout=4)
    .complete(reconcile)
)
"""


def test_a_kind_not_served_stops_the_run_at_the_cache_sync_timeout(
    control_plane: ControlPlane, kube_namespace: str, logged_run: RunFactory
) -> None:
    run = logged_run(
        GIZMO_APP, "--kubeconfig", str(control_plane.kubeconfig), "--namespace", kube_namespace
    )
    assert run.finish(within=60) == ExitCode.CACHE_SYNC_TIMEOUT
    (warning,) = run.events("Watch failing")
    assert warning["problem"] == "kind_not_found" and warning["kind"] == "Gizmo"
    assert "Install the CRD that defines Gizmo" in warning["fix"]
    (waiting,) = run.events("Waiting for caches to sync")
    assert "Gizmo" in waiting["reason"] and "ConfigMap" not in waiting["reason"]
    (failed,) = run.events("Could not wait for Cache to sync")
    assert failed["level"] == "error" and failed["controller"] == "configmap"
    assert (
        "caches not synced after 4s: Gizmo.gizmos.example.com (kind_not_found" in (failed["error"])
    )
    assert run.raw[-1].startswith(
        "ctrltrace: error: controller configmap: caches not synced after 4s: "
        "Gizmo.gizmos.example.com (kind_not_found:"
    )


LEASE_APP = """
import ctrltrace as ct

mgr = ct.Manager(
    leader_election=True,
    leader_election_id="voice-lease",
    leader_election_namespace="{namespace}",
    lease_timing=ct.LeaseTiming(lease_duration=4, renew_deadline=3, retry_period=1),
)

async def reconcile(ctx, request):
    return None

mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
"""


def test_a_lost_lease_is_an_error_line_and_exit_code_9(
    control_plane: ControlPlane, kube_namespace: str, logged_run: RunFactory
) -> None:
    run = logged_run(
        LEASE_APP.format(namespace=kube_namespace),
        "--kubeconfig", str(control_plane.kubeconfig), "--namespace", kube_namespace,
    )  # fmt: skip
    acquired = run.wait_for("Successfully acquired lease")[0]
    assert acquired["lease"] == f"{kube_namespace}/voice-lease"
    # Another replica takes the lease over: renewals now see it held and fail.
    path = f"/apis/coordination.k8s.io/v1/namespaces/{kube_namespace}/leases/voice-lease"
    lease = control_plane.request("GET", path)
    renewed = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    lease["spec"] |= {
        "holderIdentity": "intruder",
        "leaseDurationSeconds": 60,
        "renewTime": renewed,
    }
    control_plane.request("PUT", path, lease)
    assert run.finish(within=30) == ExitCode.LEADERSHIP_LOST
    assert (
        run.order("Attempting to acquire leader lease")[0]
        < run.order("Successfully acquired lease")[0]
    )
    (lost,) = run.events("Leader election lost")
    assert lost["level"] == "error" and lost["lease"] == f"{kube_namespace}/voice-lease"
    assert "within 3s" in lost["reason"] and "restarts" in lost["fix"]
    assert run.events("Leader lease held by another replica")[0]["holder"] == "intruder"
    assert run.raw[-1] == f"ctrltrace: error: lost the lease {kube_namespace}/voice-lease"
