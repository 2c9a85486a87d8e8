"""The embedded journal: records kept in a local SQLite file, written off the event loop.

Owns the file (created 0600, WAL, ``synchronous=NORMAL``, stamped with ctrltrace's
``application_id`` and the schema version), the writer sink with its background thread and
retention, and the reader that answers "everything about this object", the informer, lease
and controller health records, time windows and a live tail.

It may not block the event loop: ``JournalWriter.__call__`` appends to a list and, every
``_CHUNK`` records, pickles the list (``picklerecords``); the file is written only by the
writer's own thread. It knows how records chain (to find everything about an object) but not
what they mean: explain interprets them.

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

By role: ``format`` (the file, its schema and the stored form of a record), ``writer``
(``JournalWriter``) and ``reader`` (``Journal``).
"""

from ctrltrace.journal.format import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    JournalCorrupt,
    JournalError,
    JournalForeign,
    JournalLocked,
    JournalMissing,
)
from ctrltrace.journal.reader import Journal
from ctrltrace.journal.writer import JournalWriter

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "Journal",
    "JournalCorrupt",
    "JournalError",
    "JournalForeign",
    "JournalLocked",
    "JournalMissing",
    "JournalWriter",
]
