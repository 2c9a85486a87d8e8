"""The journal file's format: its schema and identity, how records are stored (tuples of
built-in values, pickled a chunk at a time, read back with an unpickler that refuses every
class), and the one-line errors a damaged, locked or foreign file gives. No threads.
"""

from __future__ import annotations

import builtins
import io
import pickle
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from ctrltrace.picklerecords import RECORD_FIELDS, REF_FIELDS, dumps, seal
from ctrltrace.records import ObjectRef, Record, Stage

APPLICATION_ID = 0x63747274  # "ctrt": tells a ctrltrace journal from any other SQLite file
SCHEMA_VERSION = 2

SCHEMA = f"""
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

# A record as stored: a tuple of its fields in the order of ``picklerecords.RECORD_FIELDS``
# (``restored`` and these indices follow it), with the ObjectRef as a tuple (``REF_FIELDS``)
# and the Stage as its text.
F_ID, F_TIME, F_STAGE, F_OBJECT, F_REQUEST, F_RECONCILE_ID, F_CAUSE_IDS = map(
    RECORD_FIELDS.index,
    ("id", "time", "stage", "object", "request", "reconcile_id", "cause_ids"),
)
REF_NAMESPACE, REF_NAME, REF_KIND = map(REF_FIELDS.index, ("namespace", "name", "kind"))
# The stored tuple in the order of Record's own fields, for Record(*...).
_IN_RECORD_ORDER = itemgetter(*(RECORD_FIELDS.index(field.name) for field in fields(Record)))

Stored = tuple[Any, ...]
Entry = tuple[int, str, Stored]  # (seq, run, stored record)

# Only the informer, lease, controller and manager stages have neither object nor request.
_HEALTH = frozenset({Stage.WATCH, Stage.LEASE, Stage.CONTROLLER, Stage.MANAGER})
_STAGES = {stage.value: stage for stage in Stage}


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
def sqlite_errors(path: Path, timeout_s: float) -> Iterator[None]:
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


def check_identity(path: Path, connection: sqlite3.Connection, *, empty_ok: bool) -> bool:
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


def unpickle(data: bytes) -> Any:
    return _BuiltinsOnly(io.BytesIO(data)).load()


def chunk_spans(chunks: str) -> Iterator[tuple[int, int, int]]:
    """(byte offset, byte size, records before it) of each chunk a batch's ``chunks`` lists."""
    offset = before = 0
    for chunk in chunks.split():
        size, records = map(int, chunk.split(":"))
        yield offset, size, before
        offset += size
        before += records


def restored(stored: Stored) -> Record:
    record = Record(*_IN_RECORD_ORDER(stored))
    record.stage = _STAGES[record.stage]  # stored as its text
    obj: Any = record.object  # stored as a tuple of REF_FIELDS
    if obj is not None:
        record.object = ObjectRef(*obj)
    return record


class Chunk(NamedTuple):
    """Records pickled together on the caller's thread, and what the batch row needs of them.

    Made of atomic values and tuples only, so the garbage collector stops tracing a chunk at
    its first pass: records waiting for the writer thread, each with its dict of attributes,
    were traced by every collection meanwhile and made the collector promote (and later
    trace again and again) the controller's own young objects (bench/README.md, "bench.journal",
    says what that cost).
    """

    body: bytes
    size: int  # records
    first_time: float
    last_time: float
    keys: str  # its section of ``batch_keys.keys``
    health: tuple[tuple[int, str, float, bytes], ...]  # (index, stage, time, pickled record)


def seal_chunk(records: list[Record]) -> Chunk:
    body, first_time, last_time, keys, health_at = seal(records, _HEALTH)
    # Requests, and the names of objects: a reader looks an object up by both its name and
    # its key (as a request), so no key is built here, where it would cost a string per event.
    section = f"{SECTION}{_LINE}{_LINE.join(keys)}{_LINE}"
    health = tuple(
        (index, records[index].stage.value, records[index].time, dumps(records[index]))
        for index in health_at  # rarely any
    )
    return Chunk(body, len(records), first_time, last_time, section, health)


_LINE = "\n"
SECTION = "\x1e"


def key_line(key: str) -> str:
    """A key as it is searched for: a line of its own (a false match is filtered later)."""
    return f"{_LINE}{key}{_LINE}"
