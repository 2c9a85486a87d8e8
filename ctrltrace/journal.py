"""The embedded journal: records kept in a local SQLite file, written off the event loop.

Owns the file (created 0600, WAL, ``synchronous=NORMAL``, stamped with ctrltrace's
``application_id`` and the schema version), the writer sink with its background thread and
retention, and the reader that answers "everything about this object", the informer, lease
and controller health records, time windows and a live tail.

It may not block the event loop: ``JournalWriter.__call__`` only appends to a bounded buffer;
serialisation and I/O happen in the writer's own thread. It knows how records chain (to find
everything about an object) but not what they mean: explain interprets them.

Record ids are unique only within one process run, so every row also stores the run id of
the writer that wrote it. Records read back keep their original ``id`` (a record written and
read back compares equal); the reader follows chains by (run, id), and explain follows them
forward in time, which is unambiguous because one run's records all lie in its own time span.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

from ctrltrace.records import ObjectRef, Record, Stage

APPLICATION_ID = 0x63747274  # "ctrt": tells a ctrltrace journal from any other SQLite file
SCHEMA_VERSION = 1

# Only the informer, lease, controller and manager stages have neither object nor request:
# a partial index over these rare rows keeps their queries fast at almost no cost per insert.
# A query must repeat the index's condition for SQLite to use it, hence one constant.
_HEALTH = "name IS NULL AND request IS NULL"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run TEXT NOT NULL,
    id INTEGER NOT NULL,
    time REAL NOT NULL,
    stage TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    controller TEXT,
    api_version TEXT,
    kind TEXT,
    namespace TEXT,
    name TEXT,
    uid TEXT,
    resource_version TEXT,
    generation INTEGER,
    request TEXT,
    reconcile_id TEXT,
    cause_ids TEXT,
    attrs TEXT
);
CREATE INDEX IF NOT EXISTS records_object ON records (namespace, name) WHERE name IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_request ON records (request) WHERE request IS NOT NULL;
CREATE INDEX IF NOT EXISTS records_time ON records (time);
CREATE INDEX IF NOT EXISTS records_health ON records (stage, time) WHERE {_HEALTH};
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
"""

_COLUMNS = (
    "run, id, time, stage, outcome, reason, controller, api_version, kind, namespace, name, "
    "uid, resource_version, generation, request, reconcile_id, cause_ids, attrs"
)
# Positions in a selected row (seq, then _COLUMNS in order).
_SEQ, _RUN, _ID, _TIME, _STAGE = 0, 1, 2, 3, 4
_KIND, _NAMESPACE, _NAME, _REQUEST, _RECONCILE_ID, _CAUSE_IDS = 9, 10, 11, 15, 16, 17
# Built from constants only; every value is a bound parameter.
_INSERT = f"INSERT INTO records ({_COLUMNS}) VALUES ({', '.join('?' * 18)})"  # noqa: S608
_SELECT = f"SELECT seq, {_COLUMNS} FROM records"  # noqa: S608

Row = tuple[Any, ...]

# Empty strings and absent objects are stored as NULL: NULL costs no payload byte, and the
# partial indexes then skip the many rows with no object or no request.
_NO_OBJECT = (None,) * 7
# Attrs are flat scalars: no circularity check; anything else is stored as its str().
_encode_attrs = json.JSONEncoder(separators=(",", ":"), check_circular=False, default=str).encode
_STAGES = {stage.value: stage for stage in Stage}

_WRITE_TIMEOUT_S = 5.0  # waiting for another writer (a second process on the same file)
_IN_CHUNK = 500  # values per "IN (...)": SQLite limits bound parameters per statement
_MAX_PENDING = 200_000
_RETENTION_EVERY_S = 10.0
_DELETE_CHUNK = 10_000
_SIZE_TARGET = 0.9  # trim to 90% of max_bytes, so a full journal is not trimmed every pass
# Batches dirty index pages all over the file. Larger pages and fewer checkpoints (each copies
# every page again) measured about 30% faster ingest than SQLite's defaults (4 KiB, 1000).
_PAGE_SIZE = 8192
_CHECKPOINT_PAGES = 2000
_CACHE_KIB = 32 * 1024  # holds the index pages a batch touches for thousands of objects
_WAL_LIMIT = 2 * _PAGE_SIZE * _CHECKPOINT_PAGES  # the WAL is truncated to this after a checkpoint


