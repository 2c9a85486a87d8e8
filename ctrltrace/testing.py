"""What tests of controllers, and of ctrltrace itself, need in place of a real run and a real
API server: the records a run emits, on a fake clock, and a transport that answers from a
script.

``RunStory`` builds records in the order a run emits them and explains an object from them;
``ScriptedTransport`` answers list requests from pages and plays watch scripts, standing in for
the API server under an informer. No I/O.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

from ctrltrace.explain import Explanation, explain
from ctrltrace.records import AttrValue, ObjectRef, Record, Stage, next_id
from ctrltrace.transport import ApiError
from ctrltrace.vocabulary import (
    RECONCILE_FAILED,
    Attr,
    ControllerOutcome,
    DispatchOutcome,
    EventOutcome,
    ManagerOutcome,
    MetricResult,
    ReconcileOutcome,
    ReconcileStartOutcome,
    RequeueOutcome,
    WatchOutcome,
    WriteOutcome,
    write_record,
)

START = 1_700_000_000.0
"""Where a story's clock starts (seconds since the epoch)."""

HEALTH_STAGES = frozenset({Stage.WATCH, Stage.LEASE, Stage.CONTROLLER, Stage.MANAGER})
"""The stages that say how the pipeline around an object is, not what happened to it."""

_CORE_KINDS = frozenset({"ConfigMap", "Secret", "Pod"})
_EVENT_TYPES = {
    EventOutcome.ADDED: "create",
    EventOutcome.MODIFIED: "update",
    EventOutcome.DELETED: "delete",
}


