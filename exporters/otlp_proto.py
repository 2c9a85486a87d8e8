"""OTLP protobuf bytes for finished spans, written by hand.

Installed as ``ctrltrace.exporters.otlp_proto``.

Owns ``encode_spans``: the same ``ExportTraceServiceRequest`` the OpenTelemetry SDK's encoder
builds (spans grouped by resource, then by instrumentation scope), serialised directly; and its
two halves for spans that never become SDK objects: ``encode_span`` (one Span message, as a
span ends) and ``encode_request`` (a batch of them, from one resource and scope). The
SDK builds a protobuf message object per span, attribute and value first, which measured a
third of everything tracing cost per event; here each span is one ``bytes.join`` and the
key-value pairs that recur (controller, kind, outcome, …) are encoded once and remembered.

It may not send anything or read the environment: the exporter in ``tracing`` does both. It
knows the wire format of the few OTLP messages it writes and nothing else of protobuf.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status

__all__ = ["encode_request", "encode_span", "encode_spans"]

_double = struct.Struct("<d").pack
_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack

# OTLP's SpanFlags: the context says whether its parent was remote (bit 8), and if so bit 9.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_KINDS = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
# KeyValue fields of string attributes, per field tag, key and value: controller, kind and
# outcome recur from span to span. A key's map is cleared when full (names and uids do not).
_REMEMBERED = 4_096
_strings: dict[bytes, dict[str, dict[str, bytes]]] = {}
_keys: dict[str, bytes] = {}  # each attribute name as a KeyValue's key field
_heads: dict[tuple[str, SpanKind], bytes] = {}  # a span's name and kind fields
_SHORT = [bytes((length,)) for length in range(0x80)]  # one-byte varints


def _varint(value: int) -> bytes:
    if value < 0:  # int64: two's complement over ten bytes
        value += 1 << 64
    if value < 0x80:
        return _SHORT[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(payload: bytes) -> bytes:
    """The payload of a length-delimited field, after its length."""
    length = len(payload)
    return (_SHORT[length] if length < 0x80 else _varint(length)) + payload


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    return tag + _delimited(payload)


def _text(tag: bytes, text: str) -> bytes:
    return tag + _delimited(text.encode())


def _value(value: Any) -> bytes:
    """An AnyValue; a value of the oneof is written even when it is the default."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _text(b"\x0a", value)
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _value(item)) for item in value))
    if isinstance(value, Mapping):
        pairs = (_field(b"\x0a", _pair(str(key), item)) for key, item in value.items())
        return _field(b"\x32", b"".join(pairs))
    raise TypeError(f"an attribute value cannot be {type(value).__name__}")


