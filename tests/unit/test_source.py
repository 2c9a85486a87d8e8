"""The informer's reflector rules, with a scripted transport (no apiserver needed)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, cast

import aiohttp

from ctrltrace import Collect, FakeClock, Recorder, Stage
from ctrltrace.kinds import Kind, Resource, RestMapper
from ctrltrace.records import Obj, ObjectRef
from ctrltrace.source import Informer, WriteLog, last_writer
from ctrltrace.testing import ScriptedTransport
from ctrltrace.transport import ApiError, Transport, WatchExpired

CONFIGMAP = Kind("v1", "ConfigMap")


def cm(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


class StaticMapper:
    async def resolve(self, kind: Kind) -> Resource:
        return Resource(kind, "configmaps", namespaced=True)


def listing(rv: str, *items: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": rv}, "items": list(items)}


def informer_on(
    transport: ScriptedTransport,
    namespaces: Sequence[str] = ("ns",),
    recorder: Recorder | None = None,
    clock: FakeClock | None = None,
) -> Informer:
    return Informer(
        cast(Transport, transport),
        cast(RestMapper, StaticMapper()),
        CONFIGMAP,
        recorder=recorder or Recorder(),
        clock=clock or FakeClock(),
        writes=WriteLog(),
        namespaces=namespaces,
    )


async def run_informer(
    transport: ScriptedTransport, until: Any, *, step: float = 1.0, steps: int = 200
) -> tuple[Informer, Collect, list[Any]]:
    """Run an informer on the fake clock, ``step`` seconds at a time, until ``until(records)``
    or ``steps`` steps."""
    records = Collect()
    clock = FakeClock()
    informer = informer_on(transport, recorder=Recorder(records), clock=clock)
    seen: list[Any] = []

    def listener(
        watch_type: str, obj: Obj, old: Obj | None, ref: ObjectRef, event_id: int, /
    ) -> None:
        seen.append((watch_type, obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))

    informer.add_listener(listener)
    task = asyncio.create_task(informer.run())
    for _ in range(steps):
        await asyncio.sleep(0)
        if until(records):
            break
        await clock.advance(step)  # lets back-off sleeps finish without real waiting
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return informer, records, seen


def test_list_then_watch_from_the_lists_resource_version_with_bookmarks() -> None:
    transport = ScriptedTransport(
        [listing("10", cm("a", "5"))],
        [[{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "11"}}},
          {"type": "MODIFIED", "object": cm("a", "12")}]],
    )  # fmt: skip

    async def scenario() -> None:
        informer, _, seen = await run_informer(transport, lambda r: len(r.where(Stage.EVENT)) == 2)
        assert seen == [("ADDED", "a", "5"), ("MODIFIED", "a", "12")]
        params = transport.watch_params[0]
        assert params["resourceVersion"] == "10" and params["allowWatchBookmarks"] == "true"
        assert informer.synced.is_set() and informer.get("ns", "a") == cm("a", "12")

    asyncio.run(scenario())


def test_410_gone_lists_again_and_turns_differences_into_events() -> None:
    transport = ScriptedTransport(
        [listing("10", cm("a", "5"), cm("b", "6")), listing("30", cm("a", "25"), cm("c", "26"))],
        [[WatchExpired(410, "Expired", "too old resource version", "WATCH", "/x")]],
    )

    async def scenario() -> None:
        informer, records, seen = await run_informer(
            transport, lambda r: len(r.where(Stage.WATCH, "listed")) == 2
        )
        assert seen == [
            ("ADDED", "a", "5"),
            ("ADDED", "b", "6"),
            ("MODIFIED", "a", "25"),
            ("ADDED", "c", "26"),
            ("DELETED", "b", "6"),
        ]
        gone = records.where(Stage.WATCH, "gone")
        assert len(gone) == 1 and "too old" in gone[0].reason
        # After 410 the old version is useless: a consistent read, not one from the cache.
        assert "resourceVersion" not in transport.list_params[1]
        assert sorted(informer.store) == ["ns/a", "ns/c"]

    asyncio.run(scenario())


def test_an_error_event_in_the_stream_and_a_dropped_stream_are_recorded_and_retried() -> None:
    forbidden = ApiError(403, "Forbidden", 'configmaps is forbidden: User "u"', "GET", "/x")
    failure = {
        "type": "ERROR",
        "object": {"code": 500, "reason": "InternalError", "message": "etcd"},
    }
    transport = ScriptedTransport(
        [listing("10"), forbidden, listing("20", cm("a", "15"))], [[failure]]
    )

    async def scenario() -> None:
        informer, records, seen = await run_informer(
            transport, lambda r: len(r.where(Stage.WATCH, "listed")) == 2
        )
        errors = [(r.outcome, r.attrs.get("status")) for r in records.where(Stage.WATCH)]
        assert ("error", 500) in errors and ("forbidden", 403) in errors
        assert seen == [("ADDED", "a", "15")]
        assert informer.last_error == ""  # cleared by the successful list

    asyncio.run(scenario())


def _fields(*entries: tuple[str, str]) -> dict[str, Any]:
    managed = [{"manager": manager, "time": time} for manager, time in entries]
    return {"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "5",
                         "managedFields": managed}}  # fmt: skip


def test_the_writer_is_the_newest_manager_or_all_that_share_its_second() -> None:
    newest_last = _fields(("kubectl", "2026-01-01T00:00:01Z"), ("ctl", "2026-01-01T00:00:02Z"))
    newest_first = _fields(("ctl", "2026-01-01T00:00:02Z"), ("kubectl", "2026-01-01T00:00:01Z"))
    assert last_writer(newest_last) == last_writer(newest_first) == "ctl"
    same_second = _fields(
        ("kubectl", "2026-01-01T00:00:02Z"),
        ("ctl", "2026-01-01T00:00:02Z"),
        ("ctl", "2026-01-01T00:00:02Z"),  # spec and status subresource: one manager
        ("old", "2026-01-01T00:00:01Z"),
    )
    assert last_writer(same_second) == "one of kubectl, ctl"
    assert last_writer({"metadata": {"name": "a"}}) == ""


def test_a_deleted_event_names_no_writer_the_last_update_is_not_the_deleter() -> None:
    obj = _fields(("kubectl", "2026-01-01T00:00:01Z"))
    deleted = {"metadata": {**obj["metadata"], "resourceVersion": "6"}}
    transport = ScriptedTransport([listing("10", obj)], [[{"type": "DELETED", "object": deleted}]])

    async def scenario() -> None:
        _, records, _ = await run_informer(transport, lambda r: len(r.where(Stage.EVENT)) == 2)
        added, gone = records.where(Stage.EVENT)
        assert (added.outcome, added.attrs["writer"]) == ("ADDED", "kubectl")
        assert (gone.outcome, gone.attrs["writer"]) == ("DELETED", "")

    asyncio.run(scenario())


class ForbiddenWatch(ScriptedTransport):
    """Lists always succeed; every watch is refused with 403, as for an identity that may
    list a kind but not watch it."""

    def __init__(self) -> None:
        super().__init__([], [])

    async def request(
        self, method: str, path: str, params: Mapping[str, str] | None = None, **_: Any
    ) -> Any:
        self.list_params.append(params or {})
        return listing("10", cm("a", "5"))

    async def watch(
        self,
        path: str,
        params: Mapping[str, str],
        opened: Callable[[], None] | None = None,
        **_: Any,
    ) -> AsyncIterator[Any]:
        self.watch_params.append(params)
        for _ in ():  # an async generator, like the real one, that yields nothing
            yield {}
        raise ApiError(403, "Forbidden", 'User "u" cannot watch resource "configmaps"', "GET", "/x")


def test_a_forbidden_watch_backs_off_to_30s_and_relists_from_the_cache() -> None:
    transport = ForbiddenWatch()

    async def scenario() -> None:
        # One minute, in tenths of a second.
        informer, records, _ = await run_informer(transport, lambda _: False, step=0.1, steps=600)
        # 0.8 s doubling (a list that succeeds does not reset it): 7 lists in a minute.
        assert 5 <= len(transport.list_params) <= 8
        lists = [r.time for r in records.where(Stage.WATCH, "listed")]
        gaps = [later - earlier for earlier, later in itertools.pairwise(lists)]
        assert len(gaps) >= 4
        assert all(later > 1.5 * earlier for earlier, later in itertools.pairwise(gaps))
        assert 0.8 <= gaps[0] <= 1.0
        # The first list is a consistent read; the re-lists come from the API server's cache.
        assert "resourceVersion" not in transport.list_params[0]
        assert transport.list_params[1]["resourceVersion"] == "10"
        assert transport.list_params[1]["resourceVersionMatch"] == "NotOlderThan"
        assert informer.synced.is_set()
        assert len(records.where(Stage.WATCH, "forbidden")) == len(transport.list_params)

    asyncio.run(scenario())


def test_a_dropped_stream_resumes_from_its_last_version_without_a_list() -> None:
    dropped = aiohttp.ClientPayloadError("Response payload is not completed")
    transport = ScriptedTransport(
        [listing("10", cm("a", "5"))],
        [[{"type": "MODIFIED", "object": cm("a", "12")}, dropped]],
    )

    async def scenario() -> None:
        _, records, seen = await run_informer(
            transport, lambda r: len(r.where(Stage.WATCH, "resumed")) == 1
        )
        assert len(transport.list_params) == 1
        assert [p["resourceVersion"] for p in transport.watch_params] == ["10", "12"]
        outcomes = [r.outcome for r in records.where(Stage.WATCH)]
        assert outcomes == ["started", "listed", "synced", "disconnected", "resumed"]
        assert seen == [("ADDED", "a", "5"), ("MODIFIED", "a", "12")]

    asyncio.run(scenario())


def test_a_listener_changing_the_objects_it_got_changes_nothing_cached() -> None:
    informer = informer_on(ScriptedTransport([], []), namespaces=())

    def vandal(
        watch_type: str, obj: Obj, old: Obj | None, ref: ObjectRef, event_id: int, /
    ) -> None:
        for got in (obj, old or {}):
            cast(dict[str, Any], got).setdefault("metadata", {})["labels"] = {"changed": "yes"}

    informer.add_listener(vandal)
    informer._apply("ADDED", cm("a", "5"))
    informer._apply("MODIFIED", cm("a", "6"))
    informer._apply("ADDED", cm("b", "7"))
    assert informer.list() == [cm("a", "6"), cm("b", "7")]
    read = cast(dict[str, Any], informer.get("ns", "a"))
    read["metadata"]["name"] = "changed by a reader"
    assert informer.get("ns", "a") == cm("a", "6")


def test_an_informer_lists_at_most_four_namespaces_at_once() -> None:
    class Slow(ScriptedTransport):
        in_flight = most = 0

        async def request(
            self, method: str, path: str, params: Mapping[str, str] | None = None, **_: Any
        ) -> Any:
            Slow.in_flight += 1
            Slow.most = max(Slow.most, Slow.in_flight)
            for _turn in range(5):  # the others get every chance to start theirs meanwhile
                await asyncio.sleep(0)
            Slow.in_flight -= 1
            return await super().request(method, path, params)

    namespaces = [f"ns-{i}" for i in range(10)]
    informer = informer_on(Slow([listing(str(i)) for i in range(10)], []), namespaces)

    async def scenario() -> None:
        task = asyncio.create_task(informer.run())
        await asyncio.wait_for(informer.synced.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert Slow.most == 4
