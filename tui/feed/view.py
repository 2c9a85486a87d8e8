"""The model of what each view shows: ``ViewState`` folds records into the rows of the event
stream, controllers, leader election and watches views, and the funnel (through
``ctrltrace.funnel``), every collection capped. How those rows are worded and marked is
``cells``' business.

It may not import Textual, may not talk to Kubernetes (records are all it reads), and is not
thread-safe: one thread (the UI's) applies records and reads rows.

Over 500 lines because ``ViewState`` is one fold: its handlers share the links from a record to
the event rows it settles (dispatch → start → end → requeue), and split by view they would
each have to keep those links again.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from ctrltrace.explain import Code
from ctrltrace.funnel import FunnelFold
from ctrltrace.records import Record, Stage
from ctrltrace.vocabulary import (
    ENQUEUED,
    LEASE_TRANSITIONS,
    RECONCILE_FAILED,
    SETTLED,
    WATCH_FAILURES,
    Attr,
    ControllerOutcome,
    DispatchOutcome,
    LeaseOutcome,
    ManagerOutcome,
    ReconcileOutcome,
    RequeueOutcome,
    WatchOutcome,
)

# A journal that gained no record for this long is idle (still a healthy journal, not an error).
IDLE_AFTER_S = 2.0
MAX_EVENT_ROWS = 2_000
MAX_TRANSITIONS = 50
MAX_WORK_ROWS = 200
_MAX_PER_CONTROLLER = 10_000  # waiting, running and scheduled requests kept per controller

# Records that say records are missing (lost on the way to the journal, dropped by a source).
_GAPS = (ManagerOutcome.JOURNAL_GAP, ManagerOutcome.EVIDENCE_MISSING)


@dataclass(frozen=True, slots=True)
class Target:
    """The object a row is about: what the object view explains."""

    namespace: str
    name: str
    kind: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @classmethod
    def of_request(cls, request: str) -> Target:
        namespace, _, name = request.rpartition("/")
        return cls(namespace, name)


@dataclass(slots=True)
class Outcome:
    """What one controller did with one event, for one request, as far as the records go."""

    controller: str
    request: str
    code: str = ""  # an explain verdict code; "" until the controller's dispatch is recorded
    detail: str = ""  # the predicate, the handler's reason, the error
    merged: bool = False  # de-duplicated into a run already waiting
    runs: int = 0  # reconciles that ran for it so far
    due: float | None = None  # when the retry or requeue it asked for is due
    attempt: int = 0  # that retry's attempt (0: a requeue it asked for)


@dataclass(slots=True)
class EventRow:
    """One watch event and, merged in as their records arrive, each controller's outcome."""

    key: int  # increasing: rows are evicted oldest first
    time: float
    kind: str
    namespace: str
    name: str
    event_type: str
    self_caused: bool
    outcomes: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    api_version: str = ""
    resource_version: str = ""

    @property
    def target(self) -> Target:
        return Target(self.namespace, self.name, self.kind)

    @property
    def object_key(self) -> str:
        return self.target.key


@dataclass(slots=True)
class Scheduled:
    due: float
    record_id: int
    outcome: str  # rate_limited / after
    attempt: int = 0


