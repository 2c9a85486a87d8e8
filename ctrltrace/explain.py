"""Explain: why did (or didn't) the latest event for an object reach Reconcile?

Owns the decision procedure over records, the closed vocabulary of verdict codes with their
one-line messages and fixes, the timeline, and the two ways an explanation is shown: JSON for
scripts and text (or a rich renderable) that reads without colour in 100 columns.

Pure logic: no I/O and no journal. Callers pass the records: those about the object (as
``Journal.about`` returns them, or filtered from a ``Collect`` sink), and the informer, lease
and controller records that say whether the pipeline around it was healthy.

The decision procedure, in order:

1. The trigger is the latest EVENT for the object (matching ``kind`` when given), or the
   latest DISPATCH whose request is the object's key but whose object is another one (a child
   mapped to it), whichever came last. Without either, go to 6.
2. The trigger's DISPATCH records (one per controller and request; only ``controller``'s when
   given) are followed one by one. None at all → ``not_watched``: no controller took it.
   ``dropped_by_predicate`` and ``not_mapped`` are verdicts as they stand.
3. A queued, deduplicated or requeued-after-processing dispatch is followed to the
   RECONCILE_START naming it as a cause (or, should that link be missing, the next start of
   the same request in the same controller: the queue coalesced it into that one), then along
   the chain start → RECONCILE → REQUEUE → next start, to the chain's end: a start without an
   end is ``in_progress``; an end ``success`` is ``reconciled``, ``error`` is
   ``reconcile_failed`` (with the retry's attempt and due time), ``terminal_error`` is
   ``terminal_error``, ``requeue``/``requeue_after`` are ``requeue_scheduled`` (due time).
4. A dispatch with no start yet: ``not_leader`` if the latest lease transition (acquired,
   standby, lost, released) is not ``acquired`` (naming the holder), else
   ``cache_not_synced`` if the controller's latest lifecycle record is ``cache_not_synced``,
   else ``queued``.
5. With several dispatches, the one that got furthest is the verdict: reaching Reconcile beats
   waiting, which beats not_mapped and dropped_by_predicate; among those that reached
   Reconcile, failures come first. The others are listed in the verdict's details. Then, if
   the trigger was the controller's own write coming back (EVENT ``attrs["self_caused"]``) and
   the object's last three or more reconciles were each triggered only by such events, the
   verdict becomes ``self_triggered``: the controller is reconciling itself in a loop.
6. No event: the informer records for the object's kind (every kind when ``kind`` is not
   given) that cover its namespace decide. None → ``not_watched``; the latest is
   ``forbidden`` → ``watch_forbidden``; ``kind_not_found`` → ``kind_not_found``; never
   ``synced`` → ``cache_not_synced``; otherwise ``no_events``. Across several kinds the
   first of that order wins.

Record ids are unique only within one process run. Every link is therefore looked up in the
direction of time (a cause is the latest record with that id before its effect, an effect the
earliest after its cause), which keeps chains from different runs of one journal apart.
"""

from __future__ import annotations

import datetime
import enum
import io
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from ctrltrace.records import AttrValue, Record, Stage


class Code(enum.StrEnum):
    """The closed vocabulary of verdicts; the values are what ``--json`` prints."""

    RECONCILED = "reconciled"
    RECONCILE_FAILED = "reconcile_failed"
    TERMINAL_ERROR = "terminal_error"
    REQUEUE_SCHEDULED = "requeue_scheduled"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    DROPPED_BY_PREDICATE = "dropped_by_predicate"
    NOT_MAPPED = "not_mapped"
    NOT_WATCHED = "not_watched"
    WATCH_FORBIDDEN = "watch_forbidden"
    KIND_NOT_FOUND = "kind_not_found"
    NOT_LEADER = "not_leader"
    CACHE_NOT_SYNCED = "cache_not_synced"
    SELF_TRIGGERED = "self_triggered"
    NO_EVENTS = "no_events"


_SUCCESS = frozenset({Code.RECONCILED, Code.REQUEUE_SCHEDULED})


def exit_code(verdict_code: str) -> int:
    """0 when the event was handled as asked (reconciled, or a requeue it asked for), else 3."""
    return 0 if Code(verdict_code) in _SUCCESS else 3


# Step 5: how far a dispatch got, lowest first.
_PREFERENCE = (
    Code.DROPPED_BY_PREDICATE,
    Code.NOT_MAPPED,
    Code.QUEUED,
    Code.CACHE_NOT_SYNCED,
    Code.NOT_LEADER,
    Code.IN_PROGRESS,
    Code.RECONCILED,
    Code.REQUEUE_SCHEDULED,
    Code.RECONCILE_FAILED,
    Code.TERMINAL_ERROR,
)
_LOOP_AFTER = 3  # reconciles in a row triggered by the controller's own writes
_TIMELINE_LIMIT = 16  # entries shown, the latest: one screen with the verdict
_CONTROLLER_STAGES = frozenset(
    {Stage.DISPATCH, Stage.RECONCILE_START, Stage.RECONCILE, Stage.REQUEUE}
)
_LEASE_TRANSITIONS = frozenset({"acquired", "standby", "lost", "released"})
_FORBIDDEN = re.compile(
    r'User "(?P<user>[^"]+)" cannot (?P<verb>\w+) resource "(?P<resource>[^"]+)"'
    r'(?: in API group "(?P<group>[^"]*)")?'
)