class JournalError(Exception):
    """The journal cannot be used; the message is one line a user can act on."""


class JournalMissing(JournalError):
    pass


class JournalLocked(JournalError):
    pass


class JournalCorrupt(JournalError):
    pass


class JournalForeign(JournalError):
    """The file is SQLite but not a ctrltrace journal of the schema this version reads."""


@contextmanager
def _sqlite_errors(path: Path, timeout_s: float) -> Iterator[None]:
    """Turn SQLite's exceptions into one-line journal errors."""
    try:
        yield
    except sqlite3.Error as error:
        text = str(error)
        if "locked" in text or "busy" in text:
            raise JournalLocked(
                f"{path} is locked by another process (still busy after {timeout_s:g}s)"
            ) from error
        if isinstance(error, sqlite3.DatabaseError) and not isinstance(
            error, sqlite3.OperationalError
        ):
            raise JournalCorrupt(f"{path} is damaged or not a journal: {text}") from error
        raise JournalError(f"{path}: {text}") from error


def _check_identity(path: Path, connection: sqlite3.Connection, *, empty_ok: bool) -> bool:
    """Whether the file already holds a journal; raise if it holds anything else.

    An empty database (a fresh file, or one whose creation was interrupted) is fine for the
    writer, which then creates the schema, and foreign to the reader.
    """
    application_id = connection.execute("PRAGMA application_id").fetchone()[0]
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if application_id == 0 and version == 0 and empty_ok:
        tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables == 0:
            return False
    if application_id != APPLICATION_ID:
        raise JournalForeign(f"{path} is not a ctrltrace journal")
    if version != SCHEMA_VERSION:
        raise JournalForeign(
            f"{path} was written by schema version {version}; "
            f"this ctrltrace reads version {SCHEMA_VERSION}"
        )
    return True


def _row(run: str, record: Record) -> Row:
    ref = record.object
    obj = (
        _NO_OBJECT
        if ref is None
        else (
            ref.api_version,
            ref.kind,
            ref.namespace,
            ref.name,
            ref.uid,
            ref.resource_version,
            ref.generation,
        )
    )
    return (
        run,
        record.id,
        record.time,
        record.stage,  # a StrEnum binds as its text
        record.outcome,
        record.reason or None,
        record.controller or None,
        *obj,
        record.request or None,
        record.reconcile_id or None,
        " ".join(map(str, record.cause_ids)) or None,
        _encode_attrs(record.attrs) if record.attrs else None,
    )


def _record(row: Row) -> Record:
    (_, _, id_, time_, stage, outcome, reason, controller, api_version, kind, namespace, name,
     uid, resource_version, generation, request, reconcile_id, cause_ids, attrs) = row  # fmt: skip
    return Record(
        time=time_,
        stage=_STAGES[stage],
        outcome=outcome,
        reason=reason or "",
        controller=controller or "",
        object=None
        if name is None
        else ObjectRef(api_version, kind, namespace, name, uid, resource_version, generation),
        request=request or "",
        reconcile_id=reconcile_id or "",
        id=id_,
        cause_ids=tuple(map(int, cause_ids.split())) if cause_ids else (),
        attrs=json.loads(attrs) if attrs else {},
    )


