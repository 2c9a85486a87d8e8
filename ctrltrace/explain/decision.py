"""The decision procedure (written down in order in ``ctrltrace.explain``'s docstring, the
contract its tests check), and ``explain()``, which runs it and builds the answer.

Pure: no I/O. Over 500 lines, one procedure in one place on purpose: the walk is ordered,
and splitting it across modules would hide that order. What it reads and says lives beside it:
the chains it follows through records' causes in ``chains``, its fixes and words in ``fixes``
and ``words``, the answer's types in ``model``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ctrltrace.explain import replicas
from ctrltrace.explain.chains import (
    Activity,
    Blocker,
    Chains,
    Health,
    replica_of,
    with_own_writes_paired,
)
from ctrltrace.explain.fixes import (
    PREDICATE_FIXES,
    UNMAPPED_FIX,
    UNMAPPED_FIXES,
    WATCH_ORDER,
    api_words,
    by_kind,
    forbidden_verdict,
    not_served_words,
    raised_verdict,
    watch_warning,
)
from ctrltrace.explain.model import (
    TIMELINE_LIMIT,
    Code,
    Explanation,
    PipelineWarning,
    Target,
    Verdict,
    WarningCode,
)
from ctrltrace.explain.words import event_type_of, event_words, timeline_entry
from ctrltrace.records import Record, Stage
from ctrltrace.timetext import clock, span
from ctrltrace.vocabulary import (
    LEASE_TRANSITIONS,
    Attr,
    ControllerOutcome,
    DispatchOutcome,
    EventOutcome,
    LeaseOutcome,
    ManagerOutcome,
    ReconcileOutcome,
    WatchOutcome,
)

# Step 5: how far a dispatch got, lowest first.
_PREFERENCE = (
    Code.DROPPED_BY_PREDICATE,
    Code.NOT_MAPPED,
    Code.QUEUED,
    Code.CACHE_NOT_SYNCED,
    Code.NOT_LEADER,
    Code.IN_PROGRESS,
    Code.RECONCILED,
    Code.REQUEUE_SCHEDULED,
    Code.RECONCILE_FAILED,
    Code.TERMINAL_ERROR,
)


def _preference(pair: tuple[Record, Verdict]) -> int:
    return _PREFERENCE.index(pair[1].code)


_LOOP_AFTER = 3  # reconciles in a row triggered by the controller's own writes
_REACHED = frozenset(
    {Code.RECONCILED, Code.REQUEUE_SCHEDULED, Code.RECONCILE_FAILED, Code.TERMINAL_ERROR}
)
_HUNG_FACTOR = 10.0  # a reconcile running this many times its p99 (and over a second) looks hung


def explain(
    object_records: Sequence[Record],
    *,
    namespace: str,
    name: str,
    kind: str | None = None,
    controller: str | None = None,
    watch_records: Sequence[Record] = (),
    lease_records: Sequence[Record] = (),
    controller_records: Sequence[Record] = (),
    activity: Sequence[Record] = (),
    now: float,
    timeline_limit: int = TIMELINE_LIMIT,
) -> Explanation:
    """Decide what happened to the object's latest event (see the module docstring).

    ``activity`` is the recent RECONCILE_START and RECONCILE records of every request (not
    only this object's): what the workers are doing, and how long reconciles usually take.
    """
    target = Target(namespace, name, kind, controller)
    chains = Chains(with_own_writes_paired(object_records), controller)
    health = Health(watch_records, lease_records, controller_records, controller)
    decision = _Decision(target, chains, health, Activity(activity), now)
    verdict = decision.decide()
    shown = _within(chains.records, target, timeline_limit)
    shown_ids = {id(record) for record in shown}
    evidence = [record for record in decision.evidence if id(record) not in shown_ids]
    entries = sorted(shown + evidence, key=lambda record: record.time)
    return Explanation(
        target,
        [timeline_entry(record) for record in entries],
        verdict,
        now,
        omitted=len(chains.records) - len(shown),
    )


def _within(records: Sequence[Record], target: Target, limit: int) -> list[Record]:
    """The latest ``limit`` records (all when 0), up to half of them kept for the object's own
    events first: a child's ADDED and DELETED must not vanish behind the records of the
    owner's reconciles that followed them."""
    if limit <= 0 or len(records) <= limit:
        return list(records)
    own = [r for r in records if r.stage is Stage.EVENT and target.is_object_of(r)]
    kept = {id(record) for record in own[-(limit // 2) :]}
    for record in reversed(records):
        if len(kept) >= limit:
            break
        kept.add(id(record))
    return [record for record in records if id(record) in kept]


# -- deciding --------------------------------------------------------------------------------


class _Decision:
    def __init__(
        self, target: Target, chains: Chains, health: Health, activity: Activity, now: float
    ) -> None:
        self.target = target
        self.chains = chains
        self.health = health
        self.activity = activity
        self.now = now
        self.evidence: list[Record] = []  # records outside the object's that decided
        # The replica whose pipeline the verdict is about (None: one process's evidence).
        self.replica: str | None = None
        self.warnings: list[PipelineWarning] = []  # found on the way (other replicas' states)

    def decide(self) -> Verdict:
        trigger = self._trigger()
        verdict = self._verdict(trigger)
        return replace(verdict, warnings=self._warnings(trigger, verdict))

    def _verdict(self, trigger: Record | None) -> Verdict:
        if trigger is None:
            return self._without_events()
        self.replica = replica_of(trigger)
        dispatches = self._dispatches(trigger)
        if not dispatches:
            return self._undispatched(trigger)
        outcomes = [(dispatch, self._follow(dispatch)) for dispatch in dispatches]
        if len({replica_of(dispatch) for dispatch in dispatches}) > 1:
            # A replica standing by queues what the leader reconciles: its not_leader says
            # nothing about the object while another replica's dispatch says more.
            leading = [pair for pair in outcomes if pair[1].code is not Code.NOT_LEADER]
            best, verdict = max(leading or outcomes, key=_preference)
        else:
            best, verdict = max(outcomes, key=_preference)
        self.replica = replica_of(best)
        if verdict.code is Code.NOT_LEADER:
            blind = self._blind_leader(trigger, outcomes)
            if blind is not None:
                return blind
        others = [
            {"controller": d.controller, "request": d.request, "code": str(v.code)}
            | ({"replica": replica} if (replica := replica_of(d)) is not None else {})
            for d, v in outcomes
            if d is not best
        ]
        loop = self._self_triggered(trigger, best, verdict)
        if loop is not None:
            verdict = loop
        verdict = self._deletion(verdict)
        if others:
            listed = ", ".join(f"{other['controller']}: {other['code']}" for other in others)
            verdict = Verdict(
                verdict.code,
                f"{verdict.message} (other dispatches: {listed})",
                verdict.fix,
                {**verdict.details, "other_dispatches": others},
            )
        return verdict

    # step 1
    def _trigger(self) -> Record | None:
        target = self.target
        latest = None
        for record in self.chains.records:
            own_event = record.stage is Stage.EVENT and target.is_object_of(record)
            mapped_child = (
                record.stage is Stage.DISPATCH
                and record.request == target.key
                and not target.is_object_of(record)
            )
            if own_event or mapped_child:
                latest = record
        return latest

    # step 2
    def _dispatches(self, trigger: Record) -> list[Record]:
        if trigger.stage is Stage.DISPATCH:
            return [trigger]
        return [
            dispatch
            for event in (trigger, *self._seen_elsewhere(trigger))
            for dispatch in self.chains.effects(event, Stage.DISPATCH)
            if self.target.is_object_of(dispatch)
        ]

    def _seen_elsewhere(self, event: Record) -> list[Record]:
        """The same watch event as the other replicas' informers saw it: every replica
        watches, and the one that reconciles may not be the one whose record came last."""
        replica = replica_of(event)
        if replica is None:
            return []
        return [
            record
            for record in self.chains.records
            if record.stage is Stage.EVENT
            and replica_of(record) not in (None, replica)
            and record.outcome == event.outcome
            and record.object == event.object
        ]

    def _undispatched(self, event: Record) -> Verdict:
        which = f"controller {self.target.controller}" if self.target.controller else "controller"
        return Verdict(
            Code.NOT_WATCHED,
            f"the informer saw {event_words(event)} at {clock(event.time)}, but no {which} "
            "dispatched it",
            "Register a watch for this kind on the controller: .for_(), .owns() or "
            ".watches() in the builder; check the controller name given to explain.",
            {"event_id": event.id},
        )

    # steps 3 and 4
    def _follow(self, dispatch: Record) -> Verdict:
        controller = dispatch.controller
        raised = raised_verdict(dispatch)
        if raised is not None:
            return raised
        if dispatch.outcome == DispatchOutcome.DROPPED_BY_PREDICATE:
            return self._dropped(dispatch)
        if dispatch.outcome == DispatchOutcome.NOT_MAPPED:
            handler = str(dispatch.attrs.get(Attr.HANDLER, "the handler"))
            unmapped = str(dispatch.attrs.get(Attr.UNMAPPED, ""))
            return Verdict(
                Code.NOT_MAPPED,
                f"{controller}: {handler} mapped the {event_type_of(dispatch)} event to no "
                f"request: {dispatch.reason}",
                UNMAPPED_FIXES.get(unmapped, UNMAPPED_FIX).format(controller=controller),
                {
                    "controller": controller,
                    "handler": handler,
                    "reason": dispatch.reason,
                    "unmapped": unmapped,
                },
            )
        start = self.chains.next_start(dispatch)
        if start is None:
            return self._waiting(dispatch)
        ends: list[Record] = []
        while True:
            end = self.chains.ends.get(start.reconcile_id)
            if end is None:
                return self._in_progress(start)
            ends.append(end)
            requeue = self.chains.requeues.get(start.reconcile_id)
            following = None if requeue is None else self.chains.next_start(requeue)
            if requeue is None or following is None:
                return self._ended(end, requeue, ends)
            start = following

    def _dropped(self, dispatch: Record) -> Verdict:
        predicate = str(dispatch.attrs.get(Attr.PREDICATE, "a predicate"))
        fix = PREDICATE_FIXES.get(
            predicate,
            f"If {dispatch.controller} must see this event, relax {predicate} in the watch's "
            "predicates (.with_event_filter() or the predicates of .for_/.owns/.watches).",
        )
        return Verdict(
            Code.DROPPED_BY_PREDICATE,
            f"{dispatch.controller}: predicate {predicate} dropped the {event_type_of(dispatch)} "
            f"event: {dispatch.reason}",
            fix,
            {"controller": dispatch.controller, "predicate": predicate, "reason": dispatch.reason},
        )

    def _waiting(self, dispatch: Record) -> Verdict:
        controller = dispatch.controller
        details: dict[str, Any] = {"controller": controller, "request": dispatch.request}
        queued = f"{controller} queued {dispatch.request} at {clock(dispatch.time)}"
        health = self.health.of(replica_of(dispatch))
        lease = health.not_leader()
        if lease is not None:
            self.evidence.append(lease)
            holder = str(lease.attrs.get(Attr.HOLDER) or "") or "nobody yet"
            name = str(lease.attrs.get(Attr.LEASE, "the lease"))
            details |= {"lease": name, "holder": holder, "lease_outcome": lease.outcome}
            return Verdict(
                Code.NOT_LEADER,
                f"{queued}, but this replica is not the leader: {name} is held by {holder} "
                f"({lease.outcome} at {clock(lease.time)}: {lease.reason})",
                f"Only the leader reconciles: look at the leader ({holder}) and its logs, or "
                "stop it; run with leader election off to debug locally.",
                details,
            )
        blockers = health.blockers(controller, dispatch.time)
        if blockers is not None:
            return self._blocked(dispatch, queued, blockers, details)
        stopped = health.stopped_after(dispatch)
        if stopped is not None:
            self.evidence.append(stopped)
            return Verdict(
                Code.QUEUED,
                f"{queued}; the manager stopped at {clock(stopped.time)} before a worker took it",
                "The request was still waiting when the process stopped; it is reconciled "
                "after the next start (the initial list queues every object).",
                details | {"queued_at": dispatch.time},
            )
        if dispatch.outcome == DispatchOutcome.REQUEUED_AFTER_PROCESSING:
            held = self._held(dispatch, queued, details)
            if held is not None:
                return held
        return self._busy(dispatch, queued, details)

    def _blocked(
        self,
        dispatch: Record,
        queued: str,
        blockers: list[Blocker],
        details: dict[str, Any],
    ) -> Verdict:
        """Queued in a controller whose workers never started: name the watches to blame."""
        unsynced = self.health.of(replica_of(dispatch)).unsynced(dispatch.controller)
        if unsynced is not None:
            self.evidence.append(unsynced)
        if not blockers:
            if unsynced is not None:  # an older journal, without the watches' names
                return Verdict(
                    Code.CACHE_NOT_SYNCED,
                    f"{queued}, but its workers wait for caches: {unsynced.reason}",
                    "An informer never finished its initial list: grant list and watch on "
                    "that kind, install its CRD, or check the connection to the API server.",
                    details | {"reason": unsynced.reason},
                )
            return Verdict(
                Code.QUEUED,
                f"{queued} ({span(self.now - dispatch.time)} ago); its workers start once "
                "every watch has listed, and no watch has failed so far",
                "Nothing to fix yet: the caches are still being listed.",
                details | {"queued_at": dispatch.time, "workers": 0},
            )
        words = [blocker.words() for blocker in blockers]
        self.evidence += [blocker.failure for blocker in blockers]
        return Verdict(
            Code.CACHE_NOT_SYNCED,
            f"{queued}, but its workers have not started: they wait until every watch has "
            "synced, and " + "; ".join(problem for problem, _, _ in words),
            " ".join(fix for _, fix, _ in words),
            details | {"blocking": [more for _, _, more in words], "workers": 0},
        )

    def _held(self, dispatch: Record, queued: str, details: dict[str, Any]) -> Verdict | None:
        """Queued again while the same key is being reconciled: the key waits for that run."""
        running = [
            start
            for start in self.chains.records[: self.chains.position(dispatch)]
            if start.stage is Stage.RECONCILE_START
            and start.controller == dispatch.controller
            and start.request == dispatch.request
            and replica_of(start) == replica_of(dispatch)
        ]
        if not running or running[-1].reconcile_id in self.chains.ends:
            return None
        start = running[-1]
        return Verdict(
            Code.QUEUED,
            f"{queued}, held: {dispatch.request} is being reconciled right now (reconcile_id "
            f"{start.reconcile_id}, running for {span(self.now - start.time)}); a key is "
            "never reconciled by two workers at once, so it runs again when that one ends",
            "Nothing to fix unless the running reconcile hangs: find what it awaits in the "
            f"logs with reconcile_id={start.reconcile_id}.",
            details | {"queued_at": dispatch.time, "held_by": start.reconcile_id},
        )

    def _busy(self, dispatch: Record, queued: str, details: dict[str, Any]) -> Verdict:
        """Waiting for a worker: say what the workers are doing right now."""
        controller = dispatch.controller
        replica = replica_of(dispatch)
        health = self.health.of(replica)
        after, until = health.run_of(dispatch.time)
        running = self.activity.running(controller, after, until, replica)
        workers = health.workers(controller, dispatch.time)
        usual = self.activity.usual(controller)
        doing = ", ".join(
            f"{start.request} for {span(self.now - start.time)} (reconcile_id {start.reconcile_id})"
            for start in running
        )
        of = f"of {workers} " if workers else ""
        now_doing = f"; {len(running)} {of}worker(s) busy: {doing}" if running else ""
        fix = (
            "If it waits long, every worker is busy: look for a slow reconcile of another "
            "object, or raise max_concurrent_reconciles."
        )
        if usual is not None and running:
            p99 = usual[1]
            slowest = running[0]  # the earliest start has run longest
            if self.now - slowest.time > max(p99 * _HUNG_FACTOR, 1.0):
                fix = (
                    f"The reconcile of {slowest.request} has run for "
                    f"{span(self.now - slowest.time)}, far beyond this controller's p99 of "
                    f"{span(p99)}: find what it awaits in the logs with reconcile_id="
                    f"{slowest.reconcile_id}; raise max_concurrent_reconciles only if "
                    "reconciles are slow by design."
                )
        busy = [
            {
                "request": start.request,
                "reconcile_id": start.reconcile_id,
                "running_s": self.now - start.time,
            }
            for start in running
        ]
        return Verdict(
            Code.QUEUED,
            f"{queued} ({span(self.now - dispatch.time)} ago), waiting for a worker{now_doing}",
            fix,
            details | {"queued_at": dispatch.time, "workers": workers, "busy": busy},
        )

    def _in_progress(self, start: Record) -> Verdict:
        running = self.now - start.time
        message = (
            f"{start.controller} is reconciling {start.request}: started at "
            f"{clock(start.time)}, running for {span(running)} "
            f"(reconcile_id {start.reconcile_id})"
        )
        details: dict[str, Any] = {
            "controller": start.controller,
            "reconcile_id": start.reconcile_id,
            "started_at": start.time,
            "running_s": running,
        }
        fix = (
            "If it runs much longer than usual it is stuck: find what it awaits in the logs "
            f"with reconcile_id={start.reconcile_id}."
        )
        usual = self.activity.usual(start.controller)
        if usual is not None:
            p50, p99, runs = usual
            details |= {"p50_s": p50, "p99_s": p99, "runs": runs}
            message += f"; its reconciles take {span(p50)} (p50), {span(p99)} (p99) over {runs}"
            if running > max(p99 * _HUNG_FACTOR, 1.0):
                message += ": this one is far longer than usual and looks hung"
                fix = (
                    f"It has run far beyond this controller's p99 of {span(p99)}: find what it "
                    "awaits (a call without a timeout, a lock) in the logs with reconcile_id="
                    f"{start.reconcile_id}."
                )
        stopped = self.health.of(replica_of(start)).stopped_after(start)
        if stopped is not None:
            self.evidence.append(stopped)
            message += f"; the manager stopped at {clock(stopped.time)} before it ended"
        return Verdict(Code.IN_PROGRESS, message, fix, details)

    def _ended(self, end: Record, requeue: Record | None, ends: list[Record]) -> Verdict:
        controller, reconcile_id, attempts = end.controller, end.reconcile_id, len(ends)
        details: dict[str, Any] = {
            "controller": controller,
            "reconcile_id": reconcile_id,
            "reconciles": attempts,
            "duration_s": end.attrs.get(Attr.DURATION_S),
        }
        ran = f"Reconcile of {end.request} in {controller}"
        after = f" after {attempts} runs" if attempts > 1 else ""
        next_run = "none recorded"
        if requeue is not None:
            next_run = self._due(requeue)
            details |= {
                "due": requeue.attrs.get(Attr.DUE),
                "delay_s": requeue.attrs.get(Attr.DELAY_S),
                "attempt": requeue.attrs.get(Attr.ATTEMPT),
            }
        if end.outcome == ReconcileOutcome.SUCCESS:
            return Verdict(
                Code.RECONCILED,
                f"{ran} succeeded{after} at {clock(end.time)}",
                "Nothing failed; if the object still looks wrong, the reconciler decided so: "
                f"read its logs with reconcile_id={reconcile_id}.",
                details,
            )
        api = api_words(end, ends)
        meaning, api_fix, api_details = api if api is not None else ("", "", {})
        if end.outcome == ReconcileOutcome.TERMINAL_ERROR:
            return Verdict(
                Code.TERMINAL_ERROR,
                f"{ran} failed terminally at {clock(end.time)}: {end.reason}{meaning}; no retry",
                api_fix
                or "A terminal error is not retried: fix its cause, then change the object to "
                "trigger a new reconcile.",
                details | {"error": end.reason} | api_details,
            )
        if end.outcome == ReconcileOutcome.ERROR:
            retry = (
                f"retry attempt {details['attempt']} {next_run}" if requeue else "no retry recorded"
            )
            return Verdict(
                Code.RECONCILE_FAILED,
                f"{ran} failed at {clock(end.time)}: {end.reason}{meaning}; {retry}",
                api_fix
                or "Fix the error in the reconciler (logs with reconcile_id="
                f"{reconcile_id}); it is retried with exponential back-off meanwhile.",
                details | {"error": end.reason} | api_details,
            )
        return Verdict(
            Code.REQUEUE_SCHEDULED,
            f"{ran} asked to run again ({end.outcome}) at {clock(end.time)}; next run {next_run}",
            "Nothing to fix: the reconciler asked for this requeue; return no requeue when "
            "the object needs no more work.",
            details,
        )

    def _due(self, requeue: Record) -> str:
        due = requeue.attrs.get(Attr.DUE)
        if not isinstance(due, int | float):
            return f"in {requeue.attrs.get(Attr.DELAY_S, '?')}s"
        late = self.now - due
        if late > 1.0:  # it should have run; something else is wrong
            return f"was due at {clock(due)}, {span(late)} ago, and has not started"
        return f"due at {clock(due)} (in {span(max(-late, 0.0))})"

    # step 7
    def _deletion(self, verdict: Verdict) -> Verdict:
        """Say when the object is gone, or being deleted with finalizers that stay."""
        target = self.target
        events = [
            record
            for record in self.chains.records
            if record.stage is Stage.EVENT and target.is_object_of(record)
        ]
        if not events:
            return verdict
        latest = events[-1]
        if latest.outcome == EventOutcome.DELETED:
            ran = (
                "; Reconcile then ran, normally finding it gone" if verdict.code in _REACHED else ""
            )
            return replace(
                verdict,
                message=f"{target.key} was deleted (DELETED event at {clock(latest.time)})"
                f"{ran}: {verdict.message}",
                details={**verdict.details, "deleted_at": latest.time},
            )
        deleting = latest.attrs.get(Attr.DELETION_TIMESTAMP)
        finalizers = str(latest.attrs.get(Attr.FINALIZERS, ""))
        if not deleting or not finalizers or verdict.code not in _REACHED:
            return verdict
        first = next(e for e in events if e.attrs.get(Attr.DELETION_TIMESTAMP) == deleting)
        since = [record for record in self.chains.after(first) if record.stage is Stage.RECONCILE]
        if not since:
            return verdict
        names = finalizers.split(",")
        failing = ""
        if verdict.code in (Code.RECONCILE_FAILED, Code.TERMINAL_ERROR):
            failing = (
                f" Its latest run failed ({verdict.details.get('error', '')}), so the clean-up "
                "never finished: fix that first."
            )
        return Verdict(
            Code.DELETION_BLOCKED,
            f"{target.key} is being deleted since {deleting}, but finalizer(s) "
            f"{', '.join(names)} remain after {len(since)} reconcile(s) since then (latest: "
            f"{verdict.code})",
            "Reconcile must remove its finalizer when its clean-up is done: when "
            "metadata.deletionTimestamp is set, finish the clean-up, then remove "
            f"{', '.join(names)} from metadata.finalizers (a patch); the API server deletes the "
            "object once no finalizer is left." + failing,
            {
                **verdict.details,
                "finalizers": names,
                "deletion_timestamp": deleting,
                "reconciles_since": len(since),
                "latest_code": str(verdict.code),
            },
        )

    # step 8
    def _warnings(self, trigger: Record | None, verdict: Verdict) -> tuple[PipelineWarning, ...]:
        """Conditions around the object, whatever the verdict: its watch, the lease, gaps."""
        target = self.target
        health = self.health.of(self.replica)
        # Without an event, the latest run the journal holds (not the empty one after it).
        at = trigger.time if trigger is not None else health.latest(self.now)
        after, until = health.run_of(at)
        kinds = (
            {target.kind}
            if target.kind
            else {
                record.object.kind
                for record in self.chains.records
                if record.object is not None and target.is_object_of(record)
            }
        )
        warnings = list(self.warnings)
        for kind in sorted(kinds):
            records = [
                record
                for record in health.watches
                if after < record.time <= until
                and record.attrs.get(Attr.KIND) == kind
                and record.attrs.get(Attr.NAMESPACE, target.namespace) == target.namespace
            ]
            warning = watch_warning(kind, records, verdict.code)
            if warning is not None:
                warnings.append(warning)
        if not any(warning.code is WarningCode.STANDBY_BLIND for warning in warnings):
            warnings.extend(self._blind_standbys(kinds))
        transitions = [
            record
            for record in health.leases
            if record.outcome in LEASE_TRANSITIONS and after < record.time <= until
        ]
        if (
            transitions
            and transitions[-1].outcome == LeaseOutcome.LOST
            and verdict.code != Code.NOT_LEADER
        ):
            lost = transitions[-1]
            warnings.append(
                PipelineWarning(
                    WarningCode.LEASE_LOST,
                    f"this replica lost the leader lease {lost.attrs.get(Attr.LEASE, '')} at "
                    f"{clock(lost.time)} ({lost.reason}): it stopped reconciling then",
                    "Find why the lease was not renewed in time (API server latency, a blocked "
                    "event loop) in the logs; the leader now is whoever holds the Lease.",
                )
            )
        start = self.chains.records[0].time if self.chains.records else after
        warnings.extend(
            _missing_warning(gap) for gap in _missing(health.lifecycle, start, self.now)
        )
        return tuple(warnings)

    # step 5
    def _self_triggered(
        self, trigger: Record, dispatch: Record, verdict: Verdict
    ) -> Verdict | None:
        if verdict.code in (Code.DROPPED_BY_PREDICATE, Code.NOT_MAPPED):
            return None
        event = self.chains.event_behind(trigger)
        if event is None or event.attrs.get(Attr.SELF_CAUSED) is not True:
            return None
        starts = [
            record
            for record in self.chains.records
            if record.stage is Stage.RECONCILE_START
            and record.request == dispatch.request
            and record.controller == dispatch.controller
        ]
        loops = 0
        for start in reversed(starts):
            if not self.chains.self_triggered(start):
                break
            loops += 1
        if loops < _LOOP_AFTER:
            return None
        write = self.chains.cause(event.cause_ids[0], event) if event.cause_ids else None
        wrote = f"its own {write.outcome}" if write is not None else "its own writes"
        return Verdict(
            Code.SELF_TRIGGERED,
            f"{dispatch.controller}: the last {loops} reconciles of {dispatch.request} were "
            f"each triggered by {wrote} coming back as a watch event; it keeps reconciling "
            f"itself (latest: {verdict.code})",
            "Compare the desired state with the current one and skip writes that change "
            "nothing; write status through the status subresource and add GenerationChanged() "
            "so status and metadata updates do not trigger reconciles.",
            {
                "controller": dispatch.controller,
                "loops": loops,
                "latest_code": str(verdict.code),
                "write": write.outcome if write is not None else "",
            },
        )

    def _blind_leader(
        self, trigger: Record, outcomes: list[tuple[Record, Verdict]]
    ) -> Verdict | None:
        """Only standbys saw the event: a leader that did not because its watch of the kind
        fails is the answer, not the standbys' not_leader (whose fix, "look at the leader",
        would be right only by chance)."""
        leader = replicas.leader_of(self.health)
        if leader is None or trigger.object is None:
            return None
        health = self.health.of(leader)
        kinds = self._covering(by_kind(health.watches, trigger.object.kind))
        if not any(replica_of(r) == leader for records in kinds.values() for r in records):
            return None  # nothing from the leader's informer: nothing to judge it by
        verdict, evidence = self._state(health, trigger.object.kind)
        if verdict.code is Code.NO_EVENTS:
            return None
        self.replica = leader
        self.evidence.extend(evidence)
        standbys = sorted({str(replica_of(dispatch)) for dispatch, _ in outcomes})
        return replace(
            verdict,
            message=f"{verdict.message} (on {leader}, the leader, which so saw no event for "
            f"{self.target.key}; only {', '.join(standbys)}, standing by, saw "
            f"{event_words(trigger)} and queued it, and only the leader reconciles)",
            details={
                **verdict.details,
                "replica": leader,
                "standbys": [
                    {"replica": replica_of(dispatch), **standby.details}
                    for dispatch, standby in outcomes
                ],
            },
        )

    def _blind_standbys(self, kinds: set[str]) -> list[PipelineWarning]:
        """With several replicas and a known leader, a ``standby_blind`` warning for each
        standby whose watch of one of ``kinds`` failed, whatever the leader did: the object
        would go unseen once that standby took the lease over. (Step 6 gives the same warnings
        when no event was seen, judging every kind when none was named.)"""
        if len(replicas.named_in(self.health)) < 2:
            return []
        found: list[PipelineWarning] = []
        for kind in sorted(kinds):
            covering = self._covering(by_kind(self.health.watches, kind))
            judged = {replica for rs in covering.values() for r in rs if (replica := replica_of(r))}
            states = {replica: self._state(self.health.of(replica), kind)[0] for replica in judged}
            if states:
                found += replicas.answer(states, self.health, WATCH_ORDER).warnings()
        return found

    # step 6
    def _without_events(self) -> Verdict:
        kinds = by_kind(self.health.watches, self.target.kind)
        covering = self._covering(kinds)
        if not covering:
            return self._filtered(self._not_watched(kinds), self.health)
        judged = {replica for rs in covering.values() for r in rs if (replica := replica_of(r))}
        if not judged or len(replicas.named_in(self.health)) < 2:
            verdict, evidence = self._state(self.health)
            self.evidence.extend(evidence)
            return self._unseen(verdict, self.health)
        # Several replicas: each judged by its own watches; the answer says which one counts.
        states = {replica: self._state(self.health.of(replica)) for replica in sorted(judged)}
        answer = replicas.answer(
            {replica: verdict for replica, (verdict, _) in states.items()},
            self.health,
            WATCH_ORDER,
        )
        self.replica = answer.replica
        verdict, evidence = states[answer.replica]
        self.evidence.extend(evidence)
        self.warnings.extend(answer.warnings())
        return answer.named(self._unseen(verdict, self.health.of(answer.replica)))

    def _covering(self, kinds: Mapping[str, list[Record]]) -> dict[str, list[Record]]:
        """The watch records of each kind whose cache covers the object's namespace."""
        namespace = self.target.namespace
        covering = {
            kind: [r for r in records if r.attrs.get(Attr.NAMESPACE, namespace) == namespace]
            for kind, records in kinds.items()
        }
        return {kind: records for kind, records in covering.items() if records}

    def _state(self, health: Health, kind: str | None = None) -> tuple[Verdict, list[Record]]:
        """The state of ``health``'s watches covering the object (the first of WATCH_ORDER
        across kinds, or of ``kind``'s), and the latest record of each kind that says so."""
        covering = self._covering(by_kind(health.watches, kind or self.target.kind))
        verdicts = [self._watch_state(kind, records) for kind, records in covering.items()]
        verdict = min(verdicts, key=lambda verdict: WATCH_ORDER.index(verdict.code))
        return verdict, [records[-1] for records in covering.values()]

    def _unseen(self, verdict: Verdict, health: Health) -> Verdict:
        """A healthy watch that saw no event: unless evidence is missing, say what it holds."""
        if verdict.code is not Code.NO_EVENTS:
            return verdict
        target = self.target
        gaps = _missing(self.health.lifecycle, -math.inf, self.now)
        if gaps:  # the event may be among what is missing: say that, not "no events"
            self.evidence.extend(gaps)
            return Verdict(
                Code.EVIDENCE_MISSING,
                f"no event for {target.key} was found, but the evidence is incomplete: "
                + "; ".join(gap.reason for gap in gaps),
                "Read a source that holds everything: the journal of the replica that "
                "handled it, or traces sampled always_on (OTEL_TRACES_SAMPLER); then ask again.",
                {**verdict.details, "missing": [gap.reason for gap in gaps]},
            )
        return self._filtered(verdict, health)

    def _filtered(self, verdict: Verdict, health: Health) -> Verdict:
        """The cache holds only part of the kind (a label selector, some namespaces): name
        the filter and the kubectl command that shows whether the object passes it."""
        target = self.target
        kinds = by_kind(health.watches, target.kind)
        filters: dict[str, tuple[str, list[str]]] = {}
        for record in health.lifecycle:  # the latest watch of each kind says
            kind = str(record.attrs.get(Attr.KIND, ""))
            if record.outcome == ControllerOutcome.WATCHING and target.kind in (None, kind):
                listed = str(record.attrs.get(Attr.NAMESPACES, "")).split(",")
                filters[kind] = (
                    str(record.attrs.get(Attr.LABEL_SELECTOR, "")),
                    [namespace for namespace in listed if namespace],
                )
        problems, fixes = [], []
        where = f" -n {target.namespace}" if target.namespace else ""
        for kind, (selector, namespaces) in sorted(filters.items()):
            resources = [str(r.attrs.get(Attr.RESOURCE, "")) for r in kinds.get(kind, ())]
            get = f"kubectl get {next(filter(None, resources), kind.lower())} {target.name}{where}"
            if selector:
                problems.append(f"the cache of {kind} holds only objects with labels {selector}")
                fixes.append(
                    f"{get} -l '{selector}' shows whether {target.key} matches it (no output: it "
                    "does not; change its labels or the manager's label selector)."
                )
            if namespaces and target.namespace and target.namespace not in namespaces:
                problems.append(f"{kind} is cached only in namespaces {', '.join(namespaces)}")
                fixes.append(
                    f"{get} shows the object exists there; add {target.namespace} to the "
                    "manager's namespaces to watch it."
                )
        if not problems:
            return verdict
        return replace(
            verdict,
            message=f"{verdict.message}; " + "; ".join(problems),
            fix=" ".join(fixes),
            details={**verdict.details, "filters": problems},
        )

    def _not_watched(self, kinds: Mapping[str, list[Record]]) -> Verdict:
        target = self.target
        what = target.kind or "this object's kind"
        message = f"no informer watches {what}: no watch records for it"
        fix = (
            "Add a watch for this kind (.for_(), .owns() or .watches() in the builder) and "
            "make sure the manager's namespaces include this object's."
        )
        if kinds:  # watched, but in other namespaces only
            namespaces = {str(r.attrs.get(Attr.NAMESPACE)) for rs in kinds.values() for r in rs}
            message = f"{what} is watched only in namespaces {', '.join(sorted(namespaces))}"
            if target.namespace:
                message += f", not in {target.namespace}"
            else:  # the kinds watched are namespaced: the namespace was most likely left out
                message += (
                    f", and {target.name} was given without a namespace, which names a "
                    "cluster-scoped object"
                )
                fix = (
                    f"Ask for the object with its namespace: ctrltrace explain "
                    f"NAMESPACE/{target.name} (a NAME alone is for cluster-scoped kinds)."
                )
        return Verdict(
            Code.NOT_WATCHED, message, fix, {"kind": target.kind, "watched_kinds": sorted(kinds)}
        )

    def _watch_state(self, kind: str, records: list[Record]) -> Verdict:
        latest = records[-1]
        details: dict[str, Any] = {"kind": kind, "watch_outcome": latest.outcome}
        if latest.outcome == WatchOutcome.FORBIDDEN:
            return forbidden_verdict(kind, latest, details)
        if latest.outcome == WatchOutcome.KIND_NOT_FOUND:
            problem, fix, more = not_served_words(kind, latest)
            return Verdict(Code.KIND_NOT_FOUND, problem, fix, details | more)
        if not any(record.outcome == WatchOutcome.SYNCED for record in records):
            return Verdict(
                Code.CACHE_NOT_SYNCED,
                f"the informer for {kind} has not finished its initial list; latest: "
                f"{latest.outcome} at {clock(latest.time)}: {latest.reason}",
                "Wait for the list or find why it fails: RBAC list/watch on the kind, the "
                "CRD, the connection to the API server.",
                details,
            )
        failing = ""
        if latest.outcome not in (WatchOutcome.LISTED, WatchOutcome.SYNCED):
            failing = f"; the watch is now {latest.outcome}: {latest.reason}"
        return Verdict(
            Code.NO_EVENTS,
            f"{kind} is watched and its cache synced, but no event for {self.target.key} was "
            f"seen{failing}",
            "Check the object exists in that namespace (kubectl get), that its labels match "
            "the manager's label selector, and that the journal covers when it changed.",
            details,
        )


def _missing(lifecycle: Sequence[Record], start: float, now: float) -> list[Record]:
    """What the evidence says it lacks (journal gaps, traces not read) from ``start`` on."""
    return [
        record
        for record in lifecycle
        if record.stage is Stage.MANAGER
        and record.outcome in (ManagerOutcome.JOURNAL_GAP, ManagerOutcome.EVIDENCE_MISSING)
        and float(record.attrs.get(Attr.LAST_TIME, record.time)) >= start
        and float(record.attrs.get(Attr.FIRST_TIME, record.time)) <= now
    ]


def _missing_warning(gap: Record) -> PipelineWarning:
    first = clock(float(gap.attrs.get(Attr.FIRST_TIME, gap.time)))
    last = clock(float(gap.attrs.get(Attr.LAST_TIME, gap.time)))
    if gap.outcome == ManagerOutcome.EVIDENCE_MISSING:
        return PipelineWarning(
            WarningCode.EVIDENCE_MISSING,
            f"evidence between {first} and {last} may be missing ({gap.reason}): this answer "
            "may be incomplete",
            "Sample traces always_on (OTEL_TRACES_SAMPLER) where every answer counts, or read "
            "the journal of the replica that handled the object.",
        )
    return PipelineWarning(
        WarningCode.JOURNAL_GAP,
        f"the journal lost {gap.attrs.get(Attr.COUNT, '?')} records between {first} and "
        f"{last} ({gap.reason}): this answer may be incomplete",
        "Records are lost when the journal's writer falls behind or a write fails: give it a "
        "faster disk or more room (--journal-max-size), and see the reason above.",
    )