@dataclass(frozen=True)
class Target:
    namespace: str
    name: str
    kind: str | None = None
    controller: str | None = None

    @property
    def key(self) -> str:
        """The request key, as the work queue and records spell it."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def is_object_of(self, record: Record) -> bool:
        ref = record.object
        return (
            ref is not None
            and ref.namespace == self.namespace
            and ref.name == self.name
            and (self.kind is None or ref.kind == self.kind)
        )


@dataclass(frozen=True)
class TimelineEntry:
    time: float
    stage: Stage
    outcome: str
    what: str  # what happened, in words
    controller: str = ""
    details: Mapping[str, AttrValue] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "at": _iso(self.time),
            "stage": str(self.stage),
            "outcome": self.outcome,
            "what": self.what,
            "controller": self.controller,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class Verdict:
    code: Code
    message: str  # one line, with the specifics
    fix: str  # what the user can do about it
    details: Mapping[str, Any] = field(default_factory=dict)  # JSON values


@dataclass(frozen=True)
class Explanation:
    target: Target
    timeline: list[TimelineEntry]
    verdict: Verdict
    now: float
    omitted: int = 0  # older timeline entries left out

    def to_json(self) -> dict[str, Any]:
        target = self.target
        return {
            "object": {
                "namespace": target.namespace,
                "name": target.name,
                "kind": target.kind,
                "controller": target.controller,
                "key": target.key,
            },
            "now": self.now,
            "timeline": [entry.to_json() for entry in self.timeline],
            "timeline_omitted": self.omitted,
            "verdict": {
                "code": str(self.verdict.code),
                "message": self.verdict.message,
                "fix": self.verdict.fix,
                "details": dict(self.verdict.details),
            },
        }

    def render(self, width: int = 100) -> str:
        """Plain text, no colour or escape codes, no line wider than ``width``."""
        buffer = io.StringIO()
        console = Console(
            file=buffer,
            width=width,
            color_system=None,
            force_terminal=False,
            no_color=True,
            highlight=False,
            emoji=False,
        )
        console.print(self)
        # Rich pads table cells to the column width; trailing blanks only get in the way.
        return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        target = self.target
        title = Text.assemble(
            ("explain ", "bold"),
            (f"{target.kind} " if target.kind else "", "bold"),
            (target.key, "bold cyan"),
            f"  controller {target.controller}" if target.controller else "",
            f"  at {_local(self.now)}",
        )
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        table.add_column("time", no_wrap=True)
        table.add_column("stage", no_wrap=True)
        table.add_column("controller", overflow="fold", max_width=20)
        table.add_column("what happened", overflow="fold", ratio=1)
        for entry in self.timeline:
            mark, style = _mark(entry.stage, entry.outcome)
            table.add_row(
                _clock(entry.time),
                Text(f"{mark} {_STAGE_LABELS.get(entry.stage, entry.stage)}", style=style),
                entry.controller,
                entry.what,
            )
        parts: list[RenderableType] = [title]
        if self.omitted:
            parts.append(Text(f"… {self.omitted} earlier records not shown", style="dim"))
        parts.append(table if self.timeline else Text("no records about this object", "dim"))
        mark, style = _VERDICT_MARKS.get(self.verdict.code, ("✗", "red"))
        parts += [
            Text(""),
            Text.assemble(
                (f"{mark} {self.verdict.code}", f"bold {style}"), "  ", self.verdict.message
            ),
            Text.assemble(("fix: ", "bold"), self.verdict.fix),
        ]
        yield Group(*parts)


def explain(
    object_records: Sequence[Record],
    *,
    namespace: str,
    name: str,
    kind: str | None = None,
    controller: str | None = None,
    watch_records: Sequence[Record] = (),
    lease_records: Sequence[Record] = (),
    controller_records: Sequence[Record] = (),
    now: float,
    timeline_limit: int = _TIMELINE_LIMIT,
) -> Explanation:
    """Decide what happened to the object's latest event (see the module docstring)."""
    target = Target(namespace, name, kind, controller)
    chains = _Chains(_with_own_writes_paired(object_records), controller)
    health = _Health(watch_records, lease_records, controller_records, controller)
    decision = _Decision(target, chains, health, now)
    verdict = decision.decide()
    shown = chains.records[-timeline_limit:] if timeline_limit > 0 else []
    shown_ids = {id(record) for record in shown}
    evidence = [record for record in decision.evidence if id(record) not in shown_ids]
    entries = sorted(shown + evidence, key=lambda record: record.time)
    return Explanation(
        target,
        [_entry(record) for record in entries],
        verdict,
        now,
        omitted=len(chains.records) - len(shown),
    )


