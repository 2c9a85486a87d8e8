"""The funnel of a controller: how many events reached each stage of its pipeline, where the
others were lost and why, and its rates and latencies second by second.

Owns ``FunnelFold``, which folds records (in the order they were written) into per-controller
counts, and ``Funnel``, the picture of one controller that the TUI draws and
``ctrltrace explain --controller NAME --funnel`` prints. The stages, in order:

1. seen: watch events dispatched to the controller (one per event, however many requests);
2. passed: of those, the ones every predicate let through (the rest: ``dropped_by_predicate``,
   by predicate);
3. mapped: requests the handler made of them (the events that made none: ``not_mapped``, by
   the handler's reason); one event can make several requests, so this may exceed passed;
4. enqueued: requests the queue took (new, merged into one waiting, re-queued behind a
   running one); the queue refuses them only once it is shut down;
5. reconciled: enqueued requests a reconcile ran for. The others still wait (for a worker), or
   are blocked because a watch of the controller failed before it synced (also once the
   process stopped: that is what lost them), or were lost when the process stopped.

Reconcile runs (retries and requeues included) are counted apart, by result, with their
queue wait and duration. Every count is of records: a journal gap makes them low, never high.

Pure: no Textual, no rich, no I/O, no clock (times are the records'). Memory is bounded:
objects kept per drop, pending requests and seconds of history are capped.
"""

from __future__ import annotations

import bisect
import datetime
import enum
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ctrltrace.records import ObjectRef, Record, Stage
from ctrltrace.vocabulary import (
    ENQUEUED,
    RECONCILE_FAILED,
    WATCH_FAILURES,
    Attr,
    ControllerOutcome,
    DispatchOutcome,
    ManagerOutcome,
    ReconcileOutcome,
    WatchOutcome,
)

MAX_LOST = 200  # objects kept per drop (the newest)
MAX_SECONDS = 600  # seconds of rates and latencies kept per controller
_MAX_PENDING = 100_000  # enqueued requests waiting for a reconcile, per controller


class Step(enum.StrEnum):
    SEEN = "seen"
    PASSED = "passed"
    MAPPED = "mapped"
    ENQUEUED = "enqueued"
    RECONCILED = "reconciled"


class Loss(enum.StrEnum):
    """Where the events that did not reach the next stage went."""

    PREDICATE = "dropped_by_predicate"  # seen → passed
    NOT_MAPPED = "not_mapped"  # passed → mapped
    SHUT_DOWN = "shut_down"  # mapped → enqueued
    BLOCKED = "blocked"  # enqueued → reconciled: workers wait for a watch that failed
    WAITING = "waiting"  # enqueued → reconciled: not run yet
    STOPPED = "stopped"  # enqueued → reconciled: the process ended first


# The stage each loss is counted after, in the order the funnel shows them.
AFTER: Mapping[Loss, Step] = {
    Loss.PREDICATE: Step.SEEN,
    Loss.NOT_MAPPED: Step.PASSED,
    Loss.SHUT_DOWN: Step.MAPPED,
    Loss.BLOCKED: Step.ENQUEUED,
    Loss.WAITING: Step.ENQUEUED,
    Loss.STOPPED: Step.ENQUEUED,
}
STEP_WORDS = {
    Step.SEEN: "seen by its watches",
    Step.PASSED: "passed its predicates",
    Step.MAPPED: "mapped to a request",
    Step.ENQUEUED: "enqueued",
    Step.RECONCILED: "reconciled",
}
LOSS_WORDS = {
    Loss.PREDICATE: "dropped by predicate",
    Loss.NOT_MAPPED: "not mapped",
    Loss.SHUT_DOWN: "queue shut down",
    Loss.BLOCKED: "blocked",
    Loss.WAITING: "still waiting",
    Loss.STOPPED: "lost at stop",
}
_RESULT_LOOKS = (
    (ReconcileOutcome.SUCCESS, "✓", "succeeded"),
    (ReconcileOutcome.ERROR, "✗", "failed"),
    (ReconcileOutcome.TERMINAL_ERROR, "✗", "terminal"),
    (ReconcileOutcome.REQUEUE, "↻", "requeued"),
    (ReconcileOutcome.REQUEUE_AFTER, "↻", "requeued after"),
)
# Latency histograms: buckets a fourth of an octave wide (a value is known within 19 %) from
# 0.1 ms to about 19 minutes.
_BOUNDS = tuple(1e-4 * 2 ** (i / 4) for i in range(94))


