"""The client's reads (copies, scope errors, selectors, indexes) and writes, against a fake API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import pytest

from ctrltrace import Collect, FakeClock, Recorder, Stage
from ctrltrace.client import Client, NotCached, OperationResult, Propagation, merge_patch
from ctrltrace.kinds import Kind, Resource, RestMapper
from ctrltrace.records import Obj
from ctrltrace.source import Informer, WriteLog, drop_managed_fields
from ctrltrace.transport import (
    AlreadyExists,
    ApiError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Transport,
    WatchExpired,
    _api_error,
)

CONFIGMAP = Kind("v1", "ConfigMap")
JOB = Kind("batch/v1", "Job")


@dataclass
class Call:
    method: str
    path: str
    params: Mapping[str, str] | None
    body: Any
    content_type: str


class FakeApi:
    """Answers requests in order and remembers them."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[Call] = []

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Any:
        self.calls.append(Call(method, path, params, body, content_type))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Mapper:
    async def resolve(self, kind: Kind) -> Resource:
        return Resource(kind, kind.kind.lower() + "s", namespaced=True)

    def namespaced(self, kind: Kind) -> bool | None:
        return True


def obj(name: str, namespace: str = "a", kind: Kind = CONFIGMAP, **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1", "uid": "u"},
        **fields,
    }


def informer_of(
    kind: Kind, *objects: dict[str, Any], namespaces: tuple[str, ...] = (), **options: Any
) -> Informer:
    informer = Informer(
        cast(Transport, FakeApi()),
        cast(RestMapper, Mapper()),
        kind,
        recorder=Recorder(),
        clock=FakeClock(),
        writes=WriteLog(),
        namespaces=namespaces,
        **options,
    )
    informer.resource = Resource(kind, kind.kind.lower() + "s", namespaced=True)
    for item in objects:
        informer._apply("ADDED", item)
    informer.synced.set()
    return informer


def client_of(*informers: Informer, api: FakeApi | None = None) -> tuple[Client, Collect]:
    records = Collect()
    client = Client(
        cast(Transport, api or FakeApi()),
        cast(RestMapper, Mapper()),
        {informer.kind: informer for informer in informers},
        recorder=Recorder(records),
        clock=FakeClock(),
        writes=WriteLog(),
        field_manager="tests",
    )
    return client, records


# -- reads: the caller's own copy ---------------------------------------------------------------


def test_a_reconciler_changing_what_get_returned_changes_nothing_cached() -> None:
    informer = informer_of(CONFIGMAP, obj("x", data={"k": "v"}))
    client, _ = client_of(informer)

    async def scenario() -> None:
        first = await client.get("v1", "ConfigMap", "x", "a")
        first["data"]["k"] = "changed"
        first["metadata"]["labels"] = {"new": "label"}
        again = await client.get("v1", "ConfigMap", "x", "a")
        assert again["data"] == {"k": "v"} and "labels" not in again["metadata"]
        listed = await client.list("v1", "ConfigMap", "a")
        listed[0]["data"]["k"] = "changed too"
        assert (await client.list("v1", "ConfigMap", "a"))[0]["data"] == {"k": "v"}

    asyncio.run(scenario())
    assert informer.get("a", "x") == obj("x", data={"k": "v"})


def test_list_items_carry_api_version_and_kind_from_the_cache_and_from_the_api() -> None:
    bare = {"metadata": {"name": "x", "namespace": "a", "resourceVersion": "1"}}
    informer = informer_of(CONFIGMAP, dict(bare))
    api = FakeApi({"items": [dict(bare)], "metadata": {}})
    client, _ = client_of(informer, api=api)

    async def scenario() -> None:
        for items in (
            await client.list("v1", "ConfigMap"),
            await client.api_reader.list("v1", "ConfigMap", "a", label_selector="app=x"),
        ):
            assert [(i["apiVersion"], i["kind"]) for i in items] == [("v1", "ConfigMap")]

    asyncio.run(scenario())
    assert api.calls[0].path == "/api/v1/namespaces/a/configmaps"
    assert api.calls[0].params == {"labelSelector": "app=x"}


# -- reads: outside the cache's scope is NotCached, never NotFound --------------------------------


def test_get_and_list_outside_the_cached_namespaces_raise_not_cached() -> None:
    client, _ = client_of(informer_of(CONFIGMAP, obj("x"), namespaces=("a",)))

    async def scenario() -> None:
        with pytest.raises(NotCached, match=r"namespace b is not cached.*namespace a") as raised:
            await client.get("v1", "ConfigMap", "x", "b")
        assert not isinstance(raised.value, NotFound)
        with pytest.raises(NotCached, match="ConfigMap in namespace b"):
            await client.list("v1", "ConfigMap", "b")
        # Inside the scope, a missing object is NotFound, and every cached namespace lists.
        with pytest.raises(NotFound):
            await client.get("v1", "ConfigMap", "y", "a")
        assert len(await client.list("v1", "ConfigMap")) == 1

    asyncio.run(scenario())