# -- following chains ------------------------------------------------------------------------


def _with_own_writes_paired(records: Sequence[Record]) -> list[Record]:
    """Mark events that a later WRITE record claims (``attrs["event_id"]``) as own writes.

    A write's watch event can arrive before the write's answer; then the informer cannot tell
    and the client links the two from the write's side. Seen from here both links mean the
    same: the event is the controller's own write coming back.
    """
    claimed = {
        (int(record.attrs["event_id"]), record.object.resource_version): record.id
        for record in records
        if record.stage is Stage.WRITE and "event_id" in record.attrs and record.object
    }
    if not claimed:
        return list(records)

    def paired(record: Record) -> Record:
        key = (record.id, record.object.resource_version if record.object else "")
        write_id = claimed.get(key) if record.stage is Stage.EVENT else None
        if write_id is None:
            return record
        return replace(
            record,
            cause_ids=(write_id,),
            reason="the controller's own write coming back",
            attrs={**record.attrs, "self_caused": True},
        )

    return [paired(record) for record in records]


class _Chains:
    """One object's records, indexed to follow event → dispatch → reconcile → requeue."""

    def __init__(self, records: Iterable[Record], controller: str | None) -> None:
        kept = (
            record
            for record in records
            if controller is None
            or record.stage not in _CONTROLLER_STAGES
            or record.controller == controller
        )
        # Sorting is stable: records of equal time (a fake clock) keep the order they were
        # emitted in, and positions in this list are what "before" and "after" mean below.
        self.records = sorted(kept, key=lambda record: record.time)
        self._by_id: defaultdict[int, list[tuple[int, Record]]] = defaultdict(list)
        self._effects: defaultdict[int, list[tuple[int, Record]]] = defaultdict(list)
        self._position: dict[int, int] = {}
        self.ends: dict[str, Record] = {}
        self.requeues: dict[str, Record] = {}
        for position, record in enumerate(self.records):
            self._position[id(record)] = position
            self._by_id[record.id].append((position, record))
            for cause in record.cause_ids:
                self._effects[cause].append((position, record))
            if record.stage is Stage.RECONCILE:
                self.ends[record.reconcile_id] = record
            elif record.stage is Stage.REQUEUE:
                self.requeues[record.reconcile_id] = record

    def cause(self, cause_id: int, effect: Record) -> Record | None:
        """The latest record with ``cause_id`` before ``effect``."""
        limit = self._position[id(effect)]
        found = [record for position, record in self._by_id[cause_id] if position < limit]
        return found[-1] if found else None

    def effects(self, cause: Record, stage: Stage) -> list[Record]:
        """Records of ``stage`` after ``cause`` that name it as a cause."""
        start = self._position[id(cause)]
        return [
            record
            for position, record in self._effects[cause.id]
            if position > start and record.stage is stage
        ]

    def after(self, record: Record) -> Iterator[Record]:
        return iter(self.records[self._position[id(record)] + 1 :])

    def next_start(self, cause: Record) -> Record | None:
        """The reconcile that ``cause`` (a dispatch or a requeue) led to, if one started."""
        same = [
            start
            for start in self.effects(cause, Stage.RECONCILE_START)
            if start.controller == cause.controller and start.request == cause.request
        ]
        if same or cause.stage is not Stage.DISPATCH:
            return same[0] if same else None
        return next(
            (
                record
                for record in self.after(cause)
                if record.stage is Stage.RECONCILE_START
                and record.controller == cause.controller
                and record.request == cause.request
            ),
            None,
        )

    def event_behind(self, record: Record) -> Record | None:
        """The watch event a record stems from: itself, or a dispatch's event."""
        if record.stage is Stage.EVENT:
            return record
        if record.stage is Stage.DISPATCH and record.cause_ids:
            return self.cause(record.cause_ids[0], record)
        return None

    def self_triggered(self, start: Record) -> bool:
        """Whether a reconcile was triggered only by the controller's own writes coming back."""
        causes = [self.cause(cause_id, start) for cause_id in start.cause_ids]
        events = [
            self.event_behind(cause)
            for cause in causes
            if cause is not None and cause.stage is Stage.DISPATCH
        ]
        return (
            bool(events)
            and len(events) == len(causes)
            and all(
                event is not None and event.attrs.get("self_caused") is True for event in events
            )
        )


