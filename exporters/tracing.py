"""OpenTelemetry spans made from records, and the SDK pipeline that exports them.

Installed as ``ctrltrace.exporters.tracing``.

Owns the translation of records into spans (design §4): one span per watch event, one per
dispatch (predicate verdict, mapping and enqueue outcome as attributes) whose parent is the
event, one per reconcile whose parent is the first dispatch that queued it and which links to
every other dispatch de-duplicated into it (the messaging convention for batches), a link
rather than a parent from a requeued reconcile to the one that asked for it, and spans for
lease transitions and watch failures. Given an SDK tracer provider, the sink builds the
finished spans itself and hands them to the provider's processors, which costs a fraction of
the SDK's ``start_span``; given any other tracer it starts them through the API. Also the log
correlation (``trace_ids_for`` and a
structlog processor), the SDK set-up from ``--otlp-endpoint`` or the standard ``OTEL_*``
variables with a batch processor whose losses are counted (OTLP/HTTP requests are encoded by
``otlp_proto``), and ``replay`` of recorded records.

It may not: be imported by the runtime core (the CLI attaches the sink only when tracing is
configured, so without it no span work is done at all); do I/O or block on the sink path (the
SDK's batch thread exports); raise into the recorder or a reconcile when the collector is slow,
away or failing (every loss is counted instead); or keep memory that grows with the number of
records (span contexts are remembered in bounded maps).

Spans get their times from the records, not from the clock, so a replayed journal gives the
same spans as the live run did.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, DEFAULT_ON, Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.util.types import AttributeValue
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from structlog.typing import EventDict, Processor, WrappedLogger

from ctrltrace._version import __version__
from ctrltrace.exporters.otlp_proto import encode_request, encode_span, encode_spans
from ctrltrace.records import ObjectRef, Record, Stage

__all__ = [
    "BatchSettings",
    "DropCounter",
    "SpanSink",
    "TracingConfigError",
    "build_tracing",
    "configure_tracing",
    "replay",
    "trace_ids_processor",
]

# -- attribute names -------------------------------------------------------------------------
# Semantic-convention names where OpenTelemetry defines one, ``ctrltrace.*`` for the rest.
K8S_NAMESPACE_NAME = "k8s.namespace.name"
ERROR_TYPE = "error.type"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
MESSAGING_BATCH_MESSAGE_COUNT = "messaging.batch.message_count"
OBJECT_API_VERSION = "ctrltrace.object.api_version"
OBJECT_KIND = "ctrltrace.object.kind"
OBJECT_NAME = "ctrltrace.object.name"
OBJECT_UID = "ctrltrace.object.uid"
RESOURCE_VERSION = "ctrltrace.resource_version"
GENERATION = "ctrltrace.generation"
EVENT_TYPE = "ctrltrace.event.type"  # ADDED / MODIFIED / DELETED, as the watch said
EVENT_WRITER = "ctrltrace.event.writer"  # the field manager that wrote this version
EVENT_SELF_CAUSED = "ctrltrace.event.self_caused"
CONTROLLER = "ctrltrace.controller"
REQUEST = "ctrltrace.request"
RECONCILE_ID = "ctrltrace.reconcile_id"
OUTCOME = "ctrltrace.outcome"
REASON = "ctrltrace.reason"
PREDICATE = "ctrltrace.predicate"
HANDLER = "ctrltrace.handler"
DISPATCH_EVENT_TYPE = "ctrltrace.dispatch.event_type"  # create / update / delete / generic
QUEUE_WAIT = "ctrltrace.queue.wait_s"
RETRIES = "ctrltrace.retries"
REQUEUE = "ctrltrace.requeue"  # rate_limited / after
REQUEUE_DELAY = "ctrltrace.requeue.delay_s"
REQUEUE_ATTEMPT = "ctrltrace.requeue.attempt"
WRITE_VERB = "ctrltrace.write.verb"
LEASE = "ctrltrace.lease"
LEASE_IDENTITY = "ctrltrace.lease.identity"
LEASE_HOLDER = "ctrltrace.lease.holder"
WATCH_RESOURCE = "ctrltrace.watch.resource"
LINK = "ctrltrace.link"  # on links: dispatch / requeue / write / caused_event

# The semantic conventions name a few built-in kinds' objects (k8s.pod.name, k8s.pod.uid, ...):
# kind -> (API group, name attribute, uid attribute or "" where the conventions define none).
_SEMCONV_KINDS: dict[str, tuple[str, str, str]] = {
    "Pod": ("", "k8s.pod.name", "k8s.pod.uid"),
    "Node": ("", "k8s.node.name", "k8s.node.uid"),
    "Namespace": ("", "k8s.namespace.name", ""),
    "Service": ("", "k8s.service.name", "k8s.service.uid"),
    "ReplicationController": (
        "",
        "k8s.replicationcontroller.name",
        "k8s.replicationcontroller.uid",
    ),
    "ResourceQuota": ("", "k8s.resourcequota.name", "k8s.resourcequota.uid"),
    "PersistentVolume": ("", "k8s.persistentvolume.name", "k8s.persistentvolume.uid"),
    "PersistentVolumeClaim": (
        "",
        "k8s.persistentvolumeclaim.name",
        "k8s.persistentvolumeclaim.uid",
    ),
    "Deployment": ("apps", "k8s.deployment.name", "k8s.deployment.uid"),
    "ReplicaSet": ("apps", "k8s.replicaset.name", "k8s.replicaset.uid"),
    "StatefulSet": ("apps", "k8s.statefulset.name", "k8s.statefulset.uid"),
    "DaemonSet": ("apps", "k8s.daemonset.name", "k8s.daemonset.uid"),
    "Job": ("batch", "k8s.job.name", "k8s.job.uid"),
    "CronJob": ("batch", "k8s.cronjob.name", "k8s.cronjob.uid"),
    "HorizontalPodAutoscaler": ("autoscaling", "k8s.hpa.name", "k8s.hpa.uid"),
    "StorageClass": ("storage.k8s.io", "k8s.storageclass.name", ""),
}

# Dispatch outcomes that put the request in the queue: only these can cause a reconcile.
_ENQUEUED = frozenset({"queued", "deduplicated", "requeued_after_processing"})
# Reconcile outcomes the controller follows with a REQUEUE record.
_REQUEUED = frozenset({"error", "requeue", "requeue_after"})
_FAILED = frozenset({"error", "terminal_error"})
# Watch records worth a span: the failures, and the 410 that makes the informer list again.
_WATCH_SPANS = frozenset({"forbidden", "kind_not_found", "error", "disconnected", "gone"})
_LEASE_ERRORS = frozenset({"lost", "error"})

# The SDK keeps 128 links per span by default; making more only to have them dropped is waste.
_MAX_LINKS = 128
# A remembered context outlives at least half this many newer ones: over a second of queue
# wait at the highest rate tracing sustains (two per event), far longer at ordinary rates.
# One is about 300 bytes, so a full map is about 20 MB.
_CAPACITY = 65_536

_SCOPE = InstrumentationScope("ctrltrace", __version__)
# The SDK's default limit of events per span; links are capped at _MAX_LINKS likewise.
_MAX_EVENTS = 128
_UNSET = Status(StatusCode.UNSET)
_NONE_DROPPED = (0, 0, 0)  # dropped attributes, events and links: the sink counts none
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)

# An empty context: a span started in it is a root whatever span is current in the caller.
_ROOT = Context()
_DISPATCH_LINK: Mapping[str, AttributeValue] = {LINK: "dispatch"}
_REQUEUE_LINK: Mapping[str, AttributeValue] = {LINK: "requeue"}
_WRITE_LINK: Mapping[str, AttributeValue] = {LINK: "write"}
_CAUSED_LINK: Mapping[str, AttributeValue] = {LINK: "caused_event"}

Attributes = dict[str, AttributeValue]
K = TypeVar("K")
V = TypeVar("V")


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


class _Generations(Generic[K, V]):
    """A map that forgets its oldest half when full: O(1) per operation, at most ``capacity``.

    Two plain dicts, not an OrderedDict: evicting one entry per insert costs more than the
    insert, while dropping a whole generation at once costs nothing per entry.
    """

    __slots__ = ("_half", "_old", "_young")

    def __init__(self, capacity: int) -> None:
        self._half = max(1, capacity // 2)
        self._young: dict[K, V] = {}
        self._old: dict[K, V] = {}

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def put(self, key: K, value: V) -> None:
        young = self._young
        young[key] = value
        if len(young) >= self._half:
            self._old = young
            self._young = {}

    def get(self, key: K) -> V | None:
        found = self._young.get(key)
        return found if found is not None else self._old.get(key)


class _Names(dict[str, str]):
    """Span names, "<stage> <controller or kind>", each made once."""

    def __init__(self, stage: str) -> None:
        super().__init__()
        self._stage = stage

    def __missing__(self, what: str) -> str:
        name = self[what] = f"{self._stage} {what}"
        return name


def _object_attributes(ref: ObjectRef) -> Attributes:
    attributes: Attributes = {
        OBJECT_API_VERSION: ref.api_version,
        OBJECT_KIND: ref.kind,
        OBJECT_NAME: ref.name,
    }
    if ref.namespace:
        attributes[K8S_NAMESPACE_NAME] = ref.namespace
    if ref.uid:
        attributes[OBJECT_UID] = ref.uid
    if ref.resource_version:
        attributes[RESOURCE_VERSION] = ref.resource_version
    if ref.generation:
        attributes[GENERATION] = ref.generation
    semconv = _SEMCONV_KINDS.get(ref.kind)
    # The group decides: a custom resource may well be called "Deployment" too.
    if semconv is not None and ref.api_version.rpartition("/")[0] == semconv[0]:
        _, name_key, uid_key = semconv
        attributes[name_key] = ref.name
        if uid_key and ref.uid:
            attributes[uid_key] = ref.uid
    return attributes


def _parented(parent: SpanContext | None) -> Context:
    return _ROOT if parent is None else trace.set_span_in_context(NonRecordingSpan(parent), _ROOT)


class _Spanning(Protocol):
    """What the sink does with a span between its start and its end: a subset of ``Span``."""

    def get_span_context(self) -> SpanContext: ...

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None: ...

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def set_status(self, status: Status) -> None: ...

    def add_event(
        self, name: str, attributes: Mapping[str, AttributeValue], timestamp: int
    ) -> None: ...

    def add_link(self, context: SpanContext, attributes: Mapping[str, AttributeValue]) -> None: ...

    def end(self, end_time: int | None = None) -> None: ...


class _ThroughApi:
    """Spans started through the OpenTelemetry API: for any tracer, SDK or not."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start(
        self,
        name: str,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        *,
        links: Sequence[Link],
        start: int,
    ) -> _Spanning:
        return self._tracer.start_span(name, _parented(parent), kind, attributes, links, start)

    def point(
        self,
        name: str,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        *,
        links: Sequence[Link],
        at: int,
        status: Status,
    ) -> SpanContext:
        """A span that starts and ends at ``at``; its context."""
        span = self.start(name, parent, kind, attributes, links=links, start=at)
        if status is not _UNSET:
            span.set_status(status)
        span.end(at)
        return span.get_span_context()


