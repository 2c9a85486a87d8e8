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
    # Informer health: started, listed, synced, resumed (a watch accepted after a failure),
    # forbidden, kind_not_found, disconnected, error, gone (410: listing again)
    WATCH = "watch"
    EVENT = "event"  # one watch event: ADDED, MODIFIED, DELETED
    # One per controller and event (per request when the handler maps to several):
    # dropped_by_predicate / not_mapped / queued / deduplicated / requeued_after_processing
    DISPATCH = "dispatch"
    RECONCILE_START = "reconcile_start"
    RECONCILE = "reconcile"  # success / error / terminal_error / requeue / requeue_after
    REQUEUE = "requeue"  # rate_limited / after: when the next run is due
    WRITE = "write"  # a write made through ctrltrace's client, with the returned RV
    # A Kubernetes Event the controller emitted about the object (ctx.events), once it was
    # sent or dropped: created / counted (an existing Event's count went up) / dropped (queue
    # full or rate-limited) / failed (the API server refused it, or could not be reached).
    KUBE_EVENT = "kube_event"
    # attempting / acquired / renewed_late / lost / standby / released / error
    LEASE = "lease"
    # watching (one per watch, at build: attrs kind, api_version, role) / starting (waiting
    # for caches) / cache_sync_waiting / started (workers running) / cache_not_synced (timed
    # out: the manager stops) / failed (workers gone: the same)
    CONTROLLER = "controller"
    # started / stopping / drained / drain_timed_out / stopped / journal_gap (records the
    # journal lost)
    MANAGER = "manager"


OUTCOMES: Mapping[Stage, frozenset[str]] = {
    Stage.WATCH: frozenset(
        {
            "started",
            "listed",
            "synced",
            "resumed",
            "forbidden",
            "kind_not_found",
            "disconnected",
            "error",
            "gone",
        }
    ),
    Stage.EVENT: frozenset({"ADDED", "MODIFIED", "DELETED"}),
    Stage.DISPATCH: frozenset(
        {
            "dropped_by_predicate",
            "not_mapped",
            "queued",
            "deduplicated",
            "requeued_after_processing",
            "delayed",
            "shut_down",
        }
    ),
    Stage.RECONCILE_START: frozenset({"started"}),
    Stage.RECONCILE: frozenset({"success", "error", "terminal_error", "requeue", "requeue_after"}),
    Stage.REQUEUE: frozenset({"rate_limited", "after"}),
    Stage.WRITE: frozenset({"create", "update", "patch", "apply", "delete", "update_status"}),
    Stage.KUBE_EVENT: frozenset({"created", "counted", "dropped", "failed"}),
    Stage.LEASE: frozenset(
        {"attempting", "acquired", "renewed_late", "lost", "standby", "released", "error"}
    ),
    Stage.CONTROLLER: frozenset(
        {
            "watching",
            "starting",
            "cache_sync_waiting",
            "started",
            "cache_not_synced",
            "failed",
        }
    ),
    Stage.MANAGER: frozenset(
        {"started", "stopping", "drained", "drain_timed_out", "stopped", "journal_gap"}
    ),
}
"""Every outcome each stage may record: the closed list producers keep to (the test suite
fails on any other) and consumers can rely on."""


class Vocab:
    """Outcomes and attribute keys that one module writes and explain reads."""

    # Stage.CONTROLLER, at build: one per watch, naming the kind the controller waits for
    # (attrs kind, api_version, role) and what its cache holds: LABEL_SELECTOR ("" for every
    # object) and NAMESPACES (comma-separated, "" for every namespace).
    WATCHING = "watching"
    LABEL_SELECTOR = "label_selector"
    NAMESPACES = "namespaces"
    # Stage.MANAGER: records that never reached the journal (attrs COUNT, FIRST_TIME,
    # LAST_TIME; the reason says why: buffer full, write error).
    JOURNAL_GAP = "journal_gap"
    COUNT = "count"
    FIRST_TIME = "first_time"
    LAST_TIME = "last_time"
    # Stage.EVENT, only on objects being deleted / holding finalizers: the deletionTimestamp
    # as the API server wrote it, and the finalizers' names joined by commas (no bodies).
    DELETION_TIMESTAMP = "deletion_timestamp"
    FINALIZERS = "finalizers"
    # Stage.RECONCILE with an error the API server answered: its HTTP status, reason and the
    # request's method (GET is a read).
    API_STATUS = "api_status"
    API_REASON = "api_reason"
    API_METHOD = "api_method"
    # Stage.DISPATCH: a predicate or map function raised: the exception's type, and the
    # qualified name of the function it was raised in (the innermost frame of user code).
    RAISED = "raised"
    RAISED_IN = "raised_in"
    # Stage.DISPATCH not_mapped: why the handler found no request, when it can tell: the
    # object has no ownerReferences (NO_OWNER), is owned or controlled by something else
    # (OTHER_OWNER: not this controller's to reconcile), has an ownerReference of the owner
    # kind that is not the controller reference (NOT_CONTROLLER), or the map function
    # returned nothing (MAP_EMPTY).
    UNMAPPED = "unmapped"
    NO_OWNER = "no_owner"
    OTHER_OWNER = "other_owner"
    NOT_CONTROLLER = "not_controller"
    MAP_EMPTY = "map_empty"


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
