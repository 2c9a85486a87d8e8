"""The recent records a manager keeps in memory, as evidence, when it writes no journal.

Owns ``RecordRing`` (a recorder sink holding the latest records, oldest dropped first) and
``RingEvidence``, a fixed copy of it that answers what a journal answers (everything about an
object and its chains, informer, lease and controller health, reconciles, windows, a tail by
cursor), so the debug endpoint serves a manager run without ``ctrltrace run``'s journal too.
The copy is taken under a lock and queried without it, in any thread. It decides nothing.

What the ring has dropped is said, never silently absent: a MANAGER ``evidence_missing`` record
over the dropped records' time is among the controller records (explain's lifecycle: "no
events" becomes "evidence missing"), and a tail from a cursor the ring no longer holds starts
with one counting the records lost since that cursor. The health records (watches, lease,
controllers, manager) are also kept in a ring of their own, as the journal keeps them in a
table of their own: rare, and what every answer needs, they outlive a burst of events.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ctrltrace.evidence import Closing
from ctrltrace.records import Record, Stage
from ctrltrace.vocabulary import Attr, evidence_missing_record

DEFAULT_CAPACITY = 20_000
"""Records kept: minutes of a busy controller's life, in about 10 MiB (measured: README, "In a
cluster"), not its history."""

_HEALTH = {
    "watch": (Stage.WATCH,),
    "lease": (Stage.LEASE,),
    "controller": (Stage.CONTROLLER, Stage.MANAGER),
}
_HEALTH_STAGES = frozenset(stage for stages in _HEALTH.values() for stage in stages)


@dataclass(frozen=True, slots=True)
class Dropped:
    """The records a ring has dropped: how many, and the span of their times."""

    count: int
    first_time: float
    last_time: float
    capacity: int

    def record(self, count: int | None = None) -> Record:
        """The ``evidence_missing`` record saying so (``count`` of them, when fewer matter)."""
        count = self.count if count is None else count
        return evidence_missing_record(
            self.first_time,
            self.last_time,
            f"{count} records older than the {self.capacity:,} the manager keeps in memory were "
            "dropped (debug_ring_size)",
            **{Attr.COUNT: count},
        )


