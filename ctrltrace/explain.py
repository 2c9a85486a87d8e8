"""Explain: why did (or didn't) the latest event for an object reach Reconcile?

Owns the decision procedure over records, the closed vocabularies of verdict and warning
codes with their one-line messages and fixes, the timeline, and the JSON scripts read.
``ctrltrace.explain_text`` renders an explanation as text; nothing here renders.

Pure logic: no I/O and no journal. Callers pass the records (``ctrltrace.evidence`` reads
them from a journal): those about the object (as ``Journal.about`` returns them, or filtered
from a ``Collect`` sink), the informer, lease and controller records that say whether the
pipeline around it was healthy, and the recent reconciles of every request.

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
   end is ``in_progress`` (running for how long, against the controller's p50/p99 from
   ``activity``); an end ``success`` is ``reconciled``, ``error`` is ``reconcile_failed``
   (with the retry's attempt and due time), ``terminal_error`` is ``terminal_error``,
   ``requeue``/``requeue_after`` are ``requeue_scheduled`` (due time). A failure the API
   server answered (``api_status``: 409, 404, 403, 422, 429, 5xx) or a timeout gets the fix
   for that status; only other errors get "fix the error in the reconciler". A dispatch
   whose predicate or map function raised is a verdict about that function.
4. A dispatch with no start yet: ``not_leader`` if the latest lease transition (acquired,
   standby, lost, released) is not ``acquired`` (naming the holder). Else, if the controller
   has no ``started`` record in the manager run of the dispatch (runs end at MANAGER
   ``stopped``), its workers never started: ``cache_not_synced`` naming each of its watches
   (its ``watching`` records) that failed without syncing, with the API server's error and
   the fix; ``queued`` without workers while they are only listing. With workers:
   ``queued``, held by the same key's running reconcile (``requeued_after_processing``) or
   waiting for a worker, naming the reconciles running now (from ``activity``).
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
7. Deletion: if the object's latest event is DELETED, the message says so (and that
   Reconcile then ran). If it carries a deletionTimestamp and finalizers, and reconciles ran
   since the first event that carried it, a verdict that reached Reconcile becomes
   ``deletion_blocked`` (which finalizers, since when, how many reconciles).
8. Warnings, whatever the verdict, from the manager run of the trigger: the object's kind's
   watch is failing now (``watch_disconnected``) or its latest failure is a 403 and no watch
   was accepted (``resumed``) since (``watch_forbidden``, unless that is the verdict); this
   replica's latest lease transition is ``lost`` (``lease_lost``); a MANAGER ``journal_gap``
   overlaps the time from the first record about the object until now (``journal_gap``: the
   answer may be incomplete).

Record ids are unique only within one process run. Every link is therefore looked up in the
direction of time (a cause is the latest record with that id before its effect, an effect the
earliest after its cause), which keeps chains from different runs of one journal apart.
"""

from __future__ import annotations

import datetime
import enum
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ctrltrace import remedies
from ctrltrace.records import AttrValue, Record, Stage, Vocab


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
    DELETION_BLOCKED = "deletion_blocked"
    NO_EVENTS = "no_events"


class WarningCode(enum.StrEnum):
    """Conditions around the object that bear on any verdict; closed like ``Code``."""

    WATCH_FORBIDDEN = "watch_forbidden"  # changes reach the cache only by re-listing
    WATCH_DISCONNECTED = "watch_disconnected"  # the informer cannot reach the API server
    LEASE_LOST = "lease_lost"  # this replica lost the leader lease: the manager stopped
    JOURNAL_GAP = "journal_gap"  # records were lost on their way to the journal


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
_REACHED = frozenset(
    {Code.RECONCILED, Code.REQUEUE_SCHEDULED, Code.RECONCILE_FAILED, Code.TERMINAL_ERROR}
)
_FAILURES = frozenset({"forbidden", "kind_not_found", "disconnected", "error"})
_HUNG_FACTOR = 10.0  # a reconcile running this many times its p99 (and over a second) looks hung
_REPEATED = 3  # the same API status this many runs in a row is a pattern, not bad luck


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
class PipelineWarning:
    code: WarningCode
    message: str
    fix: str

    def to_json(self) -> dict[str, str]:
        return {"code": str(self.code), "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class Verdict:
    code: Code
    message: str  # one line, with the specifics
    fix: str  # what the user can do about it
    details: Mapping[str, Any] = field(default_factory=dict)  # JSON values
    warnings: tuple[PipelineWarning, ...] = ()


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
                "warnings": [warning.to_json() for warning in self.verdict.warnings],
            },
        }


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
    activity: Sequence[Record] = (),
    now: float,
    timeline_limit: int = _TIMELINE_LIMIT,
) -> Explanation:
    """Decide what happened to the object's latest event (see the module docstring).

    ``activity`` is the recent RECONCILE_START and RECONCILE records of every request (not
    only this object's): what the workers are doing, and how long reconciles usually take.
    """
    target = Target(namespace, name, kind, controller)
    chains = _Chains(_with_own_writes_paired(object_records), controller)
    health = _Health(watch_records, lease_records, controller_records, controller)
    decision = _Decision(target, chains, health, _Activity(activity), now)
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

    def position(self, record: Record) -> int:
        return self._position[id(record)]

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