@dataclass(frozen=True, slots=True)
class Lost:
    """One object whose event was lost at a drop (the newest are kept)."""

    time: float
    kind: str
    api_version: str
    namespace: str
    name: str
    request: str
    reason: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "kind": self.kind,
            "api_version": self.api_version,
            "namespace": self.namespace,
            "name": self.name,
            "request": self.request,
            "reason": self.reason,
        }


@dataclass(slots=True)
class Drop:
    """Events lost between two stages for one reason."""

    loss: Loss
    reason: str
    count: int = 0
    objects: deque[Lost] = field(default_factory=lambda: deque(maxlen=MAX_LOST))

    @property
    def after(self) -> Step:
        return AFTER[self.loss]

    def to_json(self) -> dict[str, Any]:
        return {
            "after": str(self.after),
            "loss": str(self.loss),
            "reason": self.reason,
            "count": self.count,
            "objects": [lost.to_json() for lost in self.objects],
        }


class Histogram:
    """Latencies in log-spaced buckets: cheap to add and to merge, percentiles within 19 %
    (and exact at the ends: a percentile never lies outside the smallest and largest value)."""

    __slots__ = ("counts", "high", "low", "total")

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.total = 0
        self.low = math.inf
        self.high = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(_BOUNDS, seconds)] += 1
        self.total += 1
        self.low = min(self.low, seconds)
        self.high = max(self.high, seconds)

    def merge(self, other: Histogram) -> None:
        self.counts.update(other.counts)
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def percentile(self, fraction: float) -> float | None:
        """The upper bound of the bucket holding that fraction of the values (None if empty)."""
        if not self.total:
            return None
        rank = max(math.ceil(fraction * self.total), 1)
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                bound = _BOUNDS[index] if index < len(_BOUNDS) else math.inf
                return max(min(bound, self.high), self.low)
        return self.high  # unreachable: the counts add up to total


@dataclass(slots=True)
class Tally:
    """What a controller's pipeline did in some time: since the fold began, or in one second."""

    steps: Counter[Step] = field(default_factory=Counter)
    drops: Counter[tuple[Loss, str]] = field(default_factory=Counter)
    enqueued: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)  # reconcile runs by outcome
    queue_wait: Histogram = field(default_factory=Histogram)
    duration: Histogram = field(default_factory=Histogram)

    def merge(self, other: Tally) -> None:
        self.steps.update(other.steps)
        self.drops.update(other.drops)
        self.enqueued.update(other.enqueued)
        self.results.update(other.results)
        self.queue_wait.merge(other.queue_wait)
        self.duration.merge(other.duration)


@dataclass(slots=True)
class Second:
    """One second of a controller's life."""

    at: int  # whole seconds since the epoch
    depth: int = 0  # requests waiting in its queue at the end of the second
    tally: Tally = field(default_factory=Tally)

    @property
    def events(self) -> int:
        """Watch events dispatched to the controller."""
        return self.tally.steps[Step.SEEN]

    @property
    def reconciles(self) -> int:
        """Reconciles that ended."""
        return sum(self.tally.results.values())

    @property
    def errors(self) -> int:
        """Reconciles that failed (error or terminal error)."""
        results = self.tally.results
        return sum(results[outcome] for outcome in RECONCILE_FAILED)