class _Built:
    """A span the sink builds itself, handed to the provider's processors when it ends."""

    __slots__ = (
        "_to",
        "attributes",
        "context",
        "end_time",
        "events",
        "kind",
        "links",
        "name",
        "parent",
        "start",
        "status",
    )

    def __init__(
        self,
        to: _Direct,
        name: str,
        context: SpanContext,
        *,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        links: Sequence[Link],
        start: int,
    ) -> None:
        self._to = to
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.attributes = attributes
        self.links = list(links)
        self.events: list[Event] = []
        self.start = start
        self.end_time = 0  # set when it ends
        self.status = _UNSET

    def get_span_context(self) -> SpanContext:
        return self.context

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        self.attributes.update(attributes)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.attributes[key] = value

    def set_status(self, status: Status) -> None:
        self.status = status

    def add_event(
        self, name: str, attributes: Mapping[str, AttributeValue], timestamp: int
    ) -> None:
        if len(self.events) < _MAX_EVENTS:
            self.events.append(Event(name, attributes, timestamp))

    def add_link(self, context: SpanContext, attributes: Mapping[str, AttributeValue]) -> None:
        if len(self.links) < _MAX_LINKS:
            self.links.append(Link(context, attributes))

    def end(self, end_time: int | None = None) -> None:
        self._to.finish(self, time.time_ns() if end_time is None else end_time)