@dataclass(frozen=True)
class _Blocker:
    """A watch whose cache has not synced, holding back its controller's workers."""

    kind: str
    api_version: str
    failure: Record  # its latest failure

    def words(self) -> tuple[str, str, dict[str, Any]]:
        """(what is wrong, the fix, details) in the API server's words."""
        failure = self.failure
        details: dict[str, Any] = {
            "kind": self.kind,
            "api_version": self.api_version,
            "outcome": failure.outcome,
            "error": failure.reason,
        }
        if "status" in failure.attrs:
            details["status"] = failure.attrs["status"]
        if failure.outcome == "forbidden":
            problem, fix, more = _forbidden_words(self.kind, failure)
            return problem, fix, details | more
        if failure.outcome == "kind_not_found":
            problem, fix, more = _not_served_words(self.kind, failure)
            return problem, fix, details | more
        return (
            f"the watch for {self.kind} failed ({failure.outcome}): {failure.reason}",
            "Check the connection from the controller to the API server (address, "
            "certificates, network policy); the informer keeps retrying.",
            details,
        )


class _Activity:
    """What every controller's workers did lately: reconciles running now, usual durations."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.starts: list[Record] = []
        self.ended: set[str] = set()
        self.durations: defaultdict[str, list[float]] = defaultdict(list)
        for record in sorted(records, key=lambda record: record.time):
            if record.stage is Stage.RECONCILE_START:
                self.starts.append(record)
            elif record.stage is Stage.RECONCILE:
                self.ended.add(record.reconcile_id)
                duration = record.attrs.get("duration_s")
                if isinstance(duration, int | float):
                    self.durations[record.controller].append(float(duration))

    def running(self, controller: str, after: float, until: float) -> list[Record]:
        """Reconciles of ``controller`` that started in (after, until] and have not ended."""
        return [
            start
            for start in self.starts
            if start.controller == controller
            and after < start.time <= until
            and start.reconcile_id not in self.ended
        ]

    def usual(self, controller: str) -> tuple[float, float, int] | None:
        """(p50, p99, runs) of the controller's reconcile durations, if any ended."""
        durations = sorted(self.durations.get(controller, ()))
        if not durations:
            return None
        last = len(durations) - 1
        return durations[last // 2], durations[round(last * 0.99)], len(durations)


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

    def latest(self, default: float) -> float:
        """The time of the newest informer, lease or lifecycle record."""
        return max(
            (
                records[-1].time
                for records in (self.watches, self.leases, self.lifecycle)
                if records
            ),
            default=default,
        )

    def run_of(self, at: float) -> tuple[float, float]:
        """The manager run ``at`` falls in, as (after, until): between two MANAGER stops.

        A run's build (its controllers' ``watching`` records) comes before its ``started``,
        so runs are told apart by their ends.
        """
        stops = [
            record.time
            for record in self.lifecycle
            if record.stage is Stage.MANAGER and record.outcome == "stopped"
        ]
        after = max((time for time in stops if time < at), default=-math.inf)
        return after, min((time for time in stops if time >= at), default=math.inf)

    def blockers(self, controller: str, at: float) -> list[_Blocker] | None:
        """None when the controller's workers started in the run of ``at``; else the watches
        whose caches have not synced because they failed (empty while they are listing)."""
        after, until = self.run_of(at)
        mine = [
            record
            for record in self.lifecycle
            if record.controller == controller and after < record.time <= until
        ]
        if any(record.outcome == "started" for record in mine):
            return None
        watched = {
            str(record.attrs.get("kind", "")): str(record.attrs.get("api_version", ""))
            for record in mine
            if record.outcome == Vocab.WATCHING
        }
        in_run = [record for record in self.watches if after < record.time <= until]
        if not watched:  # a journal from before controllers named their watches
            watched = {
                str(r.attrs.get("kind", "")): str(r.attrs.get("api_version", "")) for r in in_run
            }
        blockers = []
        for kind, api_version in watched.items():
            records = [record for record in in_run if record.attrs.get("kind") == kind]
            if any(record.outcome == "synced" for record in records):
                continue
            failures = [record for record in records if record.outcome in _FAILURES]
            if failures:  # one still listing for the first time blocks nothing yet
                blockers.append(_Blocker(kind, api_version, failures[-1]))
        return blockers

    def workers(self, controller: str, at: float) -> int:
        """How many workers the controller started in the run of ``at`` (0 if none)."""
        after, until = self.run_of(at)
        started = [
            record
            for record in self.lifecycle
            if record.controller == controller
            and record.outcome == "started"
            and after < record.time <= until
        ]
        return int(started[-1].attrs.get("max_concurrent_reconciles", 0)) if started else 0

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
    def __init__(
        self, target: Target, chains: _Chains, health: _Health, activity: _Activity, now: float
    ) -> None:
        self.target = target
        self.chains = chains
        self.health = health
        self.activity = activity
        self.now = now
        self.evidence: list[Record] = []  # records outside the object's that decided

    def decide(self) -> Verdict:
        trigger = self._trigger()
        verdict = self._verdict(trigger)
        return replace(verdict, warnings=self._warnings(trigger, verdict))

    def _verdict(self, trigger: Record | None) -> Verdict:
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
        verdict = self._deletion(verdict)
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
            f"the informer saw {_event_words(event)} at {clock(event.time)}, but no {which} "
            "dispatched it",
            "Register a watch for this kind on the controller: .for_(), .owns() or "
            ".watches() in the builder; check the controller name given to explain.",
            {"event_id": event.id},
        )

    # steps 3 and 4
    def _follow(self, dispatch: Record) -> Verdict:
        controller = dispatch.controller
        raised = _raised(dispatch)
        if raised is not None:
            return raised
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
        ends: list[Record] = []
        while True:
            end = self.chains.ends.get(start.reconcile_id)
            if end is None:
                return self._in_progress(start)
            ends.append(end)
            requeue = self.chains.requeues.get(start.reconcile_id)
            following = None if requeue is None else self.chains.next_start(requeue)
            if requeue is None or following is None:
                return self._ended(end, requeue, ends)
            start = following

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
        queued = f"{controller} queued {dispatch.request} at {clock(dispatch.time)}"
        lease = self.health.not_leader()
        if lease is not None:
            self.evidence.append(lease)
            holder = str(lease.attrs.get("holder") or "") or "nobody yet"
            name = str(lease.attrs.get("lease", "the lease"))
            details |= {"lease": name, "holder": holder, "lease_outcome": lease.outcome}
            return Verdict(
                Code.NOT_LEADER,
                f"{queued}, but this replica is not the leader: {name} is held by {holder} "
                f"({lease.outcome} at {clock(lease.time)}: {lease.reason})",
                f"Only the leader reconciles: look at the leader ({holder}) and its logs, or "
                "stop it; run with leader election off to debug locally.",
                details,
            )
        blockers = self.health.blockers(controller, dispatch.time)
        if blockers is not None:
            return self._blocked(dispatch, queued, blockers, details)
        stopped = self.health.stopped_after(dispatch)
        if stopped is not None:
            self.evidence.append(stopped)
            return Verdict(
                Code.QUEUED,
                f"{queued}; the manager stopped at {clock(stopped.time)} before a worker took it",
                "The request was still waiting when the process stopped; it is reconciled "
                "after the next start (the initial list queues every object).",
                details | {"queued_at": dispatch.time},
            )
        if dispatch.outcome == "requeued_after_processing":
            held = self._held(dispatch, queued, details)
            if held is not None:
                return held
        return self._busy(dispatch, queued, details)

    def _blocked(
        self,
        dispatch: Record,
        queued: str,
        blockers: list[_Blocker],
        details: dict[str, Any],
    ) -> Verdict:
        """Queued in a controller whose workers never started: name the watches to blame."""
        unsynced = self.health.unsynced(dispatch.controller)
        if unsynced is not None:
            self.evidence.append(unsynced)
        if not blockers:
            if unsynced is not None:  # an older journal, without the watches' names
                return Verdict(
                    Code.CACHE_NOT_SYNCED,
                    f"{queued}, but its workers wait for caches: {unsynced.reason}",
                    "An informer never finished its initial list: grant list and watch on "
                    "that kind, install its CRD, or check the connection to the API server.",
                    details | {"reason": unsynced.reason},
                )
            return Verdict(
                Code.QUEUED,
                f"{queued} ({_span(self.now - dispatch.time)} ago); its workers start once "
                "every watch has listed, and no watch has failed so far",
                "Nothing to fix yet: the caches are still being listed.",
                details | {"queued_at": dispatch.time, "workers": 0},
            )
        words = [blocker.words() for blocker in blockers]
        self.evidence += [blocker.failure for blocker in blockers]
        return Verdict(
            Code.CACHE_NOT_SYNCED,
            f"{queued}, but its workers have not started: they wait until every watch has "
            "synced, and " + "; ".join(problem for problem, _, _ in words),
            " ".join(fix for _, fix, _ in words),
            details | {"blocking": [more for _, _, more in words], "workers": 0},
        )

    def _held(self, dispatch: Record, queued: str, details: dict[str, Any]) -> Verdict | None:
        """Queued again while the same key is being reconciled: the key waits for that run."""
        running = [
            start
            for start in self.chains.records[: self.chains.position(dispatch)]
            if start.stage is Stage.RECONCILE_START
            and start.controller == dispatch.controller
            and start.request == dispatch.request
        ]
        if not running or running[-1].reconcile_id in self.chains.ends:
            return None
        start = running[-1]
        return Verdict(
            Code.QUEUED,
            f"{queued}, held: {dispatch.request} is being reconciled right now (reconcile_id "
            f"{start.reconcile_id}, running for {_span(self.now - start.time)}); a key is "
            "never reconciled by two workers at once, so it runs again when that one ends",
            "Nothing to fix unless the running reconcile hangs: find what it awaits in the "
            f"logs with reconcile_id={start.reconcile_id}.",
            details | {"queued_at": dispatch.time, "held_by": start.reconcile_id},
        )

    def _busy(self, dispatch: Record, queued: str, details: dict[str, Any]) -> Verdict:
        """Waiting for a worker: say what the workers are doing right now."""
        controller = dispatch.controller
        after, until = self.health.run_of(dispatch.time)
        running = self.activity.running(controller, after, until)
        workers = self.health.workers(controller, dispatch.time)
        usual = self.activity.usual(controller)
        doing = ", ".join(
            f"{start.request} for {_span(self.now - start.time)} "
            f"(reconcile_id {start.reconcile_id})"
            for start in running
        )
        of = f"of {workers} " if workers else ""
        now_doing = f"; {len(running)} {of}worker(s) busy: {doing}" if running else ""
        fix = (
            "If it waits long, every worker is busy: look for a slow reconcile of another "
            "object, or raise max_concurrent_reconciles."
        )
        if usual is not None and running:
            p99 = usual[1]
            slowest = running[0]  # the earliest start has run longest
            if self.now - slowest.time > max(p99 * _HUNG_FACTOR, 1.0):
                fix = (
                    f"The reconcile of {slowest.request} has run for "
                    f"{_span(self.now - slowest.time)}, far beyond this controller's p99 of "
                    f"{_span(p99)}: find what it awaits in the logs with reconcile_id="
                    f"{slowest.reconcile_id}; raise max_concurrent_reconciles only if "
                    "reconciles are slow by design."
                )
        busy = [
            {
                "request": start.request,
                "reconcile_id": start.reconcile_id,
                "running_s": self.now - start.time,
            }
            for start in running
        ]
        return Verdict(
            Code.QUEUED,
            f"{queued} ({_span(self.now - dispatch.time)} ago), waiting for a worker{now_doing}",
            fix,
            details | {"queued_at": dispatch.time, "workers": workers, "busy": busy},
        )

    def _in_progress(self, start: Record) -> Verdict:
        running = self.now - start.time
        message = (
            f"{start.controller} is reconciling {start.request}: started at "
            f"{clock(start.time)}, running for {_span(running)} "
            f"(reconcile_id {start.reconcile_id})"
        )
        details: dict[str, Any] = {
            "controller": start.controller,
            "reconcile_id": start.reconcile_id,
            "started_at": start.time,
            "running_s": running,
        }
        fix = (
            "If it runs much longer than usual it is stuck: find what it awaits in the logs "
            f"with reconcile_id={start.reconcile_id}."
        )
        usual = self.activity.usual(start.controller)
        if usual is not None:
            p50, p99, runs = usual
            details |= {"p50_s": p50, "p99_s": p99, "runs": runs}
            message += f"; its reconciles take {_span(p50)} (p50), {_span(p99)} (p99) over {runs}"
            if running > max(p99 * _HUNG_FACTOR, 1.0):
                message += ": this one is far longer than usual and looks hung"
                fix = (
                    f"It has run far beyond this controller's p99 of {_span(p99)}: find what it "
                    "awaits (a call without a timeout, a lock) in the logs with reconcile_id="
                    f"{start.reconcile_id}."
                )
        stopped = self.health.stopped_after(start)
        if stopped is not None:
            self.evidence.append(stopped)
            message += f"; the manager stopped at {clock(stopped.time)} before it ended"
        return Verdict(Code.IN_PROGRESS, message, fix, details)

    def _ended(self, end: Record, requeue: Record | None, ends: list[Record]) -> Verdict:
        controller, reconcile_id, attempts = end.controller, end.reconcile_id, len(ends)
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
                f"{ran} succeeded{after} at {clock(end.time)}",
                "Nothing failed; if the object still looks wrong, the reconciler decided so: "
                f"read its logs with reconcile_id={reconcile_id}.",
                details,
            )
        api = _api_words(end, ends)
        meaning, api_fix, api_details = api if api is not None else ("", "", {})
        if end.outcome == "terminal_error":
            return Verdict(
                Code.TERMINAL_ERROR,
                f"{ran} failed terminally at {clock(end.time)}: {end.reason}{meaning}; no retry",
                api_fix
                or "A terminal error is not retried: fix its cause, then change the object to "
                "trigger a new reconcile.",
                details | {"error": end.reason} | api_details,
            )
        if end.outcome == "error":
            retry = (
                f"retry attempt {details['attempt']} {next_run}" if requeue else "no retry recorded"
            )
            return Verdict(
                Code.RECONCILE_FAILED,
                f"{ran} failed at {clock(end.time)}: {end.reason}{meaning}; {retry}",
                api_fix
                or "Fix the error in the reconciler (logs with reconcile_id="
                f"{reconcile_id}); it is retried with exponential back-off meanwhile.",
                details | {"error": end.reason} | api_details,
            )
        return Verdict(
            Code.REQUEUE_SCHEDULED,
            f"{ran} asked to run again ({end.outcome}) at {clock(end.time)}; next run {next_run}",
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
            return f"was due at {clock(due)}, {_span(late)} ago, and has not started"
        return f"due at {clock(due)} (in {_span(max(-late, 0.0))})"

    # step 7
    def _deletion(self, verdict: Verdict) -> Verdict:
        """Say when the object is gone, or being deleted with finalizers that stay."""
        target = self.target
        events = [
            record
            for record in self.chains.records
            if record.stage is Stage.EVENT and target.is_object_of(record)
        ]
        if not events:
            return verdict
        latest = events[-1]
        if latest.outcome == "DELETED":
            ran = (
                "; Reconcile then ran, normally finding it gone" if verdict.code in _REACHED else ""
            )
            return replace(
                verdict,
                message=f"{target.key} was deleted (DELETED event at {clock(latest.time)})"
                f"{ran}: {verdict.message}",
                details={**verdict.details, "deleted_at": latest.time},
            )
        deleting = latest.attrs.get(Vocab.DELETION_TIMESTAMP)
        finalizers = str(latest.attrs.get(Vocab.FINALIZERS, ""))
        if not deleting or not finalizers or verdict.code not in _REACHED:
            return verdict
        first = next(e for e in events if e.attrs.get(Vocab.DELETION_TIMESTAMP) == deleting)
        since = [record for record in self.chains.after(first) if record.stage is Stage.RECONCILE]
        if not since:
            return verdict
        names = finalizers.split(",")
        failing = ""
        if verdict.code in (Code.RECONCILE_FAILED, Code.TERMINAL_ERROR):
            failing = (
                f" Its latest run failed ({verdict.details.get('error', '')}), so the clean-up "
                "never finished: fix that first."
            )
        return Verdict(
            Code.DELETION_BLOCKED,
            f"{target.key} is being deleted since {deleting}, but finalizer(s) "
            f"{', '.join(names)} remain after {len(since)} reconcile(s) since then (latest: "
            f"{verdict.code})",
            "Reconcile must remove its finalizer when its clean-up is done: when "
            "metadata.deletionTimestamp is set, finish the clean-up, then remove "
            f"{', '.join(names)} from metadata.finalizers (a patch); the API server deletes the "
            "object once no finalizer is left." + failing,
            {
                **verdict.details,
                "finalizers": names,
                "deletion_timestamp": deleting,
                "reconciles_since": len(since),
                "latest_code": str(verdict.code),
            },
        )

    # step 8
    def _warnings(self, trigger: Record | None, verdict: Verdict) -> tuple[PipelineWarning, ...]:
        """Conditions around the object, whatever the verdict: its watch, the lease, gaps."""
        target = self.target
        # Without an event, the latest run the journal holds (not the empty one after it).
        at = trigger.time if trigger is not None else self.health.latest(self.now)
        after, until = self.health.run_of(at)
        kinds = (
            {target.kind}
            if target.kind
            else {
                record.object.kind
                for record in self.chains.records
                if record.object is not None and target.is_object_of(record)
            }
        )
        warnings: list[PipelineWarning] = []
        for kind in sorted(kinds):
            records = [
                record
                for record in self.health.watches
                if after < record.time <= until
                and record.attrs.get("kind") == kind
                and record.attrs.get("namespace", target.namespace) == target.namespace
            ]
            warning = _watch_warning(kind, records, verdict.code)
            if warning is not None:
                warnings.append(warning)
        transitions = [
            record
            for record in self.health.leases
            if record.outcome in _LEASE_TRANSITIONS and after < record.time <= until
        ]
        if transitions and transitions[-1].outcome == "lost" and verdict.code != Code.NOT_LEADER:
            lost = transitions[-1]
            warnings.append(
                PipelineWarning(
                    WarningCode.LEASE_LOST,
                    f"this replica lost the leader lease {lost.attrs.get('lease', '')} at "
                    f"{clock(lost.time)} ({lost.reason}): it stopped reconciling then",
                    "Find why the lease was not renewed in time (API server latency, a blocked "
                    "event loop) in the logs; the leader now is whoever holds the Lease.",
                )
            )
        start = self.chains.records[0].time if self.chains.records else after
        for gap in self.health.lifecycle:
            if gap.stage is not Stage.MANAGER or gap.outcome != Vocab.JOURNAL_GAP:
                continue
            first = float(gap.attrs.get(Vocab.FIRST_TIME, gap.time))
            last = float(gap.attrs.get(Vocab.LAST_TIME, gap.time))
            if last >= start and first <= self.now:
                warnings.append(
                    PipelineWarning(
                        WarningCode.JOURNAL_GAP,
                        f"the journal lost {gap.attrs.get(Vocab.COUNT, '?')} records between "
                        f"{clock(first)} and {clock(last)} ({gap.reason}): this answer may "
                        "be incomplete",
                        "Records are lost when the journal's writer falls behind or a write "
                        "fails: give it a faster disk or more room (--journal-max-size), and "
                        "see the reason above.",
                    )
                )
        return tuple(warnings)

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
            return self._filtered(self._not_watched(kinds), kinds)
        verdicts = [self._watch_state(kind, records) for kind, records in covering.items()]
        verdict = min(verdicts, key=lambda verdict: _WATCH_ORDER.index(verdict.code))
        return self._filtered(verdict, kinds) if verdict.code is Code.NO_EVENTS else verdict

    def _filtered(self, verdict: Verdict, kinds: Mapping[str, list[Record]]) -> Verdict:
        """The cache holds only part of the kind (a label selector, some namespaces): name
        the filter and the kubectl command that shows whether the object passes it."""
        target = self.target
        filters: dict[str, tuple[str, list[str]]] = {}
        for record in self.health.lifecycle:  # the latest watch of each kind says
            kind = str(record.attrs.get("kind", ""))
            if record.outcome == Vocab.WATCHING and target.kind in (None, kind):
                listed = str(record.attrs.get(Vocab.NAMESPACES, "")).split(",")
                filters[kind] = (
                    str(record.attrs.get(Vocab.LABEL_SELECTOR, "")),
                    [namespace for namespace in listed if namespace],
                )
        problems, fixes = [], []
        where = f" -n {target.namespace}" if target.namespace else ""
        for kind, (selector, namespaces) in sorted(filters.items()):
            resources = [str(r.attrs.get("resource", "")) for r in kinds.get(kind, ())]
            get = f"kubectl get {next(filter(None, resources), kind.lower())} {target.name}{where}"
            if selector:
                problems.append(f"the cache of {kind} holds only objects with labels {selector}")
                fixes.append(
                    f"{get} -l '{selector}' shows whether {target.key} matches it (no output: it "
                    "does not; change its labels or the manager's label selector)."
                )
            if namespaces and target.namespace not in namespaces:
                problems.append(f"{kind} is cached only in namespaces {', '.join(namespaces)}")
                fixes.append(
                    f"{get} shows the object exists there; add {target.namespace} to the "
                    "manager's namespaces to watch it."
                )
        if not problems:
            return verdict
        return replace(
            verdict,
            message=f"{verdict.message}; " + "; ".join(problems),
            fix=" ".join(fixes),
            details={**verdict.details, "filters": problems},
        )

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
            problem, fix, more = _not_served_words(kind, latest)
            return Verdict(Code.KIND_NOT_FOUND, problem, fix, details | more)
        if not any(record.outcome == "synced" for record in records):
            return Verdict(
                Code.CACHE_NOT_SYNCED,
                f"the informer for {kind} has not finished its initial list; latest: "
                f"{latest.outcome} at {clock(latest.time)}: {latest.reason}",
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


_TRANSIENT_TYPES = frozenset(
    {
        "TimeoutError",
        "ServerTimeoutError",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "ClientOSError",
        "ClientConnectionError",
    }
)
_INVALID_FIELD = re.compile(r"is invalid: (?P<field>[\w.\[\]-]+): (?P<message>.*)")


def _watch_warning(kind: str, records: list[Record], code: Code) -> PipelineWarning | None:
    """A warning about the object's own kind's watch: failing now, or refused (403)."""
    failures = [record for record in records if record.outcome in _FAILURES]
    if not failures:
        return None
    latest = records[-1]
    if latest.outcome in ("disconnected", "error"):
        since = latest
        for record in reversed(records):
            if record.outcome not in _FAILURES:
                break
            since = record
        return PipelineWarning(
            WarningCode.WATCH_DISCONNECTED,
            f"the watch for {kind} has failed since {clock(since.time)} ({latest.outcome}: "
            f"{latest.reason}): changes made since have not reached the controller",
            "Check the connection from the controller to the API server; the informer "
            "retries with back-off and lists again when it reconnects.",
        )
    refused = failures[-1]
    if refused.outcome != "forbidden" or code is Code.WATCH_FORBIDDEN:
        return None
    if any(record.outcome == "resumed" and record.time >= refused.time for record in records):
        return None  # permission came back: a watch was accepted since
    problem, fix, _ = _forbidden_words(kind, refused)
    count = sum(record.outcome == "forbidden" for record in records)
    return PipelineWarning(
        WarningCode.WATCH_FORBIDDEN,
        f"{problem} ({count} time(s), latest at {clock(refused.time)}): changes reach the "
        "cache only when the informer lists again after each refused watch, late and "
        "without the states in between",
        fix,
    )


_RAISED = re.compile(r"raised (?P<type>[A-Za-z_][\w.]*)")


def _raised(dispatch: Record) -> Verdict | None:
    """A predicate or map function that raised: the verdict is about that function."""
    controller, event = dispatch.controller, _event_type(dispatch)
    found = _RAISED.search(dispatch.reason)
    raised = dispatch.attrs.get(Vocab.RAISED) or (found["type"] if found else None)
    details: dict[str, Any] = {
        "controller": controller,
        "exception": raised,
        "error": dispatch.reason,
    }
    where = str(dispatch.attrs.get(Vocab.RAISED_IN, ""))
    if dispatch.outcome == "dropped_by_predicate" and Vocab.RAISED in dispatch.attrs:
        name = str(dispatch.attrs.get("predicate", "a predicate"))
        function = where or name
        within = f" (in {where})" if where and where != name else ""
        return Verdict(
            Code.DROPPED_BY_PREDICATE,
            f"{controller}: predicate {name}{within} {dispatch.reason} on the {event} event, "
            "so the event was dropped",
            f"Fix {function}: a predicate that raises drops the event (it counts as a no). "
            f"Make it return a verdict for every {event} event it can be given (missing "
            "fields, no old object) instead of raising.",
            details | {"predicate": name, "function": function},
        )
    if dispatch.outcome == "not_mapped" and raised:
        handler = str(dispatch.attrs.get("handler", "the map function"))
        return Verdict(
            Code.NOT_MAPPED,
            f"{controller}: {handler} raised {raised} on the {event} event ({dispatch.reason}), "
            "so the event was dropped: no request was queued",
            f"Fix {handler}: it must return the requests to reconcile (an empty list for none) "
            "for every object it can be given, not raise.",
            details | {"handler": handler, "function": handler},
        )
    return None


def _api_words(end: Record, ends: Sequence[Record]) -> tuple[str, str, dict[str, Any]] | None:
    """What the API server's answer to a failed reconcile means, and the fix for that cause:
    (words appended to the message, the fix, details). None for an error of user code."""
    status = end.attrs.get(Vocab.API_STATUS)
    if not isinstance(status, int):
        if end.attrs.get("error_type") in _TRANSIENT_TYPES:
            return (
                " (a timeout or lost connection: transient)",
                "Nothing to fix if it passes: the request is retried with back-off; if it "
                "persists, check the API server's health and the network.",
                {"transient": True},
            )
        return None
    method = str(end.attrs.get(Vocab.API_METHOD, ""))
    said = f"{status} {end.attrs.get(Vocab.API_REASON, '')}"
    server = end.reason.partition(f"{said}: ")[2].removesuffix(
        " (the Result returned with it is ignored)"
    )
    details: dict[str, Any] = {"api_status": status, "api_method": method, "api_message": server}
    if status == 409:
        conflicts = 0
        for earlier in reversed(ends):
            if earlier.attrs.get(Vocab.API_STATUS) != 409:
                break
            conflicts += 1
        details["conflicts_in_a_row"] = conflicts
        fix = (
            "Re-read the object before each update (the cached copy was stale), or patch "
            "instead of update: a merge patch carries no resourceVersion and cannot conflict."
        )
        if conflicts >= _REPEATED:
            return (
                f" (409 Conflict {conflicts} times in a row: the reconciler keeps writing a "
                "stale copy; something else keeps changing the object, or it updates twice)",
                fix,
                details,
            )
        return (
            " (409 Conflict: the object changed after it was read, a stale read; normal when "
            "rare, and retried)",
            fix,
            details,
        )
    if status == 404:
        if method == "GET":
            return (
                " (404 on a read: the object is gone)",
                "Return without error when the object is not found: it was deleted, there is "
                "nothing left to reconcile (use finalizers for clean-up that must run).",
                details,
            )
        return (
            f" (404 on a {method}: the object or its namespace is gone)",
            "Return without error when the object being written is gone; re-create it only "
            "if the reconciler owns it.",
            details,
        )
    if status == 403:
        found = remedies.FORBIDDEN.search(server)
        if found is None:
            return (
                " (403 Forbidden)",
                f"Grant the controller's identity what it asked: {server}",
                details,
            )
        group = found["group"] or ""
        namespace = re.search(r'in the namespace "(?P<ns>[^"]+)"', server)
        holder = f"a Role in {namespace['ns']}" if namespace else "a ClusterRole"
        rule = (
            f"apiGroups [{group or chr(34) * 2}], resources [{found['resource']}], "
            f"verbs [{found['verb']}]"
        )
        details["rule"] = {
            "apiGroups": [group],
            "resources": [found["resource"]],
            "verbs": [found["verb"]],
        }
        return (
            f" (403 on a {method}: {found['user']} may not {found['verb']} {found['resource']})",
            f"grant {found['user']} this rule in {holder}: {rule} "
            "(`ctrltrace rbac` prints every rule the manager needs)",
            details,
        )
    if status == 422:
        invalid = _INVALID_FIELD.search(server)
        field_name = invalid["field"] if invalid else ""
        details["field"] = field_name
        where = f" in {field_name}" if field_name else ""
        return (
            f" (422 Invalid: the API server rejected the object{where})",
            f"Fix what the reconciler writes{where}: the server said "
            f"{invalid['message'] if invalid else server}. Retrying the same write fails again.",
            details,
        )
    if status == 429 or status >= 500:
        return (
            f" ({said}: the API server is overloaded or failing: transient)",
            "Nothing to fix if it passes: the request is retried with back-off; if it "
            "persists, look at the API server's health.",
            details | {"transient": True},
        )
    return None


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
    problem, fix, more = _forbidden_words(kind, record)
    return Verdict(Code.WATCH_FORBIDDEN, problem, fix, details | more)


def _forbidden_words(kind: str, record: Record) -> tuple[str, str, dict[str, Any]]:
    """A 403 on a list or watch: (what, the fix with the exact grant, details), in the words
    the runtime's log uses too."""
    remedy = remedies.forbidden(kind, record.reason, record.attrs)
    return remedy.message, remedy.fix, remedy.details


def _not_served_words(kind: str, record: Record) -> tuple[str, str, dict[str, Any]]:
    remedy = remedies.kind_not_found(kind, record.reason, record.attrs)
    return remedy.message, remedy.fix, remedy.details


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
            when = f" at {clock(due)}" if isinstance(due, int | float) else ""
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


def clock(seconds: float) -> str:
    """A wall time as HH:MM:SS.mmm, local time, as explain words it."""
    moment = datetime.datetime.fromtimestamp(seconds).astimezone()
    return moment.strftime("%H:%M:%S.%f")[:-3]


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
