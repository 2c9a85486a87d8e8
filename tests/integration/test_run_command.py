"""`ctrltrace run` as a user runs it: a process, a real apiserver, signals."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

from ctrltrace.envtest import ControlPlane

SLOW_APP = """
import asyncio
from pathlib import Path
import ctrltrace as ct

mgr = ct.Manager(health_probe_bind_address="0")

async def reconcile(ctx, request):
    Path("started").touch()
    await asyncio.sleep(1.5)
    Path("finished").touch()

mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
"""


def _wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_sigterm_lets_the_in_flight_reconcile_finish(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    command = [
        sys.executable, "-m", "ctrltrace", "run", "slowapp:mgr",
        "--kubeconfig", str(control_plane.kubeconfig), "--namespace", kube_namespace,
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        control_plane.request(
            "POST", f"/api/v1/namespaces/{kube_namespace}/configmaps", {"metadata": {"name": "s"}}
        )
        _wait_for(tmp_path / "started")
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (tmp_path / "finished").exists()


NOOP_APP = """
import ctrltrace as ct

mgr = ct.Manager()

async def reconcile(ctx, request):
    return None

mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
"""


def test_run_serves_controller_runtime_metrics_and_probes(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    import urllib.error
    import urllib.request

    from ctrltrace.envtest.servers import free_port

    (tmp_path / "noopapp.py").write_text(NOOP_APP)
    metrics_port, health_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "ctrltrace", "run", "noopapp:mgr",
        "--kubeconfig", str(control_plane.kubeconfig), "--namespace", kube_namespace,
        "--metrics-bind-address", f"127.0.0.1:{metrics_port}",
        "--health-probe-bind-address", f"127.0.0.1:{health_port}",
    ]  # fmt: skip
    for name in ("a", "b", "c"):
        control_plane.request(
            "POST", f"/api/v1/namespaces/{kube_namespace}/configmaps", {"metadata": {"name": name}}
        )
    process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)

    def get(port: int, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            text: str = answer.read().decode()
            return text

    expected = 'controller_runtime_reconcile_total{controller="configmap",result="success"} 3.0'
    try:
        deadline = time.monotonic() + 20
        text = ""
        while expected not in text:
            assert time.monotonic() < deadline, f"metric never reached 3:\n{text}"
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                text = get(metrics_port, "/metrics")
            time.sleep(0.1)
        assert get(health_port, "/readyz").splitlines() == [
            "[+]cache ConfigMap synced",
            "readyz check passed",
        ]
        assert get(health_port, "/healthz") == "ok"
        assert 'workqueue_depth{controller="configmap",name="configmap"} 0.0' in text
        assert 'controller_runtime_max_concurrent_reconciles{controller="configmap"} 1.0' in text
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