def test_a_kind_nobody_caches_raises_not_cached_naming_the_cached_kinds() -> None:
    client, _ = client_of(informer_of(CONFIGMAP))

    async def scenario() -> None:
        with pytest.raises(NotCached, match=r"Job.batch is not cached \(cached kinds: ConfigMap\)"):
            await client.get("batch/v1", "Job", "j", "a")

    asyncio.run(scenario())


def test_the_api_reader_reads_what_the_cache_does_not_hold() -> None:
    api = FakeApi(obj("x", "b"))
    client, _ = client_of(informer_of(CONFIGMAP, namespaces=("a",)), api=api)
    found = asyncio.run(client.api_reader.get("v1", "ConfigMap", "x", "b"))
    assert found["metadata"]["namespace"] == "b"
    assert api.calls[0].path == "/api/v1/namespaces/b/configmaps/x"


def test_not_found_under_a_label_selected_cache_says_what_the_cache_holds() -> None:
    client, _ = client_of(informer_of(CONFIGMAP, label_selector="app=web"))
    with pytest.raises(NotFound, match="holds only those with labels app=web"):
        asyncio.run(client.get("v1", "ConfigMap", "x", "a"))


def test_list_by_label_selector_filters_the_cache() -> None:
    web = obj("web")
    web["metadata"]["labels"] = {"app": "web"}
    db = obj("db")
    db["metadata"]["labels"] = {"app": "db"}
    client, _ = client_of(informer_of(CONFIGMAP, web, db))

    async def scenario() -> None:
        assert [
            i["metadata"]["name"]
            for i in await client.list("v1", "ConfigMap", label_selector="app=web")
        ] == ["web"]
        found = await client.list("v1", "ConfigMap", label_selector={"matchLabels": {"app": "db"}})
        assert [i["metadata"]["name"] for i in found] == ["db"]

    asyncio.run(scenario())


# -- field indexes ------------------------------------------------------------------------------


def owned_by(name: str, owner: str, namespace: str = "a") -> dict[str, Any]:
    job = obj(name, namespace, JOB)
    job["metadata"]["ownerReferences"] = [{"kind": "CronJob", "name": owner, "controller": True}]
    return job


def owner_names(job: Obj) -> list[str]:
    return [ref["name"] for ref in job["metadata"].get("ownerReferences") or ()]


class CountingStore(dict[str, Any]):
    """Counts full scans, so a test can tell an index lookup from a scan."""

    scans = 0

    def items(self) -> Any:
        CountingStore.scans += 1
        return super().items()

    def values(self) -> Any:
        CountingStore.scans += 1
        return super().values()


def test_matching_fields_finds_objects_through_the_index_without_a_scan() -> None:
    informer = informer_of(JOB, owned_by("j1", "nightly"), owned_by("j2", "hourly"))
    informer.add_index("owner", owner_names)  # indexes what is cached already
    informer._apply("ADDED", owned_by("j3", "nightly"))
    informer._apply("ADDED", owned_by("j4", "nightly", namespace="b"))
    client, _ = client_of(informer)
    informer.store = CountingStore(informer.store)
    CountingStore.scans = 0

    async def names(**fields: str) -> list[str]:
        found = await client.list("batch/v1", "Job", "a", matching_fields=fields)
        return sorted(job["metadata"]["name"] for job in found)

    async def scenario() -> None:
        assert await names(owner="nightly") == ["j1", "j3"]
        assert CountingStore.scans == 0
        informer._apply("MODIFIED", owned_by("j1", "hourly"))  # re-indexed under its new owner
        informer._apply("DELETED", owned_by("j3", "nightly"))
        assert await names(owner="nightly") == []
        assert await names(owner="hourly") == ["j1", "j2"]
        with pytest.raises(ValueError, match=r"no index for spec.x .*indexes: owner"):
            await names(**{"spec.x": "1"})

    asyncio.run(scenario())


def test_listing_a_namespace_touches_only_its_objects() -> None:
    informer = informer_of(CONFIGMAP, obj("x", "a"), obj("y", "b"), obj("z", "a"))
    informer._apply("DELETED", obj("z", "a"))
    informer._apply("DELETED", obj("y", "b"))
    client, _ = client_of(informer)
    informer.store = CountingStore(informer.store)
    CountingStore.scans = 0

    async def scenario() -> None:
        assert [i["metadata"]["name"] for i in await client.list("v1", "ConfigMap", "a")] == ["x"]
        assert await client.list("v1", "ConfigMap", "b") == []

    asyncio.run(scenario())
    assert CountingStore.scans == 0


