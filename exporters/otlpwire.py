"""The protobuf wire format of the OTLP messages ctrltrace sends: in Python, and the accelerator.

Installed as ``ctrltrace.exporters.otlpwire``.

Owns the bytes: a Span message from a span's parts (``encode_span``), repeated KeyValue fields
from a mapping of attributes (``encode_attributes``), and any payloads as repeated
length-delimited fields (``encode_fields``), which ``otlp_proto`` nests into a request. The
output is what the OpenTelemetry SDK's protobuf encoder writes for the same span, byte for byte
(fields in field-number order, defaults left out, ``SpanFlags`` always written).

The three functions are the C extension's (``ctrltrace.exporters._otlpwire``) when it was
built and ``CTRLTRACE_NO_ACCELERATORS`` is not set, else this module's, which write the same
bytes; ``ACCELERATED`` says which. Both read span contexts through their public attributes.

It may not: send anything, read the environment, or know what the attributes mean.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from ctrltrace import accelerators

__all__ = [
    "ACCELERATED",
    "encode_attributes",
    "encode_fields",
    "encode_span",
    "pure_encode_attributes",
    "pure_encode_fields",
    "pure_encode_span",
]

# Field tags (field number << 3 | wire type) of the messages written here.
_SPAN_TRACE_ID = b"\x0a\x10"  # with the length: always 16 bytes
_SPAN_SPAN_ID = b"\x12\x08"
_SPAN_TRACE_STATE = 0x1A
_SPAN_PARENT_SPAN_ID = b"\x22\x08"
_SPAN_NAME = 0x2A
_SPAN_KIND = 0x30
_SPAN_START = b"\x39"
_SPAN_END = b"\x41"
_SPAN_ATTRIBUTES = 0x4A
_SPAN_DROPPED_ATTRIBUTES = 0x50
_SPAN_EVENTS = 0x5A
_SPAN_DROPPED_EVENTS = 0x60
_SPAN_LINKS = 0x6A
_SPAN_DROPPED_LINKS = 0x70
_SPAN_STATUS = 0x7A
_SPAN_FLAGS = b"\x85\x01"
_EVENT_TIME = b"\x09"
_EVENT_NAME = 0x12
_EVENT_ATTRIBUTES = 0x1A
_EVENT_DROPPED_ATTRIBUTES = 0x20
_LINK_TRACE_ID = b"\x0a\x10"
_LINK_SPAN_ID = b"\x12\x08"
_LINK_TRACE_STATE = 0x1A
_LINK_ATTRIBUTES = 0x22
_LINK_DROPPED_ATTRIBUTES = 0x28
_LINK_FLAGS = b"\x35"
_STATUS_MESSAGE = 0x12
_STATUS_CODE = 0x18
_KEY_VALUE_KEY = 0x0A
_KEY_VALUE_VALUE = 0x12
_ANY_STRING = 0x0A
_ANY_BOOL = b"\x10"
_ANY_INT = b"\x18"
_ANY_DOUBLE = b"\x21"
_ANY_ARRAY = 0x2A
_ANY_KVLIST = 0x32
_ANY_BYTES = 0x3A
_LIST_ITEM = 0x0A  # ArrayValue.values and KeyValueList.values

# SpanFlags: the context says whether its parent was remote (bit 8), and if so bit 9.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200

_KINDS = {kind: kind.value + 1 for kind in SpanKind}  # OTLP's numbers start at 1, the API's at 0
_STATUSES = {code: code.value for code in StatusCode}
_U64 = 2**64
_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack
_double = struct.Struct("<d").pack
_FLAGS_LOCAL = _SPAN_FLAGS + _fixed32(_HAS_IS_REMOTE)
_FLAGS_REMOTE = _SPAN_FLAGS + _fixed32(_HAS_IS_REMOTE | _IS_REMOTE)


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(tag: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 0x80:
        return bytes((tag, length)) + payload
    return bytes((tag,)) + _varint(length) + payload


def _u64(number: int) -> int:
    """An int as its 64-bit two's complement (protobuf's int64 and fixed64)."""
    if not -(2**63) <= number < _U64:
        raise OverflowError("int too big to convert")
    return number % _U64


def _id(number: int, size: int) -> bytes:
    try:
        return number.to_bytes(size, "big")
    except OverflowError:
        raise OverflowError("a trace or span id is out of range") from None


def _value(value: object) -> bytes:
    """An AnyValue's field; None is an AnyValue with no field set."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return _ANY_BOOL + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _delimited(_ANY_STRING, value.encode())
    if isinstance(value, int):
        return _ANY_INT + _varint(_u64(value))
    if isinstance(value, float):
        return _ANY_DOUBLE + _double(value)
    if isinstance(value, bytes):
        return _delimited(_ANY_BYTES, value)
    if isinstance(value, list | tuple):
        return _delimited(_ANY_ARRAY, b"".join(_delimited(_LIST_ITEM, _value(v)) for v in value))
    if isinstance(value, dict):
        return _delimited(_ANY_KVLIST, _attributes(_LIST_ITEM, value))
    raise TypeError(f"an attribute value cannot be {type(value).__name__}")


def _attributes(tag: int, mapping: Mapping[Any, Any] | None) -> bytes:
    """Each (key, value) of ``mapping`` as a KeyValue field under ``tag``."""
    if mapping is None:
        return b""
    return b"".join(
        _delimited(
            tag,
            _delimited(_KEY_VALUE_KEY, (key if isinstance(key, str) else str(key)).encode())
            + _delimited(_KEY_VALUE_VALUE, _value(value)),
        )
        for key, value in mapping.items()
    )


