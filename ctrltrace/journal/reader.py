"""Reading the journal, read-only and safe beside a live writer: everything about an object
(the batches that mention it, and its chains), the informer, lease and controller health, time
windows and a live tail.
"""

from __future__ import annotations

import os
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ctrltrace.evidence import Closing
from ctrltrace.journal.format import (
    F_CAUSE_IDS,
    F_ID,
    F_OBJECT,
    F_RECONCILE_ID,
    F_REQUEST,
    F_STAGE,
    F_TIME,
    REF_KIND,
    REF_NAME,
    REF_NAMESPACE,
    SECTION,
    Entry,
    JournalMissing,
    Stored,
    check_identity,
    chunk_spans,
    key_line,
    restored,
    sqlite_errors,
    unpickle,
)
from ctrltrace.records import Record, Stage
from ctrltrace.vocabulary import Attr

_HOLDING = (
    "SELECT b.seq, b.run, b.chunks, b.body, k.keys "
    "FROM batch_keys k JOIN batches b ON b.seq = k.seq"
)

# Chunks a reader keeps decoded for lookups by key: explain reads an object's chunks again for
# its causes and its owner's reconciles, and the TUI explains one object after another. Tails
# and windows read each chunk once and keep none: a tailing TUI would otherwise hold them all.
_DECODED_CHUNKS = 128