def test_an_index_function_that_raises_leaves_the_object_unindexed_and_the_informer_running() -> (
    None
):
    def broken(job: Obj) -> list[str]:
        raise KeyError("spec")

    informer = informer_of(JOB)
    informer.add_index("broken", broken)
    informer._apply("ADDED", owned_by("j1", "x"))
    assert informer.get("a", "j1") is not None
    assert informer.by_index({"broken": "x"}) == []


# -- cache shaping ------------------------------------------------------------------------------


def test_the_transform_drops_managed_fields_after_the_event_names_its_writer() -> None:
    records = Collect()
    informer = Informer(
        cast(Transport, FakeApi()),
        cast(RestMapper, Mapper()),
        CONFIGMAP,
        recorder=Recorder(records),
        clock=FakeClock(),
        writes=WriteLog(),
        transform=drop_managed_fields,
    )
    item = obj("x")
    item["metadata"]["managedFields"] = [{"manager": "kubectl", "time": "2024-01-01T00:00:00Z"}]
    informer._apply("ADDED", item)
    assert "managedFields" not in cast(Obj, informer.get("a", "x"))["metadata"]
    assert records.where(Stage.EVENT)[0].attrs["writer"] == "kubectl"


def test_a_metadata_only_informer_asks_for_metadata_and_names_the_real_kind() -> None:
    partial = {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": {"name": "x", "namespace": "a", "resourceVersion": "7"},
    }
    api = FakeApi({"metadata": {"resourceVersion": "7"}, "items": [partial]})
    records = Collect()
    informer = Informer(
        cast(Transport, api),
        cast(RestMapper, Mapper()),
        CONFIGMAP,
        recorder=Recorder(records),
        clock=FakeClock(),
        writes=WriteLog(),
        metadata_only=True,
    )
    accepts: list[str] = []

    async def request(method: str, path: str, **options: Any) -> Any:
        accepts.append(options["accept"])
        return await FakeApi.request(api, method, path, **options)

    api.request = request  # type: ignore[method-assign]

    async def scenario() -> None:
        resource = await Mapper().resolve(CONFIGMAP)
        await informer._list(resource, "", "", 0.0)

    asyncio.run(scenario())
    assert "as=PartialObjectMetadataList" in accepts[0]
    cached = cast(Obj, informer.get("a", "x"))
    assert (cached["apiVersion"], cached["kind"]) == ("v1", "ConfigMap")
    event = records.where(Stage.EVENT)[0]
    assert event.object is not None and event.object.kind == "ConfigMap"
    assert "metadata only" in informer.scope


# -- writes -------------------------------------------------------------------------------------


def test_apply_is_a_server_side_apply_patch_with_field_manager_and_force() -> None:
    api = FakeApi(obj("x"))
    client, records = client_of(api=api)
    asyncio.run(client.apply(obj("x", data={"k": "v"}), force=True))
    call = api.calls[0]
    assert (call.method, call.path) == ("PATCH", "/api/v1/namespaces/a/configmaps/x")
    assert call.content_type == "application/apply-patch+yaml"
    assert call.params == {"fieldManager": "tests", "force": "true"}
    assert call.body["data"] == {"k": "v"}
    assert records.where(Stage.WRITE, "apply")


def test_delete_sends_background_propagation_and_preconditions_by_default() -> None:
    status = {"kind": "Status", "status": "Success"}
    api = FakeApi(status, status, status)
    client, records = client_of(api=api)

    async def scenario() -> None:
        await client.delete("batch/v1", "Job", "j", "a", uid="u1", resource_version="5")
        await client.delete("batch/v1", "Job", "j", "a", propagation=None)
        await client.delete(
            "batch/v1", "Job", "j", "a", propagation=Propagation.FOREGROUND, dry_run=True
        )

    asyncio.run(scenario())
    first, unset, dry = (call.body for call in api.calls)
    assert first["propagationPolicy"] == "Background"
    assert first["preconditions"] == {"uid": "u1", "resourceVersion": "5"}
    assert "propagationPolicy" not in unset
    assert dry["dryRun"] == ["All"] and dry["propagationPolicy"] == "Foreground"
    assert len(records.where(Stage.WRITE, "delete")) == 2  # a dry run writes nothing


