"""The client against the real apiserver: safe cached reads, scope errors, writes, typed errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from ctrltrace import Context, Manager, Request, Result, Stage, SystemClock
from ctrltrace.client import Client, NotCached, OperationResult
from ctrltrace.envtest import ControlPlane
from ctrltrace.envtest.pytest_plugin import MintIdentity
from ctrltrace.kinds import RestMapper
from ctrltrace.records import Recorder
from ctrltrace.source import WriteLog
from ctrltrace.transport import (
    AlreadyExists,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Transport,
    load_configuration,
)

from .conftest import start, stop

ManagerFactory = Callable[..., Manager]


def configmap(namespace: str, name: str, **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        **fields,
    }


def job(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox", "command": ["true"]}],
                }
            }
        },
    }


def post(plane: ControlPlane, obj: dict[str, Any]) -> None:
    namespace = obj["metadata"]["namespace"]
    plane.request("POST", f"/api/v1/namespaces/{namespace}/configmaps", obj)


@asynccontextmanager
async def direct_client(kubeconfig: str) -> AsyncIterator[Client]:
    """A client with no cache: every read goes through ``api_reader``."""
    transport = Transport(await load_configuration(kubeconfig))
    try:
        yield Client(
            transport,
            RestMapper(transport),
            {},
            recorder=Recorder(),
            clock=SystemClock(),
            writes=WriteLog(),
            field_manager="tests",
        )
    finally:
        await transport.close()


# -- the two reproductions from issue 18 -------------------------------------------------------


def test_mutating_what_get_returned_does_not_change_what_the_next_get_returns(
    control_plane: ControlPlane, kube_namespace: str, manager_factory: ManagerFactory
) -> None:
    seen: list[dict[str, str]] = []

    async def reconcile(ctx: Context, request: Request) -> Result | None:
        current = await ctx.client.get("v1", "ConfigMap", request.name, request.namespace)
        seen.append(dict(current["data"]))
        # A reconciler working on its copy, and writing nothing.
        current["data"]["value"] = "never written"
        current["metadata"]["labels"] = {"touched": "yes"}
        return Result(requeue=True) if len(seen) == 1 else None

    async def scenario() -> None:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
        post(control_plane, configmap(kube_namespace, "c", data={"value": "original"}))
        running = await start(mgr)
        await running.until(lambda: len(seen) >= 2)
        informer = next(iter(mgr.informers.values()))
        cached = informer.get(kube_namespace, "c")
        await stop(running)
        assert seen[:2] == [{"value": "original"}, {"value": "original"}]
        assert cached is not None and cached["data"] == {"value": "original"}
        assert "labels" not in cached["metadata"]

    asyncio.run(scenario())


def test_reads_outside_the_cached_namespaces_raise_not_cached_instead_of_not_found(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
) -> None:
    other = f"{kube_namespace}-b"
    control_plane.request("POST", "/api/v1/namespaces", {"metadata": {"name": other}})
    post(control_plane, configmap(other, "elsewhere", data={"k": "v"}))
    outcomes: dict[str, Any] = {}

    async def reconcile(ctx: Context, request: Request) -> None:
        for what, read in (
            ("get", ctx.client.get("v1", "ConfigMap", "elsewhere", other)),
            ("list", ctx.client.list("v1", "ConfigMap", other)),
        ):
            try:
                outcomes[what] = await read
            except Exception as error:
                outcomes[what] = error
        fresh = await ctx.client.api_reader.get("v1", "ConfigMap", "elsewhere", other)
        outcomes["api_reader"] = fresh["data"]

    async def scenario() -> None:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
        post(control_plane, configmap(kube_namespace, "trigger"))
        running = await start(mgr)
        await running.until(lambda: "api_reader" in outcomes)
        await stop(running)

    asyncio.run(scenario())
    for what in ("get", "list"):
        error = outcomes[what]
        assert isinstance(error, NotCached) and not isinstance(error, NotFound), error
        assert f"namespace {other} is not cached" in str(error)
        assert f"namespace {kube_namespace}" in str(error)
    assert outcomes["api_reader"] == {"k": "v"}


# -- owns() under a cluster-scoped for_ kind ---------------------------------------------------


def test_owns_under_a_cluster_scoped_for_kind_reconciles_one_key_without_a_namespace(
    control_plane: ControlPlane, kube_namespace: str, manager_factory: ManagerFactory
) -> None:
    requests: list[Request] = []

    async def reconcile(ctx: Context, request: Request) -> None:
        if request.name == kube_namespace:
            requests.append(request)

    async def scenario() -> None:
        mgr = manager_factory(namespaces=[kube_namespace])
        mgr.controller().for_("v1", "Namespace").owns("v1", "ConfigMap").complete(reconcile)
        running = await start(mgr)
        await running.until(lambda: bool(requests))
        namespace = control_plane.request("GET", f"/api/v1/namespaces/{kube_namespace}")
        owned = configmap(kube_namespace, "owned")
        owned["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "name": kube_namespace,
                "uid": namespace["metadata"]["uid"],
                "controller": True,
            }
        ]
        post(control_plane, owned)
        records = running.records
        await running.until(
            lambda: any(
                r.object is not None and r.object.name == "owned"
                for r in records.where(Stage.DISPATCH)
            )
        )
        await running.until(lambda: len(requests) >= 2)
        await stop(running)
        dispatched = [
            r.request
            for r in records.where(Stage.DISPATCH)
            if r.object is not None and r.object.name == "owned"
        ]
        assert dispatched == [kube_namespace]
        assert set(requests) == {Request("", kube_namespace)}

    asyncio.run(scenario())


# -- writes and typed errors -------------------------------------------------------------------


def test_typed_errors_carry_the_servers_status_details(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    async def scenario() -> None:
        async with direct_client(str(control_plane.kubeconfig)) as client:
            created = await client.create(configmap(kube_namespace, "x", data={"a": "1"}))
            with pytest.raises(AlreadyExists) as exists:
                await client.create(configmap(kube_namespace, "x"))
            assert exists.value.details["name"] == "x"
            await client.update(dict(created, data={"a": "2"}))
            with pytest.raises(Conflict):
                await client.update(dict(created, data={"a": "3"}))  # resourceVersion is old
            with pytest.raises(Invalid) as invalid:
                await client.create(configmap(kube_namespace, "Not_A_Name"))
            assert invalid.value.causes and invalid.value.causes[0]["field"] == "metadata.name"
            with pytest.raises(NotFound):
                await client.api_reader.get("v1", "ConfigMap", "missing", kube_namespace)

    asyncio.run(scenario())


def test_forbidden_is_typed(
    control_plane: ControlPlane, kube_namespace: str, mint_identity: MintIdentity
) -> None:
    identity = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        namespace=kube_namespace,
    )

    async def scenario() -> None:
        async with direct_client(str(identity.kubeconfig)) as client:
            with pytest.raises(Forbidden) as forbidden:
                await client.create(configmap(kube_namespace, "x"))
            assert forbidden.value.status == 403

    asyncio.run(scenario())


def test_server_side_apply_owns_fields_and_force_takes_them_over(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    async def scenario() -> None:
        async with direct_client(str(control_plane.kubeconfig)) as client:
            mine = configmap(kube_namespace, "applied", data={"owner": "tests"})
            first = await client.apply(mine)
            assert first["data"] == {"owner": "tests"}
            managers = {e["manager"] for e in first["metadata"]["managedFields"]}
            assert managers == {"tests"}
            theirs = configmap(kube_namespace, "applied", data={"owner": "other"})
            with pytest.raises(Conflict):
                await client.apply(theirs, field_manager="other")
            taken = await client.apply(theirs, field_manager="other", force=True)
            assert taken["data"] == {"owner": "other"}

    asyncio.run(scenario())


def test_deleting_a_job_does_not_orphan_it_unless_asked(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    """With no propagation policy the server orphans a batch/v1 Job's Pods: it puts the
    ``orphan`` finalizer on the Job (and with no garbage collector here, the Job stays)."""

    async def scenario() -> None:
        async with direct_client(str(control_plane.kubeconfig)) as client:
            for name in ("background", "server-default"):
                await client.create(job(kube_namespace, name))
            await client.delete("batch/v1", "Job", "background", kube_namespace)
            await client.delete(
                "batch/v1", "Job", "server-default", kube_namespace, propagation=None
            )
            with pytest.raises(NotFound):
                await client.api_reader.get("batch/v1", "Job", "background", kube_namespace)
            orphaned = await client.api_reader.get(
                "batch/v1", "Job", "server-default", kube_namespace
            )
            assert orphaned["metadata"]["finalizers"] == ["orphan"]
            # A dry run checks and deletes nothing; preconditions guard against a stale delete.
            await client.create(job(kube_namespace, "kept"))
            await client.delete("batch/v1", "Job", "kept", kube_namespace, dry_run=True)
            await client.api_reader.get("batch/v1", "Job", "kept", kube_namespace)
            with pytest.raises(Conflict):
                await client.delete("batch/v1", "Job", "kept", kube_namespace, uid="not-its-uid")

    asyncio.run(scenario())


def test_create_or_update_and_create_or_patch_say_what_they_did(
    control_plane: ControlPlane, kube_namespace: str
) -> None:
    def three(cm: dict[str, Any]) -> None:
        cm["data"] = {"replicas": "3"}

    async def scenario() -> None:
        async with direct_client(str(control_plane.kubeconfig)) as client:
            template = configmap(kube_namespace, "child")
            outcomes = [(await client.create_or_update(template, three))[1]]
            outcomes.append((await client.create_or_update(template, three))[1])
            answer, patched = await client.create_or_patch(
                template, lambda cm: cm["data"].update(extra="1")
            )
            outcomes.append(patched)
            assert outcomes == [
                OperationResult.CREATED,
                OperationResult.UNCHANGED,
                OperationResult.UPDATED,
            ]
            assert answer["data"] == {"replicas": "3", "extra": "1"}

    asyncio.run(scenario())


# -- indexes and cache shaping -----------------------------------------------------------------


def test_index_field_lists_by_value_and_metadata_only_caches_no_bodies(
    control_plane: ControlPlane, kube_namespace: str, manager_factory: ManagerFactory
) -> None:
    found: dict[str, list[str]] = {}

    def team(obj: Any) -> list[str]:
        return [obj["metadata"].get("labels", {}).get("team", "")]

    async def reconcile(ctx: Context, request: Request) -> None:
        listed = await ctx.client.list(
            "v1", "ConfigMap", request.namespace, matching_fields={"team": "blue"}
        )
        found[request.name] = sorted(item["metadata"]["name"] for item in listed)

    async def scenario() -> None:
        mgr = manager_factory(namespaces=[kube_namespace], metadata_only=["ConfigMap"])
        mgr.index_field("v1", "ConfigMap", "team", team)
        mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
        for name, colour in (("b1", "blue"), ("b2", "blue"), ("r1", "red")):
            labelled = configmap(kube_namespace, name, data={"big": "x" * 1000})
            labelled["metadata"]["labels"] = {"team": colour}
            post(control_plane, labelled)
        running = await start(mgr)
        await running.until(lambda: len(found) == 3)
        informer = next(iter(mgr.informers.values()))
        cached = informer.get(kube_namespace, "b1")
        await stop(running)
        assert found == {name: ["b1", "b2"] for name in ("b1", "b2", "r1")}
        assert cached is not None and "data" not in cached
        assert (cached["apiVersion"], cached["kind"]) == ("v1", "ConfigMap")
        assert "managedFields" not in cached["metadata"]  # the default transform

    asyncio.run(scenario())
