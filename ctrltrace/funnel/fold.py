"""``FunnelFold``: folds records, in the order they were written, into per-controller counts
and answers a ``Funnel`` for any window. Pure: no clock (times are the records')."""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ctrltrace.funnel.model import (
    MAX_LOST,
    MAX_SECONDS,
    Drop,
    Funnel,
    Latency,
    Loss,
    Lost,
    Second,
    Step,
    Tally,
)
from ctrltrace.records import ObjectRef, Record, Stage
from ctrltrace.vocabulary import (
    ENQUEUED,
    WATCH_FAILURES,
    Attr,
    ControllerOutcome,
    DispatchOutcome,
    ManagerOutcome,
    WatchOutcome,
)

_MAX_PENDING = 100_000  # enqueued requests waiting for a reconcile, per controller


@dataclass(slots=True)
class _Pending:
    time: float
    ref: ObjectRef | None
    request: str


@dataclass(slots=True)
class _WatchHealth:
    synced: bool = False
    failure: str = ""  # the failing outcome while it lasts, with its HTTP status


@dataclass(slots=True)
class _ControllerFold:
    name: str
    total: Tally = field(default_factory=Tally)
    lost: dict[tuple[Loss, str], deque[Lost]] = field(default_factory=dict)  # the newest
    pending: dict[int, _Pending] = field(default_factory=dict)  # dispatch id → what it queued
    waiting: Counter[str] = field(default_factory=Counter)  # request → pending dispatches
    last_event: int = 0
    started: bool = False  # workers running in the current process
    watched: set[str] = field(default_factory=set)
    seconds: deque[Second] = field(default_factory=lambda: deque(maxlen=MAX_SECONDS))

    def tallies(self, time: float) -> tuple[Tally, Tally]:
        """The run's tally and that of the second of ``time``: every count goes in both."""
        return self.total, self.second(time).tally

    def drop(self, loss: Loss, reason: str, lost: Lost) -> None:
        for tally in self.tallies(lost.time):
            tally.drops[(loss, reason)] += 1
        kept = self.lost.get((loss, reason))
        if kept is None:
            kept = self.lost[(loss, reason)] = deque(maxlen=MAX_LOST)
        kept.append(lost)

    def second(self, time: float) -> Second:
        """The bucket of ``time``: a record older than the newest second counts there."""
        at = int(time)
        seconds = self.seconds
        if seconds and at <= seconds[-1].at:
            return seconds[-1]
        if seconds and at - seconds[-1].at <= MAX_SECONDS:
            depth = seconds[-1].depth
            for empty in range(seconds[-1].at + 1, at):  # quiet seconds hold the same depth
                seconds.append(Second(empty, depth=depth))
        seconds.append(Second(at, depth=len(self.waiting)))
        return seconds[-1]

    def unqueue(self, dispatch_id: int) -> _Pending | None:
        pending = self.pending.pop(dispatch_id, None)
        if pending is not None:
            self.waiting[pending.request] -= 1
            if self.waiting[pending.request] <= 0:
                del self.waiting[pending.request]
        return pending


