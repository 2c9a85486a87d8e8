"""Event handlers: which requests an event that passed the predicates turns into, and why.

Owns controller-runtime's three handlers (EnqueueRequestForObject, EnqueueRequestForOwner,
EnqueueRequestsFromMapFunc) and the reason each gives, above all when it maps to nothing:
that reason is what explain reports as ``not_mapped``. It may not touch the queue: the
controller enqueues what ``map`` returns.

No I/O. Runs once per passed event per controller, so no copies or serialisation of objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ctrltrace.events import Event, EventType
from ctrltrace.records import Obj
from ctrltrace.request import Request
from ctrltrace.vocabulary import Unmapped


@dataclass(frozen=True, slots=True)
class MapResult:
    """The requests an event maps to, de-duplicated in order, and why these (or why none)."""

    requests: tuple[Request, ...]
    reason: str
    unmapped: str = ""  # why none (a ``vocabulary.Unmapped`` value), when the handler can tell


class EventHandler(Protocol):
    def map(self, event: Event) -> MapResult: ...

    def describe(self) -> str:
        """The handler in a few words, e.g. "for owner example.com/Widget (controller only)"."""
        ...


class OwnerScope(Protocol):
    """Whether the owner kind is namespaced, from the REST mapping; None while unknown."""

    def __call__(self) -> bool | None: ...


class MapFunc(Protocol):
    """Maps one object to the requests it should trigger, as EnqueueRequestsFromMapFunc's fn."""

    def __call__(self, obj: Obj, /) -> Iterable[Request]: ...


def _objects(event: Event) -> tuple[Obj, ...]:
    # controller-runtime's owner and map-function handlers map both sides of an update, so
    # an object that stops pointing at a request (owner reference removed, label changed)
    # still triggers that request one last time.
    if event.type is EventType.UPDATE and event.old is not None:
        return (event.old, event.object)
    return (event.object,)


class ForObject:
    """Enqueues the object itself (for an update the new object, for a delete the deleted one)."""

    __slots__ = ()

    def map(self, event: Event) -> MapResult:
        return MapResult((Request.of(event.object),), "the object itself")

    def describe(self) -> str:
        return "for the object itself"


def for_object() -> ForObject:
    return ForObject()


_OwnerRef = Mapping[str, Any]


def _group(api_version: str) -> str:
    # schema.ParseGroupVersion: "v1" is the core group "", "apps/v1" is group "apps".
    return api_version.rpartition("/")[0]


def _group_kind(group: str, kind: str) -> str:
    return f"{group}/{kind}" if group else kind


def _ref_text(ref: _OwnerRef) -> str:
    kind = _group_kind(_group(ref.get("apiVersion", "")), ref.get("kind", ""))
    return f"{kind} {ref.get('name', '')}"


def _refs_text(refs: Iterable[_OwnerRef]) -> str:
    return ", ".join(_ref_text(ref) for ref in refs)


def _controller_ref(refs: Sequence[_OwnerRef]) -> _OwnerRef | None:
    # metav1.GetControllerOf: the first reference with controller: true, whatever its kind.
    for ref in refs:
        if ref.get("controller") is True:
            return ref
    return None


def _owner_refs(obj: Obj) -> tuple[str, Sequence[_OwnerRef]]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("ownerReferences") or ()


