"""Writing the journal: the recorder sink that pickles records a chunk at a time on the
caller's thread and writes batches from a thread of its own, with retention and journaled
losses. It may not block the event loop.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ctrltrace.journal.format import (
    SCHEMA,
    Chunk,
    JournalError,
    check_identity,
    seal_chunk,
    sqlite_errors,
)
from ctrltrace.records import Record
from ctrltrace.vocabulary import journal_gap_record

_WRITE_TIMEOUT_S = 5.0  # waiting for another writer (a second process on the same file)
_MAX_PENDING = 200_000
_RETENTION_EVERY_S = 10.0
_SIZE_TARGET = 0.9  # trim to 90% of max_bytes, so a full journal is not trimmed every pass
_SIZE_TRIGGER = 0.95  # ... once the pages in use pass 95% of it
# Pages filled per byte of batch written, until a pass has measured it (about 3 with small
# records, whose keys and index entries weigh as much as their pickled body).
_GROWTH_GUESS = 4.0
_CHUNK = 128  # records pickled together: few enough that they die young (see Chunk)
# SQLite's default page: every small commit writes whole pages, and small commits at a steady,
# modest rate are what controllers mostly make (bench/README.md, "bench.journal", has the
# figures against larger pages).
_PAGE_SIZE = 4096
_CHECKPOINT_PAGES = 1024  # 4 MiB of WAL
_WAL_LIMIT = 4 * 2**20  # the WAL is truncated to this after a checkpoint


class JournalWriter:
    """A recorder sink that writes records to the journal file from a background thread.

    Calling it appends the record to a short list; every ``_CHUNK`` records the list is pickled
    right there (cheaper than keeping the records alive for another thread, see ``Chunk``).
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
    keeps its last day), and when the pages in use pass 95% of ``max_bytes`` the oldest batches
    are deleted down to about 90% of it. A pass also runs before any batch that may take the
    pages in use past 95% (predicted from the bytes written since the last pass and the
    pages each byte filled before, measured at each pass, so no batch costs a query), so the
    file (the WAL beside it aside, at most 4 MiB) stays under ``max_bytes`` unless a single
    batch fills more than 5% of it. Freed pages are reused by later writes; the file is never
    vacuumed here.

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
        self._next_retention = 0.0  # monotonic time of the next timed pass (thread only)
        # What the passes measured, and the bytes of batches written since the last (thread only).
        self._used_at_pass = 0
        self._growth = _GROWTH_GUESS
        self._written_since_pass = 0
        # Both threads take records from ``_open`` and chunks from ``_sealed`` one at a time:
        # deque appends and pops are atomic, so neither the caller nor the thread takes a lock.
        self._open: deque[Record] = deque()
        self._sealed: deque[Chunk] = deque()
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
        self._gap_sent: tuple[Chunk, int, tuple[float, float]] | None = None
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
                chunk = seal_chunk(records)
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

    def _overflow(self, chunk: Chunk) -> int:
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
        record = journal_gap_record(count, first, last, why)
        chunk = seal_chunk([record])
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
        try:
            while True:
                # Read before draining: whatever was appended before close() is then written.
                closing = self._closed
                while self._open:
                    self._seal_open()
                self._record_gap()
                self._write_pending()
                if closing or time.monotonic() >= self._next_retention:
                    self._retain()
                if closing:
                    return
                self._wake.wait(self._flush_interval_s)
                self._wake.clear()
        finally:
            self._db.close()

    def _write_pending(self) -> None:
        sealed = self._sealed
        while sealed:
            batch: list[Chunk] = []
            count = 0
            try:
                while count < self._batch_size:
                    batch.append(sealed.popleft())
                    count += batch[-1].size
            except IndexError:
                pass
            span = (min(c.first_time for c in batch), max(c.last_time for c in batch))
            size = sum(len(c.body) + len(c.keys) for c in batch)
            growth = (self._written_since_pass + size) * self._growth
            if self._used_at_pass + growth >= self._max_bytes * _SIZE_TRIGGER:
                self._retain(size)  # before the batch, to make room for it
            written = self._guarded(self._insert, batch)
            replaced = self._file_replaced()  # also after a failure: it may be the cause
            if written:
                self._written_since_pass += size
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

    def _insert(self, batch: Sequence[Chunk]) -> None:
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

    def _retain(self, incoming: int = 0) -> None:
        """One retention pass, with room for a batch of ``incoming`` bytes about to be
        written; the next timed pass is an interval from now."""
        self._guarded(self._enforce_retention, incoming)
        self._written_since_pass = 0
        self._next_retention = time.monotonic() + self._retention_interval_s

    def _enforce_retention(self, incoming: int) -> None:
        db = self._db
        newest = db.execute("SELECT max(last_time) FROM batches").fetchone()[0]
        if newest is not None:
            cutoff = newest - self._max_age_s
            with _transaction(db):
                db.execute("DELETE FROM batches WHERE last_time < ?", (cutoff,))
                db.execute("DELETE FROM health WHERE time < ?", (cutoff,))
                self._delete_orphan_keys()
        used = self._used_bytes()
        if self._written_since_pass:
            grown = used - self._used_at_pass  # less than written, if the age limit deleted
            self._growth = max(1.0, grown / self._written_since_pass)
        self._used_at_pass = used
        expected = used + incoming * self._growth
        if expected <= self._max_bytes * _SIZE_TRIGGER:
            return
        first = db.execute("SELECT min(seq) FROM batches").fetchone()[0]
        if first is None:
            return
        newest_seq, last = db.execute(
            "SELECT seq, seq + count FROM batches ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        # Pages freed inside indexes are reused but not counted as free, so re-measuring now
        # would overshoot: delete the proportional share once, measure again next pass.
        excess = 1.0 - self._max_bytes * _SIZE_TARGET / expected
        # Never the newest batch: a journal over its size keeps its latest records.
        cut = min(first + max(1, int((last - first) * excess)), newest_seq)
        with _transaction(db):
            db.execute("DELETE FROM batches WHERE seq < ?", (cut,))
            db.execute("DELETE FROM health WHERE seq < ?", (cut,))
            self._delete_orphan_keys()
        self._used_at_pass = self._used_bytes()

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
        with sqlite_errors(path, _WRITE_TIMEOUT_S):
            existing = check_identity(path, db, empty_ok=True)
            if not existing:  # the page size is fixed once the file is in WAL mode
                db.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            db.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL never corrupts; a crash loses at most the last transaction.
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(f"PRAGMA wal_autocheckpoint = {_CHECKPOINT_PAGES}")
            db.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
            if not existing:
                db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")
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
