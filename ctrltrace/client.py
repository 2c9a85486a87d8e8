"""The client a reconciler uses: reads from the informer cache, writes through the API.

Owns the read path and its guarantees: what it returns is the caller's own copy (the cache
is shared by every controller and listener, so a reconciler changing what it read must not
change what anyone reads next); a read the cache cannot answer (a kind nobody watches, a
namespace outside the manager's) raises ``NotCached`` naming the cache's scope, never
``NotFound``; ``api_reader`` reads the API server directly. It owns the writes a controller
makes (create, update, patch, server-side apply, delete with options, create-or-update and
create-or-patch) and records each with the resourceVersion the server returned, so that the
informer can recognise the controller's own writes when they come back as watch events.

It may not change the cache: only watch events do.

Over 500 lines because ``Client`` is controller-runtime's client surface, every verb over one
cache, transport and write log; the verbs share ``_write`` and the read path, and split by verb
they would share them across modules.
"""

from __future__ import annotations

import builtins
import enum
import inspect
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ctrltrace.clock import Clock
from ctrltrace.events import Event, EventType
from ctrltrace.kinds import Kind, RestMapper
from ctrltrace.predicates import LabelSelector
from ctrltrace.records import Obj, ObjectRef, Recorder, next_id
from ctrltrace.source import Informer, WriteLog, copy_object
from ctrltrace.transport import Json, NotFound, Transport
from ctrltrace.vocabulary import WriteOutcome, write_record

_PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",  # JSON is YAML
}


class NotCached(LookupError):
    """A read the cache cannot answer: the kind is not cached, or the namespace is outside
    the cache's. Not ``NotFound``: the object may well exist. Read it with ``api_reader``, or
    widen the cache (watch the kind, add the namespace)."""

    def __init__(self, message: str, kind: Kind, namespace: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.namespace = namespace


class OperationResult(enum.StrEnum):
    """What ``create_or_update`` / ``create_or_patch`` did (controllerutil.OperationResult)."""

    UNCHANGED = "unchanged"
    CREATED = "created"
    UPDATED = "updated"
    UPDATED_STATUS = "updated_status"  # object and status
    UPDATED_STATUS_ONLY = "updated_status_only"


class Propagation(enum.StrEnum):
    """DeleteOptions.propagationPolicy."""

    BACKGROUND = "Background"
    FOREGROUND = "Foreground"
    ORPHAN = "Orphan"


class Mutate(Protocol):
    """Brings an object to the state the controller wants, in place (controllerutil's
    MutateFn). It may be ``async``. It must not change the object's name or namespace."""

    def __call__(self, obj: dict[str, Any], /) -> Awaitable[None] | None: ...


@dataclass(frozen=True, slots=True)
class _Scope:
    controller: str = ""
    reconcile_id: str = ""


def _target(api_version: str, kind: str, name: str, namespace: str) -> Json:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
    }


def _typed(items: list[Json], api_version: str, kind: str) -> list[Json]:
    # The API's list items omit apiVersion and kind; watch events and single reads carry them.
    for item in items:
        item.setdefault("apiVersion", api_version)
        item.setdefault("kind", kind)
    return items


class Reader:
    """Reads straight from the API server (controller-runtime's API reader): for the reads
    that must be fresh (just after a write, before acting on a deletion) or that the cache
    does not hold. Every call is a request; nothing is cached."""

    def __init__(self, transport: Transport, mapper: RestMapper) -> None:
        self._transport = transport
        self._mapper = mapper

    async def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> Json:
        """The object as the server has it now. Raises NotFound, Forbidden, ApiError."""
        resource = await self._mapper.resolve(Kind(api_version, kind))
        return await self._transport.request("GET", resource.path(namespace, name))

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str = "",
        *,
        label_selector: str = "",
        field_selector: str = "",
    ) -> list[Json]:
        """Every object (of ``namespace``; all when empty) matching the selectors. The field
        selector is the server's: it supports only the fields the kind declares."""
        resource = await self._mapper.resolve(Kind(api_version, kind))
        params = {
            name: value
            for name, value in (
                ("labelSelector", label_selector),
                ("fieldSelector", field_selector),
            )
            if value
        }
        listing = await self._transport.request("GET", resource.path(namespace), params=params)
        return _typed(listing.get("items") or [], api_version, kind)