class _Health:
    """The informer, lease and controller records: is the pipeline around the object alive?"""

    def __init__(
        self,
        watch_records: Iterable[Record],
        lease_records: Iterable[Record],
        controller_records: Iterable[Record],
        controller: str | None,
    ) -> None:
        self.watches = sorted(watch_records, key=lambda record: record.time)
        self.leases = sorted(lease_records, key=lambda record: record.time)
        self.lifecycle = sorted(
            (
                record
                for record in controller_records
                if record.stage is Stage.MANAGER
                or controller is None
                or record.controller == controller
            ),
            key=lambda record: record.time,
        )

    def not_leader(self) -> Record | None:
        """The record saying this replica does not hold the lease, if it does not."""
        transitions = [record for record in self.leases if record.outcome in _LEASE_TRANSITIONS]
        if transitions:
            latest = transitions[-1]
            return None if latest.outcome == "acquired" else latest
        # Only errors: it never got the lease (and with no lease records, no election runs).
        return self.leases[-1] if self.leases else None

    def unsynced(self, controller: str) -> Record | None:
        states = [
            record
            for record in self.lifecycle
            if record.controller == controller and record.outcome in ("started", "cache_not_synced")
        ]
        return states[-1] if states and states[-1].outcome == "cache_not_synced" else None

    def stopped_after(self, record: Record) -> Record | None:
        return next(
            (
                later
                for later in self.lifecycle
                if later.stage is Stage.MANAGER
                and later.outcome == "stopped"
                and later.time >= record.time
            ),
            None,
        )


# -- deciding --------------------------------------------------------------------------------


