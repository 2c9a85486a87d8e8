"""The one record type every pipeline stage emits, and the recorder that fans records out.

A record says what a stage did to which object and why, and carries the ids that chain
records together (event → dispatch → enqueue → reconcile → requeue). It never carries an
object body or a field value nobody asked for. Recording is on the hot path: no I/O, no
serialisation here; sinks that need either do it elsewhere (off the event loop).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

AttrValue = str | int | float | bool
Obj = Mapping[str, Any]
"""A Kubernetes object as the API serves it: plain decoded JSON."""


class Stage(enum.StrEnum):
    """Which part of the pipeline a record comes from. The outcomes each stage records, and
    the attribute keys it carries, are listed in ``ctrltrace.vocabulary``."""

    WATCH = "watch"  # informer health
    EVENT = "event"  # one watch event
    DISPATCH = "dispatch"  # one per controller and event: predicates, handler, queue
    RECONCILE_START = "reconcile_start"
    RECONCILE = "reconcile"
    REQUEUE = "requeue"  # when the next run is due
    WRITE = "write"  # a write made through ctrltrace's client, with the returned RV
    KUBE_EVENT = "kube_event"  # a Kubernetes Event the controller emitted (ctx.events)
    LEASE = "lease"
    CONTROLLER = "controller"
    MANAGER = "manager"


@dataclass(frozen=True, slots=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""
    resource_version: str = ""
    generation: int = 0

    @classmethod
    def of(cls, obj: Obj, api_version: str = "", kind: str = "") -> ObjectRef:
        meta = obj.get("metadata") or {}
        return cls(
            obj.get("apiVersion") or api_version,
            obj.get("kind") or kind,
            meta.get("namespace", ""),
            meta.get("name", ""),
            meta.get("uid", ""),
            meta.get("resourceVersion", ""),
            meta.get("generation", 0),
        )

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


_ids = itertools.count(1)


def next_id() -> int:
    """A record id, unique within this process."""
    return next(_ids)


# Not frozen: a frozen dataclass pays an object.__setattr__ per field in __init__, and a
# record is built for every stage of every event. Treat records as immutable all the same.
@dataclass(slots=True)
class Record:
    time: float  # wall-clock seconds since the epoch
    stage: Stage
    outcome: str
    reason: str = ""
    controller: str = ""
    object: ObjectRef | None = None
    request: str = ""  # the queue key, "namespace/name"
    reconcile_id: str = ""
    id: int = field(default_factory=next_id)
    cause_ids: tuple[int, ...] = ()  # the records that led to this one, first is the parent
    attrs: Mapping[str, AttrValue] = field(default_factory=dict)


class Sink(Protocol):
    def __call__(self, record: Record, /) -> None: ...


class Recorder:
    """Fans records out to sinks (journal, spans, metrics, live views) in order.

    A sink that raises never breaks the pipeline (its error is counted in ``sink_errors``);
    a sink must not block.
    """

    def __init__(self, *sinks: Sink) -> None:
        self._sinks: list[Sink] = list(sinks)
        self.sink_errors = 0

    def add(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def remove(self, sink: Sink) -> None:
        self._sinks.remove(sink)

    @property
    def active(self) -> bool:
        return bool(self._sinks)

    def emit(self, record: Record) -> None:
        for sink in self._sinks:
            try:
                sink(record)
            except Exception:  # a broken sink must not stop reconciles
                self.sink_errors += 1


class Collect:
    """A sink that keeps every record in a list (tests, short runs)."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def __call__(self, record: Record, /) -> None:
        self.records.append(record)

    def where(self, stage: Stage, outcome: str | None = None) -> list[Record]:
        return [
            r
            for r in self.records
            if r.stage == stage and (outcome is None or r.outcome == outcome)
        ]