class _Direct:
    """Spans for an SDK tracer provider, built without the SDK's span machinery.

    The SDK's ``start_span`` runs the sampler, copies attributes into a bounded, locked
    mapping and takes a lock per change; that measured more than all the rest of the sink.
    Here ids come from the provider's id generator, the provider's sampler decides for each
    trace's root (children follow their parent, as the default parent-based sampler does),
    and each ended span goes to the provider's span processors as a ``ReadableSpan`` with the
    provider's resource. Processors' ``on_start`` is not called.
    """

    def __init__(self, provider: TracerProvider) -> None:
        self._ids = provider.id_generator
        self._sampler = provider.sampler
        self._always = self._sampler is DEFAULT_ON or self._sampler is ALWAYS_ON
        self._resource = provider.resource
        self._scope = _SCOPE
        # The SDK offers no public way to hand a finished span to a provider's processors.
        self._processor: SpanProcessor = provider._active_span_processor

    def _context(
        self,
        name: str,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        links: Sequence[Link],
    ) -> SpanContext:
        if parent is not None:
            trace_id, flags = parent.trace_id, parent.trace_flags
        else:
            trace_id = self._ids.generate_trace_id()
            sampled = (
                self._always
                or self._sampler.should_sample(
                    None, trace_id, name, kind, attributes, links
                ).decision
                is Decision.RECORD_AND_SAMPLE
            )
            flags = _SAMPLED if sampled else _NOT_SAMPLED
        return SpanContext(trace_id, self._ids.generate_span_id(), False, flags)

    def start(
        self,
        name: str,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        *,
        links: Sequence[Link],
        start: int,
    ) -> _Spanning:
        context = self._context(name, parent, kind, attributes, links)
        return _Built(
            self,
            name,
            context,
            parent=parent,
            kind=kind,
            attributes=attributes,
            links=links,
            start=start,
        )

    def point(
        self,
        name: str,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        *,
        links: Sequence[Link],
        at: int,
        status: Status,
    ) -> SpanContext:
        """A span that starts and ends at ``at``; its context. No ``_Built`` in between."""
        context = self._context(name, parent, kind, attributes, links)
        if context.trace_flags.sampled:
            self._deliver(context, name, kind, parent, at, at, attributes, (), links, status)
        return context

    def finish(self, span: _Built, end: int) -> None:
        context = span.context
        if context.trace_flags.sampled:
            span.end_time = end
            self._deliver(
                context,
                span.name,
                span.kind,
                span.parent,
                span.start,
                end,
                span.attributes,
                span.events,
                span.links,
                span.status,
            )

    def _deliver(  # noqa: PLR0917 - positional: called for every span, as encode_span is
        self,
        context: SpanContext,
        name: str,
        kind: SpanKind,
        parent: SpanContext | None,
        start: int,
        end: int,
        attributes: Attributes,
        events: Sequence[Event],
        links: Sequence[Link],
        status: Status,
    ) -> None:
        """Hand an ended span on: to the provider's processors, as a ``ReadableSpan``."""
        self._processor.on_end(
            ReadableSpan(
                name=name,
                context=context,
                parent=parent,
                resource=self._resource,
                attributes=attributes,
                events=events,
                links=links,
                kind=kind,
                status=status,
                start_time=start,
                end_time=end,
                instrumentation_scope=self._scope,
            )
        )


class _Encoded(_Direct):
    """Spans for the pipeline ``build_tracing`` makes: encoded as they end, queued as bytes.

    No ``ReadableSpan``, no processor chain, and nothing for the garbage collector to trace
    while spans wait (bytes hold no references): together that was most of what a span cost.
    Ids and sampling as ``_Direct``; the provider's processors never see these spans.
    """

    def __init__(self, provider: TracerProvider, queue: _SpanQueue) -> None:
        super().__init__(provider)
        self._queue = queue

    def _deliver(  # noqa: PLR0917 - positional: called for every span, as encode_span is
        self,
        context: SpanContext,
        name: str,
        kind: SpanKind,
        parent: SpanContext | None,
        start: int,
        end: int,
        attributes: Attributes,
        events: Sequence[Event],
        links: Sequence[Link],
        status: Status,
    ) -> None:
        self._queue.offer(
            encode_span(
                context,
                name,
                kind,
                parent,
                start,
                end,
                attributes,
                events,
                links,
                status,
                _NONE_DROPPED,
            )
        )


