"""`ctrltrace run` as a user runs it: a process, a real apiserver, signals."""

from __future__ import annotations

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
