# Type stub for the C module exporters/_otlpwire.c: the OTLP protobuf wire format.
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event
from opentelemetry.trace import Link, SpanContext, SpanKind, Status

def encode_span(
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
) -> bytes: ...
def encode_attributes(tag: int, attributes: Mapping[str, Any] | None, /) -> bytes: ...
def encode_fields(tag: int, payloads: Sequence[bytes], /) -> bytes: ...
