"""Explain: why did (or didn't) the latest event for an object reach Reconcile?

Owns the decision procedure over records, the closed vocabularies of verdict and warning
codes with their one-line messages and fixes, the timeline, and the JSON scripts read.
``ctrltrace.explain_text`` renders an explanation as text; nothing here renders. By role:
``model`` (the vocabularies and the answer's shape), ``chains`` (the evidence linked and the
pipeline's health), ``decision`` (the procedure below), ``fixes`` and ``words`` (its texts).
What this package exports is its API; the modules are its own.

Pure logic: no I/O and no journal. Callers pass the records (``ctrltrace.evidence`` reads
them from a journal): those about the object (as ``Journal.about`` returns them, or filtered
from a ``Collect`` sink), the informer, lease and controller records that say whether the
pipeline around it was healthy, and the recent reconciles of every request.

The decision procedure, in order:

1. The trigger is the latest EVENT for the object (matching ``kind`` when given), or the
   latest DISPATCH whose request is the object's key but whose object is another one (a child
   mapped to it), whichever came last. Without either, go to 6.
2. The trigger's DISPATCH records (one per controller and request; only ``controller``'s when
   given) are followed one by one. None at all → ``not_watched``: no controller took it.
   ``dropped_by_predicate`` and ``not_mapped`` are verdicts as they stand. Evidence from
   several replicas (records naming their ``replica``, as traces give them): every replica's
   informer sees the event, so the same event (type and object, resourceVersion included)
   as the other replicas saw it is followed too, each within its own replica.
3. A queued, deduplicated or requeued-after-processing dispatch is followed to the
   RECONCILE_START naming it as a cause (or, should that link be missing, the next start of
   the same request in the same controller: the queue coalesced it into that one), then along
   the chain start → RECONCILE → REQUEUE → next start, to the chain's end: a start without an
   end is ``in_progress`` (running for how long, against the controller's p50/p99 from
   ``activity``); an end ``success`` is ``reconciled``, ``error`` is ``reconcile_failed``
   (with the retry's attempt and due time), ``terminal_error`` is ``terminal_error``,
   ``requeue``/``requeue_after`` are ``requeue_scheduled`` (due time). A failure the API
   server answered (``api_status``: 409, 404, 403, 422, 429, 5xx) or a timeout gets the fix
   for that status; only other errors get "fix the error in the reconciler". A dispatch
   whose predicate or map function raised is a verdict about that function.
4. A dispatch with no start yet, judged by the health of its own replica: ``not_leader`` if
   the latest lease transition (acquired, standby, lost, released) is not ``acquired``
   (naming the holder). Else, if the controller
   has no ``started`` record in the manager run of the dispatch (runs end at MANAGER
   ``stopped``), its workers never started: ``cache_not_synced`` naming each of its watches
   (its ``watching`` records) that failed without syncing, with the API server's error and
   the fix; ``queued`` without workers while they are only listing. With workers:
   ``queued``, held by the same key's running reconcile (``requeued_after_processing``) or
   waiting for a worker, naming the reconciles running now (from ``activity``).
5. With several dispatches, the one that got furthest is the verdict: reaching Reconcile beats
   waiting, which beats not_mapped and dropped_by_predicate; among those that reached
   Reconcile, failures come first; across replicas, a standby's ``not_leader`` gives way to any
   other replica's verdict. When only standbys saw the change and the leader (the latest
   ``acquired``) left informer records for the kind that are not healthy (as in 6:
   forbidden, kind not found, never synced), the leader's watch state is the verdict, naming
   it and the standbys that queued the change. The others are listed in the verdict's
   details. Then, if
   the trigger was the controller's own write coming back (EVENT ``attrs["self_caused"]``) and
   the object's last three or more reconciles were each triggered only by such events, the
   verdict becomes ``self_triggered``: the controller is reconciling itself in a loop.
6. No event: the informer records for the object's kind (every kind when ``kind`` is not
   given) that cover its namespace decide. None → ``not_watched``; the latest is
   ``forbidden`` → ``watch_forbidden``; ``kind_not_found`` → ``kind_not_found``; never
   ``synced`` → ``cache_not_synced``; otherwise ``no_events``, unless the evidence says it
   lacks something (a MANAGER ``journal_gap``, or ``evidence_missing`` from a reader such as
   traces a sampler left out): then ``evidence_missing``, for the event may be in what is
   missing. Across several kinds the first of that order wins. Evidence from several
   replicas: each replica is judged by its own informer records (and those naming no replica),
   and the verdict, naming the replica, is the one of the replica that holds the leader lease
   or held it last (the latest ``acquired``): a standby's unhealthy watch does not become the
   verdict but a ``standby_blind`` warning, since it would be blind once it led. When no lease
   record tells the leader (leader election off: every replica runs the controllers), or the
   leader left no informer records, the replica whose state comes first in that order answers.
   The other replicas' states are listed in the verdict's details.
7. Deletion: if the object's latest event is DELETED, the message says so (and that
   Reconcile then ran). If it carries a deletionTimestamp and finalizers, and reconciles ran
   since the first event that carried it, a verdict that reached Reconcile becomes
   ``deletion_blocked`` (which finalizers, since when, how many reconciles).
8. Warnings, whatever the verdict, from the manager run of the trigger in the replica of the
   verdict's dispatch (without an event, of the replica whose watches answered in 6): the
   object's kind's watch is failing now (``watch_disconnected``) or its latest failure is a 403
   (``watch_forbidden``, unless that is the verdict), in both cases only while no watch was
   accepted (``resumed``) since; this replica's latest lease transition is ``lost``
   (``lease_lost``); a MANAGER ``journal_gap`` or ``evidence_missing`` overlaps the time from
   the first record about the object until now (``journal_gap``, ``evidence_missing``: the
   answer may be incomplete); with several replicas and a known leader, a standby whose
   watch of the kind failed (``standby_blind``): it would not see the object once it led.

Record ids are unique only within one process run. Every link is therefore looked up in the
direction of time (a cause is the latest record with that id before its effect, an effect the
earliest after its cause), which keeps chains from different runs of one journal apart.
"""

from ctrltrace.explain.decision import explain
from ctrltrace.explain.model import (
    TIMELINE_LIMIT,
    Code,
    Explanation,
    PipelineWarning,
    Target,
    TimelineEntry,
    Verdict,
    WarningCode,
    exit_code,
)
from ctrltrace.explain.words import names_kind, resolve_kind
from ctrltrace.timetext import clock

__all__ = [
    "TIMELINE_LIMIT",
    "Code",
    "Explanation",
    "PipelineWarning",
    "Target",
    "TimelineEntry",
    "Verdict",
    "WarningCode",
    "clock",
    "exit_code",
    "explain",
    "names_kind",
    "resolve_kind",
]