class RunStory:
    """The records a real run emits, in order, on a clock that moves 10 ms a step: the health
    around an object (watches, the lease, the controller) and its pipeline (events, dispatches,
    reconciles, requeues, writes) in namespace ``shop``, with ``explain`` run over them.

    Options: the ``controller`` and the ``kind`` it reconciles (the default of every record
    that names them); ``synced``: the kind's cache has synced and the workers run (its records
    come first); ``numbered``: record ids count from 1 as in one process (screens of the same
    story repeat), else they are unique across stories (stories merged as replicas);
    ``reconcile_s``: how long each reconcile takes.
    """

    def __init__(
        self,
        *,
        synced: bool = True,
        start: float = START,
        controller: str = "configmap",
        kind: str = "ConfigMap",
        numbered: bool = False,
        reconcile_s: float = 0.042,
    ) -> None:
        self.time = start
        self.records: list[Record] = []
        self.rv = 100
        self.name = controller
        self.kind = kind
        self.reconcile_s = reconcile_s
        self._ids: Iterator[int] | None = itertools.count(1) if numbered else None
        self._reconciles = itertools.count(1)
        if synced:
            self.watch(WatchOutcome.LISTED)
            self.watch(WatchOutcome.SYNCED)
            self.controller(ControllerOutcome.STARTED)

    def add(self, record: Record) -> Record:
        """Append ``record`` and move the clock on."""
        self.records.append(record)
        self.time += 0.01
        return record

    def record(self, stage: Stage, outcome: str, **fields: Any) -> Record:
        """A record of ``stage`` and ``outcome`` at the story's time."""
        record = Record(time=self.time, stage=stage, outcome=outcome, id=self._next_id(), **fields)
        return self.add(record)

    def _next_id(self) -> int:
        return next(self._ids) if self._ids is not None else next_id()

    # -- the health around the object ---------------------------------------------------------

    def manager(self, outcome: str = ManagerOutcome.STARTED, reason: str = "") -> Record:
        return self.record(Stage.MANAGER, outcome, reason=reason or outcome)

    def watch(
        self, outcome: str, reason: str = "", kind: str | None = None, **attrs: AttrValue
    ) -> Record:
        kind = kind or self.kind
        attrs = {Attr.KIND: kind, Attr.API_VERSION: _api_version(kind), **attrs}
        return self.record(Stage.WATCH, outcome, reason=reason or outcome, attrs=attrs)

    def lease(self, outcome: str, holder: str, identity: str = "pod-a", reason: str = "") -> Record:
        attrs = {
            Attr.LEASE: "ops/widgets.example.com",
            Attr.IDENTITY: identity,
            Attr.HOLDER: holder,
        }
        reason = reason or f"{holder} holds the lease"
        return self.record(Stage.LEASE, outcome, reason=reason, attrs=attrs)

    def controller(
        self,
        outcome: str = ControllerOutcome.STARTED,
        reason: str = "",
        *,
        name: str | None = None,
        **attrs: AttrValue,
    ) -> Record:
        """A controller's life; started with 2 workers unless ``attrs`` say otherwise."""
        if outcome == ControllerOutcome.STARTED:
            attrs.setdefault(Attr.MAX_CONCURRENT_RECONCILES, 2)
        return self.record(
            Stage.CONTROLLER,
            outcome,
            reason=reason or outcome,
            controller=name or self.name,
            attrs=attrs,
        )

    # -- the pipeline ------------------------------------------------------------------------

    def event(
        self,
        name: str = "web",
        outcome: str = EventOutcome.MODIFIED,
        *,
        kind: str | None = None,
        api_version: str | None = None,
        namespace: str = "shop",
        generation: int = 1,
        writer: str = "kubectl",
        owned_write: Record | None = None,
        extra: dict[str, AttrValue] | None = None,
    ) -> Record:
        """``owned_write``: the write of the controller's own this event brings back (its
        object, as written)."""
        if owned_write is not None and owned_write.object is not None:
            ref = owned_write.object
        else:
            self.rv += 1
            kind = kind or self.kind
            api_version = api_version or _api_version(kind)
            ref = ObjectRef(
                api_version, kind, namespace, name, f"uid-{name}", str(self.rv), generation
            )
        return self.record(
            Stage.EVENT,
            outcome,
            object=ref,
            reason="the controller's own write coming back" if owned_write else "",
            cause_ids=(owned_write.id,) if owned_write else (),
            attrs={Attr.WRITER: writer, Attr.SELF_CAUSED: owned_write is not None, **(extra or {})},
        )

    def dispatch(
        self,
        event: Record,
        outcome: str = DispatchOutcome.QUEUED,
        *,
        controller: str | None = None,
        request: str | None = None,
        reason: str = "the object itself",
        **attrs: AttrValue,
    ) -> Record:
        assert event.object is not None
        if Attr.PREDICATE not in attrs:  # a dropped dispatch never reached the handler
            attrs.setdefault(Attr.HANDLER, "for the object itself")
        return self.record(
            Stage.DISPATCH,
            outcome,
            reason=reason,
            controller=controller or self.name,
            object=event.object,
            request=request or event.object.key,
            cause_ids=(event.id,),
            attrs={**attrs, Attr.EVENT_TYPE: _EVENT_TYPES[event.outcome]},
        )

    def start(self, *causes: Record, retries: int = 0, request: str = "") -> Record:
        """A worker took the request of ``causes`` (or ``request``, when the records that
        queued it are not in the story)."""
        return self.record(
            Stage.RECONCILE_START,
            ReconcileStartOutcome.STARTED,
            reason="waited 2.0 ms in the queue",
            controller=causes[0].controller if causes else self.name,
            request=causes[0].request if causes else request,
            reconcile_id=f"rid-{next(self._reconciles)}",
            cause_ids=tuple(cause.id for cause in causes),
            attrs={Attr.QUEUE_WAIT_S: 0.002, Attr.RETRIES: retries},
        )

    def end(
        self,
        start: Record,
        outcome: str = ReconcileOutcome.SUCCESS,
        reason: str = "",
        **extra: AttrValue,
    ) -> Record:
        attrs: dict[str, AttrValue] = {
            Attr.DURATION_S: self.reconcile_s,
            Attr.METRIC_RESULT: MetricResult.ERROR if outcome in RECONCILE_FAILED else outcome,
            **extra,
        }
        if reason:
            attrs[Attr.ERROR_TYPE] = reason.split(":", maxsplit=1)[0]
        return self.record(
            Stage.RECONCILE,
            outcome,
            reason=reason or outcome,
            controller=start.controller,
            request=start.request,
            reconcile_id=start.reconcile_id,
            cause_ids=(start.id,),
            attrs=attrs,
        )

    def requeue(
        self, end: Record, outcome: str = RequeueOutcome.RATE_LIMITED, delay: float = 0.005
    ) -> Record:
        attrs: dict[str, AttrValue] = {Attr.DELAY_S: delay, Attr.DUE: self.time + delay}
        if outcome == RequeueOutcome.RATE_LIMITED:
            attrs[Attr.ATTEMPT] = 1 + sum(r.stage is Stage.REQUEUE for r in self.records)
        return self.record(
            Stage.REQUEUE,
            outcome,
            reason=f"next run in {delay:.3f}s",
            controller=end.controller,
            request=end.request,
            reconcile_id=end.reconcile_id,
            cause_ids=(end.id,),
            attrs=attrs,
        )

    def write(
        self,
        start: Record,
        verb: str = WriteOutcome.UPDATE_STATUS,
        *,
        came_back: Record | None = None,
    ) -> Record:
        """The reconcile's write of shop/web, with the resourceVersion it returned;
        ``came_back``: its watch event, when that arrived before the write's answer."""
        if came_back is not None and came_back.object is not None:
            ref = came_back.object
        else:
            self.rv += 1
            ref = ObjectRef(
                _api_version(self.kind), self.kind, "shop", "web", "uid-web", str(self.rv), 1
            )
        return self.add(
            write_record(
                self.time,
                verb,
                controller=start.controller,
                reconcile_id=start.reconcile_id,
                ref=ref,
                event_id=came_back.id if came_back is not None else None,
                id=self._next_id(),
            )
        )

    def reconciled(
        self, event: Record, outcome: str = ReconcileOutcome.SUCCESS, reason: str = ""
    ) -> Record:
        return self.end(self.start(self.dispatch(event)), outcome, reason)

    # -- explaining --------------------------------------------------------------------------

    def explain(
        self, name: str = "web", *, namespace: str = "shop", later: float = 1.0, **options: Any
    ) -> Explanation:
        def stage(*stages: Stage) -> list[Record]:
            return [r for r in self.records if r.stage in stages]

        return explain(
            [r for r in self.records if r.stage not in HEALTH_STAGES],
            namespace=namespace,
            name=name,
            watch_records=stage(Stage.WATCH),
            lease_records=stage(Stage.LEASE),
            controller_records=stage(Stage.CONTROLLER, Stage.MANAGER),
            activity=stage(Stage.RECONCILE_START, Stage.RECONCILE),
            now=self.time + later,
            **options,
        )


