"""The record vocabulary: what each stage may record, the attribute keys records carry, the
sets consumers derive from them, and one constructor per stage for the producers.

Names that cross a module boundary live here and only here: a producer builds its records with
the constructor of its stage (which fixes the stage and the attribute keys), a consumer
(explain, the TUI, the funnel, metrics) matches outcomes through the constants and derived sets
below. ``OUTCOMES`` is the closed list the test suite holds every producer to.

This module may import ``records`` only; it does no I/O and formats nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from ctrltrace.records import AttrValue, ObjectRef, Record, Stage

Attrs = dict[str, AttrValue]


class WatchOutcome:
    """``Stage.WATCH``: informer health, per kind (and namespace when it watches a few)."""

    STARTED = "started"
    LISTED = "listed"
    SYNCED = "synced"
    RESUMED = "resumed"  # a watch accepted after a failure
    FORBIDDEN = "forbidden"
    KIND_NOT_FOUND = "kind_not_found"
    DISCONNECTED = "disconnected"
    ERROR = "error"
    GONE = "gone"  # 410: listing again


class EventOutcome:
    """``Stage.EVENT``: one watch event; the outcome is its type."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


class DispatchOutcome:
    """``Stage.DISPATCH``: one per controller and event (per request when the handler maps to
    several); the last five are what the work queue did with the request."""

    DROPPED_BY_PREDICATE = "dropped_by_predicate"
    NOT_MAPPED = "not_mapped"
    QUEUED = "queued"  # appended; handed out in FIFO order
    DEDUPLICATED = "deduplicated"  # merged into a run already pending for the key
    REQUEUED_AFTER_PROCESSING = "requeued_after_processing"  # queued when its worker is done
    DELAYED = "delayed"  # added when its time comes
    SHUT_DOWN = "shut_down"  # ignored


class ReconcileStartOutcome:
    """``Stage.RECONCILE_START``: a worker took the request."""

    STARTED = "started"


class ReconcileOutcome:
    """``Stage.RECONCILE``: how a reconcile ended (``reconcile.settle`` decides)."""

    SUCCESS = "success"
    ERROR = "error"
    TERMINAL_ERROR = "terminal_error"
    REQUEUE = "requeue"
    REQUEUE_AFTER = "requeue_after"


class RequeueOutcome:
    """``Stage.REQUEUE``: when the next run is due, and why."""

    RATE_LIMITED = "rate_limited"  # the per-item back-off after an error or a plain requeue
    AFTER = "after"  # the delay the reconciler asked for


class WriteOutcome:
    """``Stage.WRITE``: a write made through ctrltrace's client, with the returned RV."""

    CREATE = "create"
    UPDATE = "update"
    PATCH = "patch"
    APPLY = "apply"
    DELETE = "delete"
    UPDATE_STATUS = "update_status"


class KubeEventOutcome:
    """``Stage.KUBE_EVENT``: a Kubernetes Event the controller emitted (``ctx.events``)."""

    CREATED = "created"
    COUNTED = "counted"  # an existing Event's count went up
    DROPPED = "dropped"  # queue full or rate-limited
    FAILED = "failed"  # the API server refused it, or could not be reached


class LeaseOutcome:
    """``Stage.LEASE``: the leader election of this replica."""

    ATTEMPTING = "attempting"
    ACQUIRED = "acquired"
    RENEWED_LATE = "renewed_late"
    LOST = "lost"
    STANDBY = "standby"
    RELEASED = "released"
    ERROR = "error"


class ControllerOutcome:
    """``Stage.CONTROLLER``: a controller's life."""

    WATCHING = "watching"  # one per watch, at build (Attr.KIND, API_VERSION, ROLE, ...)
    STARTING = "starting"  # waiting for its caches
    CACHE_SYNC_WAITING = "cache_sync_waiting"
    STARTED = "started"  # workers running
    CACHE_NOT_SYNCED = "cache_not_synced"  # timed out: the manager stops
    FAILED = "failed"  # workers gone: the same


