"""A controller: its watches' dispatch (predicates → handler → queue) and its reconcile workers.

Owns what happens to an event once an informer hands it over, per watch, and the worker loop:
take a request, run Reconcile with a fresh reconcile ID, settle the outcome on the queue.
Every step emits one record saying what happened and why. Kubernetes I/O happens only
inside the reconciler, through the client it is given.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast

import structlog

from ctrltrace.client import Client
from ctrltrace.clock import Clock
from ctrltrace.context import Context
from ctrltrace.events import Event, EventType
from ctrltrace.handlers import EventHandler, MapResult
from ctrltrace.kubeevents import EventRecorder
from ctrltrace.predicates import Predicate, Verdict, first_refusal
from ctrltrace.queue import AddOutcome, QueueShutDown, WorkQueue
from ctrltrace.reconcile import Action, Reconciler, Result, as_result, settle
from ctrltrace.records import AttrValue, Obj, ObjectRef, Recorder, Stage, next_id
from ctrltrace.request import Request
from ctrltrace.source import Informer
from ctrltrace.transport import ApiError
from ctrltrace.vocabulary import (
    Attr,
    ControllerOutcome,
    DispatchOutcome,
    ReconcileStartOutcome,
    controller_record,
    dispatch_record,
)

ReconcileCall = Callable[[Context, Request], Awaitable[Result | None]]

# Unique across replicas (a random prefix) yet cheap (a counter): a UUID per reconcile costs
# as much as the rest of the reconcile bookkeeping.
_RECONCILE_PREFIX = uuid.uuid4().hex[:12]
_reconcile_counter = itertools.count(1)


def next_reconcile_id() -> str:
    return f"{_RECONCILE_PREFIX}-{next(_reconcile_counter):x}"


_NOTHING: Mapping[str, AttrValue] = MappingProxyType({})  # no attributes, made once
_CACHE_SYNC_PATIENCE = 10.0  # seconds before a controller says its workers wait for caches


class ControllerFailed(Exception):
    """A controller stopped reconciling for good; the manager stops with this error."""

    def __init__(self, controller: str, reason: str) -> None:
        super().__init__(f"controller {controller}: {reason}")
        self.controller = controller
        self.reason = reason


class CacheSyncTimeout(ControllerFailed):
    """A controller's watches did not all sync within its cache sync timeout."""


@dataclass(frozen=True)
class Watch:
    """One registered watch: a kind's informer, the handler mapping its events, predicates."""

    informer: Informer
    handler: EventHandler
    predicates: Sequence[Predicate] = ()
    role: str = "watches"  # for_ / owns / watches, for explain and doctor


@dataclass
class ControllerOptions:
    max_concurrent_reconciles: int = 1
    # controller-runtime's default CacheSyncTimeout: after it, the controller fails and the
    # manager stops (CacheSyncTimeout), so that the process exits instead of idling.
    cache_sync_timeout: float = 120.0


@dataclass
class _Stats:
    active_workers: int = 0
    in_flight: dict[Request, float] = field(default_factory=dict)  # start (monotonic)


