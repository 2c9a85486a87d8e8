"""Where explain's evidence comes from, behind one interface, and explaining from it.

Owns the ``Evidence`` protocol that every source of records satisfies (a journal file is one:
``ctrltrace.journal.Journal``), the errors a source raises, and which records explain is given
for one object (its own records and chains, the informer, lease and controller health, the
workers' recent reconciles), cut at a moment in the past. It decides nothing: ``ctrltrace.
explain`` does, with the same procedure whatever the source.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self

from ctrltrace.explain import TIMELINE_LIMIT, Explanation, explain
from ctrltrace.records import Record


class EvidenceError(Exception):
    """The evidence cannot be read; the message is one line a user can act on."""


class EvidenceUnreachable(EvidenceError):
    """The source does not answer (connection refused, timed out, name not resolved)."""


class EvidenceRefused(EvidenceError):
    """The source answered, but refused these credentials (401) or this identity (403)."""


class EvidenceUnreadable(EvidenceError):
    """The source answered with something that is not evidence, or with none at all."""


class Closing:
    """``with source:`` closes the source on the way out: how every source ends, once."""

    def close(self) -> None:
        """Release what the source holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Evidence(Protocol):
    """Records to explain from: what explain, the TUI's object view and its time cursor read.

    Every query returns records in time order. Implementations raise ``EvidenceError`` (or,
    for a journal file, ``JournalError``) with a one-line message.
    """

    @property
    def label(self) -> str:
        """Where the records come from, in a few words (a path, a URL)."""

    def about(
        self, namespace: str, name: str, *, kind: str | None = None, since: float | None = None
    ) -> list[Record]:
        """Every record about one object and the records chained to them."""

    def watch_records(self, kind: str | None = None, since: float | None = None) -> list[Record]:
        """Informer health, for one kind or all."""

    def lease_records(self, since: float | None = None) -> list[Record]:
        """Leader-lease transitions."""

    def controller_records(self, since: float | None = None) -> list[Record]:
        """Controller and manager lifecycle."""

    def reconciles(self, since: float | None = None) -> list[Record]:
        """The recent RECONCILE_START and RECONCILE records of every controller."""

    def window(self, t0: float, t1: float) -> list[Record]:
        """Every record with ``t0 <= time <= t1``."""

    def tail(self, after: int = 0, limit: int = 1_000) -> list[tuple[int, Record]]:
        """Up to ``limit`` records after cursor ``after`` (0: the first), oldest first, each
        with its cursor: an opaque int that only grows, to pass back as ``after``."""

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


Opener = Callable[[], Evidence]
"""Opens a source anew: the TUI opens one in each thread that reads."""


def explain_from(
    evidence: Evidence,
    *,
    namespace: str,
    name: str,
    kind: str | None = None,
    controller: str | None = None,
    since: float | None = None,
    until: float | None = None,
    now: float,
    timeline_limit: int = TIMELINE_LIMIT,
) -> Explanation:
    """Explain the object from ``evidence``, with records newer than ``since`` and, given
    ``until``, as of then (later records left out)."""
    found = [
        evidence.about(namespace, name, kind=kind, since=since),
        evidence.watch_records(since=since),
        evidence.lease_records(since=since),
        evidence.controller_records(since=since),
        evidence.reconciles(since=since),
    ]
    if until is not None:
        found = [[record for record in records if record.time <= until] for records in found]
    about, watches, leases, lifecycle, activity = found
    return explain(
        about,
        namespace=namespace,
        name=name,
        kind=kind,
        controller=controller,
        watch_records=watches,
        lease_records=leases,
        controller_records=lifecycle,
        activity=activity,
        now=now,
        timeline_limit=timeline_limit,
    )
