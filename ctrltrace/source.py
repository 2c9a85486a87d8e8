"""Informers: one shared list/watch and cache per kind, feeding every controller that watches it.

Owns the reflector loop (list, then watch from the list's resourceVersion with bookmarks;
list again on 410 Gone; reconnect with back-off when a stream ends or fails), the cache, and
the watch records: each event, and each failure with who, what and why (403, kind not served,
connection lost). Controllers subscribe listeners; the informer never decides what an event
means to them.

The cache holds the objects shaped by an optional transform (by default the manager drops
``managedFields``) and, for a metadata-only informer, metadata alone, each as one immutable
``marshal`` block: decoded JSON costs about twice its text in small dicts and strings, a block
about its text, and nobody can change a block. Every read (``get``, ``list``, ``by_index``,
the ``old`` object a listener gets) decodes a fresh copy that is the caller's to change; the
decoding is the copy the client needs anyway. A namespace index and the field indexes are kept
up to date with the store, so listing a namespace or looking up an indexed value touches only
the objects it returns.

Over 500 lines because ``Informer`` is one object: its reflector loop, store, indexes and
records all change the same state (the store, the versions per namespace, the sync status)
under one event loop, as client-go's reflector and indexer do together.
"""

from __future__ import annotations

import asyncio
import builtins
import marshal
import random
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, cast

import aiohttp
import structlog

from ctrltrace.clock import Clock
from ctrltrace.kinds import Kind, KindNotFound, Resource, RestMapper
from ctrltrace.records import Obj, ObjectRef, Recorder, next_id
from ctrltrace.transport import ApiError, Json, Transport, WatchExpired, api_error
from ctrltrace.vocabulary import Attr, Attrs, EventOutcome, WatchOutcome, event_record, watch_record

_LIST_PAGE = 500
# Lists of one informer's namespaces at once. Each holds a connection and a decoded page: more
# at once leave idle connections and freed pages the process keeps, and do not list faster.
_PARALLEL_LISTS = 4
_BACKOFF_START, _BACKOFF_CAP = 0.8, 30.0  # client-go's reflector back-off
_BACKOFF_RESET = 120.0  # client-go forgets the back-off after this long without a failure
_SHORT_WATCH = 1.0  # a stream that ends sooner with no event is a failure (client-go's rule)


class _Backoff:
    """client-go's reflector back-off: 0.8 s doubling to 30 s, with jitter. A list that
    succeeds does not reset it (the watch after it may keep failing); two minutes without a
    failure do."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._delay = 0.0
        self._last = float("-inf")

    def next(self) -> float:
        now = self._clock.monotonic()
        fresh = now - self._last > _BACKOFF_RESET
        self._delay = _BACKOFF_START if fresh else min(self._delay * 2, _BACKOFF_CAP)
        self._last = now
        return self._delay * random.uniform(1.0, 1.2)  # noqa: S311


# What the API server turns a list or watch into when asked for metadata alone.
_METADATA_ONLY = (
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json",
)


class Listener(Protocol):
    """Told each event: ``obj`` (shared by every listener of the informer) and, for an update,
    ``old``, the object as cached before it; neither is the cache's own."""

    def __call__(
        self, watch_type: str, obj: Obj, old: Obj | None, ref: ObjectRef, event_id: int, /
    ) -> None: ...


class Transform(Protocol):
    """Shapes an object before the cache keeps it (it may change and return its argument).
    What it returns must stay decoded JSON (dicts, lists, str, int, float, bool, None): the
    cache keeps objects frozen with marshal, which refuses anything else."""

    def __call__(self, obj: Obj, /) -> Obj: ...


class IndexFunc(Protocol):
    """The values an object is indexed under (controller-runtime's IndexerFunc)."""

    def __call__(self, obj: Obj, /) -> Iterable[str]: ...


def drop_managed_fields(obj: Obj) -> Obj:
    """The default transform: ``managedFields`` is often half an object's size, and a reconciler
    rarely reads it (its own writes are attributed from the watch event, before the cache)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


def freeze(obj: Obj) -> bytes:
    """Decoded JSON (dicts, lists, strings, numbers, booleans, None) as one immutable block;
    marshal refuses anything else."""
    value: Any = obj  # no cast(): this runs once per event
    return marshal.dumps(value)


def thaw(block: bytes) -> dict[str, Any]:
    """A fresh copy of what ``freeze`` made, the caller's to change."""
    # Loads only what freeze made in this process: nothing untrusted.
    copy: dict[str, Any] = marshal.loads(block)  # noqa: S302
    return copy


