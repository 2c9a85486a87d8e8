"""The hand-written OTLP encoder against the SDK's own: the same request, field for field, from
the Python wire writer and from the C accelerator alike."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from ctrltrace.exporters import _otlpwire, otlp_proto, otlpwire
from ctrltrace.exporters.otlp_proto import encode_spans

SAMPLED = TraceFlags(TraceFlags.SAMPLED)
SERVICE = Resource({"service.name": "test", "service.instance.id": "pod-a"})
SCOPE = InstrumentationScope("ctrltrace", "0.1.0")


def context(span_id: int, *, trace_id: int = 0xABC, remote: bool = False) -> SpanContext:
    return SpanContext(trace_id, span_id, remote, SAMPLED)


def span(
    name: str,
    span_id: int,
    *,
    parent: SpanContext | None = None,
    resource: Resource = SERVICE,
    scope: InstrumentationScope | None = SCOPE,
    **fields: object,
) -> ReadableSpan:
    return ReadableSpan(
        name=name,
        context=context(span_id),
        parent=parent,
        resource=resource,
        instrumentation_scope=scope,
        start_time=1_700_000_000_000_000_000 + span_id,
        end_time=1_700_000_000_000_500_000 + span_id,
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture(autouse=True, params=["python", "c"])
def wire(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs once per wire writer: otlp_proto nests the chosen one's pieces."""
    # The C one imported directly, whatever CTRLTRACE_NO_ACCELERATORS says: the suite builds it.
    chosen = otlpwire if request.param == "python" else _otlpwire
    prefix = "pure_" if request.param == "python" else ""
    for name in ("encode_span", "encode_attributes", "encode_fields"):
        monkeypatch.setattr(otlp_proto, name, getattr(chosen, prefix + name))
    return str(request.param)


def assert_same_request(spans: Sequence[ReadableSpan]) -> None:
    ours = encode_spans(spans)
    theirs = sdk_encode(spans)
    assert ExportTraceServiceRequest.FromString(ours) == theirs
    assert ours == theirs.SerializeToString()  # byte for byte, field order included


def test_every_attribute_type_and_default_value() -> None:
    attributes = {
        "text": "ConfigMap",
        "empty": "",
        "unicode": "ünïcode ✓",
        # A KeyValue of 127 bytes, then of 128: its length no longer fits in one byte.
        "edge": "r" * 117,
        "past": "r" * 118,
        "long": "reason " * 40,
        "huge": "h" * 20_000,  # a length of three varint bytes
        "yes": True,
        "no": False,
        "zero": 0,
        "negative": -5,
        "large": 2**62,
        "float": 0.25,
        "float zero": 0.0,
        "texts": ("a", "b"),
        "numbers": [1, 2, 3],
        "smallest": -(2**63),
        "raw": b"\x00\x01",
        "nested": {"a": [1, "b", None], "c": {"d": 0.5}},
    }
    assert_same_request([span("event ConfigMap", 1, kind=SpanKind.CONSUMER, attributes=attributes)])


def test_parents_links_events_status_and_flags() -> None:
    root = span("event ConfigMap", 1, kind=SpanKind.CONSUMER, attributes={"k": "v"})
    child = span(
        "reconcile configmap",
        2,
        parent=context(1),
        kind=SpanKind.CONSUMER,
        links=[
            Link(context(3), {"ctrltrace.link": "dispatch"}),
            Link(context(4, trace_id=0xDEF, remote=True)),
        ],
        events=[Event("write", {"ctrltrace.write.verb": "create"}, 1_700_000_000_000_100_000)],
        status=Status(StatusCode.ERROR, "RuntimeError: boom"),
    )
    remote_child = span("dispatch c", 5, parent=context(9, remote=True), kind=SpanKind.PRODUCER)
    ok = span("lease acquired", 6, status=Status(StatusCode.OK))
    assert_same_request([root, child, remote_child, ok])


def test_trace_state_is_written_as_the_sdk_joins_it() -> None:
    state = TraceState([("vendor", "value"), ("other", "1")])
    traced = ReadableSpan(
        name="event Pod",
        context=SpanContext(0xABC, 7, False, SAMPLED, state),
        resource=SERVICE,
        instrumentation_scope=SCOPE,
        start_time=1,
        end_time=2,
    )
    assert_same_request([traced])


@pytest.mark.parametrize("scope", [SCOPE, None])
def test_spans_group_by_resource_then_scope(scope: InstrumentationScope | None) -> None:
    other = Resource({"service.name": "other"}, schema_url="https://opentelemetry.io/schemas/1")
    spans = [
        span("a", 1, scope=scope),
        span("b", 2, resource=other),
        span("c", 3, scope=InstrumentationScope("x", schema_url="https://example.com/s")),
        span("d", 4, scope=scope),
    ]
    assert_same_request(spans)


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [(object(), TypeError, "cannot be object"), (2**64, OverflowError, "too big")],
)
def test_a_value_otlp_cannot_carry_is_refused(
    value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        encode_spans([span("a", 1, attributes={"bad": value})])


@pytest.mark.parametrize(
    "trace_id", [0, 2**128 - 1, 2**64, 2**64 - 1, 0x0123456789ABCDEF0123456789ABCDEF]
)
def test_ids_are_written_big_endian_over_their_whole_width(trace_id: int) -> None:
    assert_same_request(
        [
            ReadableSpan(
                name="a",
                context=SpanContext(trace_id, 2**64 - 1, False, SAMPLED),
                parent=SpanContext(trace_id, 1, True, SAMPLED),
                resource=SERVICE,
                instrumentation_scope=SCOPE,
                start_time=1,
                end_time=2,
            )
        ]
    )


def test_an_id_too_wide_for_its_field_is_refused() -> None:
    wide = ReadableSpan(
        name="a", context=SpanContext(2**128, 1, False, SAMPLED), resource=SERVICE, start_time=1
    )
    with pytest.raises(OverflowError, match="out of range"):
        encode_spans([wide])


def test_the_python_and_c_writers_write_the_same_span_bytes() -> None:
    state = TraceState([("vendor", "value")])
    parts = (
        SpanContext(0xABC, 7, False, SAMPLED, state),
        "reconcile configmap",
        SpanKind.CONSUMER,
        context(9, remote=True),
        1_700_000_000_000_000_000,
        1_700_000_000_000_500_000,
        {"k": "v", "n": [1, 2.5, None, {"x": b"\x00"}], "big": -(2**63)},
        [Event("write", {"verb": "patch"}, 5)],
        [Link(SpanContext(0xDEF, 3, True, SAMPLED, state), {"ctrltrace.link": "dispatch"})],
        Status(StatusCode.ERROR, "boom"),
        (1, 2, 3),
    )
    assert otlpwire.pure_encode_span(*parts) == _otlpwire.encode_span(*parts)
    attributes = {"service.name": "x", "count": 3}
    assert otlpwire.pure_encode_attributes(0x0A, attributes) == _otlpwire.encode_attributes(
        0x0A, attributes
    )
    payloads = [b"a", b"b" * 300]
    assert otlpwire.pure_encode_fields(0x12, payloads) == _otlpwire.encode_fields(0x12, payloads)