class ManagerOutcome:
    """``Stage.MANAGER``: the manager's life, and the records the journal lost."""

    STARTED = "started"
    STOPPING = "stopping"
    DRAINED = "drained"
    DRAIN_TIMED_OUT = "drain_timed_out"
    STOPPED = "stopped"
    JOURNAL_GAP = "journal_gap"  # Attr.COUNT, FIRST_TIME, LAST_TIME; the reason says why
    # Not the runtime's: a reader of evidence (traces) says what it could not read (traces a
    # sampler left out, traces older than a search reached), between FIRST_TIME and LAST_TIME.
    EVIDENCE_MISSING = "evidence_missing"


def _values(outcomes: type) -> frozenset[str]:
    return frozenset(v for k, v in vars(outcomes).items() if k.isupper() and isinstance(v, str))


OUTCOMES: Mapping[Stage, frozenset[str]] = {
    Stage.WATCH: _values(WatchOutcome),
    Stage.EVENT: _values(EventOutcome),
    Stage.DISPATCH: _values(DispatchOutcome),
    Stage.RECONCILE_START: _values(ReconcileStartOutcome),
    Stage.RECONCILE: _values(ReconcileOutcome),
    Stage.REQUEUE: _values(RequeueOutcome),
    Stage.WRITE: _values(WriteOutcome),
    Stage.KUBE_EVENT: _values(KubeEventOutcome),
    Stage.LEASE: _values(LeaseOutcome),
    Stage.CONTROLLER: _values(ControllerOutcome),
    Stage.MANAGER: _values(ManagerOutcome),
}
"""Every outcome each stage may record: the closed list producers keep to (the test suite
fails on any other) and consumers can rely on."""

# -- derived sets: what consumers ask of outcomes, defined once -----------------------------

ENQUEUED = (
    DispatchOutcome.QUEUED,
    DispatchOutcome.DEDUPLICATED,
    DispatchOutcome.REQUEUED_AFTER_PROCESSING,
)
"""Dispatch outcomes that leave the request in the work queue, in the order views list them
(a dispatch adds at once: it is never ``delayed``; ``shut_down`` is the one that loses it)."""

INSERTED = frozenset({DispatchOutcome.QUEUED, DispatchOutcome.REQUEUED_AFTER_PROCESSING})
"""Dispatch outcomes that insert the key (client-go's ``workqueue_adds_total`` counts these,
not a de-duplicated add)."""

RECONCILE_FAILED = frozenset({ReconcileOutcome.ERROR, ReconcileOutcome.TERMINAL_ERROR})
"""Reconcile outcomes that count as an error (controller_runtime_reconcile_errors_total)."""

SETTLED = frozenset({ReconcileOutcome.SUCCESS, ReconcileOutcome.TERMINAL_ERROR})
"""Reconcile outcomes no ``Stage.REQUEUE`` record follows."""

REQUEUED = OUTCOMES[Stage.RECONCILE] - SETTLED
"""Reconcile outcomes the controller follows with a ``Stage.REQUEUE`` record."""

WATCH_FAILURES = frozenset(
    {
        WatchOutcome.FORBIDDEN,
        WatchOutcome.KIND_NOT_FOUND,
        WatchOutcome.DISCONNECTED,
        WatchOutcome.ERROR,
    }
)
"""Watch outcomes that say the informer is failing (until it lists or resumes again)."""

LEASE_TRANSITIONS = frozenset(
    {LeaseOutcome.ACQUIRED, LeaseOutcome.STANDBY, LeaseOutcome.LOST, LeaseOutcome.RELEASED}
)
"""Lease outcomes that change who reconciles (attempts, late renewals and errors do not)."""

LEASE_ERRORS = frozenset({LeaseOutcome.LOST, LeaseOutcome.ERROR})
"""Lease outcomes whose reason is an error (a lease span says it failed)."""