def copy_object(obj: Obj) -> dict[str, Any]:
    """A deep copy of decoded JSON, made in C through marshal: faster than ``copy.deepcopy``
    (``python -m bench.cachedread`` measures both; bench/README.md has the figures)."""
    return thaw(freeze(obj))


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
    """Who wrote this version, as far as managedFields tell: the field manager of the newest
    entry; "one of X, Y" when several managers share the newest time (managedFields keep
    whole seconds only); "" when there is no entry."""
    entries = obj["metadata"].get("managedFields") or ()
    if len(entries) < 2:  # most objects: no choice to make (this runs once per event)
        return str(entries[0].get("manager", "")) if entries else ""
    newest = max((entry.get("time", "") for entry in entries), default="")
    managers = list(
        dict.fromkeys(str(e.get("manager", "")) for e in entries if e.get("time", "") == newest)
    )
    if len(managers) > 1:
        return "one of " + ", ".join(managers)
    return managers[0] if managers else ""


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
        transform: Transform | None = None,
        metadata_only: bool = False,
    ) -> None:
        self.kind = kind
        self._transport = transport
        self._mapper = mapper
        self._recorder = recorder
        self._clock = clock
        self._writes = writes
        self.namespaces = tuple(namespaces) or ("",)
        self.label_selector = label_selector
        self.store: dict[str, bytes] = {}  # key -> the object, frozen
        self.synced = asyncio.Event()
        self.resource: Resource | None = None
        self.last_error = ""
        self.transform = transform
        self.metadata_only = metadata_only
        # Extra request arguments: full objects need none.
        self._accept: tuple[dict[str, str], dict[str, str]] = (
            ({"accept": _METADATA_ONLY[0]}, {"accept": _METADATA_ONLY[1]})
            if metadata_only
            else ({}, {})
        )
        self._listeners: list[Listener] = []
        self._listing = asyncio.Semaphore(_PARALLEL_LISTS)
        self._synced_namespaces: set[str] = set()
        self._versions: dict[str, str] = {}  # namespace → the newest resourceVersion seen
        self._index_funcs: dict[str, IndexFunc] = {}
        # index name -> value -> keys of the objects indexed under it
        self._indexes: dict[str, dict[str, set[str]]] = {}
        # key -> its (index name, value) pairs, to unindex it
        self._indexed: dict[str, builtins.list[tuple[str, str]]] = {}
        # namespace -> key -> frozen object: listing a namespace touches only its objects
        self._in_namespace: dict[str, dict[str, bytes]] = {}
        self._log = structlog.get_logger("ctrltrace").bind(kind=str(kind))

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- the cache, read side ----------------------------------------------------------------

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of the cached object, the caller's to change."""
        block = self.store.get(f"{namespace}/{name}" if namespace else name)
        return None if block is None else thaw(block)

    def list(self, namespace: str = "") -> builtins.list[dict[str, Any]]:
        """Copies of the cached objects (of ``namespace``; all when empty)."""
        blocks = self.store if not namespace else self._in_namespace.get(namespace, {})
        return [thaw(block) for block in blocks.values()]

    def holds_namespace(self, namespace: str) -> bool:
        """Whether objects of ``namespace`` are cached (all are when no namespace was set)."""
        return "" in self.namespaces or namespace in self.namespaces

    @property
    def scope(self) -> str:
        """What this cache holds, in words, for errors that must not read as NotFound."""
        where = (
            "all namespaces"
            if "" in self.namespaces
            else f"namespace{'s' if len(self.namespaces) > 1 else ''} " + ", ".join(self.namespaces)
        )
        selector = f" with labels {self.label_selector}" if self.label_selector else ""
        return f"{self.kind} in {where}{selector}{' (metadata only)' if self.metadata_only else ''}"

    def add_index(self, name: str, func: IndexFunc) -> None:
        """Index every object (those cached already too) under the values ``func`` gives."""
        if name in self._index_funcs:
            raise ValueError(f"{self.kind} already has an index named {name!r}")
        self._index_funcs[name] = func
        self._indexes[name] = {}
        for key, block in self.store.items():
            self._index(key, thaw(block), name, func)

    @property
    def indexes(self) -> tuple[str, ...]:
        return tuple(self._index_funcs)

    def by_index(
        self, fields: Mapping[str, str], namespace: str = ""
    ) -> builtins.list[dict[str, Any]]:
        """Copies of the objects indexed under every (index name, value) of ``fields`` (in
        ``namespace`` if given), without a scan."""
        (first, value), *rest = fields.items()
        prefix = f"{namespace}/" if namespace else ""
        keys = [key for key in self._indexes[first].get(value, ()) if key.startswith(prefix)]
        for name, wanted in rest:
            indexed = self._indexes[name].get(wanted, set())
            keys = [key for key in keys if key in indexed]
        return [thaw(self.store[key]) for key in keys]

    # -- the cache, write side: only the reflector calls these -------------------------------

    def _keep(self, key: str, obj: Obj) -> None:
        if self._index_funcs:
            self._unindex(key)
            for name, func in self._index_funcs.items():
                self._index(key, obj, name, func)
        block = self.store[key] = freeze(obj)
        namespace, namespaced, _ = key.partition("/")
        if namespaced:
            members = self._in_namespace.get(namespace)
            if members is None:
                members = self._in_namespace[namespace] = {}
            members[key] = block

    def _drop(self, key: str) -> None:
        if self._index_funcs:
            self._unindex(key)
        namespace, namespaced, _ = key.partition("/")
        if namespaced and (members := self._in_namespace.get(namespace)) is not None:
            members.pop(key, None)
            if not members:
                del self._in_namespace[namespace]
        self.store.pop(key, None)

    def _index(self, key: str, obj: Obj, name: str, func: IndexFunc) -> None:
        try:
            values = list(dict.fromkeys(func(obj)))
        except Exception as error:  # user code: the object goes unindexed, the informer lives
            self._log.warning(
                "index function raised; object not indexed",
                index=name,
                object=key,
                error=f"{type(error).__name__}: {error}",
            )
            return
        index = self._indexes[name]
        pairs = self._indexed.setdefault(key, [])
        for value in values:
            index.setdefault(value, set()).add(key)
            pairs.append((name, value))

    def _unindex(self, key: str) -> None:
        for name, value in self._indexed.pop(key, ()):
            keys = self._indexes[name][value]
            keys.discard(key)
            if not keys:
                del self._indexes[name][value]

    def _name_kind(self, obj: Obj) -> None:
        # PartialObjectMetadata carries meta.k8s.io's apiVersion and kind: name the real one.
        named = cast(dict[str, Any], obj)
        named["apiVersion"], named["kind"] = self.kind.api_version, self.kind.kind

    async def run(self) -> None:
        """List and watch every namespace until cancelled."""
        async with asyncio.TaskGroup() as group:
            for namespace in self.namespaces:
                group.create_task(self._reflect(namespace))

    # -- the reflector -----------------------------------------------------------------------

    async def _reflect(self, namespace: str) -> None:
        """client-go's reflector: list, then watch from the list's version for as long as the
        server keeps that version; list again only when the watch cannot go on (410 Gone, a
        refused watch, a failed list), served from the API server's cache unless after 410."""
        backoff = _Backoff(self._clock)
        self._record_watch(WatchOutcome.STARTED, self._scope(namespace), namespace)
        started = self._clock.monotonic()
        must_list, quorum = True, True
        failing = False  # a failure happened and no watch has been accepted since
        while True:
            try:
                resource = await self._mapper.resolve(self.kind)
                self.resource = resource
                if must_list:
                    since = "" if quorum else self._versions.get(namespace, "")
                    async with self._listing:
                        await self._list(resource, namespace, since, started)
                    must_list, quorum = False, False
                opened = self._clock.monotonic()
                delivered = await self._watch(resource, namespace, resumed=failing)
                failing = False
                if delivered or self._clock.monotonic() - opened >= _SHORT_WATCH:
                    continue  # the server ended the stream on time: watch on, at once
                self._record_failure(
                    WatchOutcome.DISCONNECTED, "the watch ended at once without an event", namespace
                )
            except WatchExpired as error:
                self._record_watch(
                    WatchOutcome.GONE, f"watch expired, listing again: {error.message}", namespace
                )
                must_list, quorum = True, True
                continue
            except KindNotFound as error:
                self._record_failure(WatchOutcome.KIND_NOT_FOUND, str(error), namespace)
                must_list = True
            except ApiError as error:
                gone = await self._kind_gone() if error.status == 404 else None
                if gone is not None:
                    self._record_failure(WatchOutcome.KIND_NOT_FOUND, str(gone), namespace)
                else:
                    outcome = WatchOutcome.FORBIDDEN if error.status == 403 else WatchOutcome.ERROR
                    reason = error.message or str(error)
                    self._record_failure(outcome, reason, namespace, error.status)
                # Too many requests: the watch may go on later. Anything else the server
                # refused (a forbidden watch above all) needs a fresh list first.
                must_list = must_list or error.status != 429
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as error:
                detail = str(error) or type(error).__name__
                self._record_failure(
                    WatchOutcome.DISCONNECTED, f"connection failed: {detail}", namespace
                )
            failing = True
            await self._clock.sleep(backoff.next())

    async def _kind_gone(self) -> KindNotFound | None:
        """After a 404 from a kind that was served: why discovery no longer serves it (its CRD
        was deleted), or None when it still does."""
        self._mapper.forget(self.kind)
        try:
            await self._mapper.resolve(self.kind)
        except KindNotFound as gone:
            return gone
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError):
            return None
        return None

    def _scope(self, namespace: str) -> str:
        where = f"namespace {namespace}" if namespace else "all namespaces"
        selector = f", label selector {self.label_selector}" if self.label_selector else ""
        return f"watching {self.kind} in {where}{selector}"

    def _params(self) -> dict[str, str]:
        return {"labelSelector": self.label_selector} if self.label_selector else {}

    async def _list(
        self, resource: Resource, namespace: str, resource_version: str, started: float
    ) -> None:
        """List every page; from the API server's cache when ``resource_version`` is given
        (any state at least that new will do), else a consistent read. Each page is adopted as
        it arrives, so one page at a time is decoded, not the whole list; what the cache held
        and the list lacks is deleted at the end."""
        listed: set[str] = set()
        params = {**self._params(), "limit": str(_LIST_PAGE)}
        if resource_version:
            params |= {"resourceVersion": resource_version, "resourceVersionMatch": "NotOlderThan"}
        while True:
            page: Json = await self._transport.request(
                "GET", resource.path(namespace), params=params, **self._accept[0]
            )
            api_version, kind = self.kind.api_version, self.kind.kind
            for item in page.get("items", []):
                # List items omit apiVersion/kind; watch events carry them. Make both alike.
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                listed.add(self._adopt(item))
            continuation = page["metadata"].get("continue")
            if not continuation:
                break
            # A continued list is pinned to its first page's version; naming one is an error.
            params = {**self._params(), "limit": str(_LIST_PAGE), "continue": continuation}
        prefix = f"{namespace}/" if namespace else ""
        gone = [key for key in self.store if key.startswith(prefix) and key not in listed]
        for key in gone:
            self._apply(EventOutcome.DELETED, thaw(self.store[key]))
        self.last_error = ""
        resource_version = str(page["metadata"].get("resourceVersion", ""))
        self._versions[namespace] = resource_version
        self._record_watch(
            WatchOutcome.LISTED,
            f"listed {len(listed)} at resourceVersion {resource_version}",
            namespace,
        )
        self._synced_namespaces.add(namespace)
        if len(self._synced_namespaces) == len(self.namespaces) and not self.synced.is_set():
            self.synced.set()
            took = self._clock.monotonic() - started
            self._record_watch(
                WatchOutcome.SYNCED,
                f"cache synced: {len(self.store)} objects in {took:.1f}s",
                namespace,
                extra={Attr.OBJECTS: len(self.store), Attr.SECONDS: round(took, 3)},
            )

    def _adopt(self, obj: Obj) -> str:
        """Turn a listed object into an event unless the cache holds that version; its key."""
        key = cache_key(obj)
        cached = self.store.get(key)
        if cached is None:
            self._apply(EventOutcome.ADDED, obj)
        elif thaw(cached)["metadata"].get("resourceVersion") != obj["metadata"].get(
            "resourceVersion"
        ):
            self._apply(EventOutcome.MODIFIED, obj)
        return key

    async def _watch(self, resource: Resource, namespace: str, *, resumed: bool) -> int:
        """Apply events from the newest version seen until the stream ends; how many arrived.
        ``resumed``: a failure came before, so the server taking this watch ends it."""
        versions = self._versions
        resource_version = versions[namespace]
        params = {
            **self._params(),
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            # The server ends the stream after this; we then continue from the last version.
            "timeoutSeconds": str(random.randint(240, 300)),  # noqa: S311
        }
        delivered = 0

        def opened() -> None:  # the server took the watch: the failure is over
            if resumed:
                self._record_resumed(namespace, resource_version)

        path = resource.path(namespace)
        async for event in self._transport.watch(path, params, opened, **self._accept[1]):
            watch_type, obj = event.get("type", ""), event.get("object") or {}
            if watch_type == "ERROR":
                code = int(obj.get("code", 500))
                raise api_error(code, obj, "WATCH", resource.path())
            # Kept as it arrives: a stream that breaks resumes from here.
            versions[namespace] = obj["metadata"].get("resourceVersion", versions[namespace])
            delivered += 1
            if watch_type != "BOOKMARK":
                self._apply(watch_type, obj)
        return delivered

    def _apply(self, watch_type: str, obj: Obj) -> None:
        if self.metadata_only:
            self._name_kind(obj)
        key = cache_key(obj)
        cached = self.store.get(key)
        if watch_type == EventOutcome.DELETED:
            self._drop(key)
        else:
            # As in client-go, the cache decides: an ADDED for a cached object is an update.
            watch_type = EventOutcome.MODIFIED if cached is not None else EventOutcome.ADDED
        ref = ObjectRef.of(obj, self.kind.api_version, self.kind.kind)
        # Recorded before the transform, which may drop the managedFields naming the writer.
        event_id = self._record_event(watch_type, obj, ref)
        if self.transform is not None:
            obj = self.transform(obj)
        if watch_type != EventOutcome.DELETED:
            self._keep(key, obj)
        old = thaw(cached) if cached is not None and watch_type == EventOutcome.MODIFIED else None
        for listener in self._listeners:
            listener(watch_type, obj, old, ref, event_id)

    # -- records -----------------------------------------------------------------------------

    def _record_event(self, watch_type: str, obj: Obj, ref: ObjectRef) -> int:
        event_id = next_id()
        write_id = self._writes.event_seen(ref.resource_version, event_id)
        attrs: Attrs = {
            # A deletion leaves no trace in managedFields: its writer is unknown.
            Attr.WRITER: last_writer(obj) if watch_type != EventOutcome.DELETED else "",
            Attr.SELF_CAUSED: write_id is not None,
        }
        meta = obj["metadata"]
        deleting = meta.get("deletionTimestamp")
        if deleting:  # rare: only then are the finalizers' names worth a record
            attrs[Attr.DELETION_TIMESTAMP] = deleting
            attrs[Attr.FINALIZERS] = ",".join(meta.get("finalizers") or ())
        self._recorder.emit(
            event_record(
                self._clock.wall(),
                watch_type,
                "the controller's own write coming back" if write_id else "",
                ref=ref,
                write_id=write_id,
                attrs=attrs,
                id=event_id,
            )
        )
        return event_id

    def _record_watch(
        self,
        outcome: str,
        reason: str,
        namespace: str,
        status: int = 0,
        *,
        extra: Attrs | None = None,
    ) -> None:
        kind = self.kind
        attrs: Attrs = {Attr.KIND: kind.kind, Attr.API_VERSION: kind.api_version, **(extra or {})}
        if namespace:
            attrs[Attr.NAMESPACE] = namespace
        if self.label_selector:
            attrs[Attr.LABEL_SELECTOR] = self.label_selector
        if status:
            attrs[Attr.STATUS] = status
        if self.resource is not None:
            attrs[Attr.RESOURCE] = self.resource.group_resource
        self._recorder.emit(watch_record(self._clock.wall(), outcome, reason, attrs))

    def _record_resumed(self, namespace: str, resource_version: str) -> None:
        self.last_error = ""
        self._record_watch(
            WatchOutcome.RESUMED,
            f"watching again from resourceVersion {resource_version}",
            namespace,
        )

    def _record_failure(self, outcome: str, reason: str, namespace: str, status: int = 0) -> None:
        self.last_error = f"{outcome}: {reason}"
        self._record_watch(outcome, reason, namespace, status)
