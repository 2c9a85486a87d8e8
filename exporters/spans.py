"""OpenTelemetry spans made from records: the record sink, and replay of a journal.

Installed as ``ctrltrace.exporters.spans``.

Owns the translation of records into spans: one span per watch event, one per dispatch
(predicate verdict, mapping and enqueue outcome as attributes) whose parent is the event, one
per reconcile whose parent is the first dispatch that queued it and which links to every
other dispatch de-duplicated into it (the messaging convention for batches), a link
rather than a parent from a requeued reconcile to the one that asked for it (its requeue and
its writes are events on it), and a span for each informer, lease, controller and manager
record and each Kubernetes Event, so that spans carry every record explain reads
(``ctrltrace.spanmodel`` says how, and ``ctrltrace.evidence.rebuild`` reads them back). Also
the log correlation (``trace_ids_for`` and a structlog processor) and ``replay`` of recorded
records.

Where spans go is the caller's choice, through public interfaces only: any tracer, or an SDK
tracer provider together with a span processor of the caller's or a queue of encoded spans
(``builders`` makes the spans each way).

It may not: be imported by the runtime core (the CLI attaches the sink only when tracing is
configured, so without it no span work is done at all); do I/O or block on the sink path;
raise into the recorder or a reconcile; or keep memory that grows with the number of records
(span contexts are remembered in bounded maps).

Spans get their times from the records, not from the clock, so a replayed journal gives the
same spans as the live run did. It is one module of some 500 lines because every record
handler reads and writes the sink's bounded maps of remembered span contexts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Generic, TypeVar

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
)
from opentelemetry.util.types import AttributeValue
from structlog.typing import EventDict, Processor, WrappedLogger

from ctrltrace.exporters.builders import (
    MAX_LINKS,
    UNSET,
    Attributes,
    EncodedSpans,
    Spanning,
    span_maker,
)
from ctrltrace.records import Record, Stage
from ctrltrace.spanmodel import (
    CAUSED_LINK,
    CONTROLLER,
    DISPATCH_LINK,
    EVENT_TYPE,
    K8S_NAMESPACE_NAME,
    LINK,
    MESSAGING_BATCH_MESSAGE_COUNT,
    OUTCOME,
    REASON,
    RECONCILE_ID,
    REQUEST,
    REQUEUE,
    REQUEUE_ATTEMPT,
    REQUEUE_DELAY,
    REQUEUE_EVENT,
    REQUEUE_LINK,
    START_REASON,
    UNFINISHED,
    WRITE_EVENT,
    WRITE_LINK,
    WRITE_VERB,
    put_attrs,
    put_fields,
    put_object,
    span_name,
)
from ctrltrace.vocabulary import (
    ENQUEUED,
    LEASE_ERRORS,
    RECONCILE_FAILED,
    REQUEUED,
    WATCH_FAILURES,
    Attr,
)

__all__ = ["SpanSink", "replay", "trace_ids_processor"]

# A remembered context outlives at least half this many newer ones: over a second of queue
# wait at the highest rate tracing sustains (two per event), far longer at ordinary rates.
# One is about 300 bytes, so a full map is about 20 MB.
_CAPACITY = 65_536

_DISPATCH_LINK: Mapping[str, AttributeValue] = {LINK: DISPATCH_LINK}
_REQUEUE_LINK: Mapping[str, AttributeValue] = {LINK: REQUEUE_LINK}
_WRITE_LINK: Mapping[str, AttributeValue] = {LINK: WRITE_LINK}
_CAUSED_LINK: Mapping[str, AttributeValue] = {LINK: CAUSED_LINK}

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
    """Span names, "<stage> <controller, kind or outcome>" (``span_name``), each made once."""

    def __init__(self, stage: Stage) -> None:
        super().__init__()
        self._stage = stage

    def __missing__(self, what: str) -> str:
        name = self[what] = span_name(self._stage, what)
        return name


class SpanSink:
    """A record sink that turns records into spans, with times and causes from the records.

    Attach it to a recorder only when tracing is configured. ``tracer`` is a tracer provider
    or a tracer, and spans are started through the OpenTelemetry API, unless ``tracer`` is an
    SDK ``TracerProvider`` and one of these is given: ``processor``, a span processor that
    gets each finished span (the caller's, registered on the provider or not), or ``queue``,
    which gets each span encoded as it ends (``build_tracing``'s export queue); the provider
    then only lends its ids, sampler and resource, and the sink builds the spans itself, at a
    fraction of the API's cost.

    At most ``capacity`` span contexts are remembered per map (events, dispatches and writes
    in one; requeues in another, as a requeue may wait much longer), and as many reconciles
    may be open at once; past that the oldest are forgotten, and a reconcile whose cause was
    forgotten gets no parent or link.

    Call it from one thread (the recorder's); ``trace_ids_for`` may be called from any.
    """

    def __init__(
        self,
        tracer: trace.TracerProvider | trace.Tracer,
        *,
        capacity: int = _CAPACITY,
        processor: SpanProcessor | None = None,
        queue: EncodedSpans | None = None,
    ):
        self._spans = span_maker(tracer, processor, queue)
        self.capacity = capacity
        self._contexts: _Generations[int, SpanContext] = _Generations(capacity)
        self._requeues: _Generations[int, SpanContext] = _Generations(capacity)
        self._open: dict[str, Spanning] = {}  # reconcile id -> its span, from start to end
        # A reconcile that ended with a requeue: its span stays open for the REQUEUE record,
        # which the controller emits right after, in the same call.
        self._settling: tuple[Spanning, str, int] | None = None
        self._event_names = _Names(Stage.EVENT)
        self._dispatch_names = _Names(Stage.DISPATCH)
        self._reconcile_names = _Names(Stage.RECONCILE)
        self._lease_names = _Names(Stage.LEASE)
        self._watch_names = _Names(Stage.WATCH)
        self._other_names = {
            stage: _Names(stage) for stage in (Stage.CONTROLLER, Stage.MANAGER, Stage.KUBE_EVENT)
        }
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
            Stage.CONTROLLER: self._on_other,
            Stage.MANAGER: self._on_other,
            Stage.KUBE_EVENT: self._on_other,
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
        attributes: Attributes = {EVENT_TYPE: record.outcome}
        put_object(ref, attributes)
        put_attrs(Stage.EVENT, record.attrs, attributes)
        links: Sequence[Link] = ()
        if record.cause_ids:  # the controller's own write coming back
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
        # Its object is its event's (the parent): a reader takes it from there.
        event = self._contexts.get(record.cause_ids[0]) if record.cause_ids else None
        outcome = record.outcome
        attributes = self._fields(record)
        ref = record.object
        if ref is not None and ref.namespace:
            attributes[K8S_NAMESPACE_NAME] = ref.namespace
        # Producer when it put a request in the queue, as a messaging "send"; else internal.
        enqueued = outcome in ENQUEUED
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
                if asked is not None and len(links) < MAX_LINKS:
                    links.append(Link(asked, _REQUEUE_LINK))
            elif parent is None:
                parent = dispatch
            elif len(links) < MAX_LINKS:
                links.append(Link(dispatch, _DISPATCH_LINK))
        attributes: Attributes = {
            CONTROLLER: record.controller,
            REQUEST: record.request,
            RECONCILE_ID: record.reconcile_id,
        }
        namespace, slash, _ = record.request.partition("/")
        if slash:
            attributes[K8S_NAMESPACE_NAME] = namespace
        put_attrs(Stage.RECONCILE_START, record.attrs, attributes)
        if record.reason:
            attributes[START_REASON] = record.reason
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
        if record.reason:
            attributes[REASON] = record.reason
        put_attrs(Stage.RECONCILE, record.attrs, attributes)
        if outcome in RECONCILE_FAILED:
            span.set_status(Status(StatusCode.ERROR, record.reason))
        span.set_attributes(attributes)
        end = _ns(record.time)
        if outcome in REQUEUED:
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
            if (delay := attrs.get(Attr.DELAY_S)) is not None:
                attributes[REQUEUE_DELAY] = delay
            if (attempt := attrs.get(Attr.ATTEMPT)) is not None:
                attributes[REQUEUE_ATTEMPT] = attempt
            span.set_attributes(attributes)
            # The record itself, for readers: an event, as its attrs would clash with the end's.
            requeued: Attributes = {OUTCOME: record.outcome, REASON: record.reason}
            put_attrs(Stage.REQUEUE, attrs, requeued)
            span.add_event(REQUEUE_EVENT, requeued, _ns(record.time))
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
            put_object(ref, attributes)
        put_fields(
            controller="",
            request=record.request,
            reconcile_id="",
            reason=record.reason,
            into=attributes,
        )
        put_attrs(Stage.WRITE, record.attrs, attributes)
        span.add_event(WRITE_EVENT, attributes, _ns(record.time))
        context = span.get_span_context()
        self._contexts.put(record.id, context)  # for the watch event this write will cause
        event_id = record.attrs.get(Attr.EVENT_ID)
        if event_id is not None:  # that event came back before the write's answer
            event = self._contexts.get(int(event_id))
            if event is not None:
                span.add_link(event, _CAUSED_LINK)

    def _on_lease(self, record: Record) -> None:
        attributes = self._fields(record)
        namespace, slash, _ = str(record.attrs.get(Attr.LEASE, "")).partition("/")
        if slash:
            attributes[K8S_NAMESPACE_NAME] = namespace
        self._point(
            self._lease_names[record.outcome],
            None,
            SpanKind.INTERNAL,
            attributes,
            record.time,
            error=record.reason if record.outcome in LEASE_ERRORS else None,
        )

    def _on_watch(self, record: Record) -> None:
        outcome = record.outcome
        self._point(
            self._watch_names[str(record.attrs.get(Attr.KIND, ""))],
            None,
            SpanKind.INTERNAL,
            self._fields(record),
            record.time,
            error=record.reason if outcome in WATCH_FAILURES else None,
        )

    def _on_other(self, record: Record) -> None:
        """Controller and manager lifecycle, Kubernetes Events: one span each, as recorded."""
        attributes = self._fields(record)
        if record.object is not None:
            put_object(record.object, attributes)
        self._point(
            self._other_names[record.stage][record.controller or record.outcome],
            None,
            SpanKind.INTERNAL,
            attributes,
            record.time,
        )

    @staticmethod
    def _fields(record: Record) -> Attributes:
        """A record's outcome, names, reason and attrs as a span's attributes."""
        attributes: Attributes = {OUTCOME: record.outcome}
        put_fields(
            controller=record.controller,
            request=record.request,
            reconcile_id=record.reconcile_id,
            reason=record.reason,
            into=attributes,
        )
        put_attrs(record.stage, record.attrs, attributes)
        return attributes

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
        status = UNSET if error is None else Status(StatusCode.ERROR, error)
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
        span.set_attribute(OUTCOME, UNFINISHED)
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
    processor: SpanProcessor | None = None,
    flush_every: int = 4_096,
) -> None:
    """Turn recorded records (a journal's, in time order) into spans through a SpanSink.

    Record ids are unique only within one run of a process, and a journal may hold several
    runs. A run starts with the id counter at 1, so when an id falls below half the one before
    it (time order keeps a run's ids increasing, give or take a few), a new sink takes over and
    no cause is looked up across runs. Spans still open at the end close at the last record.

    ``processor`` is passed on to each ``SpanSink``. Replaying outruns any exporter, so the
    processor, or else an SDK provider, is flushed every ``flush_every`` records (0: never):
    the replay waits for the collector instead of overflowing the batch queue. About three
    spans come from four records, so the default suits queues from 3,072.
    """
    flush: Callable[[], object] | None = None
    if flush_every > 0 and processor is not None:
        flush = processor.force_flush
    elif flush_every > 0 and isinstance(tracer_provider, TracerProvider):
        flush = tracer_provider.force_flush
    sink = SpanSink(tracer_provider, processor=processor)
    previous: Record | None = None
    for count, record in enumerate(records, 1):
        if previous is not None and record.id < previous.id // 2:
            sink.close(previous.time)
            sink = SpanSink(tracer_provider, processor=processor)
        sink(record)
        previous = record
        if flush is not None and count % flush_every == 0:
            flush()
    if previous is not None:
        sink.close(previous.time)
    if flush is not None:
        flush()