class _Decision:
    def __init__(self, target: Target, chains: _Chains, health: _Health, now: float) -> None:
        self.target = target
        self.chains = chains
        self.health = health
        self.now = now
        self.evidence: list[Record] = []  # records outside the object's that decided

    def decide(self) -> Verdict:
        trigger = self._trigger()
        if trigger is None:
            return self._without_events()
        dispatches = self._dispatches(trigger)
        if not dispatches:
            return self._undispatched(trigger)
        outcomes = [(dispatch, self._follow(dispatch)) for dispatch in dispatches]
        best, verdict = max(outcomes, key=lambda pair: _PREFERENCE.index(pair[1].code))
        others = [
            {"controller": d.controller, "request": d.request, "code": str(v.code)}
            for d, v in outcomes
            if d is not best
        ]
        loop = self._self_triggered(trigger, best, verdict)
        if loop is not None:
            verdict = loop
        if others:
            listed = ", ".join(f"{other['controller']}: {other['code']}" for other in others)
            verdict = Verdict(
                verdict.code,
                f"{verdict.message} (other dispatches: {listed})",
                verdict.fix,
                {**verdict.details, "other_dispatches": others},
            )
        return verdict

    # step 1
    def _trigger(self) -> Record | None:
        target = self.target
        latest = None
        for record in self.chains.records:
            own_event = record.stage is Stage.EVENT and target.is_object_of(record)
            mapped_child = (
                record.stage is Stage.DISPATCH
                and record.request == target.key
                and not target.is_object_of(record)
            )
            if own_event or mapped_child:
                latest = record
        return latest

    # step 2
    def _dispatches(self, trigger: Record) -> list[Record]:
        if trigger.stage is Stage.DISPATCH:
            return [trigger]
        return [
            dispatch
            for dispatch in self.chains.effects(trigger, Stage.DISPATCH)
            if self.target.is_object_of(dispatch)
        ]

    def _undispatched(self, event: Record) -> Verdict:
        which = f"controller {self.target.controller}" if self.target.controller else "controller"
        return Verdict(
            Code.NOT_WATCHED,
            f"the informer saw {_event_words(event)} at {_clock(event.time)}, but no {which} "
            "dispatched it",
            "Register a watch for this kind on the controller: .for_(), .owns() or "
            ".watches() in the builder; check the controller name given to explain.",
            {"event_id": event.id},
        )

    # steps 3 and 4
    def _follow(self, dispatch: Record) -> Verdict:
        controller = dispatch.controller
        if dispatch.outcome == "dropped_by_predicate":
            return self._dropped(dispatch)
        if dispatch.outcome == "not_mapped":
            handler = str(dispatch.attrs.get("handler", "the handler"))
            return Verdict(
                Code.NOT_MAPPED,
                f"{controller}: {handler} mapped the {_event_type(dispatch)} event to no "
                f"request: {dispatch.reason}",
                "Make the handler map it: set controller: true on the ownerReference that "
                "owns() should follow (or use match_every_owner=True), or make the map "
                "function return a request for this object.",
                {"controller": controller, "handler": handler, "reason": dispatch.reason},
            )
        start = self.chains.next_start(dispatch)
        if start is None:
            return self._waiting(dispatch)
        attempts = 1
        while True:
            end = self.chains.ends.get(start.reconcile_id)
            if end is None:
                return self._in_progress(start)
            requeue = self.chains.requeues.get(start.reconcile_id)
            following = None if requeue is None else self.chains.next_start(requeue)
            if requeue is None or following is None:
                return self._ended(end, requeue, attempts)
            start, attempts = following, attempts + 1

    def _dropped(self, dispatch: Record) -> Verdict:
        predicate = str(dispatch.attrs.get("predicate", "a predicate"))
        fix = _PREDICATE_FIXES.get(
            predicate,
            f"If {dispatch.controller} must see this event, relax {predicate} in the watch's "
            "predicates (.with_event_filter() or the predicates of .for_/.owns/.watches).",
        )
        return Verdict(
            Code.DROPPED_BY_PREDICATE,
            f"{dispatch.controller}: predicate {predicate} dropped the {_event_type(dispatch)} "
            f"event: {dispatch.reason}",
            fix,
            {"controller": dispatch.controller, "predicate": predicate, "reason": dispatch.reason},
        )

    def _waiting(self, dispatch: Record) -> Verdict:
        controller = dispatch.controller
        details: dict[str, Any] = {"controller": controller, "request": dispatch.request}
        queued = f"{controller} queued {dispatch.request} at {_clock(dispatch.time)}"
        lease = self.health.not_leader()
        if lease is not None:
            self.evidence.append(lease)
            holder = str(lease.attrs.get("holder") or "") or "nobody yet"
            name = str(lease.attrs.get("lease", "the lease"))
            details |= {"lease": name, "holder": holder, "lease_outcome": lease.outcome}
            return Verdict(
                Code.NOT_LEADER,
                f"{queued}, but this replica is not the leader: {name} is held by {holder} "
                f"({lease.outcome} at {_clock(lease.time)}: {lease.reason})",
                f"Only the leader reconciles: look at the leader ({holder}) and its logs, or "
                "stop it; run with leader election off to debug locally.",
                details,
            )
        unsynced = self.health.unsynced(controller)
        if unsynced is not None:
            self.evidence.append(unsynced)
            return Verdict(
                Code.CACHE_NOT_SYNCED,
                f"{queued}, but its workers wait for caches: {unsynced.reason}",
                "An informer never finished its initial list: grant list and watch on that "
                "kind, install its CRD, or check the connection to the API server.",
                details | {"reason": unsynced.reason},
            )
        waiting = f"{queued} ({_span(self.now - dispatch.time)} ago), waiting for a worker"
        stopped = self.health.stopped_after(dispatch)
        if stopped is not None:
            self.evidence.append(stopped)
            waiting += f"; the manager stopped at {_clock(stopped.time)} before one took it"
        return Verdict(
            Code.QUEUED,
            waiting,
            "If it waits long, every worker is busy: look for a slow reconcile of another "
            "object, or raise max_concurrent_reconciles.",
            details | {"queued_at": dispatch.time},
        )

    def _in_progress(self, start: Record) -> Verdict:
        message = (
            f"{start.controller} is reconciling {start.request}: started at "
            f"{_clock(start.time)}, running for {_span(self.now - start.time)} "
            f"(reconcile_id {start.reconcile_id})"
        )
        stopped = self.health.stopped_after(start)
        if stopped is not None:
            self.evidence.append(stopped)
            message += f"; the manager stopped at {_clock(stopped.time)} before it ended"
        return Verdict(
            Code.IN_PROGRESS,
            message,
            "If it runs much longer than usual it is stuck: find what it awaits in the logs "
            f"with reconcile_id={start.reconcile_id}.",
            {
                "controller": start.controller,
                "reconcile_id": start.reconcile_id,
                "started_at": start.time,
            },
        )

    def _ended(self, end: Record, requeue: Record | None, attempts: int) -> Verdict:
        controller, reconcile_id = end.controller, end.reconcile_id
        details: dict[str, Any] = {
            "controller": controller,
            "reconcile_id": reconcile_id,
            "reconciles": attempts,
            "duration_s": end.attrs.get("duration_s"),
        }
        ran = f"Reconcile of {end.request} in {controller}"
        after = f" after {attempts} runs" if attempts > 1 else ""
        next_run = "none recorded"
        if requeue is not None:
            next_run = self._due(requeue)
            details |= {
                "due": requeue.attrs.get("due"),
                "delay_s": requeue.attrs.get("delay_s"),
                "attempt": requeue.attrs.get("attempt"),
            }
        if end.outcome == "success":
            return Verdict(
                Code.RECONCILED,
                f"{ran} succeeded{after} at {_clock(end.time)}",
                "Nothing failed; if the object still looks wrong, the reconciler decided so: "
                f"read its logs with reconcile_id={reconcile_id}.",
                details,
            )
        if end.outcome == "terminal_error":
            return Verdict(
                Code.TERMINAL_ERROR,
                f"{ran} failed terminally at {_clock(end.time)}: {end.reason}; no retry",
                "A terminal error is not retried: fix its cause, then change the object to "
                "trigger a new reconcile.",
                details | {"error": end.reason},
            )
        if end.outcome == "error":
            retry = (
                f"retry attempt {details['attempt']} {next_run}" if requeue else "no retry recorded"
            )
            return Verdict(
                Code.RECONCILE_FAILED,
                f"{ran} failed at {_clock(end.time)}: {end.reason}; {retry}",
                "Fix the error in the reconciler (logs with reconcile_id="
                f"{reconcile_id}); it is retried with exponential back-off meanwhile.",
                details | {"error": end.reason},
            )
        return Verdict(
            Code.REQUEUE_SCHEDULED,
            f"{ran} asked to run again ({end.outcome}) at {_clock(end.time)}; next run {next_run}",
            "Nothing to fix: the reconciler asked for this requeue; return no requeue when "
            "the object needs no more work.",
            details,
        )

    def _due(self, requeue: Record) -> str:
        due = requeue.attrs.get("due")
        if not isinstance(due, int | float):
            return f"in {requeue.attrs.get('delay_s', '?')}s"
        late = self.now - due
        if late > 1.0:  # it should have run; something else is wrong
            return f"was due at {_clock(due)}, {_span(late)} ago, and has not started"
        return f"due at {_clock(due)} (in {_span(max(-late, 0.0))})"

    # step 5
    def _self_triggered(
        self, trigger: Record, dispatch: Record, verdict: Verdict
    ) -> Verdict | None:
        if verdict.code in (Code.DROPPED_BY_PREDICATE, Code.NOT_MAPPED):
            return None
        event = self.chains.event_behind(trigger)
        if event is None or event.attrs.get("self_caused") is not True:
            return None
        starts = [
            record
            for record in self.chains.records
            if record.stage is Stage.RECONCILE_START
            and record.request == dispatch.request
            and record.controller == dispatch.controller
        ]
        loops = 0
        for start in reversed(starts):
            if not self.chains.self_triggered(start):
                break
            loops += 1
        if loops < _LOOP_AFTER:
            return None
        write = self.chains.cause(event.cause_ids[0], event) if event.cause_ids else None
        wrote = f"its own {write.outcome}" if write is not None else "its own writes"
        return Verdict(
            Code.SELF_TRIGGERED,
            f"{dispatch.controller}: the last {loops} reconciles of {dispatch.request} were "
            f"each triggered by {wrote} coming back as a watch event; it keeps reconciling "
            f"itself (latest: {verdict.code})",
            "Compare the desired state with the current one and skip writes that change "
            "nothing; write status through the status subresource and add GenerationChanged() "
            "so status and metadata updates do not trigger reconciles.",
            {
                "controller": dispatch.controller,
                "loops": loops,
                "latest_code": str(verdict.code),
                "write": write.outcome if write is not None else "",
            },
        )

    # step 6
    def _without_events(self) -> Verdict:
        target = self.target
        kinds = _by_kind(self.health.watches, target.kind)
        covering = {
            kind: [
                r for r in records if r.attrs.get("namespace", target.namespace) == target.namespace
            ]
            for kind, records in kinds.items()
        }
        covering = {kind: records for kind, records in covering.items() if records}
        if not covering:
            return self._not_watched(kinds)
        verdicts = [self._watch_state(kind, records) for kind, records in covering.items()]
        return min(verdicts, key=lambda verdict: _WATCH_ORDER.index(verdict.code))

    def _not_watched(self, kinds: Mapping[str, list[Record]]) -> Verdict:
        target = self.target
        what = target.kind or "this object's kind"
        message = f"no informer watches {what}: no watch records for it"
        if kinds:  # watched, but in other namespaces only
            namespaces = {str(r.attrs.get("namespace")) for rs in kinds.values() for r in rs}
            message = (
                f"{what} is watched only in namespaces {', '.join(sorted(namespaces))}, not "
                + (f"in {target.namespace}" if target.namespace else "cluster-wide")
            )
        return Verdict(
            Code.NOT_WATCHED,
            message,
            "Add a watch for this kind (.for_(), .owns() or .watches() in the builder) and "
            "make sure the manager's namespaces include this object's.",
            {"kind": target.kind, "watched_kinds": sorted(kinds)},
        )

    def _watch_state(self, kind: str, records: list[Record]) -> Verdict:
        latest = records[-1]
        self.evidence.append(latest)
        details: dict[str, Any] = {"kind": kind, "watch_outcome": latest.outcome}
        if latest.outcome == "forbidden":
            return _forbidden(kind, latest, details)
        if latest.outcome == "kind_not_found":
            api_version = latest.attrs.get("api_version", "")
            return Verdict(
                Code.KIND_NOT_FOUND,
                f"{kind} ({api_version}) is not served by the API server: {latest.reason}",
                f"Install the CRD that defines {kind} (kubectl get crd), or correct the "
                "apiVersion and kind in the watch.",
                details | {"api_version": api_version},
            )
        if not any(record.outcome == "synced" for record in records):
            return Verdict(
                Code.CACHE_NOT_SYNCED,
                f"the informer for {kind} has not finished its initial list; latest: "
                f"{latest.outcome} at {_clock(latest.time)}: {latest.reason}",
                "Wait for the list or find why it fails: RBAC list/watch on the kind, the "
                "CRD, the connection to the API server.",
                details,
            )
        failing = ""
        if latest.outcome not in ("listed", "synced"):
            failing = f"; the watch is now {latest.outcome}: {latest.reason}"
        return Verdict(
            Code.NO_EVENTS,
            f"{kind} is watched and its cache synced, but no event for {self.target.key} was "
            f"seen{failing}",
            "Check the object exists in that namespace (kubectl get), that its labels match "
            "the manager's label selector, and that the journal covers when it changed.",
            details,
        )


