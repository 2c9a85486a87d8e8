"""The controller builder: ``for_`` / ``owns`` / ``watches`` desugared into watch specs.

Owns the builder's vocabulary and its validation (no watches, ``owns`` without ``for_``, a
missing or duplicate name), whose messages are the ones start-up and ``doctor`` print. It
only describes controllers; the manager creates informers and controllers from the specs.
No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, Self

from ctrltrace.controller import ControllerOptions
from ctrltrace.handlers import EventHandler, for_object, for_owner
from ctrltrace.kinds import Kind
from ctrltrace.predicates import Predicate
from ctrltrace.reconcile import Reconciler


class Scopes(Protocol):
    """Which kinds are namespaced, as the REST mapping knows them (None: not known yet)."""

    def namespaced(self, kind: Kind) -> bool | None: ...


class BuildError(Exception):
    """A controller that cannot work as built; raised at start-up, never ignored."""


@dataclass(frozen=True)
class WatchSpec:
    kind: Kind
    role: str  # "for", "owns" or "watches"
    predicates: tuple[Predicate, ...]
    # Owner mappings need the for_ kind, known only once the whole builder is read, and its
    # scope, known from the REST mapping once the manager runs.
    handler: Callable[[Kind | None, Scopes], EventHandler]
    owns_match_every_owner: bool = False


@dataclass(frozen=True)
class WriteSpec:
    """Writes a reconciler makes, as one RBAC rule: what ``ctrltrace rbac`` grants for it."""

    api_group: str  # "" is the core group
    resources: tuple[str, ...]
    verbs: tuple[str, ...]


@dataclass
class ControllerSpec:
    name: str
    for_kind: Kind | None
    watches: list[WatchSpec]
    global_predicates: tuple[Predicate, ...]
    options: ControllerOptions
    reconciler: Reconciler | None = None
    writes: tuple[WriteSpec, ...] = ()

    def problems(self) -> list[str]:
        label = self.name or "controller"
        found: list[str] = []
        if not self.watches:
            found.append(f"{label}: no watches: the controller will never get triggered")
        if self.for_kind is None and any(w.role == "owns" for w in self.watches):
            found.append(f"{label}: owns() needs for_(): owned objects map to the for_ kind")
        if not self.name:
            found.append("controller has no name: call .named(...) or .for_(...)")
        if self.reconciler is None:
            found.append(f"{label}: complete() was never called with a reconciler")
        if self.options.max_concurrent_reconciles < 1:
            found.append(f"{label}: max_concurrent_reconciles must be at least 1")
        if not self.options.cache_sync_timeout > 0:
            found.append(f"{label}: cache_sync_timeout must be more than 0 seconds")
        if any(not (write.resources and write.verbs) for write in self.writes):
            found.append(f"{label}: writes() needs at least one resource and one verb")
        return found


class _Registry:
    """What the manager offers the builder: a place to put finished specs."""

    def __init__(self) -> None:
        self.specs: list[ControllerSpec] = []

    def problems(self) -> list[str]:
        found = [problem for spec in self.specs for problem in spec.problems()]
        names = [spec.name for spec in self.specs if spec.name]
        for name in sorted({n for n in names if names.count(n) > 1}):
            found.append(f"controller name {name!r} is used more than once; names must be unique")
        return found


@dataclass
class Builder:
    _registry: _Registry
    _name: str = ""
    _for: Kind | None = None
    _watches: list[WatchSpec] = field(default_factory=list)
    _filters: tuple[Predicate, ...] = ()
    _options: ControllerOptions = field(default_factory=ControllerOptions)
    _writes: tuple[WriteSpec, ...] = ()

    def for_(self, api_version: str, kind: str, *predicates: Predicate) -> Self:
        """Watch ``kind`` and reconcile each object of it."""
        self._for = Kind(api_version, kind)
        self._watches.append(WatchSpec(self._for, "for", predicates, lambda *_: for_object()))
        return self

    def owns(
        self, api_version: str, kind: str, *predicates: Predicate, match_every_owner: bool = False
    ) -> Self:
        """Watch ``kind`` and reconcile the for_ object that controls each of its objects."""

        def owner(for_kind: Kind | None, scopes: Scopes) -> EventHandler:
            assert for_kind is not None  # validated before any handler is built
            return for_owner(
                for_kind.api_version,
                for_kind.kind,
                match_every_owner=match_every_owner,
                # A cluster-scoped owner's request has no namespace, whatever the child's.
                owner_namespaced=lambda: scopes.namespaced(for_kind),
            )

        self._watches.append(
            WatchSpec(Kind(api_version, kind), "owns", predicates, owner, match_every_owner)
        )
        return self

    def watches(
        self, api_version: str, kind: str, handler: EventHandler, *predicates: Predicate
    ) -> Self:
        """Watch ``kind`` and let ``handler`` say which requests each event means."""
        self._watches.append(
            WatchSpec(Kind(api_version, kind), "watches", predicates, lambda *_: handler)
        )
        return self

    def with_event_filter(self, predicate: Predicate) -> Self:
        """A predicate applied to every watch of this controller (after each watch's own)."""
        self._filters += (predicate,)
        return self

    def writes(
        self, api_group: str, resources: str | Sequence[str], verbs: str | Sequence[str]
    ) -> Self:
        """Declare writes the reconciler makes (``""`` is the core group), next to it, as
        kubebuilder's RBAC markers do: ``ctrltrace rbac`` grants them, ``doctor`` checks them.
        It changes nothing at run time."""
        self._writes += (WriteSpec(api_group, _names(resources), _names(verbs)),)
        return self

    def named(self, name: str) -> Self:
        self._name = name
        return self

    def with_options(
        self,
        *,
        max_concurrent_reconciles: int | None = None,
        cache_sync_timeout: float | None = None,
    ) -> Self:
        if max_concurrent_reconciles is not None:
            self._options.max_concurrent_reconciles = max_concurrent_reconciles
        if cache_sync_timeout is not None:
            self._options.cache_sync_timeout = cache_sync_timeout
        return self

    def complete(self, reconciler: Reconciler) -> ControllerSpec:
        """Register the controller. Problems are reported when the manager starts."""
        name = self._name or (self._for.kind.lower() if self._for else "")
        spec = ControllerSpec(
            name,
            self._for,
            list(self._watches),
            self._filters,
            self._options,
            reconciler,
            self._writes,
        )
        self._registry.specs.append(spec)
        return spec


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)
