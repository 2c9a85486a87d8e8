"""OTLP-JSON files of the spans that records make, for CI to keep as artifacts.

Installed as ``ctrltrace.exporters.otlp_json``.

Owns the OTLP/JSON encoding of finished spans (the JSON mapping of ``ExportTraceServiceRequest``:
``resourceSpans`` / ``scopeSpans`` / ``spans``, trace and span ids in hex rather than protobuf's
base64, 64-bit integers as decimal strings, enums as integers, default values left out) and
``write_otlp_json``, which makes the spans through ``replay``, so with the same SpanSink that
traces a live run.

It may not make spans any other way, or send anything anywhere: the file is the output.
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, format_span_id, format_trace_id

from ctrltrace.exporters.spans import replay
from ctrltrace.records import Record

__all__ = ["encode_otlp_json", "write_otlp_json"]

Json = dict[str, Any]

# OTLP's SpanFlags: the context says whether its parent was remote (bit 8), and if so bit 9.
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200
_NOT_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def write_otlp_json(
    records: Iterable[Record], path: str | os.PathLike[str], *, service_name: str = "ctrltrace"
) -> int:
    """Write the spans ``records`` make to ``path`` as one OTLP-JSON request; their number.

    Every span is kept (no sampling). The file is created 0600, like the journal, since it
    names the same objects and carries the same reasons.
    """
    exporter = InMemorySpanExporter()
    # Its own provider, not the process's: a file is complete whatever OTEL_TRACES_SAMPLER says.
    provider = TracerProvider(
        resource=Resource({SERVICE_NAME: service_name}), sampler=ALWAYS_ON, shutdown_on_exit=False
    )
    try:
        replay(records, provider, processor=SimpleSpanProcessor(exporter))
        spans = exporter.get_finished_spans()
    finally:
        provider.shutdown()
    text = json.dumps(encode_otlp_json(spans), separators=(",", ":"))
    descriptor = os.open(Path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    return len(spans)


def encode_otlp_json(spans: Sequence[ReadableSpan]) -> Json:
    """``spans`` as an OTLP-JSON ``ExportTraceServiceRequest``, grouped by resource and scope."""
    grouped: defaultdict[Resource, defaultdict[InstrumentationScope | None, list[Json]]]
    grouped = defaultdict(lambda: defaultdict(list))
    for span in spans:
        grouped[span.resource][span.instrumentation_scope].append(_span(span))
    return {
        "resourceSpans": [
            _omit_empty(
                {
                    "resource": {"attributes": _attributes(resource.attributes)},
                    "scopeSpans": [
                        _omit_empty(
                            {
                                "scope": _scope(scope),
                                "spans": encoded,
                                "schemaUrl": (scope.schema_url if scope else "") or "",
                            }
                        )
                        for scope, encoded in scopes.items()
                    ],
                    "schemaUrl": resource.schema_url or "",
                }
            )
            for resource, scopes in grouped.items()
        ]
    }


def _span(span: ReadableSpan) -> Json:
    context = span.get_span_context()
    assert context is not None  # a span the SDK finished always has one
    parent = span.parent
    status = span.status
    return _omit_empty(
        {
            "traceId": format_trace_id(context.trace_id),
            "spanId": format_span_id(context.span_id),
            "traceState": ",".join(f"{key}={value}" for key, value in context.trace_state.items()),
            "parentSpanId": format_span_id(parent.span_id) if parent is not None else "",
            "flags": _flags(parent),
            "name": span.name,
            "kind": span.kind.value + 1,  # the API counts from INTERNAL = 0, OTLP from 1
            "startTimeUnixNano": str(span.start_time or 0),
            "endTimeUnixNano": str(span.end_time or 0),
            "attributes": _attributes(span.attributes),
            "droppedAttributesCount": span.dropped_attributes,
            "events": [
                _omit_empty(
                    {
                        "timeUnixNano": str(event.timestamp),
                        "name": event.name,
                        "attributes": _attributes(event.attributes),
                        "droppedAttributesCount": event.dropped_attributes,
                    }
                )
                for event in span.events
            ],
            "droppedEventsCount": span.dropped_events,
            "links": [_link(link) for link in span.links],
            "droppedLinksCount": span.dropped_links,
            # Always present: protobuf's JSON writes a set message even when it is all defaults.
            "status": _omit_empty(
                {"code": status.status_code.value, "message": status.description or ""}
            ),
        },
        keep=("status",),
    )


def _link(link: Link) -> Json:
    return _omit_empty(
        {
            "traceId": format_trace_id(link.context.trace_id),
            "spanId": format_span_id(link.context.span_id),
            "attributes": _attributes(link.attributes),
            "droppedAttributesCount": link.dropped_attributes,
            "flags": _flags(link.context),
        }
    )


def _flags(context: SpanContext | None) -> int:
    return _HAS_IS_REMOTE | (_IS_REMOTE if context is not None and context.is_remote else 0)


def _scope(scope: InstrumentationScope | None) -> Json:
    if scope is None:
        return {}
    return _omit_empty(
        {"name": scope.name, "version": scope.version, "attributes": _attributes(scope.attributes)}
    )


def _attributes(attributes: Mapping[str, object] | None) -> list[Json]:
    return [{"key": key, "value": _value(value)} for key, value in (attributes or {}).items()]


def _value(value: object) -> Json:
    # bool before int: True is an int to isinstance.
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        # JSON has no NaN or infinities; protobuf's JSON mapping spells them as strings.
        return {"doubleValue": value if math.isfinite(value) else _NOT_FINITE.get(value, "NaN")}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": _attributes(value)}}
    if isinstance(value, Sequence):
        return {"arrayValue": {"values": [_value(item) for item in value]}}
    return {}


def _omit_empty(fields: Json, keep: Sequence[str] = ()) -> Json:
    """Leave out fields at their default (0, "", empty), as protobuf's JSON mapping does."""
    return {key: value for key, value in fields.items() if key in keep or value not in (0, "", [])}