class JournalWriter:
    """A recorder sink that writes records to the journal file from a background thread.

    Calling it only appends to a buffer. The thread writes whatever is pending every
    ``flush_interval_s`` (sooner once ``batch_size`` records wait), ``batch_size`` records per
    transaction. If the buffer holds more than ``max_pending`` records the oldest are dropped
    and counted in ``dropped`` (as are records lost to a failed write; ``last_error`` says why).

    Retention runs when the writer starts, every ``retention_interval_s`` and on close: rows
    more than ``max_age_s`` older than the newest record are deleted (measured against the
    records' own clock, which may be a fake one, so an idle journal keeps its last day), and
    when the pages in use exceed ``max_bytes`` the oldest rows are deleted, in chunks, down to
    about 90% of it. Freed pages are reused by later writes; the file is never vacuumed here,
    so it can outgrow ``max_bytes`` by what is written between two passes (plus the WAL).

    Close it (or use it as a context manager): its thread is a daemon, so records still
    pending when the process exits without ``close()`` are lost.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_age_s: float = 86_400.0,
        max_bytes: int = 256 * 2**20,
        batch_size: int = 2_000,
        flush_interval_s: float = 0.2,
        max_pending: int = _MAX_PENDING,
        retention_interval_s: float = _RETENTION_EVERY_S,
    ) -> None:
        self.path = Path(path)
        self.run = secrets.token_hex(6)
        self.dropped = 0
        self.last_error = ""
        self._max_age_s = max_age_s
        self._max_bytes = max_bytes
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._max_pending = max_pending
        self._retention_interval_s = retention_interval_s
        self._pending: deque[Record] = deque()
        self._wake = threading.Event()
        self._closed = False
        # For flush(): records appended (by the caller) and settled (written or lost, by the
        # thread); overflow drops count as settled through ``dropped``.
        self._appended = 0
        self._settled = 0
        self._progress = threading.Condition()
        # Opened here, not in the thread, so a bad path or a foreign file fails the caller.
        self._db = _open_for_writing(self.path)
        self._thread = threading.Thread(
            target=self._run, name=f"ctrltrace journal {self.path.name}", daemon=True
        )
        self._thread.start()

    def __call__(self, record: Record, /) -> None:
        if self._closed:
            self.dropped += 1
            return
        self._appended += 1
        pending = self._pending
        pending.append(record)  # deque appends and pops are atomic: no lock on the hot path
        if len(pending) > self._max_pending:
            try:
                pending.popleft()
                self.dropped += 1
            except IndexError:  # the writer emptied it meanwhile
                pass
        elif len(pending) >= self._batch_size:
            self._wake.set()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record appended so far is written; False if ``timeout_s`` passed."""
        target = self._appended

        def done() -> bool:
            return self._settled + self.dropped >= target

        self._wake.set()
        with self._progress:
            self._progress.wait_for(lambda: done() or not self._thread.is_alive(), timeout_s)
        return done()

    def close(self) -> None:
        """Write everything pending, enforce retention once more and stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        next_retention = 0.0
        try:
            while True:
                # Read before draining: whatever was appended before close() is then written.
                closing = self._closed
                self._write_pending()
                if closing or time.monotonic() >= next_retention:
                    self._guarded(self._enforce_retention)
                    next_retention = time.monotonic() + self._retention_interval_s
                if closing:
                    return
                self._wake.wait(self._flush_interval_s)
                self._wake.clear()
        finally:
            self._db.close()

    def _write_pending(self) -> None:
        pending = self._pending
        while pending:
            count = min(len(pending), self._batch_size)
            batch = [pending.popleft() for _ in range(count)]
            written = self._guarded(self._insert, batch)
            with self._progress:
                if written:
                    self._settled += count
                else:
                    self.dropped += count
                self._progress.notify_all()

    def _insert(self, batch: Sequence[Record]) -> None:
        run = self.run
        rows = [_row(run, record) for record in batch]
        with self._db:
            self._db.executemany(_INSERT, rows)

    def _guarded(self, write: Callable[..., None], *args: Any) -> bool:
        """Run one write; a failure is kept in ``last_error`` and never ends the thread."""
        try:
            write(*args)
        except Exception as error:  # a bad record or a full disk must not end journaling
            self.last_error = f"{type(error).__name__}: {error}"
            return False
        return True

    def _enforce_retention(self) -> None:
        db = self._db
        newest = db.execute("SELECT max(time) FROM records").fetchone()[0]
        if newest is not None:
            with db:
                db.execute("DELETE FROM records WHERE time < ?", (newest - self._max_age_s,))
        used = self._used_bytes()
        if used <= self._max_bytes:
            return
        # Two queries: SQLite answers a lone min() or max() from the index, both at once by a scan.
        first = db.execute("SELECT min(seq) FROM records").fetchone()[0]
        if first is None:
            return
        last = db.execute("SELECT max(seq) FROM records").fetchone()[0]
        # Pages freed inside indexes are reused but not counted as free, so re-measuring after
        # each chunk would overshoot: delete the proportional share once, measure next pass.
        rows = last - first + 1
        excess = 1.0 - self._max_bytes * _SIZE_TARGET / used
        cut = first + max(1, int(rows * excess))
        for upper in range(first + _DELETE_CHUNK, cut + _DELETE_CHUNK, _DELETE_CHUNK):
            with db:
                db.execute("DELETE FROM records WHERE seq < ?", (min(upper, cut),))

    def _used_bytes(self) -> int:
        db = self._db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size: int = db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)


def _open_for_writing(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Create the file ourselves so it is 0600 from the first byte; SQLite gives its -wal and
    # -shm files the same mode as the database file.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    db = sqlite3.connect(
        path, timeout=_WRITE_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        with _sqlite_errors(path, _WRITE_TIMEOUT_S):
            existing = _check_identity(path, db, empty_ok=True)
            if not existing:  # the page size is fixed once the file is in WAL mode
                db.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            db.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL never corrupts; a crash loses at most the last transaction.
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(f"PRAGMA wal_autocheckpoint = {_CHECKPOINT_PAGES}")
            db.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
            db.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
            if not existing:
                db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
    except BaseException:
        db.close()
        raise
    # Python's sqlite3 then opens a transaction per `with db:` block, one per batch.
    db.isolation_level = "DEFERRED"
    return db


class Journal:
    """Read-only access to a journal, safe while a writer has it open.

    Records come in time order (``tail``: in the order written). Errors are ``JournalError``
    subclasses with one-line messages: ``JournalMissing``, ``JournalLocked``,
    ``JournalCorrupt``, ``JournalForeign``.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float = 2.0) -> None:
        self.path = Path(path)
        self._timeout_s = timeout_s
        if not self.path.is_file():
            raise JournalMissing(f"no journal at {self.path}")
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        with self._errors():
            self._db = sqlite3.connect(uri, uri=True, timeout=timeout_s)
        try:
            with self._errors():
                _check_identity(self.path, self._db, empty_ok=False)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _errors(self) -> AbstractContextManager[None]:
        return _sqlite_errors(self.path, self._timeout_s)

    def _rows(self, where: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._errors():
            return self._db.execute(f"{_SELECT} WHERE {where}", params).fetchall()

    def _records(self, where: str, params: Sequence[Any] = ()) -> list[Record]:
        return [_record(row) for row in self._rows(f"{where} ORDER BY time, seq", params)]

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
        after, since_params = _since(since)
        found: dict[int, Row] = {}
        for where, params in (
            ("namespace = ? AND name = ?", (namespace, name)),
            ("request = ?", (key,)),
        ):
            rows = self._rows(where + after, (*params, *since_params))
            found.update((row[_SEQ], row) for row in rows)
        if kind is not None:
            found = {
                seq: row
                for seq, row in found.items()
                if not (row[_NAMESPACE] == namespace and row[_NAME] == name and row[_KIND] != kind)
            }
        self._add_causes(found)
        self._add_reconciles_elsewhere(found, key)
        rows = sorted(found.values(), key=lambda row: (row[_TIME], row[_SEQ]))
        return [_record(row) for row in rows]

    def _add_causes(self, found: dict[int, Row]) -> None:
        """Add the records that the found ones name as causes, one step back.

        A record with an object was caused by a record about the same object (a dispatch by
        its event, an event by the write that made it), so causes are looked up through the
        object index: the child events behind dispatches mapped to this object's key.
        """
        known = {(row[_RUN], row[_ID]) for row in found.values()}
        wanted: dict[tuple[str, str, str], set[int]] = {}
        for row in found.values():
            if row[_CAUSE_IDS] and row[_NAME] is not None:
                causes = {int(cause) for cause in row[_CAUSE_IDS].split()}
                missing = {cause for cause in causes if (row[_RUN], cause) not in known}
                if missing:
                    place = (row[_RUN], row[_NAMESPACE], row[_NAME])
                    wanted.setdefault(place, set()).update(missing)
        for (run, namespace, name), ids in wanted.items():
            for rows in self._batched(
                "id", sorted(ids), "run = ? AND namespace = ? AND name = ?", (run, namespace, name)
            ):
                found.update((row[_SEQ], row) for row in rows)

    def _add_reconciles_elsewhere(self, found: dict[int, Row], key: str) -> None:
        """Add reconciles of other requests (an owner's) that dispatches of this object queued.

        Each with its end and requeue, and the retries those requeues started, in turn.
        """
        dispatches: dict[str, list[Row]] = {}
        for row in found.values():
            if row[_STAGE] == Stage.DISPATCH and row[_REQUEST] not in (None, key):
                dispatches.setdefault(row[_REQUEST], []).append(row)
        for request, queued in dispatches.items():
            starts = self._rows(
                "request = ? AND stage = ? AND time >= ?",
                (request, Stage.RECONCILE_START.value, min(row[_TIME] for row in queued)),
            )
            causes = {(row[_RUN], row[_ID]) for row in queued}
            while causes:
                reconcile_ids = [
                    start[_RECONCILE_ID]
                    for start in starts
                    if start[_SEQ] not in found
                    and any(
                        (start[_RUN], int(c)) in causes for c in (start[_CAUSE_IDS] or "").split()
                    )
                ]
                causes = set()
                for rows in self._batched("reconcile_id", reconcile_ids, "request = ?", (request,)):
                    found.update((row[_SEQ], row) for row in rows)
                    causes.update(
                        (row[_RUN], row[_ID]) for row in rows if row[_STAGE] == Stage.REQUEUE
                    )

    def _batched(
        self, column: str, values: Sequence[Any], where: str, params: tuple[Any, ...]
    ) -> Iterator[list[Row]]:
        for start in range(0, len(values), _IN_CHUNK):
            chunk = values[start : start + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            yield self._rows(f"{where} AND {column} IN ({marks})", (*params, *chunk))

    def watch_records(self, kind: str | None = None, since: float | None = None) -> list[Record]:
        """Informer health (listed, synced, forbidden, kind_not_found, …), for one kind or all."""
        records = self._stages((Stage.WATCH,), since)
        return records if kind is None else [r for r in records if r.attrs.get("kind") == kind]

    def lease_records(self, since: float | None = None) -> list[Record]:
        return self._stages((Stage.LEASE,), since)

    def controller_records(self, since: float | None = None) -> list[Record]:
        """Controller and manager lifecycle: started, cache_not_synced, stopped, …"""
        return self._stages((Stage.CONTROLLER, Stage.MANAGER), since)

    def _stages(self, stages: Sequence[Stage], since: float | None) -> list[Record]:
        after, since_params = _since(since)
        where = f"{_HEALTH} AND stage IN ({', '.join('?' * len(stages))}){after}"
        return self._records(where, (*(stage.value for stage in stages), *since_params))

    def window(self, t0: float, t1: float) -> list[Record]:
        """Every record with ``t0 <= time <= t1``."""
        return self._records("time BETWEEN ? AND ?", (t0, t1))

    def tail(self, after_seq: int = 0, limit: int = 1_000) -> list[tuple[int, Record]]:
        """Up to ``limit`` records written after ``after_seq``, with their seq, oldest first."""
        rows = self._rows("seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))
        return [(row[_SEQ], _record(row)) for row in rows]

    def count(self) -> int:
        with self._errors():
            total: int = self._db.execute("SELECT count(*) FROM records").fetchone()[0]
        return total


def _since(since: float | None) -> tuple[str, tuple[float, ...]]:
    return ("", ()) if since is None else (" AND time >= ?", (since,))
