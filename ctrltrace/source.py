"""Informers: one shared list/watch and cache per kind, feeding every controller that watches it.

Owns the reflector loop (list, then watch from the list's resourceVersion with bookmarks;
list again on 410 Gone; reconnect with back-off when a stream ends or fails), the cache, and
the watch records: each event, and each failure with who, what and why (403, kind not served,
connection lost). Controllers subscribe listeners; the informer never decides what an event
means to them.
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import aiohttp

from ctrltrace.clock import Clock
from ctrltrace.kinds import Kind, KindNotFound, Resource, RestMapper
from ctrltrace.records import Obj, ObjectRef, Record, Recorder, Stage, Vocab, next_id
from ctrltrace.transport import ApiError, Json, Transport, WatchExpired

_LIST_PAGE = 500
_BACKOFF_START, _BACKOFF_CAP = 0.8, 30.0  # client-go's reflector back-off


class Listener(Protocol):
    def __call__(
        self, watch_type: str, obj: Obj, old: Obj | None, ref: ObjectRef, event_id: int, /
    ) -> None: ...


class WriteLog:
    """Pairs our own writes with the watch events they cause, whichever arrives first.

    The write's answer and its watch event race: the event can be dispatched before the
    client has read the answer. Both sides report the resourceVersion here; whoever comes
    second learns the other's record id.
    """

    def __init__(self, capacity: int = 50_000) -> None:
        self._writes: OrderedDict[str, int] = OrderedDict()
        self._events: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity
        self._in_flight = 0

    def write_started(self) -> None:
        self._in_flight += 1

    def write_failed(self) -> None:
        self._in_flight -= 1

    def write_returned(self, resource_version: str, write_id: int) -> int | None:
        """Remember a write; the id of its event if that came back already."""
        self._in_flight -= 1
        if (event_id := self._events.pop(resource_version, None)) is not None:
            return event_id
        self._remember(self._writes, resource_version, write_id)
        return None

    def event_seen(self, resource_version: str, event_id: int) -> int | None:
        """The id of the write that produced this version, if one is known yet."""
        if (write_id := self._writes.pop(resource_version, None)) is not None:
            return write_id
        if self._in_flight:  # only then can this event's write answer still be on its way
            self._remember(self._events, resource_version, event_id)
        return None

    def _remember(
        self, table: OrderedDict[str, int], resource_version: str, record_id: int
    ) -> None:
        table[resource_version] = record_id
        if len(table) > self._capacity:
            table.popitem(last=False)


def cache_key(obj: Obj) -> str:
    meta = obj["metadata"]
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else meta["name"]


def last_writer(obj: Obj) -> str:
    """The field manager of the newest managedFields entry: who wrote this version."""
    entries = obj["metadata"].get("managedFields") or ()
    newest = max(entries, key=lambda entry: entry.get("time", ""), default=None)
    return "" if newest is None else str(newest.get("manager", ""))


class Informer:
    def __init__(
        self,
        transport: Transport,
        mapper: RestMapper,
        kind: Kind,
        *,
        recorder: Recorder,
        clock: Clock,
        writes: WriteLog,
        namespaces: Sequence[str] = (),
        label_selector: str = "",
    ) -> None:
        self.kind = kind
        self._transport = transport
        self._mapper = mapper
        self._recorder = recorder
        self._clock = clock
        self._writes = writes
        self.namespaces = tuple(namespaces) or ("",)
        self.label_selector = label_selector
        self.store: dict[str, Obj] = {}
        self.synced = asyncio.Event()
        self.resource: Resource | None = None
        self.last_error = ""
        self._listeners: list[Listener] = []
        self._synced_namespaces: set[str] = set()

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.store.get(f"{namespace}/{name}" if namespace else name)

    def list(self, namespace: str = "") -> list[Obj]:
        if not namespace:
            return list(self.store.values())
        prefix = f"{namespace}/"
        return [obj for key, obj in self.store.items() if key.startswith(prefix)]

    async def run(self) -> None:
        """List and watch every namespace until cancelled."""
        async with asyncio.TaskGroup() as group:
            for namespace in self.namespaces:
                group.create_task(self._reflect(namespace))

    # -- the reflector -----------------------------------------------------------------------

    async def _reflect(self, namespace: str) -> None:
        delay = _BACKOFF_START
        while True:
            try:
                resource = await self._mapper.resolve(self.kind)
                self.resource = resource
                resource_version = await self._list(resource, namespace)
                delay = _BACKOFF_START
                while True:
                    resource_version = await self._watch(resource, namespace, resource_version)
            except WatchExpired as error:
                self._record_watch(
                    "gone", f"watch expired, listing again: {error.message}", namespace
                )
                continue
            except KindNotFound as error:
                self._record_failure("kind_not_found", str(error), namespace)
            except ApiError as error:
                outcome = "forbidden" if error.status == 403 else "error"
                self._record_failure(outcome, error.message or str(error), namespace, error.status)
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as error:
                detail = str(error) or type(error).__name__
                self._record_failure("disconnected", f"connection failed: {detail}", namespace)
            await self._clock.sleep(delay * random.uniform(1.0, 1.2))  # noqa: S311
            delay = min(delay * 2, _BACKOFF_CAP)

    def _params(self) -> dict[str, str]:
        return {"labelSelector": self.label_selector} if self.label_selector else {}

    async def _list(self, resource: Resource, namespace: str) -> str:
        listed: dict[str, Obj] = {}
        params = {**self._params(), "limit": str(_LIST_PAGE)}
        while True:
            page: Json = await self._transport.request(
                "GET", resource.path(namespace), params=params
            )
            api_version, kind = self.kind.api_version, self.kind.kind
            for item in page.get("items", []):
                # List items omit apiVersion/kind; watch events carry them. Make both alike.
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                listed[cache_key(item)] = item
            continuation = page["metadata"].get("continue")
            if not continuation:
                break
            params["continue"] = continuation
        self._replace(listed, namespace)
        self.last_error = ""
        resource_version = str(page["metadata"].get("resourceVersion", ""))
        self._record_watch(
            "listed", f"listed {len(listed)} at resourceVersion {resource_version}", namespace
        )
        self._synced_namespaces.add(namespace)
        if len(self._synced_namespaces) == len(self.namespaces) and not self.synced.is_set():
            self.synced.set()
            self._record_watch("synced", f"cache synced: {len(self.store)} objects", namespace)
        return resource_version

    def _replace(self, listed: dict[str, Obj], namespace: str) -> None:
        """Adopt a fresh list, turning differences from the cache into events (after 410)."""
        for key, obj in listed.items():
            old = self.store.get(key)
            if old is None:
                self._apply("ADDED", obj)
            elif old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._apply("MODIFIED", obj)
        prefix = f"{namespace}/" if namespace else ""
        gone = [key for key in self.store if key.startswith(prefix) and key not in listed]
        for key in gone:
            self._apply("DELETED", self.store[key])

    async def _watch(self, resource: Resource, namespace: str, resource_version: str) -> str:
        params = {
            **self._params(),
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            # The server ends the stream after this; we then continue from the last version.
            "timeoutSeconds": str(random.randint(240, 300)),  # noqa: S311
        }
        async for event in self._transport.watch(resource.path(namespace), params):
            watch_type, obj = event.get("type", ""), event.get("object") or {}
            if watch_type == "ERROR":
                code = int(obj.get("code", 500))
                raise (WatchExpired if code == 410 else ApiError)(
                    code, obj.get("reason", ""), obj.get("message", ""), "WATCH", resource.path()
                )
            resource_version = obj["metadata"].get("resourceVersion", resource_version)
            if watch_type != "BOOKMARK":
                self._apply(watch_type, obj)
        return resource_version

    def _apply(self, watch_type: str, obj: Obj) -> None:
        key = cache_key(obj)
        if watch_type == "DELETED":
            old = self.store.pop(key, None)
        else:
            old = self.store.get(key)
            self.store[key] = obj
            # As in client-go, the cache decides: an ADDED for a cached object is an update.
            watch_type = "MODIFIED" if old is not None else "ADDED"
        ref = ObjectRef.of(obj, self.kind.api_version, self.kind.kind)
        event_id = self._record_event(watch_type, obj, ref)
        for listener in self._listeners:
            listener(watch_type, obj, old if watch_type == "MODIFIED" else None, ref, event_id)

    # -- records -----------------------------------------------------------------------------

    def _record_event(self, watch_type: str, obj: Obj, ref: ObjectRef) -> int:
        event_id = next_id()
        write_id = self._writes.event_seen(ref.resource_version, event_id)
        attrs: dict[str, str | bool] = {
            "writer": last_writer(obj),
            "self_caused": write_id is not None,
        }
        meta = obj["metadata"]
        deleting = meta.get("deletionTimestamp")
        if deleting:  # rare: only then are the finalizers' names worth a record
            attrs[Vocab.DELETION_TIMESTAMP] = deleting
            attrs[Vocab.FINALIZERS] = ",".join(meta.get("finalizers") or ())
        self._recorder.emit(
            Record(
                time=self._clock.wall(),
                stage=Stage.EVENT,
                outcome=watch_type,
                object=ref,
                reason="the controller's own write coming back" if write_id else "",
                cause_ids=(write_id,) if write_id else (),
                attrs=attrs,
                id=event_id,
            )
        )
        return event_id

    def _record_watch(self, outcome: str, reason: str, namespace: str, status: int = 0) -> None:
        attrs: dict[str, str | int] = {"kind": self.kind.kind, "api_version": self.kind.api_version}
        if namespace:
            attrs["namespace"] = namespace
        if status:
            attrs["status"] = status
        if self.resource is not None:
            attrs["resource"] = self.resource.group_resource
        self._recorder.emit(
            Record(
                time=self._clock.wall(),
                stage=Stage.WATCH,
                outcome=outcome,
                reason=reason,
                attrs=attrs,
            )
        )

    def _record_failure(self, outcome: str, reason: str, namespace: str, status: int = 0) -> None:
        self.last_error = f"{outcome}: {reason}"
        self._record_watch(outcome, reason, namespace, status)
