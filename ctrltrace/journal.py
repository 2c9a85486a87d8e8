"""The embedded journal: records kept in a local SQLite file, written off the event loop.

Owns the file (created 0600, WAL, ``synchronous=NORMAL``, stamped with ctrltrace's
``application_id`` and the schema version), the writer sink with its background thread and
retention, and the reader that answers "everything about this object", the informer, lease
and controller health records, time windows and a live tail.

It may not block the event loop: ``JournalWriter.__call__`` appends to a list and, every
``_CHUNK`` records, pickles the list (``_picklerecords``, in C: tens of microseconds); the
file is written only by the writer's own thread. It knows how records chain (to find
everything about an object) but not what they mean: explain interprets them.

Storage is one row per batch, not per record: a row per record costs SQLite a B-tree insert
per index and the writer a GIL hand-off per row, which measured several times the whole
pipeline's cost per event. A batch's records are pickled as plain tuples (built-in types
only; the reader's unpickler refuses every class but ``str`` and ``tuple``, which earlier
versions' files name, so a doctored file cannot run code), uncompressed: zlib's fastest
level cost more per event than all the rest of the writing. A second table lists the
requests and object names each batch mentions, so reading one object decodes only the
batches that hold it; the rare informer, lease and controller records are also kept in their
own table for the health queries.

Record ids are unique only within one process run, so every batch also stores the run id of
the writer that wrote it. Records read back keep their original ``id`` (a record written and
read back compares equal); the reader follows chains by (run, id), and explain follows them
forward in time, which is unambiguous because one run's records all lie in its own time span.
Each record has a ``seq``, its position in the file: its batch's ``seq`` plus its index.
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import quote

from ctrltrace._picklerecords import dumps, seal
from ctrltrace.records import ObjectRef, Record, Stage, Vocab

APPLICATION_ID = 0x63747274  # "ctrt": tells a ctrltrace journal from any other SQLite file
SCHEMA_VERSION = 2

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,  -- the first record's seq; the others follow it one by one
    run TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_time REAL NOT NULL,
    last_time REAL NOT NULL,
    chunks TEXT NOT NULL,  -- "bytes:records" of each chunk in the body, in order
    body BLOB NOT NULL  -- the chunks' pickles, one after the other
);
-- The requests and object names each chunk mentions: per chunk a section that starts with
-- \x1e, then one key per line with a line break either side, searched with instr(). A key
-- index would cost a B-tree insert per key and event.
CREATE TABLE IF NOT EXISTS batch_keys (
    seq INTEGER PRIMARY KEY,
    keys TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS health (
    seq INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,
    time REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS health_stage ON health (stage, time);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
"""

# A record as stored: a tuple of its fields in the order of ``record_names`` in
# _picklerecords.c (``_record`` and these indices follow it), with the ObjectRef as a tuple
# (``ref_names``) and the Stage as its text.
_ID, _TIME, _STAGE, _OBJECT, _REQUEST, _RECONCILE_ID, _CAUSE_IDS = 0, 1, 2, 6, 7, 8, 9
_NAMESPACE, _NAME, _KIND = 2, 3, 1  # in the stored ObjectRef tuple

Stored = tuple[Any, ...]
Entry = tuple[int, str, Stored]  # (seq, run, stored record)

# Only the informer, lease, controller and manager stages have neither object nor request.
_HEALTH = frozenset({Stage.WATCH, Stage.LEASE, Stage.CONTROLLER, Stage.MANAGER})
_STAGES = {stage.value: stage for stage in Stage}
_HOLDING = (
    "SELECT b.seq, b.run, b.chunks, b.body, k.keys "
    "FROM batch_keys k JOIN batches b ON b.seq = k.seq"
)

