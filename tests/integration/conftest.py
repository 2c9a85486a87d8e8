"""Helpers for runtime tests against the real control plane, and the ``integration`` mark on
every test in this directory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ctrltrace import Collect, Manager
from ctrltrace.envtest import ApiError, ControlPlane
from ctrltrace.transport import Transport

_HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this directory ``integration``, so ``-m "not integration"`` leaves
    them all out and never starts the control plane. The hook sees the whole session's items."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


# The example controller's CRD, shared with the demo.
WIDGET_CRD: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "examples" / "widget-crd.json").read_text()
)


def install_crd(plane: ControlPlane, crd: dict[str, Any]) -> None:
    try:
        plane.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    except ApiError as error:
        if error.status != 409:
            raise
    name = crd["metadata"]["name"]
    group, version = crd["spec"]["group"], crd["spec"]["versions"][0]["name"]
    plural = crd["spec"]["names"]["plural"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = plane.request(
            "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        ).get("status", {})
        established = any(
            c["type"] == "Established" and c["status"] == "True"
            for c in status.get("conditions") or []
        )
        if established:
            with contextlib.suppress(ApiError):
                plane.request("GET", f"/apis/{group}/{version}/{plural}")
                return
        time.sleep(0.1)
    raise AssertionError(f"CRD {name} never became established")


@pytest.fixture(scope="session")
def widget_crd(control_plane: ControlPlane) -> str:
    install_crd(control_plane, WIDGET_CRD)
    return "example.com/v1"


def widget(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


class Running:
    """A manager running on an event loop in the test: wait for records, then stop it."""

    def __init__(self, manager: Manager, records: Collect) -> None:
        self.manager = manager
        self.records = records
        self.task: asyncio.Task[None] | None = None

    async def until(self, condition: Callable[[], bool], within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while not condition():
            if self.task is not None and self.task.done():
                self.task.result()  # surface why the manager stopped
                raise AssertionError("manager stopped before the condition held")
            if time.monotonic() > deadline:
                raise AssertionError(
                    "condition not met; records:\n"
                    + "\n".join(
                        f"{r.stage} {r.outcome} {r.controller} {r.request} "
                        f"{r.object.key if r.object else ''} {r.reason}"
                        for r in self.records.records[-40:]
                    )
                )
            await asyncio.sleep(0.02)

    def still(self, delayed: int = 0) -> bool:
        """Every controller's queue is still: no key waiting or being reconciled, and
        ``delayed`` keys scheduled for later (a requeue, a back-off) in all. A key the queue
        would hand out again (dirty, retried) is in one of those, so once this holds after the
        reconciles a test waited for, any further reconcile would already show."""
        queues = [controller.queue for controller in self.manager.controllers]
        assert queues, "the manager has no controller"
        idle = all(len(queue) == 0 and queue.processing_count == 0 for queue in queues)
        return idle and sum(queue.delayed_count for queue in queues) == delayed


@pytest.fixture
def manager_factory(control_plane: ControlPlane) -> Callable[..., Manager]:
    def make(**options: Any) -> Manager:
        options.setdefault("kubeconfig", str(control_plane.kubeconfig))
        options.setdefault("health_probe_bind_address", "127.0.0.1:0")
        options.setdefault("debug_bind_address", "127.0.0.1:0")
        return Manager(**options)

    return make


async def start(manager: Manager, transport: Transport | None = None) -> Running:
    records = Collect()
    manager.add_sink(records)
    running = Running(manager, records)
    running.task = asyncio.create_task(manager.start(transport))
    return running


async def stop(running: Running) -> None:
    running.manager.stop()
    assert running.task is not None
    await asyncio.wait_for(running.task, 30)


def take_lease(plane: ControlPlane, path: str, holder: str = "intruder") -> None:
    """Another replica takes the Lease at ``path`` over (for a minute), retrying when the
    current holder's renewal wins the race for the same version (409)."""
    while True:
        lease = plane.request("GET", path)
        renewed = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        lease["spec"] |= {"holderIdentity": holder, "leaseDurationSeconds": 60}
        lease["spec"]["renewTime"] = renewed
        try:
            plane.request("PUT", path, lease)
        except ApiError as error:
            if error.status != 409:
                raise
        else:
            return
