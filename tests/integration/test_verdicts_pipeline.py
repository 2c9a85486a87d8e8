"""Verdicts that stay right when the pipeline around the object is broken (issue 14).

Each situation is reproduced against the real apiserver (restricted identities where RBAC
matters) and explained from a real journal through the CLI's ``--json``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ctrltrace import (
    Context,
    LeaderLost,
    LeaseTiming,
    Manager,
    Record,
    Request,
    Stage,
    handlers,
    predicates,
)
from ctrltrace.envtest import ControlPlane, FaultProxy
from ctrltrace.envtest.pytest_plugin import MintIdentity
from ctrltrace.events import Event
from ctrltrace.journal import Journal, JournalWriter
from ctrltrace.records import Obj
from ctrltrace.tui import cells
from ctrltrace.tui.feed import Target, explain_object, replay

from . import test_verdicts as base
from .conftest import Running, start, stop, take_lease, widget

ManagerFactory = Callable[..., Manager]
journal = base.journal  # the fixture: a JournalWriter on a fresh file
explain = base.explain
configmap = base.configmap


async def _noop(ctx: Context, request: Request) -> None:
    return None


async def _started(
    factory: ManagerFactory,
    sink: JournalWriter,
    build: Callable[[Manager], object],
    *,
    ready: str = "synced",
    count: int = 1,
    **options: Any,
) -> Running:
    """A manager with ``build``'s controllers, journaling to ``sink``, once ``count`` informer
    records ``ready`` came (every watch synced, or the failure a test is about)."""
    mgr = factory(**options)
    mgr.add_sink(sink)
    build(mgr)
    run = await start(mgr)
    await run.until(lambda: len(run.records.where(Stage.WATCH, ready)) >= count)
    return run


def _ends(run: Running, key: str) -> list[Record]:
    return [record for record in run.records.where(Stage.RECONCILE) if record.request == key]


def _warnings(answer: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {warning["code"]: warning for warning in answer["verdict"]["warnings"]}


def test_a_controller_blocked_by_a_forbidden_watch_is_cache_not_synced_naming_it(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    mint_identity: MintIdentity,
    widget_crd: str,
    journal: JournalWriter,
) -> None:
    """for_(Widget).owns(ConfigMap), and the identity may watch Widgets but not ConfigMaps."""
    identity = mint_identity(
        [
            {
                "apiGroups": ["example.com"],
                "resources": ["widgets"],
                "verbs": ["get", "list", "watch"],
            }
        ],
        namespace=kube_namespace,
    )

    async def scenario() -> dict[str, Any]:
        run = await _started(
            manager_factory,
            journal,
            lambda mgr: (
                mgr.controller().for_(widget_crd, "Widget").owns("v1", "ConfigMap").complete(_noop)
            ),
            namespaces=[kube_namespace],
            kubeconfig=str(identity.kubeconfig),
        )
        await run.until(lambda: bool(run.records.where(Stage.WATCH, "forbidden")))
        control_plane.request(
            "POST",
            f"/apis/example.com/v1/namespaces/{kube_namespace}/widgets",
            widget(kube_namespace, "blocked"),
        )
        await run.until(lambda: bool(run.records.where(Stage.DISPATCH, "queued")))
        answer = explain(journal, f"{kube_namespace}/blocked", "--kind", "widget")
        await stop(run)
        return answer

    verdict = asyncio.run(scenario())["verdict"]
    # The TUI, reading the same journal, shows the controller blocked by that watch, and its
    # object view gives the same verdict.
    now = time.time()
    state = replay(functools.partial(Journal, journal.path), now)
    assert state is not None
    (controller,) = state.controllers.values()
    shown = cells.controller_cells(controller, now, state.blocking(controller))
    assert shown[1].plain == "✗ blocked by ConfigMap forbidden"
    target = Target(kube_namespace, "blocked", "Widget")
    assert (
        explain_object(functools.partial(Journal, journal.path), target, now=now).verdict.code
        == verdict["code"]
    )
    assert verdict["code"] == "cache_not_synced"
    assert "waiting for a worker" not in verdict["message"]
    assert "max_concurrent_reconciles" not in verdict["fix"]
    assert "ConfigMap" in verdict["message"]
    assert f"{identity.name} cannot list configmaps" in verdict["message"]
    (blocking,) = verdict["details"]["blocking"]
    assert (blocking["kind"], blocking["status"]) == ("ConfigMap", 403)
    assert f'User "{identity.name}" cannot list resource "configmaps"' in blocking["error"]
    assert blocking["rule"] == {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "verbs": ["get", "list", "watch"],
    }
    assert "--verb=get,list,watch --resource=configmaps" in verdict["fix"]
    assert f"--user={identity.name}" in verdict["fix"]


def test_a_controller_blocked_by_a_kind_not_served_names_it_and_the_crd(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,
) -> None:
    async def scenario() -> dict[str, Any]:
        run = await _started(
            manager_factory,
            journal,
            lambda mgr: (
                mgr.controller()
                .for_("v1", "ConfigMap")
                .owns("gadgets.example.org/v1", "Gadget")
                .complete(_noop)
            ),
            ready="kind_not_found",
            namespaces=[kube_namespace],
        )
        configmap(control_plane, kube_namespace, "waits")
        await run.until(lambda: bool(run.records.where(Stage.DISPATCH, "queued")))
        await stop(run)
        return explain(journal, f"{kube_namespace}/waits", "--kind", "configmap")

    verdict = asyncio.run(scenario())["verdict"]
    assert verdict["code"] == "cache_not_synced"
    assert "Gadget (gadgets.example.org/v1) is not served" in verdict["message"]
    assert "serves no API group gadgets.example.org" in verdict["message"]
    (blocking,) = verdict["details"]["blocking"]
    assert (blocking["kind"], blocking["outcome"]) == ("Gadget", "kind_not_found")
    assert "Install the CRD that defines Gadget" in verdict["fix"]


def test_a_watch_that_may_list_but_not_watch_warns_on_a_reconciled_object(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    mint_identity: MintIdentity,
    journal: JournalWriter,
) -> None:
    identity = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        namespace=kube_namespace,
    )

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        run = await _started(
            manager_factory,
            journal,
            lambda mgr: mgr.controller().for_("v1", "ConfigMap").complete(_noop),
            ready="forbidden",
            namespaces=[kube_namespace],
            kubeconfig=str(identity.kubeconfig),
        )
        configmap(control_plane, kube_namespace, "relisted")
        # Only a re-list after a refused watch brings it in.
        await run.until(lambda: bool(_ends(run, f"{kube_namespace}/relisted")), within=60)
        refused = explain(journal, f"{kube_namespace}/relisted", "--kind", "configmap")
        # Then the watch is granted: the informer's next try is accepted, the warning goes.
        control_plane.grant(
            identity.subject,
            [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["watch"]}],
            namespace=kube_namespace,
            role_name=f"{identity.name}-watch",
        )
        await run.until(lambda: bool(run.records.where(Stage.WATCH, "resumed")), within=60)
        configmap(control_plane, kube_namespace, "watched")
        await run.until(lambda: bool(_ends(run, f"{kube_namespace}/watched")))
        await stop(run)
        return refused, explain(journal, f"{kube_namespace}/watched", "--kind", "configmap")

    refused, watched = asyncio.run(scenario())
    assert refused["verdict"]["code"] == "reconciled"
    warning = _warnings(refused)["watch_forbidden"]
    assert f"{identity.name} cannot watch configmaps" in warning["message"]
    assert "only when the informer lists again" in warning["message"]
    assert "--verb=get,list,watch --resource=configmaps" in warning["fix"]
    assert watched["verdict"]["code"] == "reconciled"
    assert watched["verdict"]["warnings"] == []


def test_a_reconciled_object_whose_watch_is_cut_off_carries_a_disconnected_warning(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,
    fault_proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    via_proxy = control_plane.admin_kubeconfig_via(
        f"https://{fault_proxy.address}", tmp_path / "via-proxy.kubeconfig"
    )

    async def scenario() -> dict[str, Any]:
        run = await _started(
            manager_factory,
            journal,
            lambda mgr: mgr.controller().for_("v1", "ConfigMap").complete(_noop),
            namespaces=[kube_namespace],
            kubeconfig=str(via_proxy),
        )
        configmap(control_plane, kube_namespace, "before-the-cut")
        await run.until(lambda: bool(_ends(run, f"{kube_namespace}/before-the-cut")))
        with fault_proxy.refusing():  # the API server unreachable from here on
            await run.until(lambda: bool(run.records.where(Stage.WATCH, "disconnected")))
            answer = explain(journal, f"{kube_namespace}/before-the-cut", "--kind", "configmap")
            await stop(run)
        return answer

    answer = asyncio.run(scenario())
    assert answer["verdict"]["code"] == "reconciled"
    warning = _warnings(answer)["watch_disconnected"]
    assert "the watch for ConfigMap has failed since" in warning["message"]
    assert "changes made since have not reached the controller" in warning["message"]
    assert "resumes from the last resourceVersion" in warning["fix"]


def test_a_reconciled_object_of_a_replica_that_lost_its_lease_carries_a_warning(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,
) -> None:
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{kube_namespace}/leases/lost-lease"

    async def scenario() -> dict[str, Any]:
        run = await _started(
            manager_factory,
            journal,
            lambda mgr: mgr.controller().for_("v1", "ConfigMap").complete(_noop),
            namespaces=[kube_namespace],
            leader_election=True,
            leader_election_id="lost-lease",
            leader_election_namespace=kube_namespace,
            lease_timing=LeaseTiming(lease_duration=4, renew_deadline=3, retry_period=1),
        )
        configmap(control_plane, kube_namespace, "led")
        await run.until(lambda: bool(_ends(run, f"{kube_namespace}/led")))
        take_lease(control_plane, lease_path)
        assert run.task is not None
        with pytest.raises(LeaderLost):
            await asyncio.wait_for(run.task, 30)
        return explain(journal, f"{kube_namespace}/led", "--kind", "configmap")

    answer = asyncio.run(scenario())
    assert answer["verdict"]["code"] == "reconciled"
    warning = _warnings(answer)["lease_lost"]
    assert f"lost the leader lease {kube_namespace}/lost-lease" in warning["message"]
    assert "it stopped reconciling then" in warning["message"]


def test_queued_names_the_busy_request_and_in_progress_its_usual_durations(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,
) -> None:
    release = asyncio.Event()

    async def reconcile(ctx: Context, request: Request) -> None:
        if request.name == "slow":
            await release.wait()

    async def scenario() -> tuple[dict[str, Any], ...]:
        run = await _started(
            manager_factory,
            journal,
            lambda mgr: mgr.controller().for_("v1", "ConfigMap").complete(reconcile),  # 1 worker
            namespaces=[kube_namespace],
        )
        configmap(control_plane, kube_namespace, "quick-1")
        configmap(control_plane, kube_namespace, "quick-2")
        await run.until(lambda: len(run.records.where(Stage.RECONCILE)) == 2)
        configmap(control_plane, kube_namespace, "slow")
        await run.until(lambda: len(run.records.where(Stage.RECONCILE_START)) == 3)
        configmap(control_plane, kube_namespace, "waiting")
        await run.until(lambda: len(run.records.where(Stage.DISPATCH, "queued")) == 4)
        running = explain(journal, f"{kube_namespace}/slow")
        waiting = explain(journal, f"{kube_namespace}/waiting")
        control_plane.request(
            "PATCH",
            f"/api/v1/namespaces/{kube_namespace}/configmaps/slow",
            {"data": {"changed": "yes"}},
            content_type="application/merge-patch+json",
        )
        await run.until(
            lambda: bool(run.records.where(Stage.DISPATCH, "requeued_after_processing"))
        )
        held = explain(journal, f"{kube_namespace}/slow")
        release.set()
        await stop(run)
        return running, waiting, held

    running, waiting, held = (answer["verdict"] for answer in asyncio.run(scenario()))
    slow_id = running["details"]["reconcile_id"]
    assert running["code"] == "in_progress"
    assert "(p50)" in running["message"] and "(p99)" in running["message"]
    assert running["details"]["runs"] >= 2
    assert waiting["code"] == "queued"
    assert "waiting for a worker" in waiting["message"]
    assert f"{kube_namespace}/slow" in waiting["message"] and slow_id in waiting["message"]
    assert waiting["details"]["workers"] == 1
    assert [busy["reconcile_id"] for busy in waiting["details"]["busy"]] == [slow_id]
    assert held["code"] == "queued"
    assert "being reconciled right now" in held["message"]
    assert held["details"]["held_by"] == slow_id


def test_finalizers_left_after_reconciles_are_deletion_blocked_then_deleted(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,
) -> None:
    path = f"/api/v1/namespaces/{kube_namespace}/configmaps/doomed"
    key = f"{kube_namespace}/doomed"

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        run = await _started(  # its reconciler never removes the finalizer
            manager_factory,
            journal,
            lambda mgr: mgr.controller().for_("v1", "ConfigMap").complete(_noop),
            namespaces=[kube_namespace],
        )
        configmap(control_plane, kube_namespace, "doomed", finalizers=["example.com/cleanup"])
        await run.until(lambda: len(_ends(run, key)) == 1)
        control_plane.request("DELETE", path)
        await run.until(lambda: len(_ends(run, key)) == 2)
        blocked = explain(journal, key)
        control_plane.request(
            "PATCH",
            path,
            {"metadata": {"finalizers": None}},
            content_type="application/merge-patch+json",
        )
        await run.until(
            lambda: bool(run.records.where(Stage.EVENT, "DELETED")) and len(_ends(run, key)) >= 3
        )
        await stop(run)
        return blocked, explain(journal, key)

    blocked, deleted = (answer["verdict"] for answer in asyncio.run(scenario()))
    assert blocked["code"] == "deletion_blocked"
    assert "example.com/cleanup" in blocked["message"]
    assert blocked["details"]["finalizers"] == ["example.com/cleanup"]
    assert blocked["details"]["reconciles_since"] == 1
    assert "remove example.com/cleanup from metadata.finalizers" in blocked["fix"]
    assert deleted["code"] == "reconciled"
    assert "was deleted" in deleted["message"] and "Reconcile then ran" in deleted["message"]


def test_reconcile_errors_get_the_fix_for_what_the_api_server_said(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    mint_identity: MintIdentity,
    journal: JournalWriter,
) -> None:
    verbs = ["get", "list", "watch", "create", "update", "patch"]
    identity = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs}],
        namespace=kube_namespace,
    )

    async def reconcile(ctx: Context, request: Request) -> None:
        namespace, name = request.namespace, request.name
        if name == "conflict":
            current = await ctx.client.get("v1", "ConfigMap", name, namespace)
            stale = {**current["metadata"], "resourceVersion": "1"}
            await ctx.client.update({**current, "metadata": stale, "data": {"a": "b"}})
        elif name == "gone":
            await ctx.client.get("v1", "ConfigMap", "never-created", namespace)
        elif name == "denied":
            secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}
            await ctx.client.create({**secret, "metadata": {"name": name, "namespace": namespace}})
        elif name == "invalid":
            bad = {"metadata": {"labels": {"not a label!": "x"}}}
            await ctx.client.patch("v1", "ConfigMap", name, bad, namespace=namespace)

    names = ("conflict", "gone", "denied", "invalid")

    async def scenario() -> dict[str, dict[str, Any]]:
        run = await _started(
            manager_factory,
            journal,
            lambda mgr: mgr.controller().for_("v1", "ConfigMap").complete(reconcile),
            namespaces=[kube_namespace],
            kubeconfig=str(identity.kubeconfig),
        )
        for name in names:
            configmap(control_plane, kube_namespace, name)
        await run.until(lambda: all(len(_ends(run, f"{kube_namespace}/{n}")) >= 3 for n in names))
        # Stopped first: a retry still running when explain reads would be in_progress.
        await stop(run)
        return {name: explain(journal, f"{kube_namespace}/{name}") for name in names}

    verdicts = {name: answer["verdict"] for name, answer in asyncio.run(scenario()).items()}
    assert {verdict["code"] for verdict in verdicts.values()} == {"reconcile_failed"}
    assert {name: verdict["details"]["api_status"] for name, verdict in verdicts.items()} == {
        "conflict": 409,
        "gone": 404,
        "denied": 403,
        "invalid": 422,
    }
    for verdict in verdicts.values():
        assert "Fix the error in the reconciler" not in verdict["fix"]
    assert "times in a row" in verdicts["conflict"]["message"]
    assert "patch instead of update" in verdicts["conflict"]["fix"]
    assert "404 on a read: the object is gone" in verdicts["gone"]["message"]
    assert "Return without error" in verdicts["gone"]["fix"]
    assert verdicts["denied"]["fix"].startswith(
        f"grant {identity.name} this rule in a Role in {kube_namespace}: "
        'apiGroups [""], resources [secrets], verbs [create]'
    )
    assert verdicts["invalid"]["details"]["field"] == "metadata.labels"
    assert "metadata.labels" in verdicts["invalid"]["fix"]


def test_a_predicate_or_map_function_that_raises_is_named(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,
) -> None:
    def only_big(event: Event) -> bool:
        return int(event.object["data"]["size"]) > 3  # KeyError without data

    def secret_owner(obj: Obj) -> list[Request]:
        raise ValueError("no owner label")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        def build(mgr: Manager) -> None:
            mgr.controller().for_("v1", "ConfigMap", predicates.funcs(create=only_big)).named(
                "filtered"
            ).complete(_noop)
            mgr.controller().for_("v1", "Service").watches(
                "v1", "Secret", handlers.map_to(secret_owner)
            ).named("mapped").complete(_noop)

        run = await _started(manager_factory, journal, build, count=3, namespaces=[kube_namespace])
        configmap(control_plane, kube_namespace, "plain")
        control_plane.request(
            "POST", f"/api/v1/namespaces/{kube_namespace}/secrets", {"metadata": {"name": "s"}}
        )
        await run.until(lambda: len(run.records.where(Stage.DISPATCH)) >= 2)
        await stop(run)
        return (
            explain(journal, f"{kube_namespace}/plain", "--controller", "filtered"),
            explain(journal, f"{kube_namespace}/s", "--kind", "secret"),
        )

    dropped, unmapped = (answer["verdict"] for answer in asyncio.run(scenario()))
    assert dropped["code"] == "dropped_by_predicate"
    assert "only_big" in dropped["message"] and "KeyError" in dropped["message"]
    assert "the event was dropped" in dropped["message"]
    assert "only_big" in dropped["fix"]
    assert unmapped["code"] == "not_mapped"
    assert "secret_owner raised ValueError" in unmapped["message"]
    assert "no owner label" in unmapped["message"]
    assert "secret_owner" in unmapped["fix"]
    for verdict in (dropped, unmapped):
        assert "ownerReference" not in verdict["fix"] and "controller: true" not in verdict["fix"]


def test_kind_not_found_says_what_the_group_serves(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    widget_crd: str,
    journal: JournalWriter,
) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        def build(mgr: Manager) -> None:
            mgr.controller().for_("example.com/v2", "Widget").named("v2").complete(_noop)
            mgr.controller().for_(widget_crd, "Widgit").named("typo").complete(_noop)

        run = await _started(
            manager_factory,
            journal,
            build,
            ready="kind_not_found",
            count=2,
            namespaces=[kube_namespace],
        )
        await stop(run)
        return (
            explain(journal, f"{kube_namespace}/any", "--kind", "widget"),
            explain(journal, f"{kube_namespace}/any", "--kind", "widgit"),
        )

    version, typo = (answer["verdict"] for answer in asyncio.run(scenario()))
    assert version["code"] == "kind_not_found"
    assert "example.com is served in v1 only" in version["message"]
    assert typo["code"] == "kind_not_found"
    assert "closest: Widget" in typo["message"]


def test_no_events_under_a_label_selector_names_it_and_how_to_check(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    journal: JournalWriter,
) -> None:
    async def scenario() -> dict[str, Any]:
        run = await _started(
            manager_factory,
            journal,
            lambda mgr: mgr.controller().for_("v1", "ConfigMap").complete(_noop),
            namespaces=[kube_namespace],
            label_selectors={"ConfigMap": "app=web"},
        )
        configmap(control_plane, kube_namespace, "unlabelled")
        # Created after it, so its event comes after any the unlabelled one could have caused.
        configmap(control_plane, kube_namespace, "labelled", labels={"app": "web"})
        await run.until(lambda: bool(_ends(run, f"{kube_namespace}/labelled")))
        await stop(run)
        return explain(journal, f"{kube_namespace}/unlabelled", "--kind", "configmap")

    verdict = asyncio.run(scenario())["verdict"]
    assert verdict["code"] == "no_events"
    assert "holds only objects with labels app=web" in verdict["message"]
    assert f"kubectl get configmaps unlabelled -n {kube_namespace} -l 'app=web'" in verdict["fix"]


def test_records_the_journal_lost_make_a_journal_gap_warning(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    tmp_path: Path,
) -> None:
    # A writer that only writes on flush, and keeps at most 200 records waiting.
    lossy = JournalWriter(
        tmp_path / "lossy.sqlite", max_pending=200, flush_interval_s=60.0, batch_size=100_000
    )

    async def scenario() -> dict[str, Any]:
        run = await _started(
            manager_factory,
            lossy,
            lambda mgr: mgr.controller().for_("v1", "ConfigMap").complete(_noop),
            namespaces=[kube_namespace],
        )
        for index in range(100):
            configmap(control_plane, kube_namespace, f"many-{index}")
        await run.until(lambda: len(run.records.where(Stage.RECONCILE)) >= 100)
        await stop(run)
        return explain(lossy, f"{kube_namespace}/many-0", "--kind", "configmap")

    with lossy:
        answer = asyncio.run(scenario())
    assert lossy.dropped > 0
    gap = _warnings(answer)["journal_gap"]
    assert f"lost {lossy.dropped} records" in gap["message"]
    assert "may be incomplete" in gap["message"]