_WRITE_TIMEOUT_S = 5.0  # waiting for another writer (a second process on the same file)
_MAX_PENDING = 200_000
_RETENTION_EVERY_S = 10.0
_SIZE_TARGET = 0.9  # trim to 90% of max_bytes, so a full journal is not trimmed every pass
_CHUNK = 128  # records pickled together: few enough that they die young (see _Chunk)
# Chunks a reader keeps decoded for lookups by key: explain reads an object's chunks again for
# its causes and its owner's reconciles, and the TUI explains one object after another. Tails
# and windows read each chunk once and keep none: a tailing TUI would otherwise hold them all.
_DECODED_CHUNKS = 128
# SQLite's default page. 64 KiB pages made a large batch a few WAL frames (the writer's cost
# per record at 150k records/s fell by half) but every small commit writes whole pages, and
# at a steady 200 events/s, which is what controllers mostly see, the journal cost twice as
# much.
_PAGE_SIZE = 4096
_CHECKPOINT_PAGES = 1024  # 4 MiB of WAL
_WAL_LIMIT = 4 * 2**20  # the WAL is truncated to this after a checkpoint


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
    """Turn SQLite's (and a damaged batch's) exceptions into one-line journal errors."""
    try:
        yield
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise JournalCorrupt(f"{path} holds a damaged batch: {error}") from error
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


# -- encoding ----------------------------------------------------------------------------------


class _BuiltinsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in ("str", "tuple"):
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"{module}.{name} has no place in a journal")


def _unpickle(data: bytes) -> Any:
    return _BuiltinsOnly(io.BytesIO(data)).load()


def _chunk_spans(chunks: str) -> Iterator[tuple[int, int, int]]:
    """(byte offset, byte size, records before it) of each chunk a batch's ``chunks`` lists."""
    offset = before = 0
    for chunk in chunks.split():
        size, records = map(int, chunk.split(":"))
        yield offset, size, before
        offset += size
        before += records


def _record(stored: Stored) -> Record:
    (id_, time_, stage, outcome, reason, controller, obj, request, reconcile_id, cause_ids,
     attrs) = stored  # fmt: skip
    return Record(
        time_,
        _STAGES[stage],
        outcome,
        reason,
        controller,
        None if obj is None else ObjectRef(*obj),
        request,
        reconcile_id,
        id_,
        cause_ids,
        attrs,
    )


class _Chunk(NamedTuple):
    """Records pickled together on the caller's thread, and what the batch row needs of them.

    Made of atomic values and tuples only, so the garbage collector stops tracing a chunk at
    its first pass: records waiting for the writer thread, each with its dict of attributes,
    were traced by every collection meanwhile and made the collector promote (and later
    trace again and again) the controller's own young objects, which measured more than the
    whole pipeline's cost per event.
    """

    body: bytes
    size: int  # records
    first_time: float
    last_time: float
    keys: str  # its section of ``batch_keys.keys``
    health: tuple[tuple[int, str, float, bytes], ...]  # (index, stage, time, pickled record)


def _seal(records: list[Record]) -> _Chunk:
    body, first_time, last_time, keys, health_at = seal(records, _HEALTH)
    # Requests, and the names of objects: a reader looks an object up by both its name and
    # its key (as a request), so no key is built here, where it would cost a string per event.
    section = f"{_SECTION}{_LINE}{_LINE.join(keys)}{_LINE}"
    health = tuple(
        (index, records[index].stage.value, records[index].time, dumps(records[index]))
        for index in health_at  # rarely any
    )
    return _Chunk(body, len(records), first_time, last_time, section, health)


_LINE = "\n"
_SECTION = "\x1e"


def _line(key: str) -> str:
    """A key as it is searched for: a line of its own (a false match is filtered later)."""
    return f"{_LINE}{key}{_LINE}"


