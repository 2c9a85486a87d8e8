"""The evidence explain walks: the object's records linked into chains (event → dispatch →
reconcile start → reconcile → requeue), the recent activity of every request, and the health
of the pipeline around the object (watches, the lease, each controller's workers).

Record ids are unique only within one process run, so every link is looked up in the
direction of time. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ctrltrace.explain.fixes import forbidden_words, not_served_words
from ctrltrace.records import Record, Stage
from ctrltrace.vocabulary import (
    LEASE_TRANSITIONS,
    WATCH_FAILURES,
    Attr,
    ControllerOutcome,
    LeaseOutcome,
    ManagerOutcome,
    WatchOutcome,
)

_SYNC_STATES = (ControllerOutcome.STARTED, ControllerOutcome.CACHE_NOT_SYNCED)
_CONTROLLER_STAGES = frozenset(
    {Stage.DISPATCH, Stage.RECONCILE_START, Stage.RECONCILE, Stage.REQUEUE}
)


# -- following chains ------------------------------------------------------------------------


def with_own_writes_paired(records: Sequence[Record]) -> list[Record]:
    """Mark events that a later WRITE record claims (``attrs[Attr.EVENT_ID]``) as own writes.

    A write's watch event can arrive before the write's answer; then the informer cannot tell
    and the client links the two from the write's side. Seen from here both links mean the
    same: the event is the controller's own write coming back.
    """
    claimed = {
        (int(record.attrs[Attr.EVENT_ID]), record.object.resource_version): record.id
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


class Chains:
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
                event is not None and event.attrs.get(Attr.SELF_CAUSED) is True for event in events
            )
        )


@dataclass(frozen=True)
class Blocker:
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
            details["status"] = failure.attrs[Attr.STATUS]
        if failure.outcome == WatchOutcome.FORBIDDEN:
            problem, fix, more = forbidden_words(self.kind, failure)
            return problem, fix, details | more
        if failure.outcome == WatchOutcome.KIND_NOT_FOUND:
            problem, fix, more = not_served_words(self.kind, failure)
            return problem, fix, details | more
        return (
            f"the watch for {self.kind} failed ({failure.outcome}): {failure.reason}",
            "Check the connection from the controller to the API server (address, "
            "certificates, network policy); the informer keeps retrying.",
            details,
        )


class Activity:
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
                duration = record.attrs.get(Attr.DURATION_S)
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


class Health:
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
        transitions = [record for record in self.leases if record.outcome in LEASE_TRANSITIONS]
        if transitions:
            latest = transitions[-1]
            return None if latest.outcome == LeaseOutcome.ACQUIRED else latest
        # Only errors: it never got the lease (and with no lease records, no election runs).
        return self.leases[-1] if self.leases else None

    def unsynced(self, controller: str) -> Record | None:
        states = [
            record
            for record in self.lifecycle
            if record.controller == controller
            and record.outcome in (ControllerOutcome.STARTED, ControllerOutcome.CACHE_NOT_SYNCED)
        ]
        return (
            states[-1]
            if states and states[-1].outcome == ControllerOutcome.CACHE_NOT_SYNCED
            else None
        )

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
            if record.stage is Stage.MANAGER and record.outcome == ManagerOutcome.STOPPED
        ]
        after = max((time for time in stops if time < at), default=-math.inf)
        return after, min((time for time in stops if time >= at), default=math.inf)

    def blockers(self, controller: str, at: float) -> list[Blocker] | None:
        """None when the controller's workers started in the run of ``at``; else the watches
        whose caches have not synced because they failed (empty while they are listing)."""
        after, until = self.run_of(at)
        mine = [
            record
            for record in self.lifecycle
            if record.controller == controller and after < record.time <= until
        ]
        if any(record.outcome == ControllerOutcome.STARTED for record in mine):
            return None
        watched = {
            str(record.attrs.get(Attr.KIND, "")): str(record.attrs.get(Attr.API_VERSION, ""))
            for record in mine
            if record.outcome == ControllerOutcome.WATCHING
        }
        in_run = [record for record in self.watches if after < record.time <= until]
        if not watched:  # a journal from before controllers named their watches
            watched = {
                str(r.attrs.get(Attr.KIND, "")): str(r.attrs.get(Attr.API_VERSION, ""))
                for r in in_run
            }
        blockers = []
        for kind, api_version in watched.items():
            records = [record for record in in_run if record.attrs.get(Attr.KIND) == kind]
            if any(record.outcome == WatchOutcome.SYNCED for record in records):
                continue
            failures = [record for record in records if record.outcome in WATCH_FAILURES]
            if failures:  # one still listing for the first time blocks nothing yet
                blockers.append(Blocker(kind, api_version, failures[-1]))
        return blockers

    def workers(self, controller: str, at: float) -> int:
        """How many workers the controller started in the run of ``at`` (0 if none)."""
        after, until = self.run_of(at)
        started = [
            record
            for record in self.lifecycle
            if record.controller == controller
            and record.outcome == ControllerOutcome.STARTED
            and after < record.time <= until
        ]
        return int(started[-1].attrs.get(Attr.MAX_CONCURRENT_RECONCILES, 0)) if started else 0

    def stopped_after(self, record: Record) -> Record | None:
        return next(
            (
                later
                for later in self.lifecycle
                if later.stage is Stage.MANAGER
                and later.outcome == ManagerOutcome.STOPPED
                and later.time >= record.time
            ),
            None,
        )