_WATCH_ORDER = (Code.WATCH_FORBIDDEN, Code.KIND_NOT_FOUND, Code.CACHE_NOT_SYNCED, Code.NO_EVENTS)

_PREDICATE_FIXES = {
    "GenerationChanged": (
        "GenerationChanged drops updates that leave metadata.generation unchanged (status, "
        "labels, annotations, finalizers); add LabelChanged()/AnnotationChanged() with | or "
        "use ResourceVersionChanged() if the controller must see them."
    ),
    "ResourceVersionChanged": (
        "ResourceVersionChanged drops resyncs (same resourceVersion); nothing about the "
        "object changed, so there is nothing to reconcile."
    ),
}


def _forbidden(kind: str, record: Record, details: dict[str, Any]) -> Verdict:
    found = _FORBIDDEN.search(record.reason)
    namespace = str(record.attrs.get("namespace", ""))
    if found is None:  # not the API server's usual wording: quote it
        return Verdict(
            Code.WATCH_FORBIDDEN,
            f"the watch for {kind} is forbidden (403): {record.reason}",
            f"Grant get, list and watch on {record.attrs.get('resource') or kind} to the "
            "controller's identity.",
            details | {"reason": record.reason},
        )
    user, verb = found["user"], found["verb"]
    group = found["group"] or ""
    resource = f"{found['resource']}.{group}" if group else found["resource"]
    account = user.removeprefix("system:serviceaccount:")
    subject = f"--user={user}" if account == user else f"--serviceaccount={account}"
    role, binding, where = (
        ("role", "rolebinding", f" -n {namespace}")
        if namespace
        else ("clusterrole", "clusterrolebinding", "")
    )
    name = f"ctrltrace-{found['resource']}"
    return Verdict(
        Code.WATCH_FORBIDDEN,
        f"the watch for {kind} is forbidden (403): {user} cannot {verb} {resource}"
        + (f" in namespace {namespace}" if namespace else ""),
        f"Grant get, list and watch: kubectl create {role} {name}{where} "
        f"--verb=get,list,watch --resource={resource}; kubectl create {binding} {name}{where} "
        f"--{role}={name} {subject}",
        details | {"user": user, "verb": verb, "resource": resource, "namespace": namespace},
    )