class Journal(Closing):
    """Read-only access to a journal, safe while a writer has it open.

    Records come in time order (``tail``: in the order written). Errors are ``JournalError``
    subclasses with one-line messages: ``JournalMissing``, ``JournalLocked``,
    ``JournalCorrupt``, ``JournalForeign``.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float = 2.0) -> None:
        self.path = Path(path)
        self._timeout_s = timeout_s
        # A batch never changes once written, so decoded ones can be kept.
        self._decoded: OrderedDict[tuple[int, int], list[Stored]] = OrderedDict()
        if not self.path.is_file():
            raise JournalMissing(f"no journal at {self.path}")
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        with self._errors():
            self._db = sqlite3.connect(uri, uri=True, timeout=timeout_s)
        try:
            with self._errors():
                check_identity(self.path, self._db, empty_ok=False)
        except BaseException:
            self._db.close()
            raise

    @property
    def label(self) -> str:
        return f"journal {self.path}"

    def close(self) -> None:
        self._db.close()

    def _errors(self) -> AbstractContextManager[None]:
        return sqlite_errors(self.path, self._timeout_s)

    def _select(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._errors():
            return self._db.execute(sql, params).fetchall()

    def _entries(self, batches: Iterable[tuple[Any, ...]], *lines: str) -> Iterator[Entry]:
        """The records of these (seq, run, chunks, body[, keys]) batches, as (seq, run, stored
        record): of every chunk, or with ``lines``, of the chunks whose keys hold one of them.
        """
        decoded = self._decoded
        for seq, run, chunks, body, *keys in batches:
            sections = keys[0].split(SECTION)[1:] if lines else ()
            for index, (offset, size, before) in enumerate(chunk_spans(chunks)):
                if lines and not any(line in sections[index] for line in lines):
                    continue
                stored = decoded.get((seq, index)) if lines else None
                if stored is None:
                    with self._errors():
                        stored = unpickle(body[offset : offset + size])
                    if lines:
                        decoded[seq, index] = stored
                        if len(decoded) > _DECODED_CHUNKS:
                            decoded.popitem(last=False)
                else:
                    decoded.move_to_end((seq, index))
                first = seq + before
                for position, entry in enumerate(stored):
                    yield first + position, run, entry

    def _holding(self, *keys: str, since: float | None = None) -> Iterator[Entry]:
        """Every record of the chunks that mention any of ``keys``."""
        lines = list(map(key_line, keys))
        found = " OR ".join(["instr(k.keys, ?)"] * len(lines))
        after, params = ("", ()) if since is None else (" AND b.last_time >= ?", (since,))
        sql = f"{_HOLDING} WHERE ({found}){after} ORDER BY b.seq"
        return self._entries(self._select(sql, (*lines, *params)), *lines)

    def _of_object(self, namespace: str, name: str, since: float | None = None) -> Iterator[Entry]:
        """The records of the batches that may hold records about this object or its key."""
        return self._holding(name, f"{namespace}/{name}" if namespace else name, since=since)

    # -- queries -----------------------------------------------------------------------------

    def about(
        self, namespace: str, name: str, *, kind: str | None = None, since: float | None = None
    ) -> list[Record]:
        """Every record about one object, and the records chained to them, in time order.

        That is: records whose object is this one, records whose request is its key (events
        of children mapped to it included), the records those name as causes (the child
        events behind such dispatches, the writes behind self-caused events), and the
        reconciles started by this object's dispatches for other requests (an owner's key),
        with their ends and requeues. Chains are followed within each writer's run only.
        ``kind`` leaves out records about a same-named object of another kind.
        """
        key = f"{namespace}/{name}" if namespace else name
        earliest = -float("inf") if since is None else since
        found: dict[int, Entry] = {}
        for seq, run, entry in self._of_object(namespace, name, since):
            if entry[F_TIME] < earliest:
                continue
            obj = entry[F_OBJECT]
            if obj is not None and obj[REF_NAMESPACE] == namespace and obj[REF_NAME] == name:
                if kind is None or obj[REF_KIND] == kind:
                    found[seq] = (seq, run, entry)
            elif entry[F_REQUEST] == key:
                found[seq] = (seq, run, entry)
        self._add_causes(found)
        self._add_reconciles_elsewhere(found, key)
        entries = sorted(found.values(), key=lambda found: (found[2][F_TIME], found[0]))
        return [restored(entry) for _, _, entry in entries]

    def _add_causes(self, found: dict[int, Entry]) -> None:
        """Add the records that the found ones name as causes, one step back.

        A record with an object was caused by a record about the same object (a dispatch by
        its event, an event by the write that made it), so causes are looked up among the
        records of that object: the child events behind dispatches mapped to this object.
        """
        known = {(run, entry[F_ID]) for _, run, entry in found.values()}
        wanted: dict[tuple[str, str], set[tuple[str, int]]] = {}
        for _, run, entry in found.values():
            obj = entry[F_OBJECT]
            if obj is not None:
                missing = {(run, cause) for cause in entry[F_CAUSE_IDS]} - known
                if missing:
                    wanted.setdefault((obj[REF_NAMESPACE], obj[REF_NAME]), set()).update(missing)
        for (namespace, name), ids in wanted.items():
            for seq, run, entry in self._of_object(namespace, name):
                obj = entry[F_OBJECT]
                if (
                    (run, entry[F_ID]) in ids
                    and obj is not None
                    and obj[REF_NAMESPACE] == namespace
                    and obj[REF_NAME] == name
                ):
                    found[seq] = (seq, run, entry)

    def _add_reconciles_elsewhere(self, found: dict[int, Entry], key: str) -> None:
        """Add reconciles of other requests (an owner's) that dispatches of this object queued.

        Each with its end and requeue, and the retries those requeues started, in turn.
        """
        dispatches: dict[str, list[Entry]] = {}
        for seq, run, entry in found.values():
            if entry[F_STAGE] == Stage.DISPATCH and entry[F_REQUEST] not in ("", key):
                dispatches.setdefault(entry[F_REQUEST], []).append((seq, run, entry))
        for request, queued in dispatches.items():
            earliest = min(entry[F_TIME] for _, _, entry in queued)
            of_request = [
                found_entry
                for found_entry in self._holding(request, since=earliest)
                if found_entry[2][F_REQUEST] == request and found_entry[2][F_TIME] >= earliest
            ]
            causes = {(run, entry[F_ID]) for _, run, entry in queued}
            while causes:
                started = {
                    (run, entry[F_RECONCILE_ID])
                    for seq, run, entry in of_request
                    if entry[F_STAGE] == Stage.RECONCILE_START
                    and seq not in found
                    and any((run, cause) in causes for cause in entry[F_CAUSE_IDS])
                }
                causes = set()
                for seq, run, entry in of_request:
                    if (run, entry[F_RECONCILE_ID]) in started:
                        found[seq] = (seq, run, entry)
                        if entry[F_STAGE] == Stage.REQUEUE:
                            causes.add((run, entry[F_ID]))

    def watch_records(self, kind: str | None = None, since: float | None = None) -> list[Record]:
        """Informer health (listed, synced, forbidden, kind_not_found, …), for one kind or all."""
        records = self._stages((Stage.WATCH,), since)
        return records if kind is None else [r for r in records if r.attrs.get(Attr.KIND) == kind]

    def lease_records(self, since: float | None = None) -> list[Record]:
        return self._stages((Stage.LEASE,), since)

    def controller_records(self, since: float | None = None) -> list[Record]:
        """Controller and manager lifecycle: started, cache_not_synced, stopped, …"""
        return self._stages((Stage.CONTROLLER, Stage.MANAGER), since)

    def _stages(self, stages: Sequence[Stage], since: float | None) -> list[Record]:
        marks = ", ".join("?" * len(stages))
        rows = self._select(
            f"SELECT body FROM health WHERE stage IN ({marks}) AND time >= ? ORDER BY time, seq",  # noqa: S608
            (*(stage.value for stage in stages), -float("inf") if since is None else since),
        )
        with self._errors():
            return [restored(unpickle(body)) for (body,) in rows]

    def reconciles(
        self, since: float | None = None, limit: int = 50_000, scan: int = 1_000_000
    ) -> list[Record]:
        """The latest RECONCILE_START and RECONCILE records of every controller, in time order:
        what the workers are doing and how long reconciles take. Reads batches newest first
        and stops after the batch that brings ``limit`` of them or ``scan`` records in all
        (a journal of events that mostly never reach Reconcile), or at ``since``."""
        wanted = (Stage.RECONCILE_START.value, Stage.RECONCILE.value)
        earliest = -float("inf") if since is None else since
        found: list[Entry] = []
        scanned = 0
        with self._errors():
            batches = self._db.execute(
                "SELECT seq, run, chunks, body, count FROM batches WHERE last_time >= ? "
                "ORDER BY seq DESC",
                (earliest,),
            )
            for *batch, count in batches:
                found += (
                    entry
                    for entry in self._entries([tuple(batch)])
                    if entry[2][F_STAGE] in wanted and entry[2][F_TIME] >= earliest
                )
                scanned += count
                if len(found) >= limit or scanned >= scan:
                    break
        found.sort(key=lambda entry: (entry[2][F_TIME], entry[0]))
        return [restored(entry) for _, _, entry in found[-limit:]]

    def window(self, t0: float, t1: float) -> list[Record]:
        """Every record with ``t0 <= time <= t1``."""
        batches = self._select(
            "SELECT seq, run, chunks, body FROM batches WHERE first_time <= ? AND last_time >= ? "
            "ORDER BY seq",
            (t1, t0),
        )
        entries = [entry for entry in self._entries(batches) if t0 <= entry[2][F_TIME] <= t1]
        entries.sort(key=lambda found: (found[2][F_TIME], found[0]))
        return [restored(entry) for _, _, entry in entries]

    def tail(self, after: int = 0, limit: int = 1_000) -> list[tuple[int, Record]]:
        """Up to ``limit`` records written after seq ``after``, with their seq, oldest first."""
        batches = self._select(
            "SELECT seq, run, chunks, body FROM batches WHERE seq >= coalesce("
            "(SELECT max(seq) FROM batches WHERE seq <= ?), 0) ORDER BY seq LIMIT ?",
            (after, limit + 1),  # each batch holds at least one record
        )
        tail: list[tuple[int, Record]] = []
        for seq, _, entry in self._entries(batches):
            if seq > after:
                tail.append((seq, restored(entry)))
                if len(tail) == limit:
                    break
        return tail

    def count(self) -> int:
        total: int = self._select("SELECT coalesce(sum(count), 0) FROM batches")[0][0]
        return total