@dataclass(slots=True)
class ControllerState:
    name: str
    outcome: str = ""  # its latest ControllerOutcome in this run (started, cache_not_synced, …)
    stopped: bool = False  # the manager stopped: the run it belonged to is over
    workers: int = 0  # max_concurrent_reconciles, once started
    watched: set[str] = field(default_factory=set)  # kinds its workers wait for, this run
    waiting: dict[str, float] = field(default_factory=dict)  # request → queued at
    dirty: set[str] = field(default_factory=set)  # queued again while running
    running: dict[str, tuple[float, str]] = field(default_factory=dict)  # → (start, rid)
    scheduled: dict[str, Scheduled] = field(default_factory=dict)
    results: Counter[str] = field(default_factory=Counter)  # reconcile outcomes
    retries: int = 0

    def queue_depth(self, now: float) -> int:
        """Requests ready for a worker: waiting, and delayed ones whose time has come."""
        due = sum(1 for item in self.scheduled.values() if item.due <= now)
        return len(self.waiting) + due

    @property
    def errors(self) -> int:
        return sum(self.results[outcome] for outcome in RECONCILE_FAILED)

    @property
    def reconciled(self) -> int:
        return sum(self.results.values()) - self.errors

    def next_requeue(self) -> tuple[str, Scheduled] | None:
        upcoming = [(item.due, request) for request, item in self.scheduled.items()]
        if not upcoming:
            return None
        _, request = min(upcoming)
        return request, self.scheduled[request]

    def reset_work(self) -> None:
        """The process that held this queue ended (or a new one started): nothing is queued."""
        self.waiting.clear()
        self.dirty.clear()
        self.running.clear()
        self.scheduled.clear()


@dataclass(slots=True)
class Transition:
    time: float
    outcome: str
    holder: str
    reason: str


@dataclass(slots=True)
class LeaseState:
    lease: str = ""
    identity: str = ""  # this replica
    holder: str = ""
    outcome: str = ""  # the latest transition: acquired / standby / lost / released
    since: float = 0.0
    last_error: str = ""
    transitions: deque[Transition] = field(default_factory=lambda: deque(maxlen=MAX_TRANSITIONS))
    transition_count: int = 0


@dataclass(slots=True)
class WatchFailure:
    outcome: str  # forbidden / kind_not_found / error / disconnected
    reason: str  # the API server's message
    status: int  # its HTTP status, when it answered
    at: float


@dataclass(slots=True)
class WatchState:
    kind: str
    api_version: str = ""
    namespaces: set[str] = field(default_factory=set)  # "" = every namespace
    synced_at: float | None = None
    outcome: str = ""  # the latest informer record
    reason: str = ""
    at: float | None = None
    events: int = 0
    last_event: float | None = None
    last_error: WatchFailure | None = None


_END_CODES = {
    ReconcileOutcome.SUCCESS: Code.RECONCILED,
    ReconcileOutcome.ERROR: Code.RECONCILE_FAILED,
    ReconcileOutcome.TERMINAL_ERROR: Code.TERMINAL_ERROR,
    ReconcileOutcome.REQUEUE: Code.REQUEUE_SCHEDULED,
    ReconcileOutcome.REQUEUE_AFTER: Code.REQUEUE_SCHEDULED,
}

Cell = tuple[int, tuple[str, str]]  # (event row key, (controller, request))
_V = TypeVar("_V")