def test_create_or_update_creates_updates_or_leaves_alone() -> None:
    def mutate(cm: dict[str, Any]) -> None:
        cm["data"] = {"replicas": "3"}

    cached = obj("present", data={"replicas": "1"})
    done = obj("done", data={"replicas": "3"})
    api = FakeApi(obj("new", data={"replicas": "3"}), obj("present", data={"replicas": "3"}))
    client, _ = client_of(informer_of(CONFIGMAP, cached, done), api=api)

    async def scenario() -> None:
        _, created = await client.create_or_update(obj("new"), mutate)
        _, updated = await client.create_or_update(obj("present"), mutate)
        _, unchanged = await client.create_or_update(obj("done"), mutate)
        assert (created, updated, unchanged) == (
            OperationResult.CREATED,
            OperationResult.UPDATED,
            OperationResult.UNCHANGED,
        )

    asyncio.run(scenario())
    assert [(c.method, c.body["data"]) for c in api.calls] == [
        ("POST", {"replicas": "3"}),
        ("PUT", {"replicas": "3"}),
    ]
    assert api.calls[1].body["metadata"]["resourceVersion"] == "1"  # a conditional update


def test_create_or_update_of_a_metadata_only_kind_reads_the_whole_object_from_the_api() -> None:
    def label(cm: dict[str, Any]) -> None:
        cm["metadata"]["labels"] = {"seen": "yes"}

    whole = obj("x", data={"keep": "me"})
    api = FakeApi(whole, obj("x"))
    informer = informer_of(CONFIGMAP, obj("x"), metadata_only=True)
    client, _ = client_of(informer, api=api)
    _, result = asyncio.run(client.create_or_update(obj("x"), label))
    assert result is OperationResult.UPDATED
    read, update = api.calls
    assert (read.method, update.method) == ("GET", "PUT")
    assert update.body["data"] == {"keep": "me"}  # not wiped by a metadata-only copy


def test_create_or_update_refuses_a_mutate_that_renames() -> None:
    async def rename(cm: dict[str, Any]) -> None:
        cm["metadata"]["name"] = "other"

    client, _ = client_of(informer_of(CONFIGMAP, obj("x")))
    with pytest.raises(ValueError, match="changed the object's name or namespace"):
        asyncio.run(client.create_or_update(obj("x"), rename))


def test_create_or_patch_sends_only_the_changes_and_status_separately() -> None:
    cached = obj("x", spec={"a": 1, "b": 2}, status={"ready": False})

    def mutate(item: dict[str, Any]) -> None:
        item["spec"]["a"] = 5
        del item["spec"]["b"]
        item["status"]["ready"] = True

    def status_only(item: dict[str, Any]) -> None:
        item["status"] = {"ready": True}

    api = FakeApi(obj("x"), obj("x"), obj("x"))
    client, _ = client_of(informer_of(CONFIGMAP, cached), api=api)

    async def scenario() -> None:
        _, both = await client.create_or_patch(obj("x"), mutate)
        _, only = await client.create_or_patch(obj("x"), status_only)
        assert (both, only) == (
            OperationResult.UPDATED_STATUS,
            OperationResult.UPDATED_STATUS_ONLY,
        )

    asyncio.run(scenario())
    spec, status, status_again = api.calls
    assert spec.path.endswith("/configmaps/x") and spec.body == {"spec": {"a": 5, "b": None}}
    assert spec.content_type == "application/merge-patch+json"
    assert status.path.endswith("/configmaps/x/status")
    assert status.body == status_again.body == {"status": {"ready": True}}


def test_merge_patch_is_rfc_7386() -> None:
    before = {"a": 1, "b": {"c": 1, "d": 2}, "e": [1]}
    after = {"a": 1, "b": {"c": 3}, "e": [1, 2], "f": None}
    assert merge_patch(before, after) == {"b": {"c": 3, "d": None}, "e": [1, 2], "f": None}


# -- typed errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "error_type"),
    [
        (404, "NotFound", NotFound),
        (409, "AlreadyExists", AlreadyExists),
        (409, "Conflict", Conflict),
        (422, "Invalid", Invalid),
        (403, "Forbidden", Forbidden),
        (410, "Expired", WatchExpired),
        (500, "InternalError", ApiError),
    ],
)
def test_api_errors_are_typed_by_status_and_reason_and_keep_the_details(
    status: int, reason: str, error_type: type[ApiError]
) -> None:
    details = {"name": "x", "kind": "configmaps", "causes": [{"field": "metadata.name"}]}
    payload = json.dumps({"kind": "Status", "reason": reason, "message": "m", "details": details})
    error = _api_error(status, payload.encode(), "POST", "/p")
    assert type(error) is error_type and isinstance(error, ApiError)
    assert (error.status, error.reason, error.message) == (status, reason, "m")
    assert error.details["name"] == "x" and error.causes == [{"field": "metadata.name"}]


def test_an_answer_that_is_not_a_status_still_makes_an_error() -> None:
    error = _api_error(502, b"<html>bad gateway</html>", "GET", "/p")
    assert type(error) is ApiError and "bad gateway" in error.message and error.details == {}