class Client:
    """What ``ctx.client`` is. Reads come from the cache, copied; writes go to the server."""

    def __init__(
        self,
        transport: Transport,
        mapper: RestMapper,
        informers: Mapping[Kind, Informer],
        *,
        recorder: Recorder,
        clock: Clock,
        writes: WriteLog,
        field_manager: str = "ctrltrace",
    ) -> None:
        self._transport = transport
        # Names this manager in managedFields, so explain can say who wrote each version.
        self.field_manager = field_manager
        self._mapper = mapper
        self._informers = informers
        self._recorder = recorder
        self._clock = clock
        self._writes = writes
        self._scope = _Scope()
        self.api_reader = Reader(transport, mapper)

    def scoped(self, controller: str, reconcile_id: str) -> Client:
        """The same client, with writes attributed to one reconcile."""
        scoped = object.__new__(Client)
        scoped.__dict__.update(self.__dict__)
        scoped._scope = _Scope(controller, reconcile_id)
        return scoped

    # -- reads -------------------------------------------------------------------------------

    async def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> Json:
        """A copy of the cached object, yours to change.

        Raises NotFound (not in the cache, which holds every object of its scope),
        NotCached (the kind or namespace is not cached). While the kind's cache is still
        syncing, the read goes to the API server.
        """
        informer = await self._informer(Kind(api_version, kind), namespace)
        if informer is None:
            return await self.api_reader.get(api_version, kind, name, namespace)
        found = informer.get(namespace, name)
        if found is None:
            target = f"{namespace}/{name}" if namespace else name
            selected = (
                f" (the cache holds only those with labels {informer.label_selector})"
                if informer.label_selector
                else ""
            )
            raise NotFound(404, "NotFound", f"{kind} {target} not found{selected}", "GET", "cache")
        return found

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str = "",
        *,
        label_selector: str | Mapping[str, Any] = "",
        matching_fields: Mapping[str, str] | None = None,
    ) -> list[Json]:
        """Copies of the cached objects (of ``namespace``; every cached one when empty), each
        with ``apiVersion`` and ``kind``.

        ``label_selector`` filters as the API's does (kubectl's grammar or a LabelSelector
        mapping). ``matching_fields`` looks objects up in field indexes registered with
        ``Manager.index_field`` (all must match), without scanning; a field with no index
        raises ValueError. Raises NotCached as ``get`` does.
        """
        cache_kind = Kind(api_version, kind)
        informer = await self._informer(cache_kind, namespace)
        if informer is None:
            if matching_fields:
                raise NotCached(
                    f"{cache_kind}: matching_fields needs the cache, which is still syncing",
                    cache_kind,
                    namespace,
                )
            selector = (
                label_selector
                if isinstance(label_selector, str)
                else LabelSelector(label_selector).selector
            )
            return await self.api_reader.list(api_version, kind, namespace, label_selector=selector)
        found = (
            self._by_fields(informer, matching_fields, namespace)
            if matching_fields
            else informer.list(namespace)
        )
        if label_selector:
            labels = LabelSelector(label_selector)
            found = [
                obj
                for obj in found
                if labels.check(Event(EventType.GENERIC, obj, None, api_version, kind)).allowed
            ]
        return _typed(found, api_version, kind)

    def _by_fields(
        self, informer: Informer, fields: Mapping[str, str], namespace: str
    ) -> builtins.list[Json]:
        missing = [name for name in fields if name not in informer.indexes]
        if missing:
            known = ", ".join(informer.indexes) or "none"
            raise ValueError(
                f"{informer.kind} has no index for {', '.join(missing)} (indexes: {known}); "
                "register one with Manager.index_field"
            )
        return informer.by_index(fields, namespace)

    async def _informer(self, kind: Kind, namespace: str) -> Informer | None:
        """The synced informer that holds ``namespace`` of ``kind``; None while it syncs.

        Raises NotCached when no informer could ever answer.
        """
        informer = self._informers.get(kind)
        if informer is None:
            cached = ", ".join(sorted(str(k) for k in self._informers)) or "none"
            raise NotCached(
                f"{kind} is not cached (cached kinds: {cached}): watch it with for_/owns/"
                "watches or Manager.index_field, or read it with client.api_reader",
                kind,
                namespace,
            )
        if namespace and not informer.holds_namespace(namespace):
            resource = informer.resource or await self._mapper.resolve(kind)
            if resource.namespaced:
                raise NotCached(
                    f"{kind} in namespace {namespace} is not cached: the cache holds "
                    f"{informer.scope}; read it with client.api_reader",
                    kind,
                    namespace,
                )
        return informer if informer.synced.is_set() else None

    # -- writes ------------------------------------------------------------------------------

    async def create(self, obj: Obj) -> Json:
        """Raises AlreadyExists, Invalid, Forbidden, ApiError."""
        return await self._write(WriteOutcome.CREATE, "POST", obj, name=False)

    async def update(self, obj: Obj) -> Json:
        """Replace the object; its ``metadata.resourceVersion`` makes it conditional.
        Raises Conflict (changed since read), NotFound, Invalid, Forbidden, ApiError."""
        return await self._write(WriteOutcome.UPDATE, "PUT", obj)

    async def update_status(self, obj: Obj) -> Json:
        """Replace the status subresource. Raises as ``update`` does."""
        return await self._write(WriteOutcome.UPDATE_STATUS, "PUT", obj, subresource="status")

    async def patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        patch: Any,
        *,
        namespace: str = "",
        patch_type: str = "merge",
        subresource: str = "",
    ) -> Json:
        """``patch_type``: merge, json or strategic. Raises NotFound, Conflict, Invalid,
        Forbidden, ApiError."""
        return await self._write(
            WriteOutcome.PATCH,
            "PATCH",
            _target(api_version, kind, name, namespace),
            body=patch,
            content_type=_PATCH_TYPES[patch_type],
            subresource=subresource,
        )

    async def apply(
        self,
        obj: Obj,
        *,
        field_manager: str = "",
        force: bool = False,
        subresource: str = "",
    ) -> Json:
        """Server-side apply: ``obj`` states the fields this field manager owns (name it with
        ``field_manager``; the manager's name by default). A field another manager owns
        makes it raise Conflict unless ``force``, which takes the field over, as a
        controller should. Creates the object if it does not exist. Raises Conflict,
        Invalid, Forbidden, ApiError."""
        params = {"fieldManager": field_manager or self.field_manager}
        if force:
            params["force"] = "true"
        return await self._write(
            WriteOutcome.APPLY,
            "PATCH",
            obj,
            body=obj,
            content_type=_PATCH_TYPES["apply"],
            subresource=subresource,
            params=params,
        )

    async def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str = "",
        *,
        propagation: Propagation | None = Propagation.BACKGROUND,
        uid: str = "",
        resource_version: str = "",
        grace_period_seconds: int | None = None,
        dry_run: bool = False,
    ) -> Json:
        """Delete an object; answers with it (deletionTimestamp set, if finalizers remain) or
        with a Status.

        ``propagation`` defaults to Background: dependents are deleted by the garbage
        collector after the object. controller-runtime sends no policy, which lets the server
        choose, and for ``batch/v1`` Jobs (and ReplicationControllers) the server chooses
        Orphan: a Job deleted that way leaves its Pods running. Pass None to let the server
        choose. ``uid`` and ``resource_version`` are preconditions (Conflict if they no
        longer hold). ``dry_run`` asks the server to check without deleting (not recorded
        as a write). Raises NotFound, Conflict, Forbidden, ApiError.
        """
        options: Json = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation is not None:
            options["propagationPolicy"] = str(propagation)
        preconditions = {
            field: value
            for field, value in (("uid", uid), ("resourceVersion", resource_version))
            if value
        }
        if preconditions:
            options["preconditions"] = preconditions
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        target = _target(api_version, kind, name, namespace)
        if dry_run:
            options["dryRun"] = ["All"]
            resource = await self._mapper.resolve(Kind(api_version, kind))
            return await self._transport.request(
                "DELETE", resource.path(namespace, name), body=options
            )
        return await self._write(WriteOutcome.DELETE, "DELETE", target, body=options)

    async def create_or_update(self, obj: Obj, mutate: Mutate) -> tuple[Json, OperationResult]:
        """controllerutil.CreateOrUpdate: read the object named by ``obj`` (cache, or the API
        if the kind is not cached or cached as metadata only); if it is missing, ``mutate``
        ``obj`` and create it, otherwise ``mutate`` the object read and update it if that
        changed anything.
        Returns what the server answered (or the object read, if unchanged) and what was
        done. Raises Conflict when the object changed meanwhile: return the error from
        Reconcile and the retry reads it again."""
        current, desired = await self._read_or_create(obj, mutate)
        if current is None:
            return desired, OperationResult.CREATED
        if desired == current:
            return current, OperationResult.UNCHANGED
        return await self.update(desired), OperationResult.UPDATED

    async def create_or_patch(self, obj: Obj, mutate: Mutate) -> tuple[Json, OperationResult]:
        """controllerutil.CreateOrPatch: as ``create_or_update``, but sends only what
        ``mutate`` changed, as merge patches: one for the object, one for its status
        subresource if the status changed."""
        current, desired = await self._read_or_create(obj, mutate)
        if current is None:
            return desired, OperationResult.CREATED
        meta = desired["metadata"]
        api_version, kind = desired["apiVersion"], desired["kind"]
        where = {"namespace": meta.get("namespace", "")}
        main = merge_patch(
            {k: v for k, v in current.items() if k != "status"},
            {k: v for k, v in desired.items() if k != "status"},
        )
        status = merge_patch({"status": current.get("status")}, {"status": desired.get("status")})
        answer = current
        if main:
            answer = await self.patch(api_version, kind, meta["name"], main, **where)
        if status:
            answer = await self.patch(
                api_version, kind, meta["name"], status, subresource="status", **where
            )
        if main and status:
            return answer, OperationResult.UPDATED_STATUS
        if status:
            return answer, OperationResult.UPDATED_STATUS_ONLY
        return answer, OperationResult.UPDATED if main else OperationResult.UNCHANGED

    async def _read_or_create(self, obj: Obj, mutate: Mutate) -> tuple[Json | None, Json]:
        """(the object read, the object mutated), or (None, the object created)."""
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta["name"])
        api_version, kind = obj["apiVersion"], obj["kind"]
        informer = self._informers.get(Kind(api_version, kind))
        # A metadata-only cache has no body to update from: writing it back would wipe it.
        reader = self.api_reader if informer is None or informer.metadata_only else self
        try:
            try:
                current = await reader.get(api_version, kind, key[1], key[0])
            except NotCached:
                current = await self.api_reader.get(api_version, kind, key[1], key[0])
        except NotFound:
            desired = copy_object(obj)
            await _mutated(mutate, desired, key)
            return None, await self.create(desired)
        desired = copy_object(current)
        await _mutated(mutate, desired, key)
        return current, desired

    async def _write(
        self,
        verb: str,
        method: str,
        obj: Obj,
        *,
        name: bool = True,
        body: Any = ...,
        content_type: str = "application/json",
        subresource: str = "",
        params: Mapping[str, str] | None = None,
    ) -> Json:
        meta: Mapping[str, Any] = obj.get("metadata") or {}
        resource = await self._mapper.resolve(Kind(obj["apiVersion"], obj["kind"]))
        path = resource.path(meta.get("namespace", ""), meta["name"] if name else "", subresource)
        self._writes.write_started()
        try:
            answer = await self._transport.request(
                method,
                path,
                params=params or {"fieldManager": self.field_manager},
                body=obj if body is ... else body,
                content_type=content_type,
            )
        except BaseException:
            self._writes.write_failed()
            raise
        # DELETE answers with the object (with deletionTimestamp set) or a Status.
        returned = answer if answer.get("kind") == obj["kind"] else obj
        ref = ObjectRef.of(returned, obj["apiVersion"], obj["kind"])
        write_id = next_id()
        # The watch event of this write may have been dispatched already: link it from here.
        event_id = self._writes.write_returned(ref.resource_version, write_id)
        scope = self._scope
        self._recorder.emit(
            write_record(
                self._clock.wall(),
                verb,
                controller=scope.controller,
                reconcile_id=scope.reconcile_id,
                ref=ref,
                event_id=event_id,
                id=write_id,
            )
        )
        return answer


async def _mutated(mutate: Mutate, obj: dict[str, Any], key: tuple[str, str]) -> None:
    outcome = mutate(obj)
    if inspect.isawaitable(outcome):
        await outcome
    meta = obj.get("metadata") or {}
    if (meta.get("namespace", ""), meta.get("name")) != key:
        raise ValueError(
            f"the mutate function changed the object's name or namespace (was {key[0]}/{key[1]})"
        )


def merge_patch(before: Mapping[str, Any], after: Mapping[str, Any]) -> Json:
    """The JSON merge patch (RFC 7386) that turns ``before`` into ``after``."""
    patch: Json = dict.fromkeys(before.keys() - after.keys())
    for field, value in after.items():
        old = before.get(field, _MISSING)
        if value == old:
            continue
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            patch[field] = merge_patch(old, value)
        else:
            patch[field] = value
    return patch


_MISSING = object()