def _by_kind(records: Iterable[Record], kind: str | None) -> dict[str, list[Record]]:
    kinds: dict[str, list[Record]] = {}
    for record in records:
        record_kind = str(record.attrs.get("kind", ""))
        if kind is None or record_kind == kind:
            kinds.setdefault(record_kind, []).append(record)
    return kinds


# -- words -----------------------------------------------------------------------------------


def _entry(record: Record) -> TimelineEntry:
    details: dict[str, AttrValue] = dict(record.attrs)
    if record.reason:
        details["reason"] = record.reason
    if record.request:
        details["request"] = record.request
    if record.reconcile_id:
        details["reconcile_id"] = record.reconcile_id
    if record.object is not None:
        ref = record.object
        details |= {
            "kind": ref.kind,
            "object": ref.key,
            "resource_version": ref.resource_version,
            "generation": ref.generation,
        }
    return TimelineEntry(
        record.time, record.stage, record.outcome, _what(record), record.controller, details
    )


def _what(record: Record) -> str:
    attrs, outcome = record.attrs, record.outcome
    match record.stage:
        case Stage.EVENT:
            return _event_words(record)
        case Stage.DISPATCH:
            return _dispatch_words(record)
        case Stage.RECONCILE_START:
            retries = int(attrs.get("retries", 0))
            retry = f", retry {retries}" if retries else ""
            waited = _span(float(attrs.get("queue_wait_s", 0.0)))
            return f"{record.request} after {waited} in the queue{retry}"
        case Stage.RECONCILE:
            took = _span(float(attrs.get("duration_s", 0.0)))
            error = f": {record.reason}" if outcome in ("error", "terminal_error") else ""
            return f"{outcome} in {took}{error}"
        case Stage.REQUEUE:
            attempt = f"retry attempt {attrs['attempt']}, " if "attempt" in attrs else ""
            due = attrs.get("due")
            when = f" at {_clock(due)}" if isinstance(due, int | float) else ""
            delay = _span(float(attrs.get("delay_s", 0.0)))
            return f"{outcome}: {attempt}next run in {delay}{when}"
        case Stage.WRITE:
            ref = record.object
            target = f" {ref.kind} {ref.key}" if ref is not None else ""
            version = f" → rv {ref.resource_version}" if ref is not None else ""
            return f"{outcome}{target}{version}"
        case Stage.WATCH:
            return f"{attrs.get('kind', '')} {outcome}: {record.reason}"
    return f"{outcome}: {record.reason}" if record.reason else outcome


def _event_words(event: Record) -> str:
    ref = event.object
    text = event.outcome
    if ref is not None:
        text += f" {ref.kind} {ref.key} rv {ref.resource_version} gen {ref.generation}"
    writer = event.attrs.get("writer")
    if writer:
        text += f" by {writer}"
    if event.attrs.get("self_caused") is True:
        text += " (own write)"
    return text