def _pair(key: str, value: Any) -> bytes:
    """A KeyValue."""
    return _key(key) + _field(b"\x12", _value(value))


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Each attribute as a repeated KeyValue field under ``tag``.

    The common types are written inline: this runs for every attribute of every span.
    """
    if not attributes:
        return b""
    strings = _strings.get(tag)
    if strings is None:
        strings = _strings[tag] = {}
    parts: list[bytes] = []
    append = parts.append
    for key, value in attributes.items():
        kind = type(value)
        if kind is str:
            known = strings.get(key)
            if known is None:
                known = strings[key] = {}
            field = known.get(value)
            if field is None:
                if len(known) >= _REMEMBERED:
                    known.clear()
                field = known[value] = _string_field(tag, _key(key), value.encode())
            append(field)
            continue
        if kind is float:
            any_value = b"\x21" + _double(value)
        elif kind is int:
            any_value = b"\x18" + _varint(value)
        else:
            any_value = _value(value)
        append(tag + _delimited(_key(key) + b"\x12" + _delimited(any_value)))
    return b"".join(parts)


def _string_field(tag: bytes, key: bytes, value: bytes) -> bytes:
    """A field under ``tag`` holding a KeyValue of a string; lengths under 128 written at once."""
    size = len(value)
    pair = len(key) + size + 4  # the key, then the value's tag, length, AnyValue tag, length
    if pair < 0x80:
        return b"".join((tag, _SHORT[pair], key, bytes((0x12, size + 2, 0x0A, size)), value))
    return tag + _delimited(key + b"\x12" + _delimited(b"\x0a" + _delimited(value)))


def _key(key: str) -> bytes:
    encoded = _keys.get(key)
    if encoded is None:
        encoded = _keys[key] = _text(b"\x0a", key)
    return encoded


def _flags(parent: SpanContext | None) -> bytes:
    remote = parent is not None and parent.is_remote
    return _fixed32(_HAS_IS_REMOTE | (_IS_REMOTE if remote else 0))


# A span's flags field (16, fixed32), by whether its parent is remote.
_LOCAL_FLAGS = b"\x85\x01" + _flags(None)
_REMOTE_FLAGS = b"\x85\x01" + _fixed32(_HAS_IS_REMOTE | _IS_REMOTE)


def _trace_state(tag: bytes, context: SpanContext) -> bytes:
    state = context.trace_state
    if not state:
        return b""
    return _text(tag, ",".join(f"{key}={value}" for key, value in state.items()))


def _event(event: Event) -> bytes:
    return b"".join(
        (
            b"\x09" + _fixed64(event.timestamp) if event.timestamp else b"",
            _text(b"\x12", event.name) if event.name else b"",
            _attributes(b"\x1a", event.attributes),
            b"\x20" + _varint(event.dropped_attributes) if event.dropped_attributes else b"",
        )
    )


def _link(link: Link) -> bytes:
    context = link.context
    return b"".join(
        (
            b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
            b"\x12\x08" + context.span_id.to_bytes(8, "big"),
            _trace_state(b"\x1a", context),
            _attributes(b"\x22", link.attributes),
            b"\x28" + _varint(link.dropped_attributes) if link.dropped_attributes else b"",
            b"\x35" + _flags(context),
        )
    )


def encode_span(
    context: SpanContext,
    name: str,
    kind: SpanKind,
    *,
    parent: SpanContext | None,
    start: int,
    end: int,
    attributes: Mapping[str, Any] | None = None,
    events: Sequence[Event] = (),
    links: Sequence[Link] = (),
    status: Status | None = None,
    dropped: tuple[int, int, int] = (0, 0, 0),  # attributes, events, links
) -> bytes:
    """One Span message, for ``encode_request``."""
    dropped_attributes, dropped_events, dropped_links = dropped
    head = _heads.get((name, kind))
    if head is None:  # the name and kind fields: a few distinct pairs make all the spans
        if len(_heads) >= _REMEMBERED:
            _heads.clear()
        head = _heads[name, kind] = (_text(b"\x2a", name) if name else b"") + bytes(
            (0x30, _KINDS[kind])
        )
    parts = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        parts.append(_trace_state(b"\x1a", context))
    if parent:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    parts.append(head)
    if start:
        parts += (b"\x39", _fixed64(start))
    if end:
        parts += (b"\x41", _fixed64(end))
    if attributes:
        parts.append(_attributes(b"\x4a", attributes))
    if dropped_attributes:
        parts.append(b"\x50" + _varint(dropped_attributes))
    if events:  # most spans have none: not even an empty list made
        parts += [_field(b"\x5a", _event(event)) for event in events]
    if dropped_events:
        parts.append(b"\x60" + _varint(dropped_events))
    if links:
        parts += [_field(b"\x6a", _link(link)) for link in links]
    if dropped_links:
        parts.append(b"\x70" + _varint(dropped_links))
    if status is not None:
        code = status.status_code.value
        if code or status.description:
            parts.append(
                _field(
                    b"\x7a",
                    (_text(b"\x12", status.description) if status.description else b"")
                    + (b"\x18" + _varint(code) if code else b""),
                )
            )
        else:
            parts.append(b"\x7a\x00")  # present, and empty, as the SDK writes it
    parts.append(_REMOTE_FLAGS if parent is not None and parent.is_remote else _LOCAL_FLAGS)
    return b"".join(parts)


def _span(span: ReadableSpan) -> bytes:
    context = span.get_span_context()
    assert context is not None  # a finished span always has one
    return encode_span(
        context,
        span.name,
        span.kind,
        parent=span.parent,
        start=span.start_time or 0,
        end=span.end_time or 0,
        attributes=span.attributes,
        events=span.events,
        links=span.links,
        status=span.status,
        dropped=(span.dropped_attributes, span.dropped_events, span.dropped_links),
    )


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    return b"".join(
        (
            _text(b"\x0a", scope.name) if scope.name else b"",
            _text(b"\x12", scope.version) if scope.version else b"",
            _attributes(b"\x1a", scope.attributes),
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
    body = [_field(b"\x0a", _attributes(b"\x0a", resource.attributes))]
    for scope, spans in scopes:
        schema = scope.schema_url if scope is not None else None
        scope_spans = b"".join(
            (
                _field(b"\x0a", _scope(scope)),
                *(_field(b"\x12", span) for span in spans),
                _text(b"\x1a", schema) if schema else b"",
            )
        )
        body.append(_field(b"\x12", scope_spans))
    if resource.schema_url:
        body.append(_text(b"\x1a", resource.schema_url))
    return _field(b"\x0a", b"".join(body))


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
