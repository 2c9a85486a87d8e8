"""Kubernetes Events a controller emits about its objects (``ctx.events``,
``mgr.event_recorder(component)``), sent as client-go's ``tools/record`` package sends them.

Events are core/v1 ``events``, the API that client-go's ``record.EventRecorder`` writes and
that controller-runtime's ``mgr.GetEventRecorderFor`` hands out (``kubectl describe`` shows
them). Owns what client-go's broadcaster and correlator do with each one:

- ``event()`` never blocks and never raises for the API's sake: it puts the Event on a bounded
  queue (1000, client-go's ``maxQueuedEvents``) that one background task (``run``, started
  by the manager) drains; an Event that finds the queue full, or is still queued when the
  manager stops, is dropped and counted.
- The same Event again (same component, host, involved object, type, reason and message)
  patches the existing Event object's ``count`` and ``lastTimestamp`` instead of creating a
  new object; the cache of sent Events holds 4096 keys, as client-go's.
- Each component and involved object may send a burst of 25 Events, then one every 5 minutes
  (client-go's spam filter); the rest are dropped and counted.

Every Event that reaches the sender (or is dropped) is a ``Stage.KUBE_EVENT`` record about
the involved object, so ``explain`` and the TUI show it. Client-go's merging of *similar*
Events (same reason, ten different messages in ten minutes) is not done.

I/O only in ``run``'s task, through the transport's public ``request``.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from ctrltrace.clock import Clock
from ctrltrace.objects import rfc3339
from ctrltrace.records import ObjectRef, Recorder
from ctrltrace.transport import ApiError, Json, NotFound
from ctrltrace.vocabulary import KubeEventOutcome, kube_event_record

NORMAL = "Normal"
WARNING = "Warning"
MAX_QUEUED = 1000  # client-go's maxQueuedEvents
CACHE_SIZE = 4096  # client-go's maxLruCacheEntries
SPAM_BURST = 25  # client-go's defaultSpamBurst
SPAM_REFILL_S = 300.0  # one token per 5 minutes: client-go's defaultSpamQPS = 1/300
SEND_ATTEMPTS = 3
_TRANSIENT = (aiohttp.ClientError, OSError, TimeoutError)


class Requests(Protocol):
    """What the sender needs of ``transport.Transport``."""

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Json: ...


@dataclass(frozen=True, slots=True)
class _Pending:
    """One Event as ``event()`` was called, before correlation."""

    component: str
    controller: str
    reconcile_id: str
    request: str
    ref: ObjectRef
    involved: Mapping[str, str]
    type: str
    reason: str
    message: str
    time: float

    @property
    def words(self) -> str:
        return f"{self.type} {self.reason}: {self.message}"


@dataclass(slots=True)
class _Sent:
    name: str
    namespace: str
    count: int
    first: float


class _SpamFilter:
    """A token bucket per component and involved object, kept for the newest 4096 of them."""

    def __init__(self, clock: Clock, burst: int, refill_s: float) -> None:
        self._clock = clock
        self.burst = burst
        self.refill_s = refill_s
        self._buckets: OrderedDict[tuple[str, ...], tuple[float, float]] = OrderedDict()

    def allow(self, key: tuple[str, ...]) -> bool:
        now = self._clock.monotonic()
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) / self.refill_s)
        allowed = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > CACHE_SIZE:
            self._buckets.popitem(last=False)
        return allowed


class EventBroadcaster:
    """The queue and the sender every ``EventRecorder`` of one manager shares."""

    def __init__(
        self,
        *,
        recorder: Recorder,
        clock: Clock,
        host: str = "",
        max_queued: int = MAX_QUEUED,
        spam_burst: int = SPAM_BURST,
        spam_refill_s: float = SPAM_REFILL_S,
    ) -> None:
        self.host = host or socket.gethostname()
        self.dropped = 0  # queue full or rate-limited
        self.clock = clock
        self._recorder = recorder
        self._max_queued = max_queued
        self._spam = _SpamFilter(clock, spam_burst, spam_refill_s)
        self._pending: deque[_Pending] = deque()
        self._sent: OrderedDict[tuple[str, ...], _Sent] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wakeup: asyncio.Event | None = None

    def recorder_for(self, component: str) -> EventRecorder:
        """Events from ``component`` (their ``source.component`` and reportingController)."""
        return EventRecorder(self, component)

    def submit(self, pending: _Pending) -> None:
        """Queue an Event from any thread; never blocks."""
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            # A plain-def reconciler runs in a worker thread: the queue belongs to the loop.
            loop.call_soon_threadsafe(self._enqueue, pending)
        else:
            self._enqueue(pending)

    def _enqueue(self, pending: _Pending) -> None:
        if len(self._pending) >= self._max_queued:
            self._drop(pending, f"the Event queue is full ({self._max_queued} waiting)")
            return
        self._pending.append(pending)
        if self._wakeup is not None:
            self._wakeup.set()

    async def run(self, transport: Requests) -> None:
        """Send queued Events until cancelled (the manager runs this from start to stop)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wakeup = wakeup = asyncio.Event()
        try:
            while True:
                while self._pending:
                    await self._send(transport, self._pending.popleft())
                wakeup.clear()
                await wakeup.wait()
        finally:
            self._loop = self._wakeup = None
            while self._pending:  # said, not lost silently
                self._drop(self._pending.popleft(), "the manager stopped before it was sent")

    async def _send(self, transport: Requests, pending: _Pending) -> None:
        sent, spam_key = self._correlate(pending)
        if not self._spam.allow(spam_key):
            self._drop(
                pending,
                f"rate-limited: more than {self._spam.burst} Events about this object from "
                f"{pending.component}; one more every {self._spam.refill_s:.0f}s",
            )
            return
        outcome, error = await self._deliver(transport, pending, sent)
        count = f" (count {sent.count})" if sent.count > 1 else ""
        reason = f"{pending.words}{count}" + (f"; not sent: {error}" if error else "")
        self._emit(pending, outcome, reason, f"{sent.namespace}/{sent.name}")

    def _correlate(self, pending: _Pending) -> tuple[_Sent, tuple[str, ...]]:
        """The Event object this one counts into (a new one if none), and its spam key."""
        involved = pending.involved
        source = (
            pending.component,
            self.host,
            *(involved.get(field, "") for field in ("kind", "namespace", "name", "uid")),
            involved.get("apiVersion", ""),
        )
        key = (*source, pending.type, pending.reason, pending.message)
        sent = self._sent.pop(key, None)
        if sent is None:
            namespace = involved.get("namespace") or "default"
            name = f"{involved['name']}.{int(pending.time * 1e9):x}"
            sent = _Sent(name, namespace, 0, pending.time)
        sent.count += 1  # counted even when rate-limited, as client-go's correlator does
        self._sent[key] = sent
        if len(self._sent) > CACHE_SIZE:
            self._sent.popitem(last=False)
        return sent, source

    async def _deliver(
        self, transport: Requests, pending: _Pending, sent: _Sent
    ) -> tuple[str, str]:
        """Send with retries on a lost connection; the outcome and why it failed."""
        error = ""
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                outcome = await self._attempt(transport, pending, sent)
            except ApiError as refused:  # the server said no: trying again changes nothing
                return (
                    KubeEventOutcome.FAILED,
                    f"{refused.status} {refused.reason}: {refused.message}",
                )
            except _TRANSIENT as failure:
                error = f"{type(failure).__name__}: {failure}"
                if attempt < SEND_ATTEMPTS:
                    await self.clock.sleep(float(attempt))
            else:
                return outcome, ""
        return KubeEventOutcome.FAILED, error

    async def _attempt(self, transport: Requests, pending: _Pending, sent: _Sent) -> str:
        """Patch the count of the Event object, or create it."""
        path = f"/api/v1/namespaces/{sent.namespace}/events"
        stamp = _timestamp(pending.time)
        if sent.count > 1:
            patch = {"count": sent.count, "lastTimestamp": stamp}
            try:
                await transport.request(
                    "PATCH",
                    f"{path}/{sent.name}",
                    body=patch,
                    content_type="application/merge-patch+json",
                )
            except NotFound:  # expired (the API server keeps Events for an hour): create anew
                pass
            else:
                return KubeEventOutcome.COUNTED
        await transport.request("POST", path, body=self._body(pending, sent, stamp))
        return KubeEventOutcome.CREATED

    def _body(self, pending: _Pending, sent: _Sent, stamp: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": sent.name, "namespace": sent.namespace},
            "involvedObject": dict(pending.involved),
            "reason": pending.reason,
            "message": pending.message,
            "type": pending.type,
            "source": {"component": pending.component, "host": self.host},
            "firstTimestamp": _timestamp(sent.first),
            "lastTimestamp": stamp,
            "count": sent.count,
            "reportingComponent": pending.component,
            "reportingInstance": self.host,
        }

    def _drop(self, pending: _Pending, why: str) -> None:
        self.dropped += 1
        self._emit(pending, KubeEventOutcome.DROPPED, f"{pending.words}; {why}")

    def _emit(self, pending: _Pending, outcome: str, reason: str, event: str = "") -> None:
        self._recorder.emit(
            kube_event_record(
                self.clock.wall(),
                outcome,
                reason,
                controller=pending.controller,
                ref=pending.ref,
                request=pending.request,
                reconcile_id=pending.reconcile_id,
                event=event,
            )
        )


