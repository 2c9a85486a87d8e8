"""Evidence for explain, read from a journal: what the CLI and the TUI's object view both ask.

Owns which records explain is given for one object (its own records and chains, the
informer, lease and controller health, the workers' recent reconciles) and cutting them at
a moment in the past. It decides nothing: ``ctrltrace.explain`` does.
"""

from __future__ import annotations

from ctrltrace.explain import TIMELINE_LIMIT, Explanation, explain
from ctrltrace.journal import Journal


def explain_from_journal(
    journal: Journal,
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
    """Explain the object from ``journal``, with records newer than ``since`` and, given
    ``until``, as of then (later records left out)."""
    evidence = [
        journal.about(namespace, name, kind=kind, since=since),
        journal.watch_records(since=since),
        journal.lease_records(since=since),
        journal.controller_records(since=since),
        journal.reconciles(since=since),
    ]
    if until is not None:
        evidence = [[record for record in records if record.time <= until] for records in evidence]
    about, watches, leases, lifecycle, activity = evidence
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