def _dispatch_words(dispatch: Record) -> str:
    attrs, outcome = dispatch.attrs, dispatch.outcome
    match outcome:
        case "dropped_by_predicate":
            return f"dropped by {attrs.get('predicate', 'a predicate')}: {dispatch.reason}"
        case "not_mapped":
            return f"not mapped by {attrs.get('handler', 'the handler')}: {dispatch.reason}"
        case "deduplicated":
            return f"{dispatch.request} already waiting: deduplicated ({dispatch.reason})"
        case "requeued_after_processing":
            return f"{dispatch.request} is being reconciled: queued again for after it"
    return f"{outcome} {dispatch.request} ({dispatch.reason})"


def _event_type(dispatch: Record) -> str:
    return str(dispatch.attrs.get("event_type", "watch"))


_MARKS = {
    (Stage.DISPATCH, "dropped_by_predicate"): ("✗", "red"),
    (Stage.DISPATCH, "not_mapped"): ("✗", "red"),
    (Stage.RECONCILE, "success"): ("✓", "green"),
    (Stage.RECONCILE, "error"): ("✗", "red"),
    (Stage.RECONCILE, "terminal_error"): ("✗", "red"),
    (Stage.RECONCILE, "requeue"): ("⟳", "yellow"),
    (Stage.RECONCILE, "requeue_after"): ("⟳", "yellow"),
    (Stage.WATCH, "synced"): ("✓", "green"),
    (Stage.WATCH, "forbidden"): ("✗", "red"),
    (Stage.WATCH, "kind_not_found"): ("✗", "red"),
    (Stage.WATCH, "error"): ("✗", "red"),
    (Stage.WATCH, "disconnected"): ("✗", "red"),
    (Stage.LEASE, "acquired"): ("✓", "green"),
    (Stage.LEASE, "standby"): ("⏳", "yellow"),
    (Stage.LEASE, "lost"): ("✗", "red"),
    (Stage.LEASE, "error"): ("✗", "red"),
    (Stage.CONTROLLER, "started"): ("✓", "green"),
    (Stage.CONTROLLER, "cache_not_synced"): ("⏳", "yellow"),
    (Stage.KUBE_EVENT, "dropped"): ("✗", "yellow"),
    (Stage.KUBE_EVENT, "failed"): ("✗", "red"),
}
_STAGE_MARKS = {
    Stage.EVENT: ("●", "cyan"),
    Stage.DISPATCH: ("→", ""),
    Stage.RECONCILE_START: ("▶", ""),
    Stage.REQUEUE: ("⟳", "yellow"),
    Stage.WRITE: ("✎", ""),
    Stage.KUBE_EVENT: ("⚑", ""),
}
_VERDICT_MARKS = {
    Code.RECONCILED: ("✓", "green"),
    Code.REQUEUE_SCHEDULED: ("⟳", "yellow"),
} | dict.fromkeys(
    (Code.QUEUED, Code.IN_PROGRESS, Code.NOT_LEADER, Code.CACHE_NOT_SYNCED), ("⏳", "yellow")
)


_STAGE_LABELS = {Stage.RECONCILE_START: "start", Stage.KUBE_EVENT: "Event"}


def _mark(stage: Stage, outcome: str) -> tuple[str, str]:
    return _MARKS.get((stage, outcome)) or _STAGE_MARKS.get(stage, ("·", ""))


def _clock(seconds: float) -> str:
    """A wall time as HH:MM:SS.mmm, local time."""
    moment = datetime.datetime.fromtimestamp(seconds).astimezone()
    return moment.strftime("%H:%M:%S.%f")[:-3]


def _local(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _iso(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _span(seconds: float) -> str:
    if seconds < 1.0:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120.0:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 120:
        return f"{minutes}m{rest:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def resolve_kind(text: str, watch_records: Iterable[Record]) -> str:
    """The kind a user means by ``KIND[.GROUP]``, kubectl-style: case-insensitive, singular or
    plural, matched against the kinds the journal saw watched. Unknown input is kept as typed
    (it then explains as ``not_watched``)."""
    for record in watch_records:
        kind = str(record.attrs.get("kind", ""))
        api_version = str(record.attrs.get("api_version", ""))
        plural = str(record.attrs.get("resource", "")).partition(".")[0]
        if names_kind(text, kind, api_version, plural):
            return kind
    return text


def names_kind(text: str, kind: str, api_version: str, plural: str = "") -> bool:
    """Whether ``KIND[.GROUP]`` names ``kind`` of ``api_version`` as kubectl reads it: the
    whole name in any case, singular or plural (``job`` is not ``CronJob``)."""
    wanted, _, group = text.lower().partition(".")
    names = {kind.lower(), f"{kind.lower()}s", plural} - {""}
    return wanted in names and group in ("", api_version.rpartition("/")[0].lower())