class ViewState:
    """Every view's content, folded from records in the order they were written.

    Links follow the record ids the pipeline writes: a dispatch names its event, a reconcile
    start names the dispatches (and requeues) it serves, an end and a requeue carry the start's
    reconcile id. Ids repeat across runs of one journal; a later record with an id replaces the
    earlier in the link tables, which keeps each run's chains apart as explain does (by time).
    """

    def __init__(self, *, max_events: int = MAX_EVENT_ROWS) -> None:
        self.max_events = max_events
        self.events: OrderedDict[int, EventRow] = OrderedDict()
        self.controllers: dict[str, ControllerState] = {}
        self.lease = LeaseState()
        self.watches: dict[str, WatchState] = {}
        self.newest: float | None = None  # time of the newest record applied
        self.manager = ""  # started / stopped: the latest manager record
        self.gaps = 0  # journal_gap and evidence_missing records: what is shown may lack some
        self.applied = 0
        self.funnel = FunnelFold()  # each controller's funnel, rates and latencies
        self._next_key = 1
        self._changed: set[int] = set()
        self._event_rows: dict[int, int] = {}  # event record id → row key
        # Cells waiting for the next link of their chain, each entry consumed by that link.
        self._by_dispatch: dict[int, Cell] = {}
        self._by_reconcile: dict[str, list[Cell]] = {}
        self._by_requeue: dict[int, list[Cell]] = {}
        self._handlers: Mapping[Stage, Callable[[Record], None]] = {
            Stage.EVENT: self._on_event,
            Stage.DISPATCH: self._on_dispatch,
            Stage.RECONCILE_START: self._on_start,
            Stage.RECONCILE: self._on_end,
            Stage.REQUEUE: self._on_requeue,
            Stage.WRITE: self._on_write,
            Stage.WATCH: self._on_watch,
            Stage.LEASE: self._on_lease,
            Stage.CONTROLLER: self._on_controller,
            Stage.MANAGER: self._on_manager,
        }

    def apply(self, records: Iterable[Record]) -> None:
        handlers = self._handlers
        funnel = self.funnel.add
        newest = self.newest
        count = 0
        for record in records:
            count += 1
            if newest is None or record.time > newest:
                newest = record.time
            funnel(record)
            handler = handlers.get(record.stage)
            if handler is not None:
                handler(record)
        self.newest = newest
        self.applied += count

    def take_changed(self) -> list[int]:
        """Keys of event rows added or changed since the last call that still exist, in order."""
        changed = sorted(self._changed)
        self._changed.clear()
        return changed

    @property
    def first_key(self) -> int:
        """The oldest event row's key: every row below it was evicted."""
        return next(iter(self.events), self._next_key)

    # -- the pipeline ------------------------------------------------------------------------

    def _on_event(self, record: Record) -> None:
        ref = record.object
        if ref is None:
            return
        key = self._next_key
        self._next_key += 1
        self.events[key] = EventRow(
            key,
            record.time,
            ref.kind,
            ref.namespace,
            ref.name,
            record.outcome,
            record.attrs.get(Attr.SELF_CAUSED) is True,
            api_version=ref.api_version,
            resource_version=ref.resource_version,
        )
        self._event_rows[record.id] = key
        self._changed.add(key)
        watch = self._watch(ref.kind, ref.api_version)
        watch.events += 1
        watch.last_event = record.time
        while len(self.events) > self.max_events:
            old, _ = self.events.popitem(last=False)
            self._changed.discard(old)
        if len(self._event_rows) > 2 * self.max_events:
            self._prune()

    def _on_dispatch(self, record: Record) -> None:
        controller = self._controller(record.controller)
        request = record.request
        if record.outcome == DispatchOutcome.QUEUED:
            controller.waiting[request] = record.time
            _cap(controller.waiting)
        elif record.outcome == DispatchOutcome.REQUEUED_AFTER_PROCESSING:
            controller.dirty.add(request)
        row_key = self._event_rows.get(record.cause_ids[0]) if record.cause_ids else None
        row = None if row_key is None else self.events.get(row_key)
        if row is None:
            return
        outcome = Outcome(record.controller, request)
        attrs = record.attrs
        match record.outcome:
            case DispatchOutcome.DROPPED_BY_PREDICATE:
                outcome.code = Code.DROPPED_BY_PREDICATE
                outcome.detail = str(attrs.get(Attr.PREDICATE, "a predicate"))
            case DispatchOutcome.NOT_MAPPED:
                outcome.code = Code.NOT_MAPPED
                outcome.detail = record.reason
            case _ if record.outcome in ENQUEUED:
                outcome.code = Code.QUEUED
                outcome.merged = record.outcome == DispatchOutcome.DEDUPLICATED
                if record.outcome == DispatchOutcome.REQUEUED_AFTER_PROCESSING:
                    outcome.detail = "after the running reconcile"
            case _:  # shut_down: the queue no longer takes work
                outcome.detail = f"{record.outcome}: {record.reason}"
        row.outcomes[(record.controller, request)] = outcome
        self._changed.add(row.key)
        if record.outcome in ENQUEUED:
            self._by_dispatch[record.id] = (row.key, (record.controller, request))

    def _on_start(self, record: Record) -> None:
        controller = self._controller(record.controller)
        request = record.request
        controller.waiting.pop(request, None)
        controller.running[request] = (record.time, record.reconcile_id)
        _cap(controller.running)
        scheduled = controller.scheduled.get(request)
        if scheduled is not None and (
            scheduled.record_id in record.cause_ids or scheduled.due <= record.time
        ):
            del controller.scheduled[request]
        cells: list[Cell] = []
        for cause in record.cause_ids:
            dispatched = self._by_dispatch.pop(cause, None)
            if dispatched is not None:
                cells.append(dispatched)
            cells.extend(self._by_requeue.pop(cause, ()))
        for outcome in self._outcomes(cells):
            outcome.code = Code.IN_PROGRESS
            outcome.detail = ""
            outcome.due = None
            outcome.runs += 1
        if cells:
            self._by_reconcile[record.reconcile_id] = cells

    def _on_end(self, record: Record) -> None:
        controller = self._controller(record.controller)
        request = record.request
        controller.running.pop(request, None)
        controller.results[record.outcome] += 1
        if request in controller.dirty:
            controller.dirty.discard(request)
            controller.waiting[request] = record.time
        rid = record.reconcile_id
        settled = record.outcome in SETTLED
        cells = self._by_reconcile.pop(rid, []) if settled else self._by_reconcile.get(rid, [])
        code = _END_CODES.get(record.outcome, Code.RECONCILED)
        for outcome in self._outcomes(cells):
            outcome.code = code
            is_error = code in (Code.RECONCILE_FAILED, Code.TERMINAL_ERROR)
            outcome.detail = record.reason if is_error else ""

    def _on_requeue(self, record: Record) -> None:
        controller = self._controller(record.controller)
        attrs = record.attrs
        due = attrs.get(Attr.DUE)
        due_at = float(due) if isinstance(due, int | float) else record.time
        attempt = int(attrs.get(Attr.ATTEMPT, 0))
        current = controller.scheduled.get(record.request)
        if current is None or due_at < current.due:  # add_after keeps the earliest time
            controller.scheduled[record.request] = Scheduled(
                due_at, record.id, record.outcome, attempt
            )
            _cap(controller.scheduled)
        if record.outcome == RequeueOutcome.RATE_LIMITED:
            controller.retries += 1
        cells = self._by_reconcile.pop(record.reconcile_id, [])
        if not cells:
            return
        # A retry still serves the events that failed; a requeue the reconcile asked for
        # after succeeding is later work of the request, not of these events.
        if record.outcome == RequeueOutcome.RATE_LIMITED:
            self._by_requeue[record.id] = cells
        for outcome in self._outcomes(cells):
            outcome.due = due_at
            outcome.attempt = attempt

    def _on_write(self, record: Record) -> None:
        """Mark the event a write claims as its own (its answer came after the event), as
        explain pairs them: the write names the event, and their resourceVersions match."""
        event_id = record.attrs.get(Attr.EVENT_ID)
        row_key = self._event_rows.get(event_id) if isinstance(event_id, int) else None
        row = None if row_key is None else self.events.get(row_key)
        if row is None or record.object is None:
            return
        if row.resource_version == record.object.resource_version and not row.self_caused:
            row.self_caused = True
            self._changed.add(row.key)

    def _outcomes(self, cells: Iterable[Cell]) -> Iterator[Outcome]:
        for row_key, slot in cells:
            row = self.events.get(row_key)
            outcome = None if row is None else row.outcomes.get(slot)
            if outcome is not None:
                self._changed.add(row_key)
                yield outcome

    def _prune(self) -> None:
        """Forget links into evicted rows (chains that never went on, such as at shutdown)."""
        first = self.first_key
        self._event_rows = {rid: key for rid, key in self._event_rows.items() if key >= first}
        self._by_dispatch = {i: c for i, c in self._by_dispatch.items() if c[0] >= first}
        self._by_reconcile = {
            rid: cells for rid, cells in self._by_reconcile.items() if _any_kept(cells, first)
        }
        self._by_requeue = {
            rid: cells for rid, cells in self._by_requeue.items() if _any_kept(cells, first)
        }

    # -- health ------------------------------------------------------------------------------

    def _on_watch(self, record: Record) -> None:
        attrs = record.attrs
        watch = self._watch(str(attrs.get(Attr.KIND, "")), str(attrs.get(Attr.API_VERSION, "")))
        watch.namespaces.add(str(attrs.get(Attr.NAMESPACE, "")))
        watch.outcome = record.outcome
        watch.reason = record.reason
        watch.at = record.time
        if record.outcome == WatchOutcome.SYNCED:
            watch.synced_at = record.time
        elif record.outcome in WATCH_FAILURES:
            status = int(attrs.get(Attr.STATUS, 0))
            watch.last_error = WatchFailure(record.outcome, record.reason, status, record.time)

    def _on_lease(self, record: Record) -> None:
        lease = self.lease
        attrs = record.attrs
        lease.lease = str(attrs.get(Attr.LEASE, lease.lease))
        lease.identity = str(attrs.get(Attr.IDENTITY, lease.identity))
        lease.holder = str(attrs.get(Attr.HOLDER, lease.holder))
        if record.outcome == LeaseOutcome.ERROR:
            lease.last_error = record.reason
            return
        if record.outcome in LEASE_TRANSITIONS:
            lease.outcome = record.outcome
            lease.since = record.time
            lease.last_error = ""
            lease.transition_count += 1
            lease.transitions.append(
                Transition(record.time, record.outcome, lease.holder, record.reason)
            )

    def _on_controller(self, record: Record) -> None:
        controller = self._controller(record.controller)
        if record.outcome == ControllerOutcome.WATCHING:
            controller.watched.add(str(record.attrs.get(Attr.KIND, "")))
            return
        controller.outcome = record.outcome
        if record.outcome == ControllerOutcome.STARTED:
            controller.workers = int(record.attrs.get(Attr.MAX_CONCURRENT_RECONCILES, 0))

    def _on_manager(self, record: Record) -> None:
        if record.outcome in _GAPS:  # the evidence's, not the process's life
            self.gaps += 1
            return
        self.manager = record.outcome
        # A new process or the end of one: queues, caches and leadership start from nothing.
        for controller in self.controllers.values():
            controller.reset_work()
            controller.outcome = ""
            controller.stopped = record.outcome == ManagerOutcome.STOPPED
            if controller.stopped:  # the next run names its watches again
                controller.watched.clear()
        if record.outcome == ManagerOutcome.STARTED:
            for watch in self.watches.values():
                watch.synced_at = None

    def _controller(self, name: str) -> ControllerState:
        controller = self.controllers.get(name)
        if controller is None:
            controller = self.controllers[name] = ControllerState(name)
        return controller

    def blocking(self, controller: ControllerState) -> list[WatchState]:
        """The watches holding back a controller whose workers have not started: failed
        without syncing (what ``explain`` calls ``cache_not_synced``)."""
        if controller.stopped or controller.outcome == ControllerOutcome.STARTED:
            return []
        return [
            watch
            for kind in sorted(controller.watched)
            if (watch := self.watches.get(kind)) is not None
            and watch.synced_at is None
            and watch.last_error is not None
        ]

    def _watch(self, kind: str, api_version: str) -> WatchState:
        watch = self.watches.get(kind)
        if watch is None:
            watch = self.watches[kind] = WatchState(kind, api_version)
        return watch


def _any_kept(cells: Iterable[Cell], first: int) -> bool:
    return any(row_key >= first for row_key, _ in cells)


def _cap(table: dict[str, _V]) -> None:
    """Keep a per-controller table bounded: the oldest entries go first."""
    while len(table) > _MAX_PER_CONTROLLER:
        del table[next(iter(table))]