class Attr:
    """Attribute keys records carry, by the stage that writes them."""

    # Stage.WATCH, and Stage.CONTROLLER WATCHING: the kind; the watch's scope.
    KIND = "kind"
    API_VERSION = "api_version"
    NAMESPACE = "namespace"
    LABEL_SELECTOR = "label_selector"  # "" (absent on WATCH) for every object
    STATUS = "status"  # the HTTP status of a refused list or watch
    RESOURCE = "resource"  # group/resource, once discovery resolved it
    OBJECTS = "objects"  # SYNCED: objects in the cache
    SECONDS = "seconds"  # SYNCED: how long the first list took
    # Stage.CONTROLLER WATCHING: the watch's role (for / owns / watches) and the namespaces its
    # cache holds (comma-separated, "" for every namespace); STARTING: the kinds it waits for;
    # STARTED: its workers.
    ROLE = "role"
    NAMESPACES = "namespaces"
    WATCHES = "watches"
    MAX_CONCURRENT_RECONCILES = "max_concurrent_reconciles"
    # Stage.EVENT: the field manager of the last write, whether it was this process's own;
    # only on objects being deleted / holding finalizers, the deletionTimestamp as the API
    # server wrote it and the finalizers' names joined by commas (no bodies).
    WRITER = "writer"
    SELF_CAUSED = "self_caused"
    DELETION_TIMESTAMP = "deletion_timestamp"
    FINALIZERS = "finalizers"
    # Stage.DISPATCH: the handler, the event's type, the predicate that said no; when a
    # predicate or map function raised, the exception's type and the qualified name of the
    # function it was raised in (the innermost frame of user code); NOT_MAPPED: why the
    # handler found no request, when it can tell (an ``Unmapped`` value).
    HANDLER = "handler"
    EVENT_TYPE = "event_type"
    PREDICATE = "predicate"
    RAISED = "raised"
    RAISED_IN = "raised_in"
    UNMAPPED = "unmapped"
    # Stage.RECONCILE_START
    QUEUE_WAIT_S = "queue_wait_s"
    RETRIES = "retries"
    # Stage.RECONCILE: its duration and metric label; with an error, its type and, when the
    # API server answered, its HTTP status, reason and the request's method (GET is a read);
    # NOT_REQUEUED when the queue shut down under a requeue.
    DURATION_S = "duration_s"
    METRIC_RESULT = "metric_result"
    ERROR_TYPE = "error_type"
    API_STATUS = "api_status"
    API_REASON = "api_reason"
    API_METHOD = "api_method"
    NOT_REQUEUED = "not_requeued"
    # Stage.REQUEUE: the delay, when the run is due (wall clock), the retry's number.
    DELAY_S = "delay_s"
    DUE = "due"
    ATTEMPT = "attempt"
    # Stage.WRITE: the watch event of the write, when it came back before the write returned.
    EVENT_ID = "event_id"
    # Stage.KUBE_EVENT: the Event object, namespace/name.
    EVENT = "event"
    # Stage.LEASE: namespace/name of the Lease, this replica, the holder it saw.
    LEASE = "lease"
    IDENTITY = "identity"
    HOLDER = "holder"
    # Stage.MANAGER STOPPING, DRAINED, DRAIN_TIMED_OUT: the reconciles still running.
    IN_FLIGHT = "in_flight"
    # Stage.MANAGER JOURNAL_GAP: how many records were lost, between which times.
    COUNT = "count"
    FIRST_TIME = "first_time"
    LAST_TIME = "last_time"
    # Any stage, added by a reader of evidence gathered from several processes (traces): the
    # replica (pod, process) whose record it is. Records of one process (a journal) have none.
    REPLICA = "replica"


class MetricResult:
    """Values of ``Attr.METRIC_RESULT``: the ``result`` label of
    ``controller_runtime_reconcile_total``, as controller-runtime sets it (a terminal error is
    an ``error`` there too)."""

    ERROR = "error"
    REQUEUE = "requeue"
    REQUEUE_AFTER = "requeue_after"
    SUCCESS = "success"


METRIC_RESULTS = tuple(sorted(_values(MetricResult)))
"""Every ``MetricResult``: the labels controller-runtime counts from 0 when a controller
starts."""


class Unmapped:
    """Values of ``Attr.UNMAPPED``: the object has no ownerReferences (NO_OWNER), is owned or
    controlled by something else (OTHER_OWNER: not this controller's to reconcile), has an
    ownerReference of the owner kind that is not the controller reference (NOT_CONTROLLER),
    or the map function returned nothing (MAP_EMPTY)."""

    NO_OWNER = "no_owner"
    OTHER_OWNER = "other_owner"
    NOT_CONTROLLER = "not_controller"
    MAP_EMPTY = "map_empty"