class FunnelFold:
    """Every controller's funnel, folded from records in the order they were written.

    Not thread-safe: one thread applies records and reads funnels.
    """

    def __init__(self) -> None:
        self._controllers: dict[str, _ControllerFold] = {}
        self._watches: dict[str, _WatchHealth] = {}
        self._first: float | None = None
        self._newest: float | None = None
        self._handlers: Mapping[Stage, Callable[[Record], None]] = {
            Stage.DISPATCH: self._on_dispatch,
            Stage.RECONCILE_START: self._on_start,
            Stage.RECONCILE: self._on_end,
            Stage.WATCH: self._on_watch,
            Stage.CONTROLLER: self._on_controller,
            Stage.MANAGER: self._on_manager,
        }

    @property
    def controllers(self) -> list[str]:
        return sorted(self._controllers)

    def busiest(self) -> str | None:
        """The controller that saw the most events (the first by name among equals)."""
        folds = self._controllers
        return min(
            folds, key=lambda name: (-folds[name].total.steps[Step.SEEN], name), default=None
        )

    def apply(self, records: Iterable[Record]) -> None:
        for record in records:
            self.add(record)

    def add(self, record: Record) -> None:
        if self._first is None:
            self._first = record.time
        if self._newest is None or record.time > self._newest:
            self._newest = record.time
        handler = self._handlers.get(record.stage)
        if handler is not None:
            handler(record)

    def funnel(self, controller: str, since: float | None = None) -> Funnel | None:
        """The funnel of ``controller`` over everything folded, or over the seconds from
        ``since`` on (as far back as the kept seconds go); None when no record names it."""
        fold = self._controllers.get(controller)
        if fold is None:
            return None
        start = -math.inf if since is None else since
        tally = fold.total
        if since is not None:
            tally = Tally()
            for second in fold.seconds:
                if second.at >= int(since):
                    tally.merge(second.tally)
        drops = {
            key: Drop(*key, count, deque(lost for lost in fold.lost[key] if lost.time >= start))
            for key, count in tally.drops.items()
        }
        for pending in fold.pending.values():  # what still waits, and why
            if pending.time < start:
                continue
            loss, reason = self._waiting_reason(fold)
            entry = drops.get((loss, reason))
            if entry is None:
                entry = drops[(loss, reason)] = Drop(loss, reason)
            entry.count += 1
            entry.objects.append(_lost(pending.time, pending.ref, pending.request, reason))
        order = list(Loss)
        ordered = sorted(drops.values(), key=lambda d: (order.index(d.loss), -d.count, d.reason))
        return Funnel(
            controller,
            self._first if since is None else since,
            self._newest,
            tuple((step, tally.steps[step]) for step in Step),
            tuple(ordered),
            {outcome: tally.enqueued[outcome] for outcome in ENQUEUED},
            dict(sorted(tally.results.items())),
            Latency.of(tally.queue_wait),
            Latency.of(tally.duration),
            tuple(fold.seconds),
        )

    def _waiting_reason(self, fold: _ControllerFold) -> tuple[Loss, str]:
        if fold.started:
            return Loss.WAITING, "queued, waiting for a worker"
        failing = [
            f"{kind} {health.failure}"
            for kind in sorted(fold.watched)
            if (health := self._watches.get(kind)) is not None
            and not health.synced
            and health.failure
        ]
        if failing:
            return Loss.BLOCKED, f"blocked by unsynced watch {', '.join(failing)}"
        return Loss.WAITING, "queued, workers wait for the caches to sync"

    def _controller(self, name: str) -> _ControllerFold:
        fold = self._controllers.get(name)
        if fold is None:
            fold = self._controllers[name] = _ControllerFold(name)
        return fold

    # -- the pipeline ------------------------------------------------------------------------

    def _on_dispatch(self, record: Record) -> None:
        fold = self._controller(record.controller)
        event_id = record.cause_ids[0] if record.cause_ids else -record.id
        tallies = fold.tallies(record.time)
        outcome = record.outcome
        if event_id != fold.last_event:  # one per event, however many requests it made
            fold.last_event = event_id
            for tally in tallies:
                tally.steps[Step.SEEN] += 1
                if outcome != DispatchOutcome.DROPPED_BY_PREDICATE:
                    tally.steps[Step.PASSED] += 1
        if outcome == DispatchOutcome.DROPPED_BY_PREDICATE:
            predicate = str(record.attrs.get(Attr.PREDICATE, "a predicate"))
            lost = _lost(record.time, record.object, record.request, record.reason)
            fold.drop(Loss.PREDICATE, predicate, lost)
            return
        if outcome == DispatchOutcome.NOT_MAPPED:
            lost = _lost(record.time, record.object, record.request, record.reason)
            fold.drop(Loss.NOT_MAPPED, record.reason, lost)
            return
        for tally in tallies:
            tally.steps[Step.MAPPED] += 1
        if outcome not in ENQUEUED:  # shut_down: the queue no longer takes work
            reason = "the queue was shutting down"
            fold.drop(Loss.SHUT_DOWN, reason, _lost(record.time, record.object, record.request))
            return
        for tally in tallies:
            tally.steps[Step.ENQUEUED] += 1
            tally.enqueued[outcome] += 1
        fold.pending[record.id] = _Pending(record.time, record.object, record.request)
        fold.waiting[record.request] += 1
        if len(fold.pending) > _MAX_PENDING:
            fold.unqueue(next(iter(fold.pending)))
        fold.seconds[-1].depth = len(fold.waiting)

    def _on_start(self, record: Record) -> None:
        fold = self._controller(record.controller)
        tallies = fold.tallies(record.time)
        for cause in record.cause_ids:
            if fold.unqueue(cause) is not None:
                for tally in tallies:
                    tally.steps[Step.RECONCILED] += 1
        fold.seconds[-1].depth = len(fold.waiting)
        wait = record.attrs.get(Attr.QUEUE_WAIT_S)
        if isinstance(wait, int | float):
            for tally in tallies:
                tally.queue_wait.add(float(wait))

    def _on_end(self, record: Record) -> None:
        fold = self._controller(record.controller)
        duration = record.attrs.get(Attr.DURATION_S)
        for tally in fold.tallies(record.time):
            tally.results[record.outcome] += 1
            if isinstance(duration, int | float):
                tally.duration.add(float(duration))

    # -- what the pipeline depends on --------------------------------------------------------

    def _on_watch(self, record: Record) -> None:
        kind = str(record.attrs.get(Attr.KIND, ""))
        health = self._watches.get(kind)
        if health is None:
            health = self._watches[kind] = _WatchHealth()
        if record.outcome == WatchOutcome.SYNCED:
            health.synced = True
            health.failure = ""
        elif record.outcome in WATCH_FAILURES:
            status = record.attrs.get(Attr.STATUS)
            health.failure = record.outcome + (f" ({status})" if status else "")
        elif record.outcome in (WatchOutcome.LISTED, WatchOutcome.RESUMED):
            health.failure = ""

    def _on_controller(self, record: Record) -> None:
        fold = self._controller(record.controller)
        if record.outcome == ControllerOutcome.WATCHING:
            fold.watched.add(str(record.attrs.get(Attr.KIND, "")))
        elif record.outcome == ControllerOutcome.STARTED:
            fold.started = True

    def _on_manager(self, record: Record) -> None:
        if record.outcome not in (ManagerOutcome.STARTED, ManagerOutcome.STOPPED):
            return
        # A process started or ended: what its queues held was never reconciled by it. What a
        # failed watch held back stays blocked by it: that, not the stop, is what lost it.
        for fold in self._controllers.values():
            loss, reason = self._waiting_reason(fold)
            if loss is not Loss.BLOCKED:
                loss, reason = Loss.STOPPED, "the process stopped before a worker took it"
            for dispatch_id in list(fold.pending):
                pending = fold.unqueue(dispatch_id)
                assert pending is not None  # listed just now
                lost = _lost(pending.time, pending.ref, pending.request, reason)
                fold.drop(loss, reason, lost)
            fold.started = False
            if record.outcome == ManagerOutcome.STOPPED:
                fold.watched.clear()
        if record.outcome == ManagerOutcome.STARTED:
            for health in self._watches.values():
                health.synced = False


def _lost(time: float, ref: ObjectRef | None, request: str, reason: str = "") -> Lost:
    if ref is None:
        namespace, _, name = request.rpartition("/")
        return Lost(time, "", "", namespace, name, request, reason)
    return Lost(time, ref.kind, ref.api_version, ref.namespace, ref.name, request, reason)
