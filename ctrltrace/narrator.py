"""The runtime's voice: lifecycle and problem records told as log lines.

Owns what the console says about the pipeline, in controller-runtime's order and words: event
sources starting, caches synced, controllers and their workers starting, the lease, shutdown —
at info; a failing watch, a cache that will not sync, a lost lease, reconcile errors — at
warning or error, with the fix ``explain`` gives. And how often: a problem that persists is
logged once, then reminded at a slow interval with a count, never once per retry; its end is
logged too. Everything it says comes from records; it never talks to Kubernetes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from ctrltrace.clock import Clock
from ctrltrace.records import Record, Stage
from ctrltrace.remedies import WATCH_REMEDIES
from ctrltrace.vocabulary import (
    RECONCILE_FAILED,
    Attr,
    ControllerOutcome,
    KubeEventOutcome,
    LeaseOutcome,
    ManagerOutcome,
    ReconcileOutcome,
    WatchOutcome,
)

Logger = structlog.typing.FilteringBoundLogger

REMINDER_INTERVAL = 300.0  # seconds between two reminders of one persisting problem


@dataclass
class _Problem:
    what: str  # the outcome and reason that make it "the same problem"
    since: float  # wall clock
    logged_at: float  # monotonic
    count: int = 1


class Reminders:
    """Once per problem, then a reminder every ``interval`` seconds with how often it recurred.

    ``report`` says whether to log now, and with which count; ``clear`` ends a problem and
    says whether one was active (to log the recovery).
    """

    def __init__(self, clock: Clock, interval: float = REMINDER_INTERVAL) -> None:
        self._clock = clock
        self._interval = interval
        self._active: dict[tuple[str, ...], _Problem] = {}

    def report(self, key: tuple[str, ...], what: str) -> dict[str, Any] | None:
        """The fields to add to a log line when it should be logged now, else None."""
        now = self._clock.monotonic()
        problem = self._active.get(key)
        if problem is None or problem.what != what:
            self._active[key] = _Problem(what, self._clock.wall(), now)
            return {}
        problem.count += 1
        if now - problem.logged_at < self._interval:
            return None
        problem.logged_at = now
        return {"occurrences": problem.count, "failing_for_s": round(self._since(problem), 1)}

    def clear(self, key: tuple[str, ...]) -> dict[str, Any] | None:
        """Fields for a recovery line when ``key`` had a problem, else None."""
        problem = self._active.pop(key, None)
        if problem is None:
            return None
        return {"occurrences": problem.count, "failing_for_s": round(self._since(problem), 1)}

    def _since(self, problem: _Problem) -> float:
        return self._clock.wall() - problem.since


class Narrator:
    """A record sink that logs the runtime's life; cheap for the records it does not tell."""

    def __init__(
        self, clock: Clock, logger: Logger | None = None, *, reminders: float = REMINDER_INTERVAL
    ) -> None:
        self._log: Logger = logger or structlog.get_logger("ctrltrace")
        self._reminders = Reminders(clock, reminders)
        self._tellers: dict[Stage, Callable[[Record], None]] = {
            Stage.WATCH: self._watch,
            Stage.CONTROLLER: self._controller,
            Stage.RECONCILE: self._reconcile,
            Stage.KUBE_EVENT: self._kube_event,
            Stage.LEASE: self._lease,
            Stage.MANAGER: self._manager,
        }

    def __call__(self, record: Record, /) -> None:
        teller = self._tellers.get(record.stage)
        if teller is not None:
            teller(record)

    # -- watches -----------------------------------------------------------------------------

    def _watch(self, record: Record) -> None:
        attrs = record.attrs
        kind = str(attrs.get(Attr.KIND, ""))
        where = {"kind": kind, "api_version": attrs.get(Attr.API_VERSION, "")}
        if namespace := attrs.get(Attr.NAMESPACE):
            where["namespace"] = namespace
        key = ("watch", kind, str(attrs.get(Attr.API_VERSION, "")), str(namespace or ""))
        outcome = record.outcome
        if outcome == WatchOutcome.STARTED:
            selector = attrs.get(Attr.LABEL_SELECTOR)
            self._log.info(
                "Starting EventSource",
                **where,
                **({"label_selector": selector} if selector else {}),
            )
        elif outcome == WatchOutcome.SYNCED:
            self._log.info(
                "Caches synced",
                **where,
                objects=attrs.get(Attr.OBJECTS),
                seconds=attrs.get(Attr.SECONDS),
            )
        elif outcome == WatchOutcome.RESUMED:
            if (recovered := self._reminders.clear(key)) is not None:
                self._log.info("Watch recovered", **where, reason=record.reason, **recovered)
        elif outcome == WatchOutcome.GONE:
            self._log.debug("Watch expired, listing again", **where, reason=record.reason)
        elif (remedy_for := WATCH_REMEDIES.get(outcome)) is not None:
            fields = self._reminders.report(key, outcome)
            if fields is None:  # told already: only -v shows each retry
                self._log.debug("Watch failing again", **where, problem=outcome)
                return
            remedy = remedy_for(kind, record.reason, attrs)
            event = "Watch failing" if not fields else "Watch still failing"
            self._log.warning(
                event,
                **where,
                problem=outcome,
                **({"status": attrs[Attr.STATUS]} if Attr.STATUS in attrs else {}),
                error=remedy.message,
                fix=remedy.fix,
                **fields,
            )

    # -- controllers and reconciles ----------------------------------------------------------

    def _controller(self, record: Record) -> None:
        outcome = record.outcome
        if outcome == ControllerOutcome.STARTING:
            self._log.info(
                "Starting Controller",
                controller=record.controller,
                watches=record.attrs.get(Attr.WATCHES),
            )
        elif outcome == ControllerOutcome.STARTED:
            self._log.info(
                "Starting workers",
                controller=record.controller,
                worker_count=record.attrs.get(Attr.MAX_CONCURRENT_RECONCILES),
            )
        elif outcome == ControllerOutcome.CACHE_SYNC_WAITING:
            self._log.warning(
                "Waiting for caches to sync", controller=record.controller, reason=record.reason
            )
        elif outcome == ControllerOutcome.CACHE_NOT_SYNCED:
            self._log.error(
                "Could not wait for Cache to sync",
                controller=record.controller,
                error=record.reason,
                fix="Each watch named has its own warning above with the fix; "
                "raise cache_sync_timeout only for a very large first list.",
            )
        elif outcome == ControllerOutcome.FAILED:
            self._log.error("Controller stopped", controller=record.controller, error=record.reason)

    def _reconcile(self, record: Record) -> None:
        if record.outcome not in RECONCILE_FAILED:
            return
        key = ("reconcile", record.controller, record.request)
        fields = self._reminders.report(key, record.reason)
        namespace, _, name = record.request.rpartition("/")
        if fields is None:  # told already: only -v shows each retry
            self._log.debug(
                "Reconciler error again",
                controller=record.controller,
                namespace=namespace,
                name=name,
            )
            return
        self._log.error(
            "Reconciler error",
            controller=record.controller,
            namespace=namespace,
            name=name,
            reconcile_id=record.reconcile_id,
            error=record.reason,
            terminal=record.outcome == ReconcileOutcome.TERMINAL_ERROR,
            **fields,
        )

    def _kube_event(self, record: Record) -> None:
        """Events that could not be sent (refused, unreachable, dropped): once per controller
        and outcome, then reminders; their end once they are sent again."""
        controller = record.controller or "manager"
        if record.outcome in (KubeEventOutcome.CREATED, KubeEventOutcome.COUNTED):
            for outcome in (KubeEventOutcome.FAILED, KubeEventOutcome.DROPPED):
                fields = self._reminders.clear(("kube_event", controller, outcome))
                if fields is not None:
                    self._log.info("Events are sent again", controller=controller, **fields)
            return
        fields = self._reminders.report(("kube_event", controller, record.outcome), "")
        if fields is not None:
            self._log.warning(
                "Event not sent" if record.outcome == KubeEventOutcome.FAILED else "Event dropped",
                controller=controller,
                what=record.reason,
                **fields,
            )

    # -- leadership and the manager ----------------------------------------------------------

    def _lease(self, record: Record) -> None:
        attrs = record.attrs
        lease = {"lease": attrs.get(Attr.LEASE), "identity": attrs.get(Attr.IDENTITY)}
        outcome = record.outcome
        if outcome == LeaseOutcome.ERROR:
            fields = self._reminders.report(("lease",), record.reason)
            if fields is not None:
                self._log.warning("Leader election error", **lease, error=record.reason, **fields)
            return
        self._reminders.clear(("lease",))
        if outcome == LeaseOutcome.ATTEMPTING:
            self._log.info("Attempting to acquire leader lease", **lease)
        elif outcome == LeaseOutcome.ACQUIRED:
            self._log.info("Successfully acquired lease", **lease)
        elif outcome == LeaseOutcome.STANDBY:
            self._log.info(
                "Leader lease held by another replica", **lease, holder=attrs.get(Attr.HOLDER)
            )
        elif outcome == LeaseOutcome.RENEWED_LATE:
            self._log.warning("Leader lease renewed late", **lease, reason=record.reason)
        elif outcome == LeaseOutcome.LOST:
            self._log.error(
                "Leader election lost",
                **lease,
                reason=record.reason,
                fix="The manager stops so that its pod restarts as a candidate; check the API "
                "server's latency and this process's CPU (renewals must land within the renew "
                "deadline).",
            )
        elif outcome == LeaseOutcome.RELEASED:
            self._log.info("Leader lease released", **lease)

    def _manager(self, record: Record) -> None:
        outcome, fields = record.outcome, dict(record.attrs)
        if outcome == ManagerOutcome.STARTED:
            self._log.info("Starting manager", detail=record.reason, **fields)
        elif outcome == ManagerOutcome.STOPPING:
            self._log.info(
                "Stopping and waiting for in-flight reconciles", reason=record.reason, **fields
            )
        elif outcome == ManagerOutcome.DRAINED:
            self._log.info("All reconciles finished", **fields)
        elif outcome == ManagerOutcome.DRAIN_TIMED_OUT:
            self._log.warning("Gave up waiting for reconciles", reason=record.reason, **fields)
        elif outcome == ManagerOutcome.STOPPED:
            self._log.info("Manager stopped", reason=record.reason)