class ForOwner:
    """Enqueues the owner named by ``metadata.ownerReferences``: EnqueueRequestForOwner.

    References match on group (from their apiVersion; the version is ignored) and kind. Only
    the controller reference counts unless ``match_every_owner``. The request takes the
    object's namespace, or none for a cluster-scoped owner: ``owner_namespaced`` says which,
    or asks the REST mapping (``owns()`` does that, as controller-runtime does). While the
    mapping does not know the owner kind, events map to nothing: the kind is then not yet
    listed, and its list reconciles every owner anyway.
    """

    __slots__ = (
        "_description",
        "_group",
        "_kind",
        "_match_every_owner",
        "_owner",
        "_owner_namespaced",
        "_role",
    )

    def __init__(
        self,
        api_version: str,
        kind: str,
        *,
        match_every_owner: bool = False,
        owner_namespaced: bool | OwnerScope = True,
    ) -> None:
        self._group = _group(api_version)
        self._kind = kind
        self._match_every_owner = match_every_owner
        self._owner_namespaced = owner_namespaced
        self._owner = _group_kind(self._group, kind)
        self._role = "owner" if match_every_owner else "controller owner"
        scope = "" if owner_namespaced is True else ", cluster-scoped"
        if callable(owner_namespaced):
            scope = ", scope from the REST mapping"
        which = "every matching owner" if match_every_owner else "controller only"
        # Built once: the controller records it with every dispatch.
        self._description = f"for owner {self._owner} ({which}{scope})"

    def describe(self) -> str:
        return self._description

    def map(self, event: Event) -> MapResult:
        scope = self._owner_namespaced
        namespaced = scope() if callable(scope) else scope
        if namespaced is None:
            return MapResult(
                (),
                f"the scope of {self._owner} is not known yet (its kind is not listed "
                "yet); listing it reconciles every owner",
            )
        objects = _objects(event)
        requests = self._requests(event.object, namespaced)
        # Owners only the object before an update named: it no longer points at them.
        dropped = () if len(objects) == 1 else self._requests(objects[0], namespaced)
        if dropped:
            dropped = tuple(r for r in dropped if r not in requests)
        if not (requests or dropped):
            return self._why_none(objects)
        names = [r.name for r in requests] + [f"{r.name} (before the update)" for r in dropped]
        return MapResult(requests + dropped, f"{self._role} {self._owner} {', '.join(names)}")

    def _requests(self, obj: Obj, namespaced: bool) -> tuple[Request, ...]:
        namespace, refs = _owner_refs(obj)
        if not namespaced:
            namespace = ""
        if self._match_every_owner:
            found = (Request(namespace, ref.get("name", "")) for ref in refs if self._matches(ref))
            return tuple(dict.fromkeys(found))
        controller = _controller_ref(refs)
        if controller is None or not self._matches(controller):
            return ()
        return (Request(namespace, controller.get("name", "")),)

    def _matches(self, ref: _OwnerRef) -> bool:
        return ref.get("kind") == self._kind and _group(ref.get("apiVersion", "")) == self._group

    def _why_none(self, objects: Sequence[Obj]) -> MapResult:
        """Why no owner was found: in the object's current words (and its words before an
        update, when they differ); the code is the current one's."""
        reasons = dict(self._why_not(obj) for obj in reversed(objects))
        (now, unmapped), *before = reasons.items()
        text = f"{now}; before the update: {before[0][0]}" if before else now
        return MapResult((), text, unmapped)

    def _why_not(self, obj: Obj) -> tuple[str, str]:
        refs = _owner_refs(obj)[1]
        if not refs:
            return (
                f"no ownerReferences, so no {self._role} {self._owner} to enqueue",
                Unmapped.NO_OWNER,
            )
        if self._match_every_owner:
            return f"owned by {_refs_text(refs)}, not {self._owner}", Unmapped.OTHER_OWNER
        controller = _controller_ref(refs)
        # Nothing mapped, so none of these is the controller reference.
        same_kind = [ref for ref in refs if self._matches(ref)]
        if controller is None:
            if same_kind:
                return (
                    f"the ownerReference to {_refs_text(same_kind)} lacks controller: true; "
                    "set controller: true on it or use match_every_owner=True"
                ), Unmapped.NOT_CONTROLLER
            return (
                f"owned by {_refs_text(refs)}, not {self._owner}, "
                "and no ownerReference has controller: true"
            ), Unmapped.OTHER_OWNER
        controlled = f"controlled by {_ref_text(controller)}, not {self._owner}"
        if same_kind:
            return (
                f"{controlled}; the ownerReference to {_refs_text(same_kind)} is not the "
                "controller reference (there can be only one): use match_every_owner=True"
            ), Unmapped.NOT_CONTROLLER
        return controlled, Unmapped.OTHER_OWNER


def for_owner(
    api_version: str,
    kind: str,
    *,
    match_every_owner: bool = False,
    owner_namespaced: bool | OwnerScope = True,
) -> ForOwner:
    return ForOwner(
        api_version,
        kind,
        match_every_owner=match_every_owner,
        owner_namespaced=owner_namespaced,
    )


class MapTo:
    """Enqueues what a function maps the object to: EnqueueRequestsFromMapFunc.

    For an update the function sees the old and then the new object. If it raises, the event
    maps to nothing and the reason names the exception: a bug in user code must not stop the
    informer that feeds every controller.
    """

    __slots__ = ("_description", "_fn")

    def __init__(self, fn: MapFunc) -> None:
        self._fn = fn
        self._description = f"map function {getattr(fn, '__qualname__', repr(fn))}"

    def describe(self) -> str:
        return self._description

    def map(self, event: Event) -> MapResult:
        try:
            requests = tuple(dict.fromkeys(r for obj in _objects(event) for r in self._fn(obj)))
        except Exception as err:  # reported as the reason, never raised
            return MapResult((), f"map function raised {type(err).__name__}: {err}")
        if not requests:
            return MapResult((), "map function returned no requests", Unmapped.MAP_EMPTY)
        count = f"{len(requests)} request{'s' if len(requests) > 1 else ''}"
        return MapResult(requests, f"map function returned {count}")


def map_to(fn: MapFunc) -> MapTo:
    return MapTo(fn)