class SpanSink:
    """A record sink that turns records into spans, with times and causes from the records.

    Attach it to a recorder only when tracing is configured. ``tracer`` is a tracer provider
    or a tracer: an SDK provider gets finished spans through its processors, anything else
    through the API; with ``queue`` (``build_tracing``'s own) spans go straight into that
    export queue, encoded, and the provider only lends its ids, sampler and resource. At most
    ``capacity`` span contexts
    are remembered per map (events, dispatches and writes in one; requeues in another, as a
    requeue may wait much longer), and as many reconciles may be open at once; past that the
    oldest are forgotten, and a reconcile whose cause was forgotten gets no parent or link.

    Call it from one thread (the recorder's); ``trace_ids_for`` may be called from any.
    """

    def __init__(
        self,
        tracer: trace.TracerProvider | trace.Tracer,
        *,
        capacity: int = _CAPACITY,
        queue: _SpanQueue | None = None,
    ):
        spans: _Direct | _ThroughApi
        if isinstance(tracer, TracerProvider):
            spans = _Direct(tracer) if queue is None else _Encoded(tracer, queue)
        elif isinstance(tracer, trace.TracerProvider):
            spans = _ThroughApi(tracer.get_tracer("ctrltrace", __version__))
        else:
            spans = _ThroughApi(tracer)
        self._spans = spans
        self.capacity = capacity
        self._contexts: _Generations[int, SpanContext] = _Generations(capacity)
        self._requeues: _Generations[int, SpanContext] = _Generations(capacity)
        self._open: dict[str, _Spanning] = {}  # reconcile id -> its span, from start to end
        # A reconcile that ended with a requeue: its span stays open for the REQUEUE record,
        # which the controller emits right after, in the same call.
        self._settling: tuple[_Spanning, str, int] | None = None
        self._event_names = _Names("event")
        self._dispatch_names = _Names("dispatch")
        self._reconcile_names = _Names("reconcile")
        self._lease_names = _Names("lease")
        self._watch_names = _Names("watch")
        # One dict lookup per record: stages with no span cost nothing more.
        self._handlers: dict[Stage, Callable[[Record], None]] = {
            Stage.EVENT: self._on_event,
            Stage.DISPATCH: self._on_dispatch,
            Stage.RECONCILE_START: self._on_reconcile_start,
            Stage.RECONCILE: self._on_reconcile,
            Stage.REQUEUE: self._on_requeue,
            Stage.WRITE: self._on_write,
            Stage.LEASE: self._on_lease,
            Stage.WATCH: self._on_watch,
        }

    # -- the sink: on the hot path ------------------------------------------------------------

    def __call__(self, record: Record, /) -> None:
        if self._settling is not None and record.stage is not Stage.REQUEUE:
            self._end_settling()
        handler = self._handlers.get(record.stage)
        if handler is not None:
            handler(record)

    def _on_event(self, record: Record) -> None:
        ref = record.object
        if ref is None:
            return
        attributes = _object_attributes(ref)
        attributes[EVENT_TYPE] = record.outcome
        writer = record.attrs.get("writer")
        if writer:
            attributes[EVENT_WRITER] = writer
        links: Sequence[Link] = ()
        if record.cause_ids:  # the controller's own write coming back
            attributes[EVENT_SELF_CAUSED] = True
            # A link, not a parent: a write-event-reconcile loop must not nest forever.
            writer_context = self._contexts.get(record.cause_ids[0])
            if writer_context is not None:
                links = (Link(writer_context, _WRITE_LINK),)
        if record.reason:
            attributes[REASON] = record.reason
        context = self._point(
            self._event_names[ref.kind],
            None,
            SpanKind.CONSUMER,
            attributes,
            record.time,
            links=links,
        )
        self._contexts.put(record.id, context)

    def _on_dispatch(self, record: Record) -> None:
        event = self._contexts.get(record.cause_ids[0]) if record.cause_ids else None
        outcome = record.outcome
        attributes: Attributes = {
            CONTROLLER: record.controller,
            OUTCOME: outcome,
            REQUEST: record.request,
        }
        if record.reason:
            attributes[REASON] = record.reason
        ref = record.object
        if ref is not None and ref.namespace:
            attributes[K8S_NAMESPACE_NAME] = ref.namespace
        attrs = record.attrs
        if (predicate := attrs.get("predicate")) is not None:
            attributes[PREDICATE] = predicate
        if (handler := attrs.get("handler")) is not None:
            attributes[HANDLER] = handler
        if (event_type := attrs.get("event_type")) is not None:
            attributes[DISPATCH_EVENT_TYPE] = event_type
        # Producer when it put a request in the queue, as a messaging "send"; else internal.
        enqueued = outcome in _ENQUEUED
        context = self._point(
            self._dispatch_names[record.controller],
            event,
            SpanKind.PRODUCER if enqueued else SpanKind.INTERNAL,
            attributes,
            record.time,
        )
        if enqueued:  # only these can be a reconcile's cause: remember no others
            self._contexts.put(record.id, context)

    def _on_reconcile_start(self, record: Record) -> None:
        parent: SpanContext | None = None
        links: list[Link] = []
        for cause in record.cause_ids:
            dispatch = self._contexts.get(cause)
            if dispatch is None:
                asked = self._requeues.get(cause)
                if asked is not None and len(links) < _MAX_LINKS:
                    links.append(Link(asked, _REQUEUE_LINK))
            elif parent is None:
                parent = dispatch
            elif len(links) < _MAX_LINKS:
                links.append(Link(dispatch, _DISPATCH_LINK))
        attributes: Attributes = {
            CONTROLLER: record.controller,
            REQUEST: record.request,
            RECONCILE_ID: record.reconcile_id,
        }
        namespace, slash, _ = record.request.partition("/")
        if slash:
            attributes[K8S_NAMESPACE_NAME] = namespace
        attrs = record.attrs
        if (wait := attrs.get("queue_wait_s")) is not None:
            attributes[QUEUE_WAIT] = wait
        if retries := attrs.get("retries"):
            attributes[RETRIES] = retries
        if len(record.cause_ids) > 1:  # the convention leaves it off single-message spans
            attributes[MESSAGING_BATCH_MESSAGE_COUNT] = len(record.cause_ids)
        span = self._spans.start(
            self._reconcile_names[record.controller],
            parent,
            SpanKind.CONSUMER,
            attributes,
            links=links,
            start=_ns(record.time),
        )
        if len(self._open) >= self.capacity:  # starts without ends: a cancelled run, replayed
            self._end_unfinished(next(iter(self._open)), _ns(record.time))
        self._open[record.reconcile_id] = span

    def _on_reconcile(self, record: Record) -> None:
        span = self._open.pop(record.reconcile_id, None)
        if span is None:
            return
        outcome = record.outcome
        attributes: Attributes = {OUTCOME: outcome}
        if outcome in _FAILED:
            attributes[REASON] = record.reason
            attributes[ERROR_TYPE] = record.attrs.get("error_type") or outcome
            span.set_status(Status(StatusCode.ERROR, record.reason))
        span.set_attributes(attributes)
        end = _ns(record.time)
        if outcome in _REQUEUED:
            self._settling = (span, record.reconcile_id, end)
        else:
            span.end(end)

    def _on_requeue(self, record: Record) -> None:
        if self._settling is None:
            return
        span, reconcile_id, end = self._settling
        self._settling = None
        if record.reconcile_id == reconcile_id:
            attrs = record.attrs
            attributes: Attributes = {REQUEUE: record.outcome}
            if (delay := attrs.get("delay_s")) is not None:
                attributes[REQUEUE_DELAY] = delay
            if (attempt := attrs.get("attempt")) is not None:
                attributes[REQUEUE_ATTEMPT] = attempt
            span.set_attributes(attributes)
            self._requeues.put(record.id, span.get_span_context())
        span.end(end)

    def _end_settling(self) -> None:
        assert self._settling is not None
        span, _, end = self._settling
        self._settling = None
        span.end(end)

    def _on_write(self, record: Record) -> None:
        span = self._open.get(record.reconcile_id) if record.reconcile_id else None
        if span is None:
            return
        attributes: Attributes = {WRITE_VERB: record.outcome}
        ref = record.object
        if ref is not None:
            attributes[OBJECT_KIND] = ref.kind
            attributes[OBJECT_NAME] = ref.name
            if ref.namespace:
                attributes[K8S_NAMESPACE_NAME] = ref.namespace
            attributes[RESOURCE_VERSION] = ref.resource_version
        span.add_event("write", attributes, _ns(record.time))
        context = span.get_span_context()
        self._contexts.put(record.id, context)  # for the watch event this write will cause
        event_id = record.attrs.get("event_id")
        if event_id is not None:  # that event came back before the write's answer
            event = self._contexts.get(int(event_id))
            if event is not None:
                span.add_link(event, _CAUSED_LINK)

    def _on_lease(self, record: Record) -> None:
        attrs = record.attrs
        lease = str(attrs.get("lease", ""))
        attributes: Attributes = {
            OUTCOME: record.outcome,
            REASON: record.reason,
            LEASE: lease,
            LEASE_IDENTITY: attrs.get("identity", ""),
            LEASE_HOLDER: attrs.get("holder", ""),
        }
        namespace, slash, _ = lease.partition("/")
        if slash:
            attributes[K8S_NAMESPACE_NAME] = namespace
        self._point(
            self._lease_names[record.outcome],
            None,
            SpanKind.INTERNAL,
            attributes,
            record.time,
            error=record.reason if record.outcome in _LEASE_ERRORS else None,
        )

    def _on_watch(self, record: Record) -> None:
        outcome = record.outcome
        if outcome not in _WATCH_SPANS:  # listed and synced are health, not events
            return
        attrs = record.attrs
        kind = str(attrs.get("kind", ""))
        attributes: Attributes = {
            OUTCOME: outcome,
            REASON: record.reason,
            OBJECT_KIND: kind,
            OBJECT_API_VERSION: attrs.get("api_version", ""),
        }
        if namespace := attrs.get("namespace"):
            attributes[K8S_NAMESPACE_NAME] = namespace
        if status := attrs.get("status"):
            attributes[HTTP_RESPONSE_STATUS_CODE] = status
        if resource := attrs.get("resource"):
            attributes[WATCH_RESOURCE] = resource
        self._point(
            self._watch_names[kind],
            None,
            SpanKind.INTERNAL,
            attributes,
            record.time,
            error=None if outcome == "gone" else record.reason,
        )

    def _point(
        self,
        name: str,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        at: float,
        *,
        links: Sequence[Link] = (),
        error: str | None = None,
    ) -> SpanContext:
        """A span that starts and ends at one record's time; its context."""
        status = _UNSET if error is None else Status(StatusCode.ERROR, error)
        return self._spans.point(
            name, parent, kind, attributes, links=links, at=_ns(at), status=status
        )

    # -- reading and closing ------------------------------------------------------------------

    def trace_ids_for(self, reconcile_id: str) -> tuple[str, str] | None:
        """The running reconcile's trace id and span id in hex, as logs carry them."""
        span = self._open.get(reconcile_id)
        if span is None:
            return None
        context = span.get_span_context()
        return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)

    @property
    def remembered(self) -> int:
        """Span contexts kept for records still to come: at most ``3 * capacity``."""
        return len(self._contexts) + len(self._requeues) + len(self._open)

    def close(self, at: float | None = None) -> None:
        """End every span still open: reconciles with no end record get outcome "unfinished".

        ``at`` is when (seconds since the epoch, like record times); now when None.
        """
        if self._settling is not None:
            self._end_settling()
        end = None if at is None else _ns(at)
        for reconcile_id in list(self._open):
            self._end_unfinished(reconcile_id, end)

    def _end_unfinished(self, reconcile_id: str, end: int | None) -> None:
        span = self._open.pop(reconcile_id)
        span.set_attribute(OUTCOME, "unfinished")
        span.end(end)


