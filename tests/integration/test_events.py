"""Kubernetes Events from ctx.events against the real apiserver, and how explain shows them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ctrltrace import Context, Manager, Request, Stage
from ctrltrace.cli import main
from ctrltrace.envtest import ControlPlane
from ctrltrace.journal import JournalWriter

from .conftest import start, stop

ManagerFactory = Callable[..., Manager]


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[JournalWriter]:
    with JournalWriter(tmp_path / "journal.sqlite") as writer:
        yield writer


def test_the_same_event_three_times_is_one_event_with_count_3_and_explain_shows_it(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,
) -> None:
    def reconcile(ctx: Context, request: Request) -> None:
        # A plain def runs in a worker thread: ctx.events must not need the event loop.
        configmap = ctx.run(ctx.client.get("v1", "ConfigMap", request.name, request.namespace))
        for _ in range(3):
            ctx.events.normal(configmap, "Seen", "the controller saw this ConfigMap")

    async def scenario() -> None:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.add_sink(journal)
        mgr.controller().named("seer").for_("v1", "ConfigMap").complete(reconcile)
        run = await start(mgr)
        await run.until(lambda: bool(run.records.where(Stage.WATCH, "synced")))
        control_plane.request(
            "POST", f"/api/v1/namespaces/{kube_namespace}/configmaps", {"metadata": {"name": "c"}}
        )
        await run.until(lambda: len(run.records.where(Stage.KUBE_EVENT)) == 3)
        # The manager's recorder for a component of its own, outside any reconcile.
        cm = control_plane.request("GET", f"/api/v1/namespaces/{kube_namespace}/configmaps/c")
        mgr.event_recorder("janitor").warning(cm | {"apiVersion": "v1", "kind": "ConfigMap"},
                                              "Stale", "nobody cleaned this up")  # fmt: skip
        await run.until(lambda: len(run.records.where(Stage.KUBE_EVENT)) == 4)
        await stop(run)

    asyncio.run(scenario())
    listing = control_plane.request("GET", f"/api/v1/namespaces/{kube_namespace}/events")
    ours = {
        e["source"]["component"]: e
        for e in listing["items"]
        if e["involvedObject"]["kind"] == "ConfigMap"
    }
    assert sorted(ours) == ["janitor", "seer"]
    assert (ours["janitor"]["type"], ours["janitor"]["count"]) == ("Warning", 1)
    event = ours["seer"]
    assert (event["count"], event["reason"], event["type"]) == (3, "Seen", "Normal")
    assert event["involvedObject"]["name"] == "c"
    assert event["involvedObject"]["uid"]

    assert journal.flush()
    result = CliRunner().invoke(
        main, ["explain", f"{kube_namespace}/c", "--journal", str(journal.path), "--json"]
    )
    answer: dict[str, Any] = json.loads(result.output)
    sent = [
        (entry["controller"], entry["outcome"])
        for entry in answer["timeline"]
        if entry["stage"] == "kube_event"
    ]
    # The janitor's Event came from no reconcile: no controller is named.
    assert sent == [("seer", "created"), ("seer", "counted"), ("seer", "counted"), ("", "created")]
    counted = [entry["what"] for entry in answer["timeline"] if entry["outcome"] == "counted"]
    assert counted[-1] == "counted: Normal Seen: the controller saw this ConfigMap (count 3)"
    text = CliRunner().invoke(
        main, ["explain", f"{kube_namespace}/c", "--journal", str(journal.path)]
    )
    assert "⚑ Event" in text.output
