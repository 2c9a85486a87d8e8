"""The client a reconciler uses: reads from the informer cache, writes through the API.

Owns the read path (cache first; the API when the kind is not cached) and recording every
write with the resourceVersion the server returned, so that the informer can recognise the
controller's own writes when they come back as watch events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ctrltrace.clock import Clock
from ctrltrace.kinds import Kind, RestMapper
from ctrltrace.records import Obj, ObjectRef, Record, Recorder, Stage, next_id
from ctrltrace.source import Informer, WriteLog
from ctrltrace.transport import Json, NotFound, Transport

_PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


@dataclass(frozen=True, slots=True)
class _Scope:
    controller: str = ""
    reconcile_id: str = ""


class Client:
    def __init__(
        self,
        transport: Transport,
        mapper: RestMapper,
        informer_for: Callable[[Kind], Informer | None],
        *,
        recorder: Recorder,
        clock: Clock,
        writes: WriteLog,
        field_manager: str = "ctrltrace",
    ) -> None:
        self._transport = transport
        # Names this manager in managedFields, so explain can say who wrote each version.
        self._field_manager = {"fieldManager": field_manager}
        self._mapper = mapper
        self._informer_for = informer_for
        self._recorder = recorder
        self._clock = clock
        self._writes = writes
        self._scope = _Scope()

    def scoped(self, controller: str, reconcile_id: str) -> Client:
        """The same client, with writes attributed to one reconcile."""
        scoped = object.__new__(Client)
        scoped.__dict__.update(self.__dict__)
        scoped._scope = _Scope(controller, reconcile_id)
        return scoped

    # -- reads -------------------------------------------------------------------------------

    async def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> Obj:
        informer = self._cached(Kind(api_version, kind))
        if informer is not None:
            found = informer.get(namespace, name)
            if found is None:
                target = f"{namespace}/{name}" if namespace else name
                raise NotFound(404, "NotFound", f"{kind} {target} not found", "GET", "cache")
            return found
        resource = await self._mapper.resolve(Kind(api_version, kind))
        return await self._transport.request("GET", resource.path(namespace, name))

    async def list(
        self, api_version: str, kind: str, namespace: str = "", label_selector: str = ""
    ) -> list[Obj]:
        informer = self._cached(Kind(api_version, kind))
        if informer is not None and not label_selector:
            return informer.list(namespace)
        resource = await self._mapper.resolve(Kind(api_version, kind))
        params = {"labelSelector": label_selector} if label_selector else None
        listing = await self._transport.request("GET", resource.path(namespace), params=params)
        items: list[Obj] = listing.get("items", [])
        return items

    def _cached(self, kind: Kind) -> Informer | None:
        informer = self._informer_for(kind)
        return informer if informer is not None and informer.synced.is_set() else None

    # -- writes ------------------------------------------------------------------------------

    async def create(self, obj: Obj) -> Obj:
        return await self._write("create", "POST", obj, name=False)

    async def update(self, obj: Obj) -> Obj:
        return await self._write("update", "PUT", obj)

    async def update_status(self, obj: Obj) -> Obj:
        return await self._write("update_status", "PUT", obj, subresource="status")

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
    ) -> Obj:
        target = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
        }
        return await self._write(
            "patch",
            "PATCH",
            target,
            body=patch,
            content_type=_PATCH_TYPES[patch_type],
            subresource=subresource,
        )

    async def delete(self, api_version: str, kind: str, name: str, namespace: str = "") -> Obj:
        target = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
        }
        return await self._write("delete", "DELETE", target, body=None)

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
    ) -> Json:
        meta: Mapping[str, Any] = obj.get("metadata") or {}
        resource = await self._mapper.resolve(Kind(obj["apiVersion"], obj["kind"]))
        path = resource.path(meta.get("namespace", ""), meta["name"] if name else "", subresource)
        self._writes.write_started()
        try:
            answer = await self._transport.request(
                method,
                path,
                params=self._field_manager,
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
        self._recorder.emit(
            Record(
                time=self._clock.wall(),
                stage=Stage.WRITE,
                outcome=verb,
                controller=self._scope.controller,
                reconcile_id=self._scope.reconcile_id,
                object=ref,
                reason=f"{verb} returned resourceVersion {ref.resource_version}",
                attrs={"event_id": event_id} if event_id is not None else {},
                id=write_id,
            )
        )
        return answer