class Controller:
    def __init__(
        self,
        name: str,
        reconciler: Reconciler,
        *,
        recorder: Recorder,
        clock: Clock,
        options: ControllerOptions | None = None,
        events: EventRecorder | None = None,
    ) -> None:
        self.name = name
        self.events = events  # the manager's recorder for this controller's Events
        self.options = options or ControllerOptions()
        self.watches: list[Watch] = []
        self.queue: WorkQueue[Request] = WorkQueue(clock=clock)
        self.stats = _Stats()
        self.started = False  # caches synced, workers running
        self._recorder = recorder
        self._clock = clock
        self._reconcile = _as_async(reconciler)
        self._reconciler = reconciler
        # Why each waiting request is waiting: the dispatches (or the reconcile that asked for a
        # requeue) that queued it. The first becomes the reconcile's parent, the rest links.
        self._causes: defaultdict[Request, list[int]] = defaultdict(list)
        self._log = structlog.get_logger("ctrltrace").bind(controller=name)

    # -- dispatch: event → predicates → handler → queue --------------------------------------

    def watch(self, watch: Watch) -> None:
        self.watches.append(watch)
        kind = watch.informer.kind

        def on_event(
            watch_type: str, obj: Obj, old: Obj | None, ref: ObjectRef, event_id: int, /
        ) -> None:
            event = Event(EventType.from_watch(watch_type), obj, old, kind.api_version, kind.kind)
            self._dispatch(watch, event, ref, event_id)

        watch.informer.add_listener(on_event)
        # Which kinds this controller's workers wait for (explain names the one that blocks),
        # and what the cache holds of them (a label selector, some namespaces).
        self._emit(
            Stage.CONTROLLER,
            ControllerOutcome.WATCHING,
            f"{watch.role} {kind}",
            attrs={
                Attr.KIND: kind.kind,
                Attr.API_VERSION: kind.api_version,
                Attr.ROLE: watch.role,
                Attr.LABEL_SELECTOR: watch.informer.label_selector,
                Attr.NAMESPACES: ",".join(watch.informer.namespaces),
            },
        )

    def _dispatch(self, watch: Watch, event: Event, ref: ObjectRef, event_id: int) -> None:
        raised: Mapping[str, AttrValue] = _NOTHING
        try:
            verdict = first_refusal(watch.predicates, event)
        except Exception as error:  # a user predicate failing drops, not crashes
            verdict = Verdict(
                False, _raising(watch.predicates, event), f"raised {type(error).__name__}: {error}"
            )
            raised = _raised(error)
        if verdict is not None:
            self._emit_dispatch(
                DispatchOutcome.DROPPED_BY_PREDICATE,
                verdict.reason,
                ref,
                event_id,
                {Attr.PREDICATE: verdict.predicate, Attr.EVENT_TYPE: str(event.type), **raised},
            )
            return
        try:
            mapped = watch.handler.map(event)
        except Exception as error:  # a custom handler failing maps nothing, not crashes
            reason = f"{watch.handler.describe()} raised {type(error).__name__}: {error}"
            mapped = MapResult((), reason)
            raised = _raised(error)
        if not mapped.requests:
            attrs = {
                Attr.HANDLER: watch.handler.describe(),
                Attr.EVENT_TYPE: str(event.type),
                **raised,
            }
            if mapped.unmapped:
                attrs[Attr.UNMAPPED] = mapped.unmapped
            self._emit_dispatch(DispatchOutcome.NOT_MAPPED, mapped.reason, ref, event_id, attrs)
            return
        for request in mapped.requests:
            outcome = self.queue.add(request)
            dispatch_id = next_id()
            if outcome is not AddOutcome.SHUT_DOWN:
                self._causes[request].append(dispatch_id)
            self._emit_dispatch(
                str(outcome),
                mapped.reason,
                ref,
                event_id,
                {Attr.HANDLER: watch.handler.describe(), Attr.EVENT_TYPE: str(event.type)},
                request=request,
                record_id=dispatch_id,
            )

    def _emit_dispatch(
        self,
        outcome: str,
        reason: str,
        ref: ObjectRef,
        event_id: int,
        attrs: dict[str, str | int | float | bool],
        *,
        request: Request | None = None,
        record_id: int | None = None,
    ) -> None:
        self._recorder.emit(
            dispatch_record(
                self._clock.wall(),
                outcome,
                reason,
                controller=self.name,
                ref=ref,
                request=request.key if request is not None else ref.key,
                event_id=event_id,
                attrs=attrs,
                id=record_id if record_id is not None else next_id(),
            )
        )

    # -- workers -----------------------------------------------------------------------------

    async def run(self, client: Client) -> None:
        """Wait for this controller's caches, then reconcile until cancelled or shut down.

        Raises CacheSyncTimeout when a watch has not synced within the options' timeout, as
        controller-runtime does, so that the manager stops instead of idling without workers.
        """
        kinds = ", ".join(sorted({str(watch.informer.kind) for watch in self.watches}))
        self._emit(
            Stage.CONTROLLER,
            ControllerOutcome.STARTING,
            f"waiting for the caches of {kinds}",
            attrs={Attr.WATCHES: kinds},
        )
        await self._wait_for_caches()
        self.started = True
        self._emit(
            Stage.CONTROLLER,
            ControllerOutcome.STARTED,
            f"{self.options.max_concurrent_reconciles} worker(s)",
            attrs={Attr.MAX_CONCURRENT_RECONCILES: self.options.max_concurrent_reconciles},
        )
        try:
            async with asyncio.TaskGroup() as workers:
                for _ in range(self.options.max_concurrent_reconciles):
                    workers.create_task(self._worker(client))
        except BaseExceptionGroup as dead:  # name what killed a worker, not the task group
            first = dead.exceptions[0]
            raise ControllerFailed(
                self.name, f"a worker died: {type(first).__name__}: {first}"
            ) from first
        finally:
            self.queue.shutdown()

    def unsynced(self) -> list[str]:
        """Each watch whose cache has not synced, with why, as "Kind (last error)"."""
        return sorted(
            f"{informer.kind} ({informer.last_error or 'no answer yet'})"
            for informer in {watch.informer for watch in self.watches}
            if not informer.synced.is_set()
        )

    async def _wait_for_caches(self) -> None:
        waits = [
            asyncio.ensure_future(informer.synced.wait())
            for informer in {watch.informer for watch in self.watches}
        ]
        timeout = self.options.cache_sync_timeout
        # Well before the timeout, say which watch holds the workers back (once).
        patience = min(_CACHE_SYNC_PATIENCE, timeout / 4)
        try:
            _, pending = await asyncio.wait(waits, timeout=patience)
            if pending:
                self._emit(
                    Stage.CONTROLLER,
                    ControllerOutcome.CACHE_SYNC_WAITING,
                    f"workers not started: caches not synced after {patience:g}s: "
                    + ", ".join(self.unsynced()),
                )
                _, pending = await asyncio.wait(pending, timeout=timeout - patience)
            if pending:
                reason = f"caches not synced after {timeout:g}s: " + ", ".join(self.unsynced())
                self._emit(Stage.CONTROLLER, ControllerOutcome.CACHE_NOT_SYNCED, reason)
                raise CacheSyncTimeout(self.name, reason)
        finally:
            for wait in waits:
                wait.cancel()

    async def _worker(self, client: Client) -> None:
        """Reconcile until the queue shuts down. Only cancelling the worker ends it otherwise:
        a CancelledError that nobody asked for is an error, so no worker ends unnoticed."""
        try:
            while True:
                try:
                    request, waited = await self.queue.get()
                except QueueShutDown:
                    return
                try:
                    await self._reconcile_one(client, request, waited)
                finally:
                    self.queue.done(request)
        except asyncio.CancelledError:
            if _cancelling():
                raise
            raise RuntimeError(
                f"a worker of controller {self.name} ended with CancelledError "
                "that nobody asked for"
            ) from None

    async def _reconcile_one(self, client: Client, request: Request, waited: float) -> None:
        causes = tuple(self._causes.pop(request, ()))
        reconcile_id = next_reconcile_id()
        started = self._clock.monotonic()
        self.stats.active_workers += 1
        self.stats.in_flight[request] = started
        start = self._emit(
            Stage.RECONCILE_START,
            ReconcileStartOutcome.STARTED,
            "",
            request=request,
            reconcile_id=reconcile_id,
            cause_ids=causes,
            attrs={Attr.QUEUE_WAIT_S: waited, Attr.RETRIES: self.queue.retries(request)},
        )
        ctx = Context(
            client,
            self._log,
            controller=self.name,
            reconcile_id=reconcile_id,
            request=request,
            loop=asyncio.get_running_loop(),
            events=self.events,
        )
        result: Result | None = None
        error: BaseException | None = None
        try:
            result = as_result(await self._reconcile(ctx, request))
        except asyncio.CancelledError as cancelled:
            if _cancelling():
                raise
            error = cancelled  # raised by the reconciler itself, not a shutdown
        except Exception as raised:  # user code failing is an outcome, not a crash
            error = raised
        finally:
            self.stats.active_workers -= 1
            self.stats.in_flight.pop(request, None)
        self._settle(
            request,
            reconcile_id=reconcile_id,
            start_id=start,
            result=result,
            error=error,
            duration=self._clock.monotonic() - started,
        )

    def _settle(
        self,
        request: Request,
        *,
        reconcile_id: str,
        start_id: int,
        result: Result | None,
        error: BaseException | None,
        duration: float,
    ) -> None:
        settlement = settle(result, error)
        attrs: dict[str, str | int | float | bool] = {
            Attr.DURATION_S: duration,
            Attr.METRIC_RESULT: settlement.metric_label,
        }
        reason = ""
        if error is not None:
            attrs[Attr.ERROR_TYPE] = type(error).__name__
            if isinstance(error, ApiError):  # what the API server said, for explain's fix
                attrs |= {
                    Attr.API_STATUS: error.status,
                    Attr.API_REASON: error.reason,
                    # ApiError's text starts with the request's method (it keeps no field).
                    Attr.API_METHOD: str(error).partition(" ")[0],
                }
            reason = f"{type(error).__name__}: {error}"
            if result is not None:
                reason += " (the Result returned with it is ignored)"
        requeues = settlement.action in (Action.AFTER, Action.RATE_LIMITED)
        if requeues and self.queue.shut_down:
            # The queue would ignore the requeue: say so instead of recording it as scheduled.
            attrs[Attr.NOT_REQUEUED] = "the queue is shut down"
            reason = f"{reason or settlement.outcome}; not requeued: the queue is shut down"
        done = self._emit(
            Stage.RECONCILE,
            settlement.outcome,
            reason or settlement.outcome,
            request=request,
            reconcile_id=reconcile_id,
            cause_ids=(start_id,),
            attrs=attrs,
        )
        if settlement.action is Action.FORGET:
            self.queue.forget(request)
            return
        if settlement.action is Action.NONE or self.queue.shut_down:
            return
        extra: dict[str, str | int | float | bool] = {}
        if settlement.action is Action.AFTER:
            self.queue.forget(request)
            delay = settlement.delay
            self.queue.add_after(request, delay)
        else:
            extra[Attr.ATTEMPT] = self.queue.retries(request) + 1
            delay = self.queue.add_rate_limited(request)
        requeue = self._emit(
            Stage.REQUEUE,
            settlement.action.value,
            f"next run in {delay:.3f}s",
            request=request,
            reconcile_id=reconcile_id,
            cause_ids=(done,),
            attrs={Attr.DELAY_S: delay, Attr.DUE: self._clock.wall() + delay, **extra},
        )
        self._causes[request].append(requeue)

    def _emit(
        self,
        stage: Stage,
        outcome: str,
        reason: str,
        *,
        request: Request | None = None,
        reconcile_id: str = "",
        cause_ids: tuple[int, ...] = (),
        attrs: dict[str, str | int | float | bool] | None = None,
    ) -> int:
        record = controller_record(
            self._clock.wall(),
            stage,
            outcome,
            reason,
            controller=self.name,
            request=request.key if request is not None else "",
            reconcile_id=reconcile_id,
            cause_ids=cause_ids,
            attrs=attrs,
        )
        self._recorder.emit(record)
        return record.id