@dataclass(frozen=True, slots=True)
class Latency:
    p50: float | None
    p99: float | None
    count: int

    @classmethod
    def of(cls, histogram: Histogram) -> Latency:
        return cls(histogram.percentile(0.5), histogram.percentile(0.99), histogram.total)

    def to_json(self) -> dict[str, Any]:
        return {"p50_s": _finite(self.p50), "p99_s": _finite(self.p99), "count": self.count}


@dataclass(frozen=True, slots=True)
class Funnel:
    """One controller's funnel over a window of the records folded so far."""

    controller: str
    since: float | None  # the window: from (the first record, or the window's start) …
    until: float | None  # … to the newest record
    steps: tuple[tuple[Step, int], ...]
    drops: tuple[Drop, ...]  # in funnel order, the largest first within a stage
    enqueued: Mapping[str, int]  # queued / deduplicated / requeued_after_processing
    results: Mapping[str, int]  # reconcile runs by outcome
    queue_wait: Latency
    duration: Latency
    seconds: tuple[Second, ...]  # oldest first, no gaps

    def count(self, step: Step) -> int:
        return dict(self.steps)[step]

    def drops_after(self, step: Step) -> list[Drop]:
        return [drop for drop in self.drops if drop.after is step]

    @property
    def runs(self) -> int:
        return sum(self.results.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "controller": self.controller,
            "since": self.since,
            "until": self.until,
            "stages": [{"stage": str(step), "count": count} for step, count in self.steps],
            "enqueued": dict(self.enqueued),
            "drops": [drop.to_json() for drop in self.drops],
            "reconciles": {"runs": self.runs, "results": dict(self.results)},
            "queue_wait": self.queue_wait.to_json(),
            "reconcile_duration": self.duration.to_json(),
            "per_second": [
                {
                    "time": second.at,
                    "events": second.events,
                    "reconciles": second.reconciles,
                    "errors": second.errors,
                    "queue_depth": second.depth,
                }
                for second in self.seconds
            ],
        }


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


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else value


def enqueued_words(funnel: Funnel) -> str:
    split = funnel.enqueued
    return (
        f"new {split['queued']} · merged into a waiting one {split['deduplicated']} · "
        f"behind a running one {split['requeued_after_processing']}"
    )


def results_words(results: Mapping[str, int]) -> str:
    return " · ".join(
        f"{mark} {results[outcome]} {words}"
        for outcome, mark, words in _RESULT_LOOKS
        if results.get(outcome)
    )


def render_funnel(funnel: Funnel, bar_width: int = 30) -> str:
    """The funnel as plain text, for a terminal, a script or a CI log."""
    most = max(max((count for _, count in funnel.steps), default=0), funnel.runs, 1)

    def row(label: str, count: str, value: int, detail: str) -> str:
        bar = "#" * (round(bar_width * value / most) if value else 0)
        return f"{label:<28}  {count:>7}  {bar:<{bar_width}}  {detail}".rstrip()

    since = "" if funnel.since is None else f" from {_utc(funnel.since)}"
    until = "" if funnel.until is None else f" to {_utc(funnel.until)}"
    lines = [f"funnel of controller {funnel.controller}{since}{until}", ""]
    for step, count in funnel.steps:
        detail = enqueued_words(funnel) if step is Step.ENQUEUED and count else ""
        lines.append(row(STEP_WORDS[step], str(count), count, detail))
        for drop in funnel.drops_after(step):
            label = f"  ✗ {LOSS_WORDS[drop.loss]}"
            lines.append(row(label, f"-{drop.count}", drop.count, drop.reason))
    lines.append(
        row("reconcile runs", str(funnel.runs), funnel.runs, results_words(funnel.results))
    )
    for label, latency in (("queue wait", funnel.queue_wait), ("reconcile time", funnel.duration)):
        if latency.count:
            lines.append(
                f"{label}: p50 {_seconds(latency.p50)}, p99 {_seconds(latency.p99)} "
                f"({latency.count} runs)"
            )
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "over 19 min"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _utc(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