# -- constructors: one per stage, for the producers -----------------------------------------
# Each fixes its stage and the attribute keys it writes; ``id`` is given when the producer
# must know it before emitting (to chain a later record to it). Dispatch and event records are
# made for every event: these stay one plain call each.


def watch_record(time: float, outcome: str, reason: str, attrs: Attrs) -> Record:
    return Record(time, Stage.WATCH, outcome, reason, attrs=attrs)


def event_record(
    time: float,
    outcome: str,
    reason: str,
    *,
    ref: ObjectRef,
    write_id: int | None,
    attrs: Attrs,
    id: int,
) -> Record:
    """``write_id``: the write of this process's own that the event brings back, if any."""
    causes = (write_id,) if write_id else ()
    return Record(time, Stage.EVENT, outcome, reason, "", ref, "", "", id, causes, attrs)


def dispatch_record(
    time: float,
    outcome: str,
    reason: str,
    *,
    controller: str,
    ref: ObjectRef,
    request: str,
    event_id: int,
    attrs: Attrs,
    id: int,
) -> Record:
    return Record(
        time, Stage.DISPATCH, outcome, reason, controller, ref, request, "", id, (event_id,), attrs
    )


def controller_record(
    time: float,
    stage: Stage,
    outcome: str,
    reason: str,
    *,
    controller: str,
    request: str = "",
    reconcile_id: str = "",
    cause_ids: tuple[int, ...] = (),
    attrs: Attrs | None = None,
) -> Record:
    """A record of a controller's own (``Stage.CONTROLLER``) or of its workers
    (``RECONCILE_START``, ``RECONCILE``, ``REQUEUE``): these stages share their fields."""
    return Record(
        time,
        stage,
        outcome,
        reason,
        controller,
        request=request,
        reconcile_id=reconcile_id,
        cause_ids=cause_ids,
        attrs=attrs or {},
    )


def write_record(
    time: float,
    verb: str,
    *,
    controller: str,
    reconcile_id: str,
    ref: ObjectRef,
    event_id: int | None,
    id: int,
) -> Record:
    """``event_id``: the watch event of the write, when it came back before the write
    returned."""
    return Record(
        time,
        Stage.WRITE,
        verb,
        f"{verb} returned resourceVersion {ref.resource_version}",
        controller,
        ref,
        reconcile_id=reconcile_id,
        attrs={Attr.EVENT_ID: event_id} if event_id is not None else {},
        id=id,
    )


def kube_event_record(
    time: float,
    outcome: str,
    reason: str,
    *,
    controller: str,
    ref: ObjectRef,
    request: str,
    reconcile_id: str,
    event: str = "",
) -> Record:
    """``event``: namespace/name of the Event object, once the API server has one."""
    attrs: Attrs = {Attr.EVENT: event} if event else {}
    return Record(
        time, Stage.KUBE_EVENT, outcome, reason, controller, ref, request, reconcile_id, attrs=attrs
    )


def lease_record(
    time: float, outcome: str, reason: str, *, lease: str, identity: str, holder: str
) -> Record:
    attrs: Attrs = {Attr.LEASE: lease, Attr.IDENTITY: identity, Attr.HOLDER: holder}
    return Record(time, Stage.LEASE, outcome, reason, attrs=attrs)


def manager_record(time: float, outcome: str, reason: str, attrs: Attrs | None = None) -> Record:
    return Record(time, Stage.MANAGER, outcome, reason, attrs=attrs or {})


def evidence_missing_record(first: float, last: float, reason: str, **attrs: AttrValue) -> Record:
    """Evidence a reader could not give (traces not sampled, records a memory ring dropped),
    said as explain hears it: a MANAGER ``evidence_missing`` over the time, at its start."""
    return manager_record(
        first,
        ManagerOutcome.EVIDENCE_MISSING,
        reason,
        {Attr.FIRST_TIME: first, Attr.LAST_TIME: last, **attrs},
    )


def journal_gap_record(count: int, first: float, last: float, why: str) -> Record:
    """Records that never reached the journal, as a record of their own at the last one's
    time."""
    return manager_record(
        last,
        ManagerOutcome.JOURNAL_GAP,
        f"{count} records lost on their way to the journal: {why}",
        {Attr.COUNT: count, Attr.FIRST_TIME: first, Attr.LAST_TIME: last},
    )
