"""Every explain verdict, reproduced against the real apiserver and read from a real journal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ctrltrace import (
    Context,
    LeaseTiming,
    Manager,
    Request,
    Result,
    Stage,
    TerminalError,
    handlers,
    predicates,
)
from ctrltrace.cli import main
from ctrltrace.controller import CacheSyncTimeout
from ctrltrace.envtest import ControlPlane
from ctrltrace.envtest.pytest_plugin import MintIdentity
from ctrltrace.journal import JournalWriter

from .conftest import start, stop

ManagerFactory = Callable[..., Manager]


def explain(journal: JournalWriter, target: str, *extra: str) -> dict[str, Any]:
    assert journal.flush()
    result = CliRunner().invoke(
        main, ["explain", target, "--journal", str(journal.path), "--json", *extra]
    )
    answer: dict[str, Any] = json.loads(result.output)
    expected_exit = 0 if answer["verdict"]["code"] in ("reconciled", "requeue_scheduled") else 3
    assert result.exit_code == expected_exit
    return answer


def configmap(plane: ControlPlane, namespace: str, name: str, **metadata: Any) -> None:
    plane.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"metadata": {"name": name, **metadata}},
    )


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[JournalWriter]:
    with JournalWriter(tmp_path / "journal.sqlite") as writer:
        yield writer


def _reconciler(
    outcome: Callable[[Request], Result | None],
) -> Callable[[Context, Request], Any]:
    async def reconcile(ctx: Context, request: Request) -> Result | None:
        return outcome(request)

    return reconcile


def _fail(request: Request) -> None:
    raise RuntimeError("boom")


def _terminal(request: Request) -> None:
    raise TerminalError("this can never work")


@pytest.mark.parametrize(
    ("outcome", "code", "words"),
    [
        (lambda request: None, "reconciled", "succeeded"),
        (_fail, "reconcile_failed", "boom"),
        (_terminal, "terminal_error", "this can never work"),
        (lambda request: Result(requeue_after=600), "requeue_scheduled", "requeue_after"),
    ],
    ids=["reconciled", "reconcile_failed", "terminal_error", "requeue_scheduled"],
)
def test_reconcile_outcomes(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,
    outcome: Callable[[Request], Result | None],
    code: str,
    words: str,
) -> None:
    async def scenario() -> dict[str, Any]:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.add_sink(journal)
        mgr.controller().for_("v1", "ConfigMap").complete(_reconciler(outcome))
        run = await start(mgr)
        await run.until(lambda: bool(run.records.where(Stage.WATCH, "synced")))
        configmap(control_plane, kube_namespace, "obj")
        await run.until(lambda: bool(run.records.where(Stage.RECONCILE)))
        await stop(run)
        return explain(journal, f"{kube_namespace}/obj", "--kind", "configmap")

    answer = asyncio.run(scenario())
    assert answer["verdict"]["code"] == code
    assert words in answer["verdict"]["message"] + json.dumps(answer["timeline"])
    assert answer["verdict"]["fix"]


def test_queued_and_in_progress(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,
) -> None:
    release = asyncio.Event()

    async def reconcile(ctx: Context, request: Request) -> None:
        await release.wait()

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.add_sink(journal)
        mgr.controller().for_("v1", "ConfigMap").complete(reconcile)  # one worker
        run = await start(mgr)
        await run.until(lambda: bool(run.records.where(Stage.WATCH, "synced")))
        configmap(control_plane, kube_namespace, "first")
        await run.until(lambda: bool(run.records.where(Stage.RECONCILE_START)))
        configmap(control_plane, kube_namespace, "second")
        await run.until(lambda: len(run.records.where(Stage.DISPATCH, "queued")) == 2)
        busy = explain(journal, f"{kube_namespace}/first")
        waiting = explain(journal, f"{kube_namespace}/second")
        release.set()
        await stop(run)
        return busy, waiting

    busy, waiting = asyncio.run(scenario())
    assert busy["verdict"]["code"] == "in_progress"
    assert waiting["verdict"]["code"] == "queued"


def test_dropped_by_predicate_and_not_mapped(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,
) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.add_sink(journal)
        mgr.controller().for_("v1", "ConfigMap", predicates.LabelSelector("app=web")).named(
            "web"
        ).complete(_reconciler(lambda request: None))
        mgr.controller().for_("v1", "Service").owns("v1", "ConfigMap").named("svc").complete(
            _reconciler(lambda request: None)
        )
        run = await start(mgr)
        await run.until(lambda: len(run.records.where(Stage.WATCH, "synced")) == 2)
        configmap(control_plane, kube_namespace, "unlabelled")
        owner = {"apiVersion": "v1", "kind": "Service", "name": "s", "uid": "u-1"}
        configmap(control_plane, kube_namespace, "orphan", ownerReferences=[owner])
        await run.until(lambda: len(run.records.where(Stage.DISPATCH)) >= 4)
        await stop(run)
        return (
            explain(journal, f"{kube_namespace}/unlabelled", "--controller", "web"),
            explain(journal, f"{kube_namespace}/orphan", "--controller", "svc"),
        )

    dropped, unmapped = asyncio.run(scenario())
    assert dropped["verdict"]["code"] == "dropped_by_predicate"
    assert "LabelSelector" in dropped["verdict"]["message"]
    assert unmapped["verdict"]["code"] == "not_mapped"
    assert "controller: true" in unmapped["verdict"]["message"]


def test_not_watched_and_no_events(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,
) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.add_sink(journal)
        mgr.controller().for_("v1", "ConfigMap").complete(_reconciler(lambda request: None))
        run = await start(mgr)
        await run.until(lambda: bool(run.records.where(Stage.WATCH, "synced")))
        await stop(run)
        return (
            explain(journal, f"{kube_namespace}/s", "--kind", "secrets"),
            explain(journal, f"{kube_namespace}/never-created", "--kind", "ConfigMap"),
        )

    unwatched, quiet = asyncio.run(scenario())
    assert unwatched["verdict"]["code"] == "not_watched"
    assert quiet["verdict"]["code"] == "no_events"


def test_watch_forbidden_and_cache_not_synced(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    mint_identity: MintIdentity,
    journal: JournalWriter,
) -> None:
    identity = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}],
        namespace=kube_namespace,
    )

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        mgr = manager_factory(namespaces=[kube_namespace], kubeconfig=str(identity.kubeconfig))
        mgr.add_sink(journal)
        mgr.controller().for_("v1", "ConfigMap").watches(
            "v1", "Secret", handlers.for_object()
        ).with_options(cache_sync_timeout=3).complete(_reconciler(lambda request: None))
        run = await start(mgr)
        await run.until(lambda: bool(run.records.where(Stage.WATCH, "forbidden")))
        configmap(control_plane, kube_namespace, "stuck")
        await run.until(lambda: bool(run.records.where(Stage.DISPATCH, "queued")))
        # The Secret watch never syncs: at the timeout the manager stops, as it must.
        assert run.task is not None
        with pytest.raises(CacheSyncTimeout):
            await asyncio.wait_for(run.task, 30)
        return (
            explain(journal, f"{kube_namespace}/token", "--kind", "secret"),
            explain(journal, f"{kube_namespace}/stuck", "--kind", "configmap"),
        )

    forbidden, unsynced = asyncio.run(scenario())
    assert forbidden["verdict"]["code"] == "watch_forbidden"
    assert identity.name in forbidden["verdict"]["message"]
    assert "secrets" in forbidden["verdict"]["message"]
    assert unsynced["verdict"]["code"] == "cache_not_synced"


def test_kind_not_found(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,
) -> None:
    async def scenario() -> dict[str, Any]:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.add_sink(journal)
        mgr.controller().for_("example.com/v1", "Sprocket").complete(
            _reconciler(lambda request: None)
        )
        run = await start(mgr)
        await run.until(lambda: bool(run.records.where(Stage.WATCH, "kind_not_found")))
        await stop(run)
        return explain(journal, f"{kube_namespace}/any", "--kind", "sprocket")

    answer = asyncio.run(scenario())
    assert answer["verdict"]["code"] == "kind_not_found"
    assert "Sprocket" in answer["verdict"]["message"]


def test_not_leader(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,
) -> None:
    def elected() -> Manager:
        mgr = manager_factory(
            namespaces=[kube_namespace],
            leader_election=True,
            leader_election_id="verdicts.example.com",
            leader_election_namespace=kube_namespace,
            lease_timing=LeaseTiming(lease_duration=3, renew_deadline=2, retry_period=0.5),
        )
        mgr.controller().for_("v1", "ConfigMap").complete(_reconciler(lambda request: None))
        return mgr

    async def scenario() -> dict[str, Any]:
        leader = await start(elected())
        await leader.until(lambda: bool(leader.records.where(Stage.LEASE, "acquired")))
        standby_manager = elected()
        standby_manager.add_sink(journal)
        standby = await start(standby_manager)
        await standby.until(lambda: bool(standby.records.where(Stage.LEASE, "standby")))
        await standby.until(lambda: bool(standby.records.where(Stage.WATCH, "synced")))
        configmap(control_plane, kube_namespace, "led")
        await standby.until(lambda: bool(standby.records.where(Stage.DISPATCH, "queued")))
        answer = explain(journal, f"{kube_namespace}/led")
        await stop(standby)
        await stop(leader)
        assert leader.manager.elector is not None
        assert leader.manager.elector.identity in answer["verdict"]["message"]
        return answer

    assert asyncio.run(scenario())["verdict"]["code"] == "not_leader"


def test_self_triggered(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,
) -> None:
    async def reconcile(ctx: Context, request: Request) -> None:
        current = await ctx.client.get("v1", "ConfigMap", request.name, request.namespace)
        count = int((current.get("data") or {}).get("count", "0"))
        if count < 5:  # bounded, so the test ends; a real loop would not stop
            await ctx.client.patch(
                "v1",
                "ConfigMap",
                request.name,
                {"data": {"count": str(count + 1)}},
                namespace=request.namespace,
            )

    async def scenario() -> dict[str, Any]:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.add_sink(journal)
        mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
        run = await start(mgr)
        await run.until(lambda: bool(run.records.where(Stage.WATCH, "synced")))
        configmap(control_plane, kube_namespace, "looping")
        await run.until(lambda: len(run.records.where(Stage.RECONCILE)) >= 6)
        await stop(run)
        return explain(journal, f"{kube_namespace}/looping")

    answer = asyncio.run(scenario())
    assert answer["verdict"]["code"] == "self_triggered"
