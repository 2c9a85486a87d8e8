"""The recent records a manager keeps in memory, as evidence, when it writes no journal.

Owns ``RecordRing`` (a recorder sink holding the latest records, oldest dropped first) and
``RingEvidence``, a fixed copy of it that answers what a journal answers (everything about an
object and its chains, informer, lease and controller health, reconciles, windows, a tail by
cursor), so the debug endpoint serves a manager run without ``ctrltrace run``'s journal too.
The copy is taken under a lock and queried without it, in any thread. It decides nothing.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from types import TracebackType
from typing import Self

from ctrltrace.records import Record, Stage

DEFAULT_CAPACITY = 20_000
"""Records kept: minutes of a busy controller's life at a few MiB, not its history."""

_HEALTH = {
    "watch": (Stage.WATCH,),
    "lease": (Stage.LEASE,),
    "controller": (Stage.CONTROLLER, Stage.MANAGER),
}


class RecordRing:
    """A sink keeping the latest ``capacity`` records, each with its cursor (1, 2, …).

    Appends come from whichever thread emits; ``evidence()`` copies under the same lock.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._records: deque[Record] = deque(maxlen=capacity)
        self._count = 0
        self._lock = threading.Lock()

    def __call__(self, record: Record, /) -> None:
        with self._lock:
            self._records.append(record)
            self._count += 1

    def evidence(self) -> RingEvidence:
        with self._lock:
            records = list(self._records)
            first = self._count - len(records) + 1
        return RingEvidence(records, first)


class RingEvidence:
    """A fixed copy of a ring's records, queried like a journal (the ``Evidence`` interface)."""

    label = "the manager's recent records (in memory)"

    def __init__(self, records: list[Record], first_cursor: int = 1) -> None:
        self._records = records
        self._first = first_cursor

    def close(self) -> None:
        """Nothing to release: the copy is plain memory."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

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
        records = self._stages(_HEALTH["watch"], since)
        return records if kind is None else [r for r in records if r.attrs.get("kind") == kind]

    def lease_records(self, since: float | None = None) -> list[Record]:
        return self._stages(_HEALTH["lease"], since)

    def controller_records(self, since: float | None = None) -> list[Record]:
        return self._stages(_HEALTH["controller"], since)

    def reconciles(self, since: float | None = None, limit: int = 50_000) -> list[Record]:
        wanted = (Stage.RECONCILE_START, Stage.RECONCILE)
        return self._stages(wanted, since)[-limit:]

    def window(self, t0: float, t1: float) -> list[Record]:
        return _in_time_order(r for r in self._records if t0 <= r.time <= t1)

    def tail(self, after: int = 0, limit: int = 1_000) -> list[tuple[int, Record]]:
        """Up to ``limit`` records after cursor ``after``, oldest first, with their cursors.
        A cursor older than the oldest record kept resumes at the oldest (the rest is gone)."""
        start = max(after + 1 - self._first, 0)
        return [
            (self._first + index, self._records[index])
            for index in range(start, min(start + limit, len(self._records)))
        ]

    def _stages(self, stages: Iterable[Stage], since: float | None) -> list[Record]:
        wanted = frozenset(stages)
        earliest = -float("inf") if since is None else since
        return _in_time_order(r for r in self._records if r.stage in wanted and r.time >= earliest)


def _in_time_order(records: Iterable[Record]) -> list[Record]:
    return sorted(records, key=lambda record: record.time)
