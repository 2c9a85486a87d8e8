"""The feeds that bring records to the TUI: ``EvidenceFeed`` (a thread tailing a source of
evidence such as a journal file), ``RecorderFeed`` (a recorder sink inside a running manager),
the replay of evidence up to a time cursor, and the explanation of one object.

A feed calls into the UI only through the ``notify`` callable it is started with, once per
burst, never per record. It may not import Textual or talk to Kubernetes.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ctrltrace.evidence import EvidenceError, Opener, explain_from
from ctrltrace.explain import Explanation
from ctrltrace.journal import Journal, JournalError
from ctrltrace.records import Record
from ctrltrace.tui.feed.view import MAX_EVENT_ROWS, Target, ViewState

Notify = Callable[[], None]
_MAX_PENDING = 100_000  # records a feed holds for the UI before it stops reading (or drops)
_TAKE_LIMIT = 20_000  # records one take() hands the UI: bounds the work of one message
_TAIL_CHUNK = 5_000
_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class Batch:
    """What a feed has for the UI since the last ``take``."""

    records: list[Record]
    dropped: int = 0  # records lost before reaching the view since the feed started
    # Why the feed cannot go on (no journal, not a journal, refused, unreachable): the error
    # itself, so that the command exits with the code explain gives for it.
    error: JournalError | EvidenceError | None = None
    trouble: str = ""  # a passing problem (journal busy), retried meanwhile
    ended: bool = False  # the process making the records ended: no more will come

    @property
    def failure(self) -> str:
        """``error`` in one line, or empty."""
        return "" if self.error is None else str(self.error)


class Feed(Protocol):
    """One source of records for the TUI: started once, taken from on the UI thread."""

    @property
    def evidence(self) -> Opener | None:
        """Opens the evidence explain and replay read, if there is any."""

    @property
    def label(self) -> str:
        """Where the records come from, in a few words."""

    def start(self, notify: Notify) -> None: ...

    def take(self) -> Batch: ...

    def stop(self) -> None: ...


class _Buffer:
    """Records between a producer (a thread or a sink) and the UI, with wake-ups merged.

    The producer calls ``notify`` only when it turns the signal on; ``take`` turns it off
    before draining, so a record appended during a take either is drained by it or signals
    again. Deque appends and pops are atomic: no lock on the producer's path.
    """

    def __init__(self, max_pending: int) -> None:
        self.pending: deque[Record] = deque()
        self.max_pending = max_pending
        self.dropped = 0
        self._signalled = False
        self._notify: Notify | None = None

    def connect(self, notify: Notify) -> None:
        self._notify = notify

    def signal(self) -> None:
        if not self._signalled and self._notify is not None:
            self._signalled = True
            self._notify()

    def take(self) -> list[Record]:
        self._signalled = False
        pending = self.pending
        records = [pending.popleft() for _ in range(min(len(pending), _TAKE_LIMIT))]
        if pending:  # more than one take's worth: come back for the rest
            self.signal()
        return records


class EvidenceFeed:
    """Tails a source of evidence (a journal file, a manager's debug endpoint, a trace
    backend) from its first record on, in a thread of its own.

    The thread opens the source (one that cannot be opened, such as a missing or foreign
    journal, is a ``failure``), then polls its ``tail`` every ``poll_s`` and, while it finds
    full chunks, at once. When the UI falls behind it stops reading: the source itself is the
    buffer, so nothing is lost.
    """

    def __init__(
        self,
        opener: Opener,
        *,
        label: str,
        poll_s: float = _POLL_S,
        chunk: int = _TAIL_CHUNK,
        max_pending: int = _MAX_PENDING,
    ) -> None:
        self._opener = opener
        self._label = label
        self._poll_s = poll_s
        self._chunk = chunk
        self._buffer = _Buffer(max_pending)
        self._error: JournalError | EvidenceError | None = None
        self._trouble = ""
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def of_journal(
        cls,
        path: str | os.PathLike[str],
        *,
        poll_s: float = _POLL_S,
        chunk: int = _TAIL_CHUNK,
        max_pending: int = _MAX_PENDING,
    ) -> EvidenceFeed:
        """Tail the journal file at ``path``."""
        return cls(
            functools.partial(Journal, path),
            label=f"journal {path}",
            poll_s=poll_s,
            chunk=chunk,
            max_pending=max_pending,
        )

    @property
    def evidence(self) -> Opener:
        return self._opener

    @property
    def label(self) -> str:
        return self._label

    def start(self, notify: Notify) -> None:
        self._buffer.connect(notify)
        self._thread = threading.Thread(target=self._run, name="ctrltrace tui tail", daemon=True)
        self._thread.start()

    def take(self) -> Batch:
        return Batch(self._buffer.take(), 0, self._error, self._trouble)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            evidence = self._opener()
        except (JournalError, EvidenceError) as error:
            self._error = error
            self._buffer.signal()
            return
        with evidence:
            after = 0
            while not self._stopping.is_set():
                if len(self._buffer.pending) >= self._buffer.max_pending:
                    self._stopping.wait(self._poll_s)
                    continue
                try:
                    rows = evidence.tail(after, self._chunk)
                except (JournalError, EvidenceError) as error:  # busy or briefly unreadable: retry
                    self._trouble = str(error)
                    self._buffer.signal()
                    self._stopping.wait(self._poll_s)
                    continue
                self._trouble = ""
                if rows:
                    after = rows[-1][0]
                    self._buffer.pending.extend(record for _, record in rows)
                    self._buffer.signal()
                if len(rows) < self._chunk:
                    self._stopping.wait(self._poll_s)


class RecorderFeed:
    """A recorder sink that hands a running manager's records to the TUI in the same process.

    Calling it appends to a bounded buffer and, once per burst, calls ``notify``; it never
    blocks the manager. Past ``max_pending`` waiting records the oldest are dropped and counted.
    ``evidence`` opens what the same run writes (its journal), for explain and replay, if it
    writes any.
    """

    def __init__(self, evidence: Opener | None = None, *, max_pending: int = _MAX_PENDING) -> None:
        self._evidence = evidence
        self._buffer = _Buffer(max_pending)
        self._ended = False

    @property
    def evidence(self) -> Opener | None:
        return self._evidence

    @property
    def label(self) -> str:
        return "this process"

    def __call__(self, record: Record, /) -> None:
        buffer = self._buffer
        buffer.pending.append(record)
        if len(buffer.pending) > buffer.max_pending:
            try:
                buffer.pending.popleft()
                buffer.dropped += 1
            except IndexError:  # the UI emptied it meanwhile
                pass
        buffer.signal()

    def end(self) -> None:
        """The manager has ended (from any thread): the view takes what is left, then closes."""
        self._ended = True
        self._buffer.signal()

    def start(self, notify: Notify) -> None:
        self._buffer.connect(notify)
        if self._buffer.pending or self._ended:  # whatever came before the view was ready
            self._buffer.signal()

    def take(self) -> Batch:
        ended = self._ended  # read first: records appended before the end are then taken too
        records = self._buffer.take()
        return Batch(records, self._buffer.dropped, ended=ended and not self._buffer.pending)

    def stop(self) -> None:
        self._buffer.connect(lambda: None)


def replay(
    opener: Opener,
    until: float,
    *,
    cancelled: Callable[[], bool] = lambda: False,
    max_events: int = MAX_EVENT_ROWS,
) -> ViewState | None:
    """The views as they were at ``until``: the evidence's records up to then, folded anew.

    Reads from the first record, so its cost grows with the evidence. None if ``cancelled``
    said so between chunks. Raises ``JournalError`` or ``EvidenceError``.
    """
    state = ViewState(max_events=max_events)
    with opener() as evidence:
        after = 0
        while not cancelled():
            rows = evidence.tail(after, _TAIL_CHUNK)
            records = [record for _, record in rows]
            state.apply(record for record in records if record.time <= until)
            # Seq order is time order within one writer; stop once a chunk lies wholly past.
            if len(rows) < _TAIL_CHUNK or min(record.time for record in records) > until:
                return state
            after = rows[-1][0]
    return None


def explain_object(
    opener: Opener, target: Target, *, now: float, until: float | None = None
) -> Explanation:
    """What ``ctrltrace explain`` says about ``target``, from the evidence, as of ``until``."""
    with opener() as evidence:
        return explain_from(
            evidence,
            namespace=target.namespace,
            name=target.name,
            kind=target.kind,
            until=until,
            now=now,
        )
