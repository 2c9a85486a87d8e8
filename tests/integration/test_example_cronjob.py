"""examples/cronjob.py against the real apiserver: Jobs on schedule, history limits, the
concurrency policy and Events.

The control plane has no controller-manager, so Jobs never run: the test marks them finished
itself. The controller's "now" is a FakeClock moved by hand; each step pokes the CronJob (an
annotation) so that the controller reconciles at the new time instead of at its requeue.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path
from typing import Any

from ctrltrace import FakeClock, Stage
from ctrltrace.envtest import ControlPlane
from examples import cronjob

from .conftest import Running, install_crd, start, stop

CRD = json.loads((Path(cronjob.__file__).parent / "cronjob-crd.json").read_text())
TEMPLATE = {
    "spec": {
        "template": {
            "spec": {
                "containers": [{"name": "hello", "image": "busybox", "args": ["date"]}],
                "restartPolicy": "OnFailure",
            }
        }
    }
}


def _cronjobs(namespace: str) -> str:
    return f"/apis/{cronjob.API_VERSION}/namespaces/{namespace}/cronjobs"


def _jobs(plane: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    listing = plane.request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")
    return {job["metadata"]["name"]: job for job in listing["items"]}


def _finish(plane: ControlPlane, namespace: str, name: str) -> None:
    """What the Job controller would write when the Job's one Pod succeeded."""
    path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"
    job = plane.request("GET", path)
    started = job["metadata"]["creationTimestamp"]
    done = {"status": "True", "lastProbeTime": started, "lastTransitionTime": started}
    job["status"] = {
        "startTime": started,
        "completionTime": started,
        "succeeded": 1,
        "conditions": [
            {"type": "SuccessCriteriaMet", **done},
            {"type": "Complete", **done},
        ],
    }
    plane.request("PUT", f"{path}/status", job)


def _active(plane: ControlPlane, path: str) -> list[str]:
    status = plane.request("GET", path).get("status") or {}
    return [ref["name"] for ref in status.get("active") or ()]


def _created(run: Running) -> list[str]:
    return [
        r.reason
        for r in run.records.where(Stage.KUBE_EVENT)
        if "SuccessfulCreate" in r.reason and r.outcome == "created"
    ]


def _said(run: Running, words: str) -> bool:
    return any(words in r.reason for r in run.records.where(Stage.KUBE_EVENT))


def test_jobs_run_on_schedule_within_history_limits_and_the_concurrency_policy(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    install_crd(control_plane, CRD)
    created = control_plane.request(
        "POST",
        _cronjobs(kube_namespace),
        {
            "apiVersion": cronjob.API_VERSION,
            "kind": "CronJob",
            "metadata": {"name": "tick"},
            "spec": {
                "schedule": "* * * * *",
                "jobTemplate": TEMPLATE,
                "successfulJobsHistoryLimit": 1,
            },
        },
    )
    born = datetime.datetime.fromisoformat(created["metadata"]["creationTimestamp"])
    first = int(born.timestamp()) // 60 * 60 + 60
    # Half a minute past the first minute boundary after creation: exactly one missed run.
    clock = FakeClock(start=0.0, wall_offset=first + 30)
    path = f"{_cronjobs(kube_namespace)}/tick"
    pokes = 0

    def poke(spec: dict[str, Any] | None = None) -> None:
        nonlocal pokes
        pokes += 1
        patch: dict[str, Any] = {"metadata": {"annotations": {"test/poke": str(pokes)}}}
        control_plane.patch(path, patch | ({"spec": spec} if spec else {}))

    async def scenario() -> None:
        mgr = cronjob.make_manager(
            clock,
            namespaces=[kube_namespace],
            kubeconfig=str(control_plane.kubeconfig),
            health_probe_bind_address="127.0.0.1:0",
        )
        run = await start(mgr)
        await run.until(lambda: len(_created(run)) == 1)
        assert _created(run) == [f"Normal SuccessfulCreate: Created job tick-{first}"]

        # Allow: the next run starts beside the finished one; history keeps 1 success.
        _finish(control_plane, kube_namespace, f"tick-{first}")
        await clock.advance(60)
        poke()
        await run.until(lambda: len(_created(run)) == 2)
        _finish(control_plane, kube_namespace, f"tick-{first + 60}")
        await clock.advance(60)
        poke()
        await run.until(lambda: len(_created(run)) == 3 and _said(run, f"Deleted job tick-{first}"))

        # Forbid: tick-(first+120) is still running, so the next run is skipped.
        poke({"concurrencyPolicy": "Forbid"})
        await clock.advance(60)
        poke()
        await run.until(lambda: _said(run, "concurrency policy is Forbid"))
        assert len(_created(run)) == 3

        # Replace: the running Job is deleted and the missed run starts in its place.
        poke({"concurrencyPolicy": "Replace"})
        await run.until(lambda: len(_created(run)) == 4)
        await run.until(lambda: _said(run, f"Deleted job tick-{first + 120}"))
        await run.until(lambda: _active(control_plane, path) == [f"tick-{first + 180}"])
        await stop(run)

    asyncio.run(scenario())

    jobs = _jobs(control_plane, kube_namespace)
    assert sorted(jobs) == [f"tick-{first + 60}", f"tick-{first + 180}"]
    for job in jobs.values():
        [owner] = job["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("CronJob", "tick", True)
    status = control_plane.request("GET", path)["status"]
    last = datetime.datetime.fromtimestamp(first + 180, datetime.UTC)
    assert status["lastScheduleTime"] == last.strftime("%Y-%m-%dT%H:%M:%SZ")

    listing = control_plane.request("GET", f"/api/v1/namespaces/{kube_namespace}/events")
    reasons = sorted(
        (event["reason"], event["message"].split(" (")[0])
        for event in listing["items"]
        if event["involvedObject"]["name"] == "tick"
    )
    assert reasons == sorted(
        [
            ("JobAlreadyActive", "Not starting job because prior execution is running and "
             "concurrency policy is Forbid"),
            *(("SuccessfulCreate", f"Created job tick-{first + n * 60}") for n in range(4)),
            ("SuccessfulDelete", f"Deleted job tick-{first}"),
            ("SuccessfulDelete", f"Deleted job tick-{first + 120}"),
        ]
    )  # fmt: skip
