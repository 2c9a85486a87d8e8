"""How the span sink's spans are made, and where they go: public OpenTelemetry interfaces only.

Installed as ``ctrltrace.exporters.builders``.

Owns ``span_maker``, which picks one of three ways for ``SpanSink``: spans started through the
OpenTelemetry API of any tracer; or, for an SDK ``TracerProvider`` that lends its id
generator, sampler and resource, spans built here (``Spanning``) and, once ended, handed to a
span processor of the caller's as ``ReadableSpan``s or encoded (``otlpwire.encode_span``) into
a queue of bytes. The SDK has no public way to hand a finished span to a provider's own
processors, so a built span goes only where the caller says.

It may not decide which spans records make (``spans`` does) or do any I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
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

from ctrltrace._version import __version__
from ctrltrace.exporters.otlpwire import encode_span
from ctrltrace.spanmodel import SCOPE_NAME

__all__ = [
    "MAX_LINKS",
    "SCOPE",
    "UNSET",
    "Attributes",
    "EncodedSpans",
    "Spanning",
    "span_maker",
]

Attributes = dict[str, AttributeValue]

# The SDK keeps 128 links per span by default; making more only to have them dropped is waste.
MAX_LINKS = 128
SCOPE = InstrumentationScope(SCOPE_NAME, __version__)
"""The instrumentation scope of every span ctrltrace makes."""
# The SDK's default limit of events per span; links are capped at MAX_LINKS likewise.
_MAX_EVENTS = 128
UNSET = Status(StatusCode.UNSET)
_NONE_DROPPED = (0, 0, 0)  # dropped attributes, events and links: the sink counts none
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)

# An empty context: a span started in it is a root whatever span is current in the caller.
_ROOT = Context()


def _parented(parent: SpanContext | None) -> Context:
    return _ROOT if parent is None else trace.set_span_in_context(NonRecordingSpan(parent), _ROOT)


class Spanning(Protocol):
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
    ) -> Spanning:
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
        if status is not UNSET:
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
        self.status = UNSET

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
        if len(self.links) < MAX_LINKS:
            self.links.append(Link(context, attributes))

    def end(self, end_time: int | None = None) -> None:
        self._to.finish(self, time.time_ns() if end_time is None else end_time)


class EncodedSpans(Protocol):
    """Where encoded spans go: ``offer`` takes one serialised OTLP ``Span`` and never blocks."""

    def offer(self, span: bytes, /) -> None: ...


# What a built span is handed on as: positional, as encode_span takes it, for speed.
_Deliver = Callable[
    [
        SpanContext,
        str,
        SpanKind,
        SpanContext | None,
        int,
        int,
        Attributes,
        Sequence[Event],
        Sequence[Link],
        Status,
    ],
    None,
]


class _Direct:
    """Spans for an SDK tracer provider, built without the SDK's span machinery.

    The SDK's ``start_span`` runs the sampler, copies attributes into a bounded, locked
    mapping and takes a lock per change, which costs more than all the rest of the sink (see
    bench/README.md). Here ids come from the provider's id generator, the provider's sampler
    decides for each trace's root (children follow their parent, as the default parent-based
    sampler does), and each sampled span, once ended, is delivered by the subclass. The
    provider's own processors never see these spans: the SDK has no public way to hand them a
    finished span, so the caller names where they go.
    """

    _deliver: _Deliver  # each subclass's: hands an ended, sampled span on

    def __init__(self, provider: TracerProvider) -> None:
        self._ids = provider.id_generator
        self._sampler = provider.sampler
        self._always = self._sampler is DEFAULT_ON or self._sampler is ALWAYS_ON

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
    ) -> Spanning:
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


class _ToProcessor(_Direct):
    """Spans handed to a span processor of the caller's as ``ReadableSpan``s when they end.

    They carry the provider's resource; the processor's ``on_start`` is not called.
    """

    def __init__(self, provider: TracerProvider, processor: SpanProcessor) -> None:
        super().__init__(provider)
        self._resource = provider.resource
        self._processor = processor

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
        """Hand an ended span to the processor, as a ``ReadableSpan``."""
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
                instrumentation_scope=SCOPE,
            )
        )


class _Encoded(_Direct):
    """Spans encoded as they end (``otlpwire.encode_span``) and offered to a queue as bytes.

    No ``ReadableSpan``, no processor chain, and nothing for the garbage collector to trace
    while spans wait (bytes hold no references).
    """

    def __init__(self, provider: TracerProvider, queue: EncodedSpans) -> None:
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


def span_maker(
    tracer: trace.TracerProvider | trace.Tracer,
    processor: SpanProcessor | None,
    queue: EncodedSpans | None,
) -> _Direct | _ThroughApi:
    """Spans built here for a processor or a queue (an SDK provider's ids), else the API's."""
    if isinstance(tracer, TracerProvider) and queue is not None:
        return _Encoded(tracer, queue)
    if isinstance(tracer, TracerProvider) and processor is not None:
        return _ToProcessor(tracer, processor)
    if processor is not None or queue is not None:
        raise TypeError("a processor or queue needs the SDK's TracerProvider for its ids")
    if isinstance(tracer, trace.TracerProvider):
        return _ThroughApi(tracer.get_tracer(SCOPE_NAME, __version__))
    return _ThroughApi(tracer)