def _trace_state(tag: int, context: SpanContext) -> bytes:
    state = context.trace_state
    if state is None or len(state) == 0:
        return b""
    return _delimited(tag, state.to_header().encode())


def _count(tag: int, count: int) -> bytes:
    return bytes((tag,)) + _varint(count) if count else b""


def _event(event: Event) -> bytes:
    time = event.timestamp
    return b"".join(
        (
            _EVENT_TIME + _fixed64(_u64(time)) if time else b"",
            _delimited(_EVENT_NAME, event.name.encode()) if event.name else b"",
            _attributes(_EVENT_ATTRIBUTES, event.attributes),
            _count(_EVENT_DROPPED_ATTRIBUTES, event.dropped_attributes),
        )
    )


def _link(link: Link) -> bytes:
    context = _context(link.context, "a link's context")
    return b"".join(
        (
            _LINK_TRACE_ID + _id(context.trace_id, 16),
            _LINK_SPAN_ID + _id(context.span_id, 8),
            _trace_state(_LINK_TRACE_STATE, context),
            _attributes(_LINK_ATTRIBUTES, link.attributes),
            _count(_LINK_DROPPED_ATTRIBUTES, link.dropped_attributes),
            _LINK_FLAGS + _fixed32(_HAS_IS_REMOTE | (_IS_REMOTE if context.is_remote else 0)),
        )
    )


def _status(status: Status) -> bytes:
    """A Status message: its description when it has one, its code unless unset."""
    try:
        number = _STATUSES[status.status_code]
    except KeyError:
        raise ValueError(f"unknown status code: {status.status_code!r}") from None
    description = status.description
    return _delimited(
        _SPAN_STATUS,
        (_delimited(_STATUS_MESSAGE, description.encode()) if description else b"")
        + (bytes((_STATUS_CODE,)) + _varint(number) if number else b""),
    )


def _context(context: object, what: str) -> SpanContext:
    if not isinstance(context, SpanContext):
        raise TypeError(f"{what} must be a SpanContext, not {type(context).__name__}")
    return context


def pure_encode_span(  # noqa: PLR0917 - positional, as the C function it stands in for
    context: SpanContext,
    name: str,
    kind: SpanKind,
    parent: SpanContext | None,
    start: int,
    end: int,
    attributes: Mapping[str, Any] | None,
    events: Sequence[Event],
    links: Sequence[Link],
    status: Status | None,
    dropped: tuple[int, int, int],
    /,
) -> bytes:
    """One Span message. parent is a SpanContext or None; start and end are nanoseconds (0: not
    set); attributes a mapping or None; events and links sequences of the SDK's Event and Link;
    status a Status or None; dropped the counts of attributes, events and links dropped."""
    _context(context, "context")
    if parent is not None:
        _context(parent, "parent")
    if not isinstance(name, str):
        raise TypeError("a span's name must be a str")
    try:
        kind_number = _KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown span kind: {kind!r}") from None
    start_ns, end_ns = _u64(start), _u64(end)
    return b"".join(
        (
            _SPAN_TRACE_ID + _id(context.trace_id, 16),
            _SPAN_SPAN_ID + _id(context.span_id, 8),
            _trace_state(_SPAN_TRACE_STATE, context),
            b"" if parent is None else _SPAN_PARENT_SPAN_ID + _id(parent.span_id, 8),
            _delimited(_SPAN_NAME, name.encode()) if name else b"",
            bytes((_SPAN_KIND,)) + _varint(kind_number),
            _SPAN_START + _fixed64(start_ns) if start_ns else b"",
            _SPAN_END + _fixed64(end_ns) if end_ns else b"",
            _attributes(_SPAN_ATTRIBUTES, attributes),
            _count(_SPAN_DROPPED_ATTRIBUTES, dropped[0]),
            b"".join(_delimited(_SPAN_EVENTS, _event(event)) for event in events),
            _count(_SPAN_DROPPED_EVENTS, dropped[1]),
            b"".join(_delimited(_SPAN_LINKS, _link(link)) for link in links),
            _count(_SPAN_DROPPED_LINKS, dropped[2]),
            b"" if status is None else _status(status),
            _FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL,
        )
    )


def _tag(tag: int) -> int:
    if not 0 <= tag <= 0x7F:
        raise ValueError("a tag is one byte under 0x80")
    return tag


def pure_encode_attributes(tag: int, attributes: Mapping[str, Any] | None, /) -> bytes:
    """Each (key, value) of the mapping as a KeyValue field under tag; b'' for None."""
    return _attributes(_tag(tag), attributes)


def pure_encode_fields(tag: int, payloads: Sequence[bytes], /) -> bytes:
    """Each payload (bytes) as a length-delimited field under tag, one after another."""
    _tag(tag)
    for payload in payloads:
        if not isinstance(payload, bytes):
            raise TypeError(f"a payload must be bytes, not {type(payload).__name__}")
    return b"".join(_delimited(tag, payload) for payload in payloads)


_extension = accelerators.load("ctrltrace.exporters._otlpwire")
ACCELERATED = _extension is not None
"""Whether the three functions are the C extension's."""
encode_span = pure_encode_span if _extension is None else _extension.encode_span
encode_attributes = pure_encode_attributes if _extension is None else _extension.encode_attributes
encode_fields = pure_encode_fields if _extension is None else _extension.encode_fields
