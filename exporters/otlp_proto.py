"""OTLP protobuf bytes for finished spans.

Installed as ``ctrltrace.exporters.otlp_proto``.

Owns ``encode_spans``: the same ``ExportTraceServiceRequest`` the OpenTelemetry SDK's encoder
builds (spans grouped by resource, then by instrumentation scope), serialised directly; and its
two halves for spans that never become SDK objects: ``encode_span`` (one Span message, as a
span ends) and ``encode_request`` (a batch of them, from one resource and scope). The SDK
builds a protobuf message object per span, attribute and value first, which costs more than
everything else a span costs (bench/README.md). The wire format itself is written by
``otlpwire`` (in C when the accelerator was built); this module nests its pieces into requests.

It may not send anything or read the environment: ``otlp_http`` sends, ``config`` reads. It
knows the wire format of the few OTLP messages it writes and nothing else of protobuf.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ctrltrace.exporters.otlpwire import encode_attributes, encode_fields, encode_span

__all__ = ["encode_request", "encode_span", "encode_spans"]


def _field(tag: int, payload: bytes) -> bytes:
    return encode_fields(tag, (payload,))


def _text(tag: int, text: str) -> bytes:
    return encode_fields(tag, (text.encode(),))


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    assert context is not None  # a finished span always has one
    return encode_span(
        context,
        span.name,
        span.kind,
        span.parent,
        span.start_time or 0,
        span.end_time or 0,
        span.attributes,
        span.events,
        span.links,
        span.status,
        (span.dropped_attributes, span.dropped_events, span.dropped_links),
    )


def _scope(scope: InstrumentationScope | None) -> bytes:
    """An InstrumentationScope: name, version, attributes."""
    if scope is None:
        return b""
    return b"".join(
        (
            _text(0x0A, scope.name) if scope.name else b"",
            _text(0x12, scope.version) if scope.version else b"",
            encode_attributes(0x1A, scope.attributes),
        )
    )


def encode_request(
    resource: Resource, scope: InstrumentationScope | None, spans: Sequence[bytes]
) -> bytes:
    """An ``ExportTraceServiceRequest`` of spans (``encode_span``'s) from one resource and scope."""
    return _resource_spans(resource, [(scope, spans)])


def _resource_spans(
    resource: Resource, scopes: Sequence[tuple[InstrumentationScope | None, Sequence[bytes]]]
) -> bytes:
    """The request's ResourceSpans field for ``resource``: a ScopeSpans per scope."""
    body = [_field(0x0A, encode_attributes(0x0A, resource.attributes))]  # its Resource
    for scope, spans in scopes:
        schema = scope.schema_url if scope is not None else None
        scope_spans = b"".join(
            (
                _field(0x0A, _scope(scope)),
                encode_fields(0x12, spans),
                _text(0x1A, schema) if schema else b"",
            )
        )
        body.append(_field(0x12, scope_spans))
    if resource.schema_url:
        body.append(_text(0x1A, resource.schema_url))
    return _field(0x0A, b"".join(body))


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialised ``ExportTraceServiceRequest`` for ``spans``, as the SDK would send it."""
    # By identity: a Resource hashes by serialising its attributes to JSON, every time. Spans
    # from one provider share its one Resource object.
    resources: dict[int, Resource] = {}
    grouped: dict[int, dict[InstrumentationScope | None, list[bytes]]] = {}
    for span in spans:
        resource = span.resource
        scopes = grouped.get(id(resource))
        if scopes is None:
            resources[id(resource)] = resource
            scopes = grouped[id(resource)] = {}
        scope = span.instrumentation_scope or None
        encoded = scopes.get(scope)
        if encoded is None:
            encoded = scopes[scope] = []
        encoded.append(_span(span))
    return b"".join(
        _resource_spans(resources[key], list(scopes.items())) for key, scopes in grouped.items()
    )