def _api_version(kind: str) -> str:
    return "v1" if kind in _CORE_KINDS else "example.com/v1"


class ScriptedTransport:
    """Answers list requests from ``lists`` (a page, or an exception to raise) and plays the
    ``watches`` scripts in order (events, or an exception to raise mid-stream); when the
    scripts run out, a watch stays open and idle. Keeps the parameters of every request."""

    def __init__(self, lists: list[Any], watches: list[list[Any]]) -> None:
        self.lists = lists
        self.watches = watches
        self.watch_params: list[Mapping[str, str]] = []
        self.list_params: list[Mapping[str, str]] = []

    async def request(
        self, method: str, path: str, params: Mapping[str, str] | None = None, **_: Any
    ) -> Any:
        self.list_params.append(params or {})
        answer = self.lists.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def watch(
        self,
        path: str,
        params: Mapping[str, str],
        opened: Callable[[], None] | None = None,
        **_: Any,
    ) -> AsyncIterator[Any]:
        self.watch_params.append(params)
        script = self.watches.pop(0) if self.watches else None
        if opened is not None and not (script and isinstance(script[0], ApiError)):
            opened()  # the server took the watch (a script that starts refusing it did not)
        if script is None:
            await asyncio.Event().wait()  # nothing more: block like an idle watch
            return
        for item in script:
            if isinstance(item, Exception):
                raise item
            yield item