class EventRecorder:
    """Emits Events about objects, as client-go's ``record.EventRecorder``.

    >>> ctx.events.normal(foo, "Synced", "Foo synced successfully")  # doctest: +SKIP
    """

    __slots__ = ("_broadcaster", "_component", "_controller", "_reconcile_id", "_request")

    def __init__(
        self,
        broadcaster: EventBroadcaster,
        component: str,
        *,
        controller: str = "",
        reconcile_id: str = "",
        request: str = "",
    ) -> None:
        if not component:
            raise ValueError("an Event recorder needs a component name (its source)")
        self._broadcaster = broadcaster
        self._component = component
        self._controller = controller
        self._reconcile_id = reconcile_id
        self._request = request

    def scoped(self, controller: str, reconcile_id: str, request: str) -> EventRecorder:
        """The same recorder, its Events attributed to one reconcile (of ``request``, the
        queue key) in the records."""
        return EventRecorder(
            self._broadcaster,
            self._component,
            controller=controller,
            reconcile_id=reconcile_id,
            request=request,
        )

    def normal(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.event(obj, NORMAL, reason, message)

    def warning(self, obj: Mapping[str, Any], reason: str, message: str) -> None:
        self.event(obj, WARNING, reason, message)

    def event(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        """Queue an Event about ``obj``; returns at once. ``ValueError`` for an Event the API
        server would refuse (a type other than Normal or Warning, an object without
        apiVersion, kind or name)."""
        if event_type not in (NORMAL, WARNING):
            raise ValueError(f"Event type must be {NORMAL!r} or {WARNING!r}, got {event_type!r}")
        meta = obj.get("metadata") or {}
        involved = {
            "apiVersion": obj.get("apiVersion") or "",
            "kind": obj.get("kind") or "",
            "namespace": meta.get("namespace") or "",
            "name": meta.get("name") or "",
            "uid": meta.get("uid") or "",
            "resourceVersion": meta.get("resourceVersion") or "",
        }
        if not (involved["apiVersion"] and involved["kind"] and involved["name"]):
            raise ValueError("an Event needs an object with apiVersion, kind and metadata.name")
        broadcaster = self._broadcaster
        broadcaster.submit(
            _Pending(
                self._component,
                self._controller,
                self._reconcile_id,
                self._request,
                ObjectRef.of(obj),
                {field: value for field, value in involved.items() if value},
                event_type,
                reason,
                message,
                broadcaster.clock.wall(),
            )
        )


def _timestamp(seconds: float) -> str:
    return rfc3339(datetime.datetime.fromtimestamp(seconds, datetime.UTC))
