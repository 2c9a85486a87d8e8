"""The local control plane is a real kube-apiserver with RBAC, and cleans up after itself."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from ctrltrace.envtest import ControlPlane, ControlPlaneError, controlplane, find_binaries
from ctrltrace.envtest.pytest_plugin import MintIdentity


def _api(kubeconfig: Path) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(") ", 1)[1].startswith("Z")


def _wait_until(condition: object, timeout: float = 15.0) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


def test_version_is_the_pinned_release(control_plane: ControlPlane) -> None:
    version = control_plane.request("GET", "/version")
    assert version["gitVersion"] == "v1.36.3"
    assert (version["major"], version["minor"]) == ("1", "36")


def test_configmap_create_list_watch_carry_resource_versions(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    api = _api(control_plane.kubeconfig)
    listed = api.list_namespaced_config_map(kube_namespace)
    start_rv = listed.metadata.resource_version
    assert start_rv

    created = api.create_namespaced_config_map(
        kube_namespace, {"metadata": {"name": "demo"}, "data": {"k": "v"}}
    )
    updated = api.patch_namespaced_config_map("demo", kube_namespace, {"data": {"k": "w"}})
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)

    names = [cm.metadata.name for cm in api.list_namespaced_config_map(kube_namespace).items]
    assert names == ["demo"]

    seen: list[tuple[str, str]] = []
    stream = watch.Watch()
    for event in stream.stream(
        api.list_namespaced_config_map,
        kube_namespace,
        resource_version=start_rv,
        timeout_seconds=5,
    ):
        seen.append((event["type"], event["object"].metadata.resource_version))
        if len(seen) == 2:
            stream.stop()
    assert seen == [
        ("ADDED", created.metadata.resource_version),
        ("MODIFIED", updated.metadata.resource_version),
    ]


def test_restricted_identity_gets_a_real_403_on_list(
    control_plane: ControlPlane, kube_namespace: str, mint_identity: MintIdentity
) -> None:
    admin = _api(control_plane.kubeconfig)
    admin.create_namespaced_config_map(kube_namespace, {"metadata": {"name": "readable"}})
    identity = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        namespace=kube_namespace,
    )
    restricted = _api(identity.kubeconfig)

    assert restricted.read_namespaced_config_map("readable", kube_namespace).metadata.name
    with pytest.raises(ApiException) as denied:
        restricted.list_namespaced_config_map(kube_namespace)
    assert denied.value.status == 403
    body = json.loads(denied.value.body)
    assert body["reason"] == "Forbidden"
    assert identity.name in body["message"]


def test_service_account_identity_is_bound_to_its_rules(
    control_plane: ControlPlane, kube_namespace: str, mint_identity: MintIdentity
) -> None:
    identity = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        namespace=kube_namespace,
        service_account=True,
    )
    restricted = _api(identity.kubeconfig)
    assert restricted.list_namespaced_config_map(kube_namespace).items == []
    with pytest.raises(ApiException) as denied:
        restricted.list_namespaced_secret(kube_namespace)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{kube_namespace}:{identity.name}" in denied.value.body


def test_a_minted_identity_is_allowed_its_rules_at_once_and_a_refusal_is_named(
    control_plane: ControlPlane,
    kube_namespace: str,
    mint_identity: MintIdentity,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scale = {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["update"]}
    lease = {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}
    user = mint_identity([scale, {**lease, "resourceNames": ["one"]}], namespace=kube_namespace)
    reader = mint_identity([{"nonResourceURLs": ["/debug/*"], "verbs": ["get"]}])
    # The authorizer applies the grants when mint_identity returns: no request is refused.
    in_namespace = {"namespace": kube_namespace}
    scale_request = {"group": "apps", "resource": "deployments", "subresource": "scale"}
    assert control_plane.allowed(
        user.name, resourceAttributes={**scale_request, "verb": "update", **in_namespace}
    )
    lease_request = {"group": "coordination.k8s.io", "resource": "leases", "verb": "get"}
    assert control_plane.allowed(
        user.name, resourceAttributes={**lease_request, "name": "one", **in_namespace}
    )
    assert not control_plane.allowed(
        user.name, resourceAttributes={**lease_request, "name": "two", **in_namespace}
    )
    assert control_plane.allowed(
        reader.name, nonResourceAttributes={"path": "/debug/state", "verb": "get"}
    )

    monkeypatch.setattr(controlplane, "GRANT_WAIT_S", 0.3)
    with pytest.raises(
        ControlPlaneError,
        match=rf"^{reader.name} is still refused .*\"/metrics\".* after 0.3 s: "
        "no RBAC object grants it, or the API server's authorizer has not seen the one that does$",
    ):
        control_plane.wait_until_allowed(
            reader.name, nonResourceAttributes={"path": "/metrics", "verb": "get"}
        )


def test_start_failure_shows_the_log_and_leaves_nothing(tmp_path: Path) -> None:
    real = find_binaries()
    broken = tmp_path / "kube-apiserver"
    broken.write_text("#!/bin/sh\necho 'fatal: pretend start-up failure' >&2\nexit 7\n")
    broken.chmod(0o755)
    plane = ControlPlane(type(real)(broken, real.etcd, "test"))
    with pytest.raises(ControlPlaneError, match="exited with code 7") as failed:
        plane.start()
    assert "pretend start-up failure" in str(failed.value)
    assert plane.workdir is None
    assert plane.pids == []


def test_exception_inside_the_context_manager_cleans_up() -> None:
    with pytest.raises(RuntimeError, match="boom"), ControlPlane() as plane:
        pids, workdir = plane.pids, plane.workdir
        assert workdir is not None and workdir.is_dir()
        raise RuntimeError("boom")
    assert len(pids) >= 2 and all(_gone(pid) for pid in pids)  # etcd, kube-apiserver, …
    assert workdir is not None and not workdir.exists()


_OWNER = textwrap.dedent(
    """
    import json, sys, time
    from ctrltrace.envtest import ControlPlane
    plane = ControlPlane()
    plane.start()
    print(json.dumps({"pids": plane.pids, "dir": str(plane.workdir), "server": plane.server}))
    sys.stdout.flush()
    time.sleep(600)
    """
)


def test_sigkill_of_the_owner_leaves_no_processes_ports_or_dirs() -> None:
    owner = subprocess.Popen([sys.executable, "-c", _OWNER], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        started = json.loads(owner.stdout.readline())
    finally:
        owner.kill()
        owner.wait()
    port = int(started["server"].rsplit(":", 1)[1])
    assert len(started["pids"]) >= 2  # etcd, kube-apiserver, …
    assert _wait_until(lambda: all(_gone(pid) for pid in started["pids"]))
    assert _wait_until(lambda: not Path(started["dir"]).exists())
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))  # nobody listens on the apiserver's port any more


def test_envtest_command_prints_readiness_and_stops_on_sigint(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc.yaml"
    command = subprocess.Popen(
        [sys.executable, "-m", "ctrltrace", "envtest", "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert command.stdout is not None
        ready = command.stdout.readline()
        assert ready.startswith("ready in "), ready + (
            command.stderr.read() if command.stderr else ""
        )
        seconds = float(ready.split()[2].rstrip("s:"))
        assert seconds > 0
        assert "v1.36.3" in ready
        assert _api(kubeconfig).list_namespace().items
        children = [
            int(pid)
            for pid in Path(f"/proc/{command.pid}/task/{command.pid}/children").read_text().split()
        ]
        workdirs = {
            Path(arg.split("=", 1)[1]).parent
            for pid in children
            for arg in Path(f"/proc/{pid}/cmdline").read_text().split("\0")
            if arg.startswith("--data-dir=")
        }
        command.send_signal(signal.SIGINT)
        assert command.wait(30) == 0
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
    assert children and all(_gone(pid) for pid in children)
    assert len(workdirs) == 1
    assert not workdirs.pop().exists()