class RecordRing:
    """A sink keeping the latest ``capacity`` records, each with its cursor (1, 2, …).

    Appends come from whichever thread emits; ``evidence()`` copies under the same lock.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._records: deque[Record] = deque(maxlen=capacity)
        self._health: deque[Record] = deque(maxlen=capacity)
        self._count = 0
        self._dropped: Dropped | None = None
        self._lock = threading.Lock()

    def __call__(self, record: Record, /) -> None:
        with self._lock:
            records = self._records
            if len(records) == records.maxlen:
                self._drop(records[0].time)
            records.append(record)
            self._count += 1
            if record.stage in _HEALTH_STAGES:
                self._health.append(record)

    def _drop(self, time: float) -> None:
        was, capacity = self._dropped, self._records.maxlen or 0
        if was is None:
            self._dropped = Dropped(1, time, time, capacity)
        else:
            self._dropped = Dropped(
                was.count + 1, min(was.first_time, time), max(was.last_time, time), capacity
            )

    def evidence(self) -> RingEvidence:
        with self._lock:
            records = list(self._records)
            first = self._count - len(records) + 1
            dropped = self._dropped
            health = list(self._health)
        return RingEvidence(records, first, dropped, health)


class RingEvidence(Closing):
    """A fixed copy of a ring's records, queried like a journal (the ``Evidence`` interface)."""

    label = "the manager's recent records (in memory)"

    def __init__(
        self,
        records: list[Record],
        first_cursor: int = 1,
        dropped: Dropped | None = None,
        health: list[Record] | None = None,
    ) -> None:
        """``health``: the health records, kept beyond ``records`` (by default among them)."""
        self._records = records
        self._first = first_cursor
        self._dropped = dropped
        self._health = (
            [r for r in records if r.stage in _HEALTH_STAGES] if health is None else health
        )

    def close(self) -> None:
        """Nothing to release: the copy is plain memory."""

    def about(
        self, namespace: str, name: str, *, kind: str | None = None, since: float | None = None
    ) -> list[Record]:
        """Every record about one object and the records chained to them, in time order:
        what ``Journal.about`` answers (its docstring says what that takes in)."""
        key = f"{namespace}/{name}" if namespace else name
        earliest = -float("inf") if since is None else since
        found: dict[int, Record] = {}
        for record in self._records:
            if record.time < earliest:
                continue
            ref = record.object
            if ref is not None and ref.namespace == namespace and ref.name == name:
                if kind is None or ref.kind == kind:
                    found[record.id] = record
            elif record.request == key:
                found[record.id] = record
        self._add_causes(found)
        self._add_reconciles_elsewhere(found, key)
        return _in_time_order(r for r in self._records if r.id in found)  # ties: as emitted

    def _add_causes(self, found: dict[int, Record]) -> None:
        """One step back: the records about the same object that found ones name as causes."""
        wanted = {
            (cause, record.object.namespace, record.object.name)
            for record in found.values()
            if record.object is not None
            for cause in record.cause_ids
            if cause not in found
        }
        for record in self._records:
            ref = record.object
            if ref is not None and (record.id, ref.namespace, ref.name) in wanted:
                found[record.id] = record

    def _add_reconciles_elsewhere(self, found: dict[int, Record], key: str) -> None:
        """Reconciles of other requests (an owner's) that this object's dispatches queued, with
        their ends and requeues, and the retries those requeues started, in turn."""
        dispatches: dict[str, list[Record]] = {}
        for record in found.values():
            if record.stage == Stage.DISPATCH and record.request not in ("", key):
                dispatches.setdefault(record.request, []).append(record)
        for request, queued in dispatches.items():
            earliest = min(record.time for record in queued)
            of_request = [r for r in self._records if r.request == request and r.time >= earliest]
            causes = {record.id for record in queued}
            while causes:
                started = {
                    r.reconcile_id
                    for r in of_request
                    if r.stage == Stage.RECONCILE_START
                    and r.id not in found
                    and any(cause in causes for cause in r.cause_ids)
                }
                causes = set()
                for r in of_request:
                    if r.reconcile_id in started:
                        found[r.id] = r
                        if r.stage == Stage.REQUEUE:
                            causes.add(r.id)

    def watch_records(self, kind: str | None = None, since: float | None = None) -> list[Record]:
        records = self._stages(_HEALTH["watch"], since, self._health)
        return records if kind is None else [r for r in records if r.attrs.get("kind") == kind]

    def lease_records(self, since: float | None = None) -> list[Record]:
        return self._stages(_HEALTH["lease"], since, self._health)

    def controller_records(self, since: float | None = None) -> list[Record]:
        records = self._stages(_HEALTH["controller"], since, self._health)
        dropped = self._dropped
        if dropped is None or (since is not None and dropped.last_time < since):
            return records
        return _in_time_order([dropped.record(), *records])

    def reconciles(self, since: float | None = None, limit: int = 50_000) -> list[Record]:
        wanted = (Stage.RECONCILE_START, Stage.RECONCILE)
        return self._stages(wanted, since, self._records)[-limit:]

    def window(self, t0: float, t1: float) -> list[Record]:
        return _in_time_order(r for r in self._records if t0 <= r.time <= t1)

    def tail(self, after: int = 0, limit: int = 1_000) -> list[tuple[int, Record]]:
        """Up to ``limit`` records after cursor ``after``, oldest first, with their cursors.
        A cursor (other than 0, "from the oldest kept") older than the oldest record kept
        resumes at the oldest, after an ``evidence_missing`` record counting those lost, with
        the cursor of the last one lost."""
        start = max(after + 1 - self._first, 0)
        tail = [
            (self._first + index, self._records[index])
            for index in range(start, min(start + limit, len(self._records)))
        ]
        lost = self._first - 1 - after
        if after > 0 and lost > 0 and self._dropped is not None:
            return [(self._first - 1, self._dropped.record(lost)), *tail]
        return tail

    @staticmethod
    def _stages(stages: Iterable[Stage], since: float | None, among: list[Record]) -> list[Record]:
        wanted = frozenset(stages)
        earliest = -float("inf") if since is None else since
        return _in_time_order(r for r in among if r.stage in wanted and r.time >= earliest)


def _in_time_order(records: Iterable[Record]) -> list[Record]:
    return sorted(records, key=lambda record: record.time)