def trace_ids_processor(sink: SpanSink) -> Processor:
    """A structlog processor adding ``trace_id`` and ``span_id`` to a reconcile's log events.

    It acts on events carrying a ``reconcile_id`` (``ctx.log`` is bound with one) while that
    reconcile runs, and leaves a ``trace_id`` that is already there alone.
    """

    def add_trace_ids(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        reconcile_id = event_dict.get("reconcile_id")
        if reconcile_id and "trace_id" not in event_dict:
            ids = sink.trace_ids_for(reconcile_id)
            if ids is not None:
                event_dict["trace_id"], event_dict["span_id"] = ids
        return event_dict

    return add_trace_ids


def replay(
    records: Iterable[Record],
    tracer_provider: trace.TracerProvider | trace.Tracer,
    *,
    flush_every: int = 4_096,
) -> None:
    """Turn recorded records (a journal's, in time order) into spans through a SpanSink.

    Record ids are unique only within one run of a process, and a journal may hold several
    runs. A run starts with the id counter at 1, so when an id falls below half the one before
    it (time order keeps a run's ids increasing, give or take a few), a new sink takes over and
    no cause is looked up across runs. Spans still open at the end close at the last record.

    Replaying outruns any exporter, so an SDK provider is flushed every ``flush_every``
    records (0: never): the replay waits for the collector instead of overflowing the batch
    queue. About three spans come from four records, so the default suits queues from 3,072.
    """
    flush = (
        tracer_provider.force_flush
        if flush_every > 0 and isinstance(tracer_provider, TracerProvider)
        else None
    )
    sink = SpanSink(tracer_provider)
    previous: Record | None = None
    for count, record in enumerate(records, 1):
        if previous is not None and record.id < previous.id // 2:
            sink.close(previous.time)
            sink = SpanSink(tracer_provider)
        sink(record)
        previous = record
        if flush is not None and count % flush_every == 0:
            flush()
    if previous is not None:
        sink.close(previous.time)
    if flush is not None:
        flush()


# -- the SDK pipeline ------------------------------------------------------------------------


class TracingConfigError(ValueError):
    """Tracing is asked for in a way that cannot work; the message says how to fix it."""


@dataclass(frozen=True)
class BatchSettings:
    """How spans wait for export and go out.

    Every event makes about three spans (event, dispatch, reconcile), and span work caps one
    core near 10,000 events a second, so 20,000 queued spans hold most of a second of the
    fastest burst and minutes of ordinary traffic (the SDK's default, 2,048, drops most of a
    burst), yet stay bounded when the collector is away: a finished span is about 3 KB, so
    about 60 MB at most. Batches of 2,048 take a burst out in few requests, well under the
    collectors' request limits; half a second keeps traces near live in Jaeger; and a
    five-second export timeout keeps a collector that does not answer from holding the export
    thread, or shutdown, for long.
    """

    max_queue_size: int = 20_000
    max_export_batch_size: int = 2_048
    schedule_delay_s: float = 0.5
    export_timeout_s: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> BatchSettings:
        """The defaults, overridden by ``OTEL_BSP_*`` where set (times in milliseconds)."""
        default = cls()

        def number(name: str, value: float) -> float:
            raw = environ.get(name, "").strip()
            try:
                return float(raw) if raw else value
            except ValueError as error:
                raise TracingConfigError(f"{name}={raw!r} is not a number") from error

        return cls(
            max_queue_size=int(number("OTEL_BSP_MAX_QUEUE_SIZE", default.max_queue_size)),
            max_export_batch_size=int(
                number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", default.max_export_batch_size)
            ),
            schedule_delay_s=number("OTEL_BSP_SCHEDULE_DELAY", default.schedule_delay_s * 1e3)
            / 1e3,
            export_timeout_s=number("OTEL_BSP_EXPORT_TIMEOUT", default.export_timeout_s * 1e3)
            / 1e3,
        )


class DropCounter:
    """What the span pipeline lost, for ``ctrltrace_spans_dropped_total`` and the TUI.

    ``dropped`` spans never reached the collector's door: the queue was full (the collector is
    slow or away) or the pipeline shut down before sending them. ``failed`` spans were in
    batches the exporter could not deliver. ``exported`` were delivered. It is also a
    prometheus_client collector: register it on a registry to expose the counts.
    """

    def __init__(self, provider: TracerProvider) -> None:
        self.queue_full = 0
        self.unsent = 0
        self.failed = 0
        self.exported = 0
        # Guards the counts: spans end on the recording thread, batches finish on the export
        # thread, and shutdown settles on the caller's.
        self.lock = threading.Lock()
        # Batches handed to the exporter after this (monotonic) time are not sent: it bounds
        # how long shutdown waits for a collector that does not answer.
        self.give_up_at = math.inf
        self.queue: _SpanQueue | None = None  # build_tracing's, when its sink encodes spans
        self._provider = provider

    @property
    def dropped(self) -> int:
        return self.queue_full + self.unsent

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Send what is queued, waiting about ``timeout_s`` (plus one export timeout) at most."""
        self.give_up_at = min(self.give_up_at, time.monotonic() + timeout_s)
        if self.queue is not None:
            self.queue.shutdown()
        self._provider.shutdown()

    def collect(self) -> Iterator[Metric]:
        dropped = CounterMetricFamily(
            "ctrltrace_spans_dropped",
            "Spans that were not exported: queue_full (the exporter fell behind), shutdown "
            "(still queued when the pipeline stopped) or export_failed (the collector refused "
            "or could not be reached).",
            labels=["reason"],
        )
        dropped.add_metric(["queue_full"], self.queue_full)
        dropped.add_metric(["shutdown"], self.unsent)
        dropped.add_metric(["export_failed"], self.failed)
        exported = CounterMetricFamily("ctrltrace_spans_exported", "Spans the collector accepted.")
        exported.add_metric([], self.exported)
        yield dropped
        yield exported


class _CountingExporter(SpanExporter):
    """Counts every span handed to the wrapped exporter and how its batch fared.

    Called by the batch processor, one batch at a time; it never raises.
    """

    def __init__(self, exporter: SpanExporter, counter: DropCounter) -> None:
        self._exporter = exporter
        self._counter = counter
        self.handed = 0  # spans taken from the queue, for the processor's gate

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        count = len(spans)
        counter = self._counter
        given_up = time.monotonic() >= counter.give_up_at
        with counter.lock:
            self.handed += count
            if given_up:
                counter.unsent += count
        if given_up:
            return SpanExportResult.FAILURE
        try:
            result = self._exporter.export(spans)
        except Exception:  # an exporter bug must cost its batch, not the export thread
            result = SpanExportResult.FAILURE
        with counter.lock:
            if result is SpanExportResult.SUCCESS:
                counter.exported += count
            else:
                counter.failed += count
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class _GatedBatchProcessor(SpanProcessor):
    """The SDK's BatchSpanProcessor behind a gate that counts what it would drop unseen.

    The batch processor drops spans when its queue is full and says so only in a log line. The
    gate knows how many spans it let in and the exporter wrapper how many were taken out, so
    it refuses (and counts) a span before the queue can overflow; the batch processor's own
    queue, of the same size, then never drops anything.
    """

    def __init__(self, exporter: _CountingExporter, counter: DropCounter, batch: BatchSettings):
        self._exporter = exporter
        self._counter = counter
        self._capacity = batch.max_queue_size
        self._accepted = 0
        self._closed = False
        # Typed as the interface: BatchSpanProcessor.shutdown carries no annotations.
        self._batch: SpanProcessor = BatchSpanProcessor(
            exporter,
            max_queue_size=batch.max_queue_size,
            schedule_delay_millis=batch.schedule_delay_s * 1e3,
            max_export_batch_size=min(batch.max_export_batch_size, batch.max_queue_size),
            export_timeout_millis=batch.export_timeout_s * 1e3,
        )

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        counter = self._counter
        with counter.lock:
            if self._closed:
                counter.unsent += 1
                return
            if self._accepted - self._exporter.handed >= self._capacity:
                counter.queue_full += 1
                return
            self._accepted += 1
        self._batch.on_end(span)

    def shutdown(self) -> None:
        counter = self._counter
        with counter.lock:
            if self._closed:
                return
            self._closed = True
        self._batch.shutdown()
        with counter.lock:
            # What the batch processor still held when it stopped exporting was never sent.
            counter.unsent += self._accepted - self._exporter.handed

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._batch.force_flush(timeout_millis)


class _SpanQueue:
    """Encoded spans waiting for export, and the thread that sends them in batches.

    The counterpart, for spans that are bytes, of the gated batch processor: ``offer`` never
    blocks and refuses (and counts) a span when ``max_queue_size`` wait; the thread sends up to
    ``max_export_batch_size`` per request every ``schedule_delay_s``, or as soon as a batch is
    full, and counts each request's spans as exported or failed. ``send`` delivers one
    serialised request and says whether the collector took it.
    """

    def __init__(
        self,
        send: Callable[[bytes], bool],
        frame: Callable[[Sequence[bytes]], bytes],
        counter: DropCounter,
        batch: BatchSettings,
    ) -> None:
        if (
            min(batch.max_queue_size, batch.max_export_batch_size) < 1
            or batch.schedule_delay_s <= 0
        ):
            raise TracingConfigError(
                "span batch settings: the queue and batch sizes and the delay must be positive"
            )
        self._send = send
        self._frame = frame
        self._counter = counter
        self._capacity = batch.max_queue_size
        self._batch_size = min(batch.max_export_batch_size, batch.max_queue_size)
        self._delay_s = batch.schedule_delay_s
        self._spans: deque[bytes] = deque()
        self._sending = 0  # spans taken for the request in flight
        self._wake = threading.Event()
        self._idle = threading.Condition(counter.lock)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ctrltrace spans", daemon=True)
        self._thread.start()

    def offer(self, span: bytes) -> None:
        spans = self._spans
        if self._closed or len(spans) >= self._capacity:
            with self._counter.lock:
                if self._closed:
                    self._counter.unsent += 1
                else:
                    self._counter.queue_full += 1
            return
        spans.append(span)  # deque appends and pops are atomic: no lock on the hot path
        if len(spans) == self._batch_size:
            self._wake.set()

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every span offered so far has been sent (or counted as lost)."""
        self._wake.set()
        with self._idle:
            return self._idle.wait_for(
                lambda: not (self._spans or self._sending) or not self._thread.is_alive(),
                timeout_s,
            )

    def shutdown(self) -> None:
        """Send what waits (until the counter's give-up time), then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join()
        with self._counter.lock:  # offered while the thread was finishing
            self._counter.unsent += len(self._spans)
            self._spans.clear()

    def _run(self) -> None:
        while True:
            closing = self._closed
            self._send_waiting()
            if closing:
                return
            self._wake.wait(self._delay_s)
            self._wake.clear()

    def _send_waiting(self) -> None:
        spans, counter = self._spans, self._counter
        while spans:
            batch = [spans.popleft() for _ in range(min(len(spans), self._batch_size))]
            with counter.lock:
                self._sending = len(batch)
            if time.monotonic() >= counter.give_up_at:
                sent: bool | None = None
            else:
                try:
                    sent = self._send(self._frame(batch))
                except Exception:  # a bug in sending must cost its batch, not the thread
                    sent = False
            with counter.lock:
                if sent is None:
                    counter.unsent += len(batch)
                elif sent:
                    counter.exported += len(batch)
                else:
                    counter.failed += len(batch)
                self._sending = 0
                self._idle.notify_all()


def build_tracing(
    exporter: SpanExporter,
    *,
    service_name: str | None = None,
    batch: BatchSettings | None = None,
) -> tuple[TracerProvider, SpanSink, DropCounter]:
    """An SDK tracer provider exporting through ``exporter`` in counted batches, and its sink.

    The service name is ``service_name``, else ``OTEL_SERVICE_NAME`` (or ``service.name`` in
    ``OTEL_RESOURCE_ATTRIBUTES``), else "ctrltrace". The sampler comes from
    ``OTEL_TRACES_SAMPLER`` (parent-based always-on by default). Call
    ``DropCounter.shutdown()`` when done: nothing registers it to run at exit.
    """
    resource = Resource.create({SERVICE_NAME: service_name} if service_name else {})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "ctrltrace"}))
    # Not at exit: a collector that is away would hold the exit for the SDK's 30 s.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    counter = DropCounter(provider)
    counting = _CountingExporter(exporter, counter)
    try:
        processor = _GatedBatchProcessor(counting, counter, batch or BatchSettings.from_env())
    except ValueError as error:  # the batch processor's own checks: sizes and delay positive
        raise TracingConfigError(f"span batch settings: {error}") from error
    provider.add_span_processor(processor)
    if isinstance(exporter, _HandEncodedExporter) and exporter.sends_encoded:
        # The sink's spans skip the processors: encoded as they end, sent from their own queue.
        frame = functools.partial(encode_request, resource, _SCOPE)
        queue = _SpanQueue(exporter.send_encoded, frame, counter, batch or BatchSettings.from_env())
        counter.queue = queue
        return provider, SpanSink(provider, queue=queue), counter
    return provider, SpanSink(provider), counter


def _flag(name: str) -> str:
    return os.environ.get(name, "").strip().lower()


def configure_tracing(
    endpoint: str | None,
    *,
    service_name: str | None = None,
    protocol: str | None = None,
    batch: BatchSettings | None = None,
) -> tuple[TracerProvider, SpanSink, DropCounter] | None:
    """Tracing from ``--otlp-endpoint``, or else the standard ``OTEL_*`` variables; None if off.

    ``endpoint`` is a base URL like ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` is added
    for HTTP unless present). With no endpoint, tracing is on when
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and
    ``OTEL_TRACES_EXPORTER`` is not "none". ``OTEL_SDK_DISABLED=true`` turns it off regardless.
    ``protocol`` is "http/protobuf" (the default) or "grpc" (needs
    opentelemetry-exporter-otlp-proto-grpc); when None, ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``
    or ``OTEL_EXPORTER_OTLP_PROTOCOL`` decides. Raises TracingConfigError for what cannot work.
    """
    if _flag("OTEL_SDK_DISABLED") == "true":
        return None
    if endpoint is None and (
        _flag("OTEL_TRACES_EXPORTER") == "none"
        or not (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        )
    ):
        return None
    protocol = (
        protocol
        or _flag("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or _flag("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    batch = batch or BatchSettings.from_env()
    exporter = _otlp_exporter(endpoint, protocol, batch.export_timeout_s)
    return build_tracing(exporter, service_name=service_name, batch=batch)


class _HandEncodedExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP exporter, sending the bytes ``otlp_proto`` writes.

    The SDK's client still sends them, so the endpoint, headers, compression, certificates and
    retries come from the same arguments and ``OTEL_*`` variables. Should a later SDK no longer
    have that client, the SDK's own encoding is used.
    """

    @property
    def sends_encoded(self) -> bool:
        return getattr(self, "_client", None) is not None

    def send_encoded(self, request: bytes) -> bool:
        """Send a serialised ``ExportTraceServiceRequest``; whether the collector took it."""
        if getattr(self, "_shutdown", True):
            return False
        return bool(self._client.export(request).success)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self.sends_encoded:
            return super().export(spans)
        try:
            request = encode_spans(spans)
        except Exception:  # a value the encoder refuses costs its batch, counted as failed
            return SpanExportResult.FAILURE
        sent = self.send_encoded(request)
        return SpanExportResult.SUCCESS if sent else SpanExportResult.FAILURE


def _otlp_exporter(endpoint: str | None, protocol: str, timeout_s: float) -> SpanExporter:
    # With endpoint None the exporters read OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT themselves.
    if protocol == "http/protobuf":
        url = endpoint
        if url is not None and not url.rstrip("/").endswith("/v1/traces"):
            url = f"{url.rstrip('/')}/v1/traces"
        return _HandEncodedExporter(endpoint=url, timeout=timeout_s)
    if protocol == "grpc":
        try:
            # Optional: imported by name so that neither mypy nor start-up needs it installed.
            grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        except ImportError as error:
            raise TracingConfigError(
                "OTLP over gRPC needs the opentelemetry-exporter-otlp-proto-grpc package "
                "(pip install opentelemetry-exporter-otlp-proto-grpc), or use http/protobuf"
            ) from error
        exporter: SpanExporter = grpc.OTLPSpanExporter(endpoint=endpoint, timeout=timeout_s)
        return exporter
    raise TracingConfigError(
        f"OTLP protocol {protocol!r} is not supported: use http/protobuf or grpc"
    )