class JournalWriter:
    """A recorder sink that writes records to the journal file from a background thread.

    Calling it appends the record to a short list; every ``_CHUNK`` records the list is pickled
    right there (cheaper than keeping the records alive for another thread, see ``_Chunk``).
    The thread writes what is pending every ``flush_interval_s`` (sooner once ``batch_size``
    records wait), up to ``batch_size`` records per transaction, and pickles a short list
    itself when the caller has gone quiet. If more than ``max_pending`` records wait, the
    oldest are dropped and counted in ``dropped`` (as are records lost to a failed write;
    ``last_error`` says why). Every loss is journaled too, by the thread on its next pass: a
    MANAGER ``journal_gap`` record with the count, the lost records' time range and why, so
    that explain can say its evidence may be incomplete. A journal file removed or replaced
    while it is written is noticed after each batch: that batch is counted as lost, and a new
    file is started at the path.

    Retention runs when the writer starts, every ``retention_interval_s`` and on close: batches
    whose newest record is more than ``max_age_s`` older than the newest record are deleted
    (measured against the records' own clock, which may be a fake one, so an idle journal
    keeps its last day), and when the pages in use exceed ``max_bytes`` the oldest batches are
    deleted down to about 90% of it. Freed pages are reused by later writes; the file is never
    vacuumed here, so it can outgrow ``max_bytes`` by what is written between two passes (plus
    the WAL).

    Close it (or use it as a context manager): its thread is a daemon, so records still
    pending when the process exits without ``close()`` are lost.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_age_s: float = 86_400.0,
        max_bytes: int = 256 * 2**20,
        batch_size: int = 8_192,
        flush_interval_s: float = 0.2,
        max_pending: int = _MAX_PENDING,
        retention_interval_s: float = _RETENTION_EVERY_S,
    ) -> None:
        self.path = Path(path)
        self.run = secrets.token_hex(6)
        self.last_error = ""
        self._max_age_s = max_age_s
        self._max_bytes = max_bytes
        self._batch_size = batch_size
        self._chunks_per_batch = -(-batch_size // _CHUNK)
        self._flush_interval_s = flush_interval_s
        self._max_pending = max_pending
        self._retention_interval_s = retention_interval_s
        # Both threads take records from ``_open`` and chunks from ``_sealed`` one at a time:
        # deque appends and pops are atomic, so neither the caller nor the thread takes a lock.
        self._open: deque[Record] = deque()
        self._sealed: deque[_Chunk] = deque()
        self._wake = threading.Event()
        self._closed = False
        # Records taken from ``_open`` (under ``_sealing``), and how they settled: written or
        # lost by the thread, overflowed by either (under ``_progress``, which flush() waits on).
        self._sealing = threading.Lock()
        self._taken = 0
        self._overflowed = 0
        self._written = 0
        self._lost = 0
        self._progress = threading.Condition()
        self._gap: tuple[int, float, float, str] | None = None  # (count, first, last, why)
        # The gap record on its way to the file, and the gap it tells of: if its write fails,
        # that count goes into the next gap with the rest (thread only).
        self._gap_sent: tuple[_Chunk, int, tuple[float, float]] | None = None
        # Opened here, not in the thread, so a bad path or a foreign file fails the caller.
        self._db = _open_for_writing(self.path)
        self._file = _identity(self.path)
        self._thread = threading.Thread(
            target=self._run, name=f"ctrltrace journal {self.path.name}", daemon=True
        )
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Records that never reached the file: overflow, a failed write, or after close()."""
        late = 0 if self._thread.is_alive() else len(self._open)  # appended after close()
        return self._overflowed + self._lost + late

    def __call__(self, record: Record, /) -> None:
        self._open.append(record)
        if len(self._open) >= _CHUNK:
            self._seal_open()

    def _seal_open(self) -> None:
        """Pickle up to a chunk of open records; either thread may, one at a time."""
        with self._sealing:
            if self._closed and threading.current_thread() is not self._thread:
                return  # after close(): the thread is gone, so these count as dropped
            take = self._open.popleft
            records = [take() for _ in range(min(len(self._open), _CHUNK))]
            if not records:
                return
            self._taken += len(records)
            try:
                chunk = _seal(records)
            except Exception as error:  # a record that cannot be pickled must not stop us
                self.last_error = f"{type(error).__name__}: {error}"
                times = [record.time for record in records]
                self._settle(len(records), written=False, span=(min(times), max(times)))
                return
            sealed = self._sealed
            sealed.append(chunk)
            waiting = self._taken - self._written - self._overflowed - self._lost
            while waiting > self._max_pending and len(sealed) > 1:  # the newest chunk stays
                waiting -= self._overflow(sealed.popleft())
        if len(sealed) == self._chunks_per_batch:  # Event.set() is dear: once per batch
            self._wake.set()

    def _overflow(self, chunk: _Chunk) -> int:
        with self._progress:
            self._overflowed += chunk.size
            self._note_gap(chunk.size, (chunk.first_time, chunk.last_time), "buffer full")
            self._progress.notify_all()
        return chunk.size

    def _settle(self, count: int, *, written: bool, span: tuple[float, float] = (0.0, 0.0)) -> int:
        with self._progress:
            if written:
                self._written += count
            else:
                self._lost += count
                self._note_gap(count, span, f"write failed: {self.last_error}")
            self._progress.notify_all()
        return count

    def _note_gap(self, count: int, span: tuple[float, float], why: str) -> None:
        """Widen the gap not yet recorded (under ``_progress``)."""
        if self._gap is None:
            self._gap = (count, *span, why)
        else:
            total, first, last, _ = self._gap
            self._gap = (total + count, min(first, span[0]), max(last, span[1]), why)

    def _record_gap(self) -> None:
        """Journal the records lost so far, as a record of their own, sealed straight away:
        it never counts against ``max_pending``, so it pushes out no other record. If its
        write fails, the next gap counts it and the records it told of."""
        with self._progress:
            gap, self._gap = self._gap, None
        if gap is None:
            return
        count, first, last, why = gap
        record = Record(
            time=last,
            stage=Stage.MANAGER,
            outcome=Vocab.JOURNAL_GAP,
            reason=f"{count} records lost on their way to the journal: {why}",
            attrs={Vocab.COUNT: count, Vocab.FIRST_TIME: first, Vocab.LAST_TIME: last},
        )
        chunk = _seal([record])
        self._gap_sent = (chunk, count, (first, last))
        with self._sealing:
            self._taken += 1
            self._sealed.append(chunk)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record appended so far is written; False if ``timeout_s`` passed."""
        while self._open and not self._closed:
            self._seal_open()
        target = self._taken

        def done() -> bool:
            return self._written + self._overflowed + self._lost >= target

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
                while self._open:
                    self._seal_open()
                self._record_gap()
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
        sealed = self._sealed
        while sealed:
            batch: list[_Chunk] = []
            count = 0
            try:
                while count < self._batch_size:
                    batch.append(sealed.popleft())
                    count += batch[-1].size
            except IndexError:
                pass
            span = (min(c.first_time for c in batch), max(c.last_time for c in batch))
            written = self._guarded(self._insert, batch)
            replaced = self._file_replaced()  # also after a failure: it may be the cause
            self._settle(count, written=written and not replaced, span=span)
            sent = self._gap_sent
            if sent is not None and any(chunk is sent[0] for chunk in batch):
                self._gap_sent = None
                if not written or replaced:
                    with self._progress:
                        self._note_gap(sent[1], sent[2], f"write failed: {self.last_error}")

    def _file_replaced(self) -> bool:
        """Whether the journal file was removed or replaced since the last write: what was
        just written then went to a file no reader sees, and a new file is started at the
        path (the old connection closed first, so its WAL cannot be taken for the new one's)."""
        try:
            if _identity(self.path) == self._file:
                return False
        except OSError:
            pass
        self._db.close()
        self.last_error = "the journal file was removed or replaced; a new one was started"
        try:
            self._db = _open_for_writing(self.path)
            self._file = _identity(self.path)
        except (JournalError, OSError) as error:  # writes fail; the next batch tries again
            self.last_error = f"the journal file was removed and cannot be created again: {error}"
        return True

    def _insert(self, batch: Sequence[_Chunk]) -> None:
        # Four statements a batch, BEGIN and COMMIT included (five when health records came):
        # each hands the GIL to a busy event loop and waits up to its switch interval to get it
        # back, which is what limits the writer under load, not SQLite.
        body = b"".join(chunk.body for chunk in batch)
        chunks = " ".join(f"{len(chunk.body)}:{chunk.size}" for chunk in batch)
        keys = "".join(chunk.keys for chunk in batch)
        db = self._db
        with _transaction(db):
            seq = db.execute(
                "INSERT INTO batches (seq, run, count, first_time, last_time, chunks, body) "
                "SELECT coalesce(max(seq + count), 1), ?, ?, ?, ?, ?, ? FROM "
                "(SELECT seq, count FROM batches ORDER BY seq DESC LIMIT 1)",
                (
                    self.run,
                    sum(chunk.size for chunk in batch),
                    min(chunk.first_time for chunk in batch),
                    max(chunk.last_time for chunk in batch),
                    chunks,
                    body,
                ),
            ).lastrowid
            assert seq is not None  # the batch row was inserted
            db.execute("INSERT INTO batch_keys (seq, keys) VALUES (?, ?)", (seq, keys))
            health = []
            first = seq
            for chunk in batch:
                health += [(first + index, *rest) for index, *rest in chunk.health]
                first += chunk.size
            if health:
                db.executemany(
                    "INSERT INTO health (seq, stage, time, body) VALUES (?, ?, ?, ?)", health
                )

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
        newest = db.execute("SELECT max(last_time) FROM batches").fetchone()[0]
        if newest is not None:
            cutoff = newest - self._max_age_s
            with _transaction(db):
                db.execute("DELETE FROM batches WHERE last_time < ?", (cutoff,))
                db.execute("DELETE FROM health WHERE time < ?", (cutoff,))
                self._delete_orphan_keys()
        used = self._used_bytes()
        if used <= self._max_bytes:
            return
        first = db.execute("SELECT min(seq) FROM batches").fetchone()[0]
        if first is None:
            return
        newest_seq, last = db.execute(
            "SELECT seq, seq + count FROM batches ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        # Pages freed inside indexes are reused but not counted as free, so re-measuring now
        # would overshoot: delete the proportional share once, measure again next pass.
        excess = 1.0 - self._max_bytes * _SIZE_TARGET / used
        # Never the newest batch: a journal over its size keeps its latest records.
        cut = min(first + max(1, int((last - first) * excess)), newest_seq)
        with _transaction(db):
            db.execute("DELETE FROM batches WHERE seq < ?", (cut,))
            db.execute("DELETE FROM health WHERE seq < ?", (cut,))
            self._delete_orphan_keys()

    def _delete_orphan_keys(self) -> None:
        self._db.execute(
            "DELETE FROM batch_keys WHERE seq < coalesce((SELECT min(seq) FROM batches), 1 << 62)"
        )

    def _used_bytes(self) -> int:
        db = self._db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size: int = db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


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
            db.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
            if not existing:
                db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taken before its first read, so a second writer waits."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class Journal:
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

    def _select(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._errors():
            return self._db.execute(sql, params).fetchall()

    def _entries(self, batches: Iterable[tuple[Any, ...]], *lines: str) -> Iterator[Entry]:
        """The records of these (seq, run, chunks, body[, keys]) batches, as (seq, run, stored
        record): of every chunk, or with ``lines``, of the chunks whose keys hold one of them.
        """
        decoded = self._decoded
        for seq, run, chunks, body, *keys in batches:
            sections = keys[0].split(_SECTION)[1:] if lines else ()
            for index, (offset, size, before) in enumerate(_chunk_spans(chunks)):
                if lines and not any(line in sections[index] for line in lines):
                    continue
                stored = decoded.get((seq, index)) if lines else None
                if stored is None:
                    with self._errors():
                        stored = _unpickle(body[offset : offset + size])
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
        lines = list(map(_line, keys))
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
            if entry[_TIME] < earliest:
                continue
            obj = entry[_OBJECT]
            if obj is not None and obj[_NAMESPACE] == namespace and obj[_NAME] == name:
                if kind is None or obj[_KIND] == kind:
                    found[seq] = (seq, run, entry)
            elif entry[_REQUEST] == key:
                found[seq] = (seq, run, entry)
        self._add_causes(found)
        self._add_reconciles_elsewhere(found, key)
        entries = sorted(found.values(), key=lambda found: (found[2][_TIME], found[0]))
        return [_record(entry) for _, _, entry in entries]

    def _add_causes(self, found: dict[int, Entry]) -> None:
        """Add the records that the found ones name as causes, one step back.

        A record with an object was caused by a record about the same object (a dispatch by
        its event, an event by the write that made it), so causes are looked up among the
        records of that object: the child events behind dispatches mapped to this object.
        """
        known = {(run, entry[_ID]) for _, run, entry in found.values()}
        wanted: dict[tuple[str, str], set[tuple[str, int]]] = {}
        for _, run, entry in found.values():
            obj = entry[_OBJECT]
            if obj is not None:
                missing = {(run, cause) for cause in entry[_CAUSE_IDS]} - known
                if missing:
                    wanted.setdefault((obj[_NAMESPACE], obj[_NAME]), set()).update(missing)
        for (namespace, name), ids in wanted.items():
            for seq, run, entry in self._of_object(namespace, name):
                obj = entry[_OBJECT]
                if (
                    (run, entry[_ID]) in ids
                    and obj is not None
                    and obj[_NAMESPACE] == namespace
                    and obj[_NAME] == name
                ):
                    found[seq] = (seq, run, entry)

    def _add_reconciles_elsewhere(self, found: dict[int, Entry], key: str) -> None:
        """Add reconciles of other requests (an owner's) that dispatches of this object queued.

        Each with its end and requeue, and the retries those requeues started, in turn.
        """
        dispatches: dict[str, list[Entry]] = {}
        for seq, run, entry in found.values():
            if entry[_STAGE] == Stage.DISPATCH and entry[_REQUEST] not in ("", key):
                dispatches.setdefault(entry[_REQUEST], []).append((seq, run, entry))
        for request, queued in dispatches.items():
            earliest = min(entry[_TIME] for _, _, entry in queued)
            of_request = [
                found_entry
                for found_entry in self._holding(request, since=earliest)
                if found_entry[2][_REQUEST] == request and found_entry[2][_TIME] >= earliest
            ]
            causes = {(run, entry[_ID]) for _, run, entry in queued}
            while causes:
                started = {
                    (run, entry[_RECONCILE_ID])
                    for seq, run, entry in of_request
                    if entry[_STAGE] == Stage.RECONCILE_START
                    and seq not in found
                    and any((run, cause) in causes for cause in entry[_CAUSE_IDS])
                }
                causes = set()
                for seq, run, entry in of_request:
                    if (run, entry[_RECONCILE_ID]) in started:
                        found[seq] = (seq, run, entry)
                        if entry[_STAGE] == Stage.REQUEUE:
                            causes.add((run, entry[_ID]))

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
        marks = ", ".join("?" * len(stages))
        rows = self._select(
            f"SELECT body FROM health WHERE stage IN ({marks}) AND time >= ? ORDER BY time, seq",  # noqa: S608
            (*(stage.value for stage in stages), -float("inf") if since is None else since),
        )
        with self._errors():
            return [_record(_unpickle(body)) for (body,) in rows]

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
                    if entry[2][_STAGE] in wanted and entry[2][_TIME] >= earliest
                )
                scanned += count
                if len(found) >= limit or scanned >= scan:
                    break
        found.sort(key=lambda entry: (entry[2][_TIME], entry[0]))
        return [_record(entry) for _, _, entry in found[-limit:]]

    def window(self, t0: float, t1: float) -> list[Record]:
        """Every record with ``t0 <= time <= t1``."""
        batches = self._select(
            "SELECT seq, run, chunks, body FROM batches WHERE first_time <= ? AND last_time >= ? "
            "ORDER BY seq",
            (t1, t0),
        )
        entries = [entry for entry in self._entries(batches) if t0 <= entry[2][_TIME] <= t1]
        entries.sort(key=lambda found: (found[2][_TIME], found[0]))
        return [_record(entry) for _, _, entry in entries]

    def tail(self, after_seq: int = 0, limit: int = 1_000) -> list[tuple[int, Record]]:
        """Up to ``limit`` records written after ``after_seq``, with their seq, oldest first."""
        batches = self._select(
            "SELECT seq, run, chunks, body FROM batches WHERE seq >= coalesce("
            "(SELECT max(seq) FROM batches WHERE seq <= ?), 0) ORDER BY seq LIMIT ?",
            (after_seq, limit + 1),  # each batch holds at least one record
        )
        tail: list[tuple[int, Record]] = []
        for seq, _, entry in self._entries(batches):
            if seq > after_seq:
                tail.append((seq, _record(entry)))
                if len(tail) == limit:
                    break
        return tail

    def count(self) -> int:
        total: int = self._select("SELECT coalesce(sum(count), 0) FROM batches")[0][0]
        return total
