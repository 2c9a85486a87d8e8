"""examples/samplecontroller.py against the real apiserver: the owned Deployment, its scale,
the Foo's status and Events.

The control plane has no controller-manager, so no Pod ever runs: the test writes the
Deployment's status itself, as the Deployment controller would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ctrltrace.envtest import ApiError, ControlPlane
from examples import samplecontroller

from .conftest import Running, install_crd, start, stop

CRD = json.loads((Path(samplecontroller.__file__).parent / "foo-crd.json").read_text())
MERGE = "application/merge-patch+json"
# What the Deployment controller reports once 3 Pods are up.
READY_3 = {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}


def _foo(namespace: str, name: str, deployment: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": samplecontroller.API_VERSION,
        "kind": "Foo",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"deploymentName": deployment, "replicas": replicas},
    }


def _get(plane: ControlPlane, path: str) -> dict[str, Any]:
    """The object at ``path``, or {} while there is none."""
    try:
        found: dict[str, Any] = plane.request("GET", path)
    except ApiError as error:
        if error.status != 404:
            raise
        return {}
    return found


def _events(plane: ControlPlane, namespace: str, foo: str) -> dict[str, dict[str, Any]]:
    """The Events about Foo ``foo``, by reason."""
    listing = plane.request("GET", f"/api/v1/namespaces/{namespace}/events")
    return {
        event["reason"]: event
        for event in listing["items"]
        if event["involvedObject"].get("kind") == "Foo"
        and event["involvedObject"].get("name") == foo
    }


async def _until(run: Running, value: Callable[[], Any]) -> Any:
    """Wait until ``value()`` is truthy; return it."""
    seen: list[Any] = [None]

    def holds() -> bool:
        seen[0] = value()
        return bool(seen[0])

    await run.until(holds, within=30)
    return seen[0]


def test_a_foo_gets_its_deployment_scaled_its_status_and_events(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    install_crd(control_plane, CRD)
    foos = f"/apis/{samplecontroller.API_VERSION}/namespaces/{kube_namespace}/foos"
    deployments = f"/apis/apps/v1/namespaces/{kube_namespace}/deployments"

    async def scenario() -> None:
        run = await start(
            samplecontroller.make_manager(
                kubeconfig=str(control_plane.kubeconfig),
                namespaces=[kube_namespace],
                health_probe_bind_address="127.0.0.1:0",
            )
        )
        foo = control_plane.request("POST", foos, _foo(kube_namespace, "example", "web", 2))

        # The Foo's Deployment, controlled by it.
        web = await _until(run, lambda: _get(control_plane, f"{deployments}/web"))
        (reference,) = web["metadata"]["ownerReferences"]
        assert (reference["kind"], reference["uid"]) == ("Foo", foo["metadata"]["uid"])
        assert reference["controller"] is True
        assert web["spec"]["replicas"] == 2
        assert web["spec"]["selector"]["matchLabels"] == {"app": "nginx", "controller": "example"}
        synced = await _until(run, lambda: _events(control_plane, kube_namespace, "example"))
        assert synced["Synced"]["message"] == "Foo synced successfully"

        # Scaling the Foo scales its Deployment.
        control_plane.request("PATCH", f"{foos}/example", {"spec": {"replicas": 3}}, MERGE)
        await _until(
            run, lambda: _get(control_plane, f"{deployments}/web")["spec"]["replicas"] == 3
        )

        # What the Deployment controller would report reaches the Foo's status, through owns().
        control_plane.request("PATCH", f"{deployments}/web/status", {"status": READY_3}, MERGE)
        await _until(
            run,
            lambda: (
                _get(control_plane, f"{foos}/example").get("status") == {"availableReplicas": 3}
            ),
        )

        # A Deployment of the requested name that another owner (here: nobody) controls is
        # refused, with a Warning Event on the Foo, and left alone.
        taken = {**web, "metadata": {"name": "taken", "namespace": kube_namespace}}
        del taken["status"]
        control_plane.request("POST", deployments, taken)
        control_plane.request("POST", foos, _foo(kube_namespace, "intruder", "taken", 1))
        refused = await _until(
            run,
            lambda: _events(control_plane, kube_namespace, "intruder").get("ErrResourceExists"),
        )
        assert refused["type"] == "Warning"
        assert refused["message"] == "Resource 'taken' already exists and is not managed by Foo"
        assert "ownerReferences" not in _get(control_plane, f"{deployments}/taken")["metadata"]
        await stop(run)

    asyncio.run(scenario())