def _cancelling() -> bool:
    """Whether someone asked to cancel the running task (shutdown), as opposed to a
    CancelledError that user code raised or let escape."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _raised(error: Exception) -> dict[str, str | int | float | bool]:
    """The exception's type and the function that raised it, for explain to name."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = frame.tb_frame.f_code.co_qualname if frame is not None else ""
    return {Attr.RAISED: type(error).__name__, Attr.RAISED_IN: where}


def _raising(predicates: Sequence[Predicate], event: Event) -> str:
    """The name of the first predicate that raises on ``event`` (predicates are pure, so
    asking again finds it; this runs only after one raised)."""
    for predicate in predicates:
        try:
            predicate.check(event)
        except Exception:  # the one we are looking for
            return predicate.name
    return "a predicate"


def _as_async(reconciler: Reconciler) -> ReconcileCall:
    """One calling convention for async functions, plain functions and reconciler objects."""
    target: Any = getattr(reconciler, "reconcile", reconciler)
    if inspect.iscoroutinefunction(target):
        return cast(ReconcileCall, target)

    async def in_thread(ctx: Context, request: Request) -> Result | None:
        # A plain function may block: keep it off the event loop.
        outcome = await asyncio.to_thread(target, ctx, request)
        if inspect.isawaitable(outcome):
            return cast(Result | None, await outcome)
        return cast(Result | None, outcome)

    return in_thread
