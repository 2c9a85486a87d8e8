"""The runtime against the real apiserver: behaviour and the records each stage emits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping
from typing import Any

from ctrltrace import Context, Manager, Request, Result, Stage, predicates
from ctrltrace.envtest import ControlPlane
from ctrltrace.envtest.pytest_plugin import MintIdentity

from .conftest import install_crd, start, stop, widget

ManagerFactory = Callable[..., Manager]


def _configmap(namespace: str, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        **extra,
    }


async def _noop(ctx: Context, request: Request) -> None:
    return None


def test_event_reaches_reconcile_and_every_stage_records_it(
    control_plane: ControlPlane, kube_namespace: str, manager_factory: ManagerFactory
) -> None:
    seen: list[Request] = []

    async def reconcile(ctx: Context, request: Request) -> None:
        seen.append(request)

    async def scenario() -> None:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
        running = await start(mgr)
        records = running.records
        await running.until(lambda: bool(records.where(Stage.WATCH, "synced")))
        control_plane.request(
            "POST",
            f"/api/v1/namespaces/{kube_namespace}/configmaps",
            _configmap(kube_namespace, "one"),
        )
        await running.until(lambda: bool(records.where(Stage.RECONCILE, "success")))
        await stop(running)

        event = next(
            r for r in records.where(Stage.EVENT, "ADDED") if r.object and r.object.name == "one"
        )
        dispatch = records.where(Stage.DISPATCH, "queued")[0]
        begin = records.where(Stage.RECONCILE_START)[0]
        done = records.where(Stage.RECONCILE, "success")[0]
        assert event.object is not None and event.object.resource_version
        assert dispatch.cause_ids == (event.id,)
        assert dispatch.controller == "configmap" and dispatch.request == f"{kube_namespace}/one"
        assert begin.cause_ids == (dispatch.id,)
        assert begin.reconcile_id and done.reconcile_id == begin.reconcile_id
        assert done.cause_ids == (begin.id,)
        assert done.attrs["metric_result"] == "success"

    asyncio.run(scenario())
    assert seen == [Request(kube_namespace, "one")]


def test_generation_changed_drops_a_label_only_update_and_says_why(
    control_plane: ControlPlane,
    kube_namespace: str,
    widget_crd: str,
    manager_factory: ManagerFactory,
) -> None:
    path = f"/apis/example.com/v1/namespaces/{kube_namespace}/widgets"
    control_plane.request("POST", path, widget(kube_namespace, "w", replicas=1))

    async def scenario() -> None:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.controller().for_("example.com/v1", "Widget").with_event_filter(
            predicates.GenerationChanged()
        ).complete(_noop)
        running = await start(mgr)
        records = running.records
        await running.until(lambda: len(records.where(Stage.RECONCILE)) == 1)
        control_plane.patch(f"{path}/w", {"metadata": {"labels": {"a": "b"}}})
        await running.until(lambda: bool(records.where(Stage.DISPATCH, "dropped_by_predicate")))
        control_plane.patch(f"{path}/w", {"spec": {"replicas": 2}})
        await running.until(lambda: len(records.where(Stage.RECONCILE)) == 2)
        await stop(running)

        dropped = records.where(Stage.DISPATCH, "dropped_by_predicate")
        assert len(dropped) == 1
        assert dropped[0].attrs["predicate"] == "GenerationChanged"
        assert "1 → 1" in dropped[0].reason or "1 -> 1" in dropped[0].reason
        assert dropped[0].object is not None and dropped[0].object.generation == 1
        assert len(records.where(Stage.DISPATCH, "queued")) == 2

    asyncio.run(scenario())


def test_owns_maps_a_controlled_child_and_records_not_mapped_without_controller_true(
    control_plane: ControlPlane,
    kube_namespace: str,
    widget_crd: str,
    manager_factory: ManagerFactory,
) -> None:
    widgets = f"/apis/example.com/v1/namespaces/{kube_namespace}/widgets"
    owner = control_plane.request("POST", widgets, widget(kube_namespace, "parent"))
    ref = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "name": "parent",
        "uid": owner["metadata"]["uid"],
    }
    configmaps = f"/api/v1/namespaces/{kube_namespace}/configmaps"

    async def scenario() -> None:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.controller().for_("example.com/v1", "Widget").owns("v1", "ConfigMap").complete(_noop)
        running = await start(mgr)
        records = running.records
        await running.until(lambda: len(records.where(Stage.RECONCILE)) == 1)
        child = _configmap(kube_namespace, "controlled")
        child["metadata"]["ownerReferences"] = [{**ref, "controller": True}]
        control_plane.request("POST", configmaps, child)
        orphan = _configmap(kube_namespace, "referenced")
        orphan["metadata"]["ownerReferences"] = [ref]
        control_plane.request("POST", configmaps, orphan)
        await running.until(
            lambda: (
                len(records.where(Stage.RECONCILE)) == 2
                and bool(records.where(Stage.DISPATCH, "not_mapped"))
            )
        )
        await stop(running)

        mapped = [
            r
            for r in records.where(Stage.DISPATCH, "queued")
            if r.object is not None and r.object.kind == "ConfigMap"
        ]
        assert [(m.object.name if m.object else "", m.request) for m in mapped] == [
            ("controlled", f"{kube_namespace}/parent")
        ]
        not_mapped = records.where(Stage.DISPATCH, "not_mapped")
        assert len(not_mapped) == 1
        assert not_mapped[0].object is not None and not_mapped[0].object.name == "referenced"
        assert "controller: true" in not_mapped[0].reason

    asyncio.run(scenario())


def test_a_burst_during_a_running_reconcile_yields_exactly_one_more(
    control_plane: ControlPlane, kube_namespace: str, manager_factory: ManagerFactory
) -> None:
    release = asyncio.Event()
    runs: list[str] = []
    path = f"/api/v1/namespaces/{kube_namespace}/configmaps"

    async def reconcile(ctx: Context, request: Request) -> None:
        runs.append(ctx.reconcile_id)
        if len(runs) == 1:
            await release.wait()

    async def scenario() -> None:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.controller().for_("v1", "ConfigMap").with_options(max_concurrent_reconciles=4).complete(
            reconcile
        )
        running = await start(mgr)
        records = running.records
        await running.until(lambda: bool(records.where(Stage.WATCH, "synced")))
        control_plane.request("POST", path, _configmap(kube_namespace, "busy"))
        await running.until(lambda: len(runs) == 1)
        for value in range(5):
            control_plane.patch(f"{path}/busy", {"data": {"n": str(value)}})
        await running.until(lambda: len(records.where(Stage.DISPATCH)) == 6)
        release.set()
        await running.until(lambda: len(records.where(Stage.RECONCILE)) == 2)
        await running.until(running.still)  # the second run is done; a third would be queued
        await stop(running)

        outcomes = [r.outcome for r in records.where(Stage.DISPATCH)]
        assert outcomes == ["queued", "requeued_after_processing"] + ["deduplicated"] * 4
        starts = records.where(Stage.RECONCILE_START)
        assert len(starts) == 2 and len(runs) == 2
        # The second reconcile's parent is the first dispatch that queued it; the rest are links.
        later = [r.id for r in records.where(Stage.DISPATCH)[1:]]
        assert list(starts[1].cause_ids) == later

    asyncio.run(scenario())


def test_an_error_is_retried_with_back_off_and_a_terminal_error_is_not(
    control_plane: ControlPlane, kube_namespace: str, manager_factory: ManagerFactory
) -> None:
    from ctrltrace import TerminalError

    calls: dict[str, int] = {}

    def reconcile(ctx: Context, request: Request) -> Result | None:  # a plain def: runs in a thread
        calls[request.name] = calls.get(request.name, 0) + 1
        if request.name == "flaky" and calls[request.name] == 1:
            raise RuntimeError("first attempt fails")
        if request.name == "doomed":
            raise TerminalError("cannot ever work")
        return Result(requeue_after=3600) if request.name == "later" else None

    path = f"/api/v1/namespaces/{kube_namespace}/configmaps"

    async def scenario() -> None:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
        running = await start(mgr)
        records = running.records
        await running.until(lambda: bool(records.where(Stage.WATCH, "synced")))
        for name in ("flaky", "doomed", "later"):
            control_plane.request("POST", path, _configmap(kube_namespace, name))
        await running.until(
            lambda: (
                calls.get("flaky") == 2
                and bool(records.where(Stage.RECONCILE, "terminal_error"))
                and bool(records.where(Stage.REQUEUE, "after"))
            )
        )
        # Only "later" is scheduled: a retried "doomed" would be delayed, waiting or running.
        await running.until(lambda: running.still(delayed=1))
        await stop(running)

        error = records.where(Stage.RECONCILE, "error")[0]
        assert error.request.endswith("/flaky") and "first attempt fails" in error.reason
        retry = records.where(Stage.REQUEUE, "rate_limited")[0]
        assert retry.cause_ids == (error.id,) and retry.attrs["attempt"] == 1
        assert retry.attrs["delay_s"] == 0.005
        second = [s for s in records.where(Stage.RECONCILE_START) if s.request.endswith("/flaky")][
            1
        ]
        assert second.cause_ids == (retry.id,)  # linked to the reconcile that asked for it
        assert calls["doomed"] == 1
        later = records.where(Stage.REQUEUE, "after")[0]
        assert later.attrs["delay_s"] == 3600 and later.request.endswith("/later")

    asyncio.run(scenario())


def test_a_kind_installed_after_start_is_picked_up(
    control_plane: ControlPlane, kube_namespace: str, manager_factory: ManagerFactory
) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"gadgets{kube_namespace.replace('-', '')}.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {
                "plural": f"gadgets{kube_namespace.replace('-', '')}",
                "kind": f"Gadget{kube_namespace.replace('-', '')}",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    kind = crd["spec"]["names"]["kind"]  # type: ignore[index]

    async def scenario() -> None:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.controller().for_("example.com/v1", kind).complete(_noop)
        running = await start(mgr)
        records = running.records
        await running.until(lambda: bool(records.where(Stage.WATCH, "kind_not_found")))
        await asyncio.to_thread(install_crd, control_plane, crd)
        plural = crd["spec"]["names"]["plural"]  # type: ignore[index]
        control_plane.request(
            "POST",
            f"/apis/example.com/v1/namespaces/{kube_namespace}/{plural}",
            {"apiVersion": "example.com/v1", "kind": kind, "metadata": {"name": "late"}},
        )
        await running.until(lambda: bool(records.where(Stage.RECONCILE, "success")), within=40)
        await stop(running)
        missing = records.where(Stage.WATCH, "kind_not_found")[0]
        assert kind in missing.reason and missing.attrs["kind"] == kind

    asyncio.run(scenario())


def test_a_forbidden_watch_is_recorded_and_keeps_the_manager_unready(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    mint_identity: MintIdentity,
) -> None:
    identity = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        namespace=kube_namespace,
    )

    async def scenario() -> None:
        import aiohttp

        mgr = manager_factory(namespaces=[kube_namespace], kubeconfig=str(identity.kubeconfig))
        mgr.controller().for_("v1", "ConfigMap").complete(_noop)
        running = await start(mgr)
        records = running.records
        await running.until(lambda: bool(records.where(Stage.WATCH, "forbidden")))
        url = f"http://127.0.0.1:{mgr.health_port}/readyz"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            ready_status, ready_text = response.status, await response.text()
        await stop(running)
        forbidden = records.where(Stage.WATCH, "forbidden")[0]
        assert forbidden.attrs["status"] == 403
        assert identity.name in forbidden.reason and "list" in forbidden.reason
        assert forbidden.attrs["namespace"] == kube_namespace
        assert ready_status == 503
        lines = ready_text.splitlines()
        assert lines[0].startswith(f"[-]cache ConfigMap not synced: forbidden: {forbidden.reason}")
        assert lines[1].startswith("[-]controller configmap waiting for ConfigMap (forbidden: ")
        assert lines[-1] == "readyz check failed"

    asyncio.run(scenario())


def test_own_writes_are_recorded_and_recognised_when_they_come_back(
    control_plane: ControlPlane, kube_namespace: str, manager_factory: ManagerFactory
) -> None:
    import structlog

    async def reconcile(ctx: Context, request: Request) -> None:
        current = await ctx.client.get("v1", "ConfigMap", request.name, request.namespace)
        count = int((current.get("data") or {}).get("count", "0"))
        ctx.log.info("reconciling", count=count)
        if count < 2:
            await ctx.client.patch(
                "v1",
                "ConfigMap",
                request.name,
                {"data": {"count": str(count + 1)}},
                namespace=request.namespace,
            )

    async def scenario() -> list[MutableMapping[str, Any]]:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
        running = await start(mgr)
        records = running.records
        await running.until(lambda: bool(records.where(Stage.WATCH, "synced")))
        with structlog.testing.capture_logs() as logs:
            control_plane.request(
                "POST",
                f"/api/v1/namespaces/{kube_namespace}/configmaps",
                _configmap(kube_namespace, "loop"),
            )
            await running.until(lambda: len(records.where(Stage.RECONCILE)) == 3)
        await stop(running)

        writes = records.where(Stage.WRITE, "patch")
        assert len(writes) == 2
        assert all(w.reconcile_id and w.controller == "configmap" for w in writes)
        events = {e.id: e for e in records.where(Stage.EVENT, "MODIFIED")}
        for write in writes:
            # Whichever of the write's answer and its watch event came second links the two.
            if "event_id" in write.attrs:
                comeback = events[int(write.attrs["event_id"])]
            else:
                [comeback] = [e for e in events.values() if e.cause_ids == (write.id,)]
                assert comeback.attrs["self_caused"] is True
            assert comeback.object is not None and write.object is not None
            assert comeback.object.resource_version == write.object.resource_version
        return logs

    logs = asyncio.run(scenario())
    reconciling = [entry for entry in logs if entry["event"] == "reconciling"]
    assert [entry["count"] for entry in reconciling] == [0, 1, 2]
    assert {entry["controller"] for entry in reconciling} == {"configmap"}
    assert all(entry["name"] == "loop" and entry["reconcile_id"] for entry in reconciling)


def _blue(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"]["labels"] = {"team": "blue"}
    return obj


def test_label_selectors_narrow_each_kind_s_cache_by_its_own_name(
    control_plane: ControlPlane,
    kube_namespace: str,
    widget_crd: str,
    manager_factory: ManagerFactory,
) -> None:
    """A selector keyed "Kind.group" or bare "Kind" applies to that kind's watch only."""
    widgets = f"/apis/example.com/v1/namespaces/{kube_namespace}/widgets"
    configmaps = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    control_plane.request("POST", widgets, widget(kube_namespace, "plain"))
    control_plane.request("POST", widgets, _blue(widget(kube_namespace, "blue")))
    control_plane.request("POST", configmaps, _configmap(kube_namespace, "plain"))
    control_plane.request("POST", configmaps, _blue(_configmap(kube_namespace, "blue")))
    reconciled: dict[str, set[str]] = {"widget": set(), "configmap": set()}

    def recording(controller: str) -> Any:
        async def reconcile(ctx: Context, request: Request) -> None:
            reconciled[controller].add(request.name)

        return reconcile

    async def scenario() -> None:
        mgr = manager_factory(
            namespaces=[kube_namespace],
            label_selectors={"Widget.example.com": "team=blue", "ConfigMap": "team"},
        )
        mgr.controller().for_("example.com/v1", "Widget").complete(recording("widget"))
        mgr.controller().for_("v1", "ConfigMap").complete(recording("configmap"))
        running = await start(mgr)
        await running.until(lambda: len(running.records.where(Stage.WATCH, "synced")) == 2)
        # Unselected objects made while watching: created before the selected one, so their
        # events would have come first.
        control_plane.request("POST", widgets, widget(kube_namespace, "late"))
        control_plane.request("POST", configmaps, _configmap(kube_namespace, "late"))
        control_plane.request("POST", configmaps, _blue(_configmap(kube_namespace, "late-blue")))
        await running.until(lambda: "late-blue" in reconciled["configmap"])
        await running.until(lambda: "blue" in reconciled["widget"])
        cached = {str(kind): sorted(informer.store) for kind, informer in mgr.informers.items()}
        await stop(running)
        events = running.records.where(Stage.EVENT)
        assert {r.object.name for r in events if r.object is not None} == {"blue", "late-blue"}
        assert cached == {
            "Widget.example.com": [f"{kube_namespace}/blue"],
            "ConfigMap": [f"{kube_namespace}/blue", f"{kube_namespace}/late-blue"],
        }

    asyncio.run(scenario())
    assert reconciled == {"widget": {"blue"}, "configmap": {"blue", "late-blue"}}
