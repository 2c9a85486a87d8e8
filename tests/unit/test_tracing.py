"""Spans from records: parents, links, attributes, bounded memory, export losses, OTLP-JSON.

The record sequences are ``ctrltrace.testing.RunStory``'s, which follow what the runtime emits;
where a test looks at times it sets the story's clock.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from prometheus_client import CollectorRegistry, generate_latest

from ctrltrace.clock import FakeClock
from ctrltrace.exporters.otlp_json import encode_otlp_json, write_otlp_json
from ctrltrace.exporters.otlp_proto import encode_spans
from ctrltrace.exporters.tracing import (
    BatchSettings,
    DropCounter,
    SpanSink,
    TracingConfigError,
    build_tracing,
    configure_tracing,
    replay,
    trace_ids_processor,
)
from ctrltrace.narrator import Narrator
from ctrltrace.records import Record, Recorder
from ctrltrace.testing import RunStory
from ctrltrace.vocabulary import EventOutcome, WriteOutcome

T0 = 1_700_000_000.0
CONTROLLER = "configmap"
RESOURCE = Resource({"service.name": "test"})


def ns(seconds: float) -> int:
    return int(seconds * 1e9)


# -- fixtures and helpers --------------------------------------------------------------------


class Traced:
    """A sink on an SDK provider that keeps every finished span in memory.

    ``through_api``: the sink gets a tracer, so it starts spans through the OpenTelemetry API
    as it does for any tracer; else it gets the provider and the processor, builds the spans
    itself and hands them to the processor.
    """

    def __init__(self, *, through_api: bool = False) -> None:
        self.exporter = InMemorySpanExporter()
        # A fixed resource: the default one is detected on a pool of threads, for nothing here.
        self.provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
        processor = SimpleSpanProcessor(self.exporter)
        self.provider.add_span_processor(processor)
        self.sink = (
            SpanSink(self.provider.get_tracer("ctrltrace"))
            if through_api
            else SpanSink(self.provider, processor=processor)
        )

    def feed(self, *records: Record) -> None:
        for record in records:
            self.sink(record)

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        [span] = self.named(name)
        return span


@pytest.fixture(params=["direct", "through the API"])
def traced(request: pytest.FixtureRequest) -> Iterator[Traced]:
    tracing = Traced(through_api=request.param != "direct")
    yield tracing
    tracing.provider.shutdown()


def context_of(span: ReadableSpan) -> SpanContext:
    context = span.get_span_context()
    assert context is not None
    return context


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def link_targets(span: ReadableSpan) -> list[tuple[int, str]]:
    return [
        (link.context.span_id, str((link.attributes or {})["ctrltrace.link"]))
        for link in span.links
    ]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(autouse=True)
def threads_gone_from_the_os() -> Iterator[None]:
    """After each test, wait until the threads it started have left the OS as well.

    The SDK starts threads (its resource detection pool, the batch processor), and ``join``
    returns a moment before a thread's ``/proc/self/task`` entry goes; the leftover check in
    tests/conftest.py reads those entries, and one vanishing under it fails the test.
    """
    tasks = Path("/proc/self/task")
    before = len(list(tasks.iterdir()))
    yield
    deadline = time.monotonic() + 2
    while len(list(tasks.iterdir())) > before and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


# -- spans and their relations ---------------------------------------------------------------


def test_an_event_is_one_root_span_with_the_objects_attributes(traced: Traced) -> None:
    added = RunStory(synced=False).event(outcome=EventOutcome.ADDED, generation=3)
    traced.feed(added)

    span = traced.one("event ConfigMap")
    assert span.kind is SpanKind.CONSUMER
    assert span.parent is None
    assert span.start_time == span.end_time == ns(T0)
    assert attributes(span) == {
        "k8s.namespace.name": "shop",
        "ctrltrace.object.api_version": "v1",
        "ctrltrace.object.kind": "ConfigMap",
        "ctrltrace.object.name": "web",
        "ctrltrace.object.uid": "uid-web",
        "ctrltrace.resource_version": "101",
        "ctrltrace.generation": 3,
        "ctrltrace.event.type": "ADDED",
        "ctrltrace.event.writer": "kubectl",
        "ctrltrace.event.self_caused": False,
    }


def test_built_in_kinds_also_get_their_semantic_convention_names(traced: Traced) -> None:
    story = RunStory(synced=False)
    traced.feed(
        story.event("p", kind="Pod"),
        story.event("d", kind="Deployment", api_version="apps/v1"),
        story.event("x", kind="Deployment", api_version="example.com/v1"),  # a CRD
        story.event("team-a", kind="Namespace", api_version="v1", namespace=""),
    )
    pod = attributes(traced.one("event Pod"))
    assert pod["k8s.pod.name"] == "p" and pod["k8s.pod.uid"] == "uid-p"
    deployments = {
        attributes(span)["ctrltrace.object.name"]: attributes(span)
        for span in traced.named("event Deployment")
    }
    assert deployments["d"]["k8s.deployment.name"] == "d"
    assert deployments["d"]["k8s.deployment.uid"] == "uid-d"
    assert not any(key.startswith("k8s.deployment") for key in deployments["x"])
    namespace = attributes(traced.one("event Namespace"))
    assert namespace["k8s.namespace.name"] == "team-a"


def test_dispatch_spans_are_children_of_their_event_with_verdict_mapping_and_outcome(
    traced: Traced,
) -> None:
    story = RunStory(synced=False)
    updated = story.event(outcome=EventOutcome.MODIFIED)
    dropped = story.dispatch(
        updated,
        "dropped_by_predicate",
        controller="strict",
        predicate="GenerationChanged",
        reason="generation unchanged (1 → 1)",
    )
    unmapped = story.dispatch(
        updated,
        "not_mapped",
        controller="owners",
        reason="no ownerReference with controller: true",
    )
    queued = story.dispatch(updated, "queued")
    traced.feed(*story.records)

    event_span = traced.one("event ConfigMap")
    by_controller = {
        str(attributes(span)["ctrltrace.controller"]): span
        for span in traced.spans
        if span.name.startswith("dispatch ")
    }
    assert set(by_controller) == {"strict", "owners", CONTROLLER}
    dispatches = {"strict": dropped, "owners": unmapped, CONTROLLER: queued}
    for name, span in by_controller.items():
        assert span.parent is not None
        assert span.parent.span_id == context_of(event_span).span_id
        assert context_of(span).trace_id == context_of(event_span).trace_id
        assert span.start_time == span.end_time == ns(dispatches[name].time)

    strict = by_controller["strict"]
    assert strict.name == "dispatch strict" and strict.kind is SpanKind.INTERNAL
    assert attributes(strict) == {
        "ctrltrace.controller": "strict",
        "ctrltrace.outcome": "dropped_by_predicate",
        "ctrltrace.request": "shop/web",
        "ctrltrace.reason": "generation unchanged (1 → 1)",
        "k8s.namespace.name": "shop",
        "ctrltrace.predicate": "GenerationChanged",
        "ctrltrace.dispatch.event_type": "update",
    }
    owners = attributes(by_controller["owners"])
    assert owners["ctrltrace.outcome"] == "not_mapped"
    assert owners["ctrltrace.handler"] == "for the object itself"
    assert "controller: true" in owners["ctrltrace.reason"]
    enqueued = by_controller[CONTROLLER]
    assert enqueued.kind is SpanKind.PRODUCER  # it put a request in the queue
    assert attributes(enqueued)["ctrltrace.outcome"] == "queued"


def test_a_reconcile_is_parented_on_the_first_dispatch_and_links_the_deduplicated_ones(
    traced: Traced,
) -> None:
    # A burst while the key waits: one queued, two de-duplicated into the same run.
    story = RunStory(synced=False)
    queued = story.dispatch(story.event(), "queued")
    merged = [story.dispatch(story.event(), "deduplicated") for _ in range(2)]
    begin = story.start(queued, *merged)
    end = story.end(begin)
    traced.feed(*story.records)

    dispatches = {span.start_time: span for span in traced.named(f"dispatch {CONTROLLER}")}
    parent_span = dispatches[ns(queued.time)]
    reconcile = traced.one(f"reconcile {CONTROLLER}")
    assert reconcile.kind is SpanKind.CONSUMER
    assert reconcile.parent is not None
    assert reconcile.parent.span_id == context_of(parent_span).span_id
    assert context_of(reconcile).trace_id == context_of(parent_span).trace_id
    assert link_targets(reconcile) == [
        (context_of(dispatches[ns(m.time)]).span_id, "dispatch") for m in merged
    ]
    assert reconcile.start_time == ns(begin.time) and reconcile.end_time == ns(end.time)
    assert reconcile.status.status_code is StatusCode.UNSET
    assert attributes(reconcile) == {
        "ctrltrace.controller": CONTROLLER,
        "ctrltrace.request": "shop/web",
        "ctrltrace.reconcile_id": "rid-1",
        "k8s.namespace.name": "shop",
        "ctrltrace.queue.wait_s": 0.002,
        "ctrltrace.retries": 0,
        "messaging.batch.message_count": 3,
        "ctrltrace.reconcile.start_reason": "waited 2.0 ms in the queue",
        "ctrltrace.outcome": "success",
        "ctrltrace.reason": "success",
        "ctrltrace.attr.duration_s": 0.042,
        "ctrltrace.attr.metric_result": "success",
    }


def test_a_requeued_reconcile_links_to_the_one_that_asked_rather_than_nesting(
    traced: Traced,
) -> None:
    story = RunStory(synced=False)
    first = story.start(story.dispatch(story.event(outcome=EventOutcome.ADDED)))
    failed = story.end(first, "error", "RuntimeError: first attempt fails")
    retry = story.requeue(failed, "rate_limited", 0.005)
    second = story.start(retry)
    later = story.end(second, "requeue_after")
    scheduled = story.requeue(later, "after", 3600)
    # The delayed run also picked up a new event meanwhile: that dispatch is its parent.
    edit = story.dispatch(story.event())
    story.time = T0 + 3601
    story.end(story.start(scheduled, edit))
    traced.feed(*story.records)

    runs = {attributes(s)["ctrltrace.reconcile_id"]: s for s in traced.named("reconcile configmap")}
    one, two, three = runs["rid-1"], runs["rid-2"], runs["rid-3"]
    # The retry is a new trace, linked to the reconcile that asked for it.
    assert two.parent is None
    assert context_of(two).trace_id != context_of(one).trace_id
    assert link_targets(two) == [(context_of(one).span_id, "requeue")]
    # The requeue is on the span of the reconcile that asked, which ends when it did.
    assert one.end_time == ns(failed.time)
    assert attributes(one)["ctrltrace.requeue"] == "rate_limited"
    assert attributes(one)["ctrltrace.requeue.delay_s"] == 0.005
    assert attributes(one)["ctrltrace.requeue.attempt"] == 1
    assert attributes(two)["ctrltrace.requeue"] == "after"
    assert attributes(two)["ctrltrace.requeue.delay_s"] == 3600
    assert "ctrltrace.requeue.attempt" not in attributes(two)
    [edit_span] = [s for s in traced.named("dispatch configmap") if s.start_time == ns(edit.time)]
    assert three.parent is not None and three.parent.span_id == context_of(edit_span).span_id
    assert link_targets(three) == [(context_of(two).span_id, "requeue")]


def test_a_failed_reconcile_has_error_status_reason_and_error_type(traced: Traced) -> None:
    story = RunStory(synced=False)
    story.reconciled(story.event(), "terminal_error", "TerminalError: cannot ever work")
    traced.feed(*story.records)

    span = traced.one("reconcile configmap")  # no requeue follows a terminal error: ended now
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "TerminalError: cannot ever work"
    assert attributes(span)["error.type"] == "TerminalError"
    assert attributes(span)["ctrltrace.outcome"] == "terminal_error"
    assert attributes(span)["ctrltrace.reason"] == "TerminalError: cannot ever work"


def test_a_reconcile_waiting_for_its_requeue_record_ends_when_another_record_comes(
    traced: Traced,
) -> None:
    story = RunStory(synced=False)
    ended = story.reconciled(story.event(), "error", "ValueError: x")
    traced.feed(*story.records)
    assert traced.named("reconcile configmap") == []  # held for the REQUEUE record
    traced.feed(story.event())  # a journal cut between the two: no requeue after all
    span = traced.one("reconcile configmap")
    assert span.end_time == ns(ended.time) and "ctrltrace.requeue" not in attributes(span)


def test_lease_transitions_informer_health_and_lifecycle_are_spans(
    traced: Traced,
) -> None:
    story = RunStory(synced=False)
    story.lease("acquired", "pod-a")
    story.lease("lost", "pod-a", reason="could not renew within 10s")
    story.watch("listed", "listed 3 at resourceVersion 7")
    story.watch("synced", "cache synced: 3 objects")
    forbidden_by = 'configmaps is forbidden: User "bob" cannot list'
    story.watch("forbidden", forbidden_by, namespace="shop", status=403, resource="configmaps")
    story.watch("gone", "watch expired, listing again: too old")
    story.controller()
    story.manager()
    traced.feed(*story.records)
    # Every one: explain reads informer health and lifecycle, so spans carry them too.
    assert sorted(span.name for span in traced.spans) == [
        f"controller {CONTROLLER}",
        "lease acquired",
        "lease lost",
        "manager started",
        "watch ConfigMap",
        "watch ConfigMap",
        "watch ConfigMap",
        "watch ConfigMap",
    ]
    acquired, lost = traced.one("lease acquired"), traced.one("lease lost")
    assert acquired.status.status_code is StatusCode.UNSET and acquired.parent is None
    assert lost.status.status_code is StatusCode.ERROR
    assert attributes(lost) == {
        "ctrltrace.outcome": "lost",
        "ctrltrace.reason": "could not renew within 10s",
        "ctrltrace.lease": "ops/widgets.example.com",
        "ctrltrace.lease.identity": "pod-a",
        "ctrltrace.lease.holder": "pod-a",
        "k8s.namespace.name": "ops",
    }
    *health, forbidden, gone = sorted(
        traced.named("watch ConfigMap"), key=lambda s: s.start_time or 0
    )
    assert [attributes(span)["ctrltrace.outcome"] for span in health] == ["listed", "synced"]
    assert all(span.status.status_code is StatusCode.UNSET for span in health)
    assert forbidden.status.status_code is StatusCode.ERROR
    assert attributes(forbidden) == {
        "ctrltrace.outcome": "forbidden",
        "ctrltrace.reason": forbidden_by,
        "ctrltrace.object.kind": "ConfigMap",
        "ctrltrace.object.api_version": "v1",
        "k8s.namespace.name": "shop",
        "http.response.status_code": 403,
        "ctrltrace.watch.resource": "configmaps",
    }
    assert gone.status.status_code is StatusCode.UNSET  # a re-list, not a failure


def test_writes_are_events_on_their_reconcile_and_the_event_they_cause_links_back(
    traced: Traced,
) -> None:
    story = RunStory(synced=False)
    added = story.event(outcome=EventOutcome.ADDED)
    begin = story.start(story.dispatch(added))
    patched = story.write(begin, WriteOutcome.PATCH)
    story.event(owned_write=patched, writer="ctrltrace")
    # The other race: the event of the second write came back before the write's answer.
    early = story.event(writer="ctrltrace", extra={"self_caused": True})
    answered = story.write(begin, WriteOutcome.PATCH, came_back=early)
    story.end(begin)
    traced.feed(*story.records)

    reconcile = traced.one("reconcile configmap")
    assert [(e.name, e.timestamp) for e in reconcile.events] == [
        ("write", ns(patched.time)),
        ("write", ns(answered.time)),
    ]
    assert dict(reconcile.events[0].attributes or {}) == {
        "ctrltrace.write.verb": "patch",
        "ctrltrace.object.api_version": "v1",
        "ctrltrace.object.kind": "ConfigMap",
        "ctrltrace.object.name": "web",
        "ctrltrace.object.uid": "uid-web",
        "ctrltrace.generation": 1,
        "k8s.namespace.name": "shop",
        "ctrltrace.resource_version": "102",
        "ctrltrace.reason": "patch returned resourceVersion 102",
    }
    back_span, early_span = sorted(
        (s for s in traced.named("event ConfigMap") if s.start_time != ns(added.time)),
        key=lambda s: s.start_time or 0,
    )
    assert back_span.parent is None  # a link, so a write → event → reconcile loop never nests
    assert link_targets(back_span) == [(context_of(reconcile).span_id, "write")]
    assert attributes(back_span)["ctrltrace.event.self_caused"] is True
    assert link_targets(reconcile) == [(context_of(early_span).span_id, "caused_event")]


@pytest.mark.parametrize("through_api", [False, True])
def test_the_providers_sampler_decides_for_a_whole_trace(through_api: bool) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE, sampler=ALWAYS_OFF, shutdown_on_exit=False)
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    sink = (
        SpanSink(provider.get_tracer("ctrltrace"))
        if through_api
        else SpanSink(provider, processor=processor)
    )
    story = RunStory(synced=False)
    story.reconciled(story.event())
    for record in story.records:
        sink(record)
    assert exporter.get_finished_spans() == ()
    provider.shutdown()


def test_spans_are_roots_even_inside_a_callers_span(traced: Traced) -> None:
    tracer = traced.provider.get_tracer("user code")
    with tracer.start_as_current_span("outer"):
        story = RunStory(synced=False)
        traced.feed(story.event(), story.lease("acquired", "pod-a"))
    assert traced.one("event ConfigMap").parent is None
    assert traced.one("lease acquired").parent is None


def test_memory_stays_bounded_over_100k_records() -> None:
    class KeepLast(SpanExporter):
        def __init__(self) -> None:
            self.spans: deque[ReadableSpan] = deque(maxlen=3)

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.spans.extend(spans)
            return SpanExportResult.SUCCESS

    exporter = KeepLast()
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    sink = SpanSink(provider, capacity=1_000, processor=SimpleSpanProcessor(exporter))
    story = RunStory(synced=False)
    for i in range(25_000):  # 4 records each: event, dispatch, start, end
        story.reconciled(story.event(f"o{i % 5000}", EventOutcome.ADDED))
    highest = 0
    for record in story.records:
        sink(record)
        highest = max(highest, sink.remembered)
    provider.shutdown()
    assert highest <= 1_000  # events and dispatches within their bound, one reconcile open
    # Forgetting the old never loses the new: the last reconcile still has its parents.
    event_span, dispatch_span, reconcile = exporter.spans
    assert reconcile.parent is not None
    assert reconcile.parent.span_id == context_of(dispatch_span).span_id
    assert dispatch_span.parent is not None
    assert dispatch_span.parent.span_id == context_of(event_span).span_id


def test_a_reconciler_error_is_logged_with_the_reconciles_trace_id(traced: Traced) -> None:
    captured = structlog.testing.CapturingLogger()
    logger = structlog.wrap_logger(
        captured, processors=[trace_ids_processor(traced.sink), structlog.processors.JSONRenderer()]
    )
    # As the manager wires them: the narrator first, the span sink after it.
    recorder = Recorder(Narrator(FakeClock(), logger), traced.sink)
    story = RunStory(synced=False)
    failed = story.reconciled(story.event(), "error", "ValueError: no spec")
    for record in story.records:
        recorder.emit(record)

    (line,) = (json.loads(call.args[0]) for call in captured.calls)
    span = context_of(traced.one("event ConfigMap"))  # the reconcile is in the event's trace
    assert line["event"] == "Reconciler error" and line["reconcile_id"] == failed.reconcile_id
    assert line["trace_id"] == f"{span.trace_id:032x}" and line["error"] == "ValueError: no spec"


def test_trace_ids_for_a_running_reconcile_and_the_structlog_processor(traced: Traced) -> None:
    story = RunStory(synced=False)
    begin = story.start(story.dispatch(story.event()))
    traced.feed(*story.records)

    ids = traced.sink.trace_ids_for(begin.reconcile_id)
    assert traced.sink.trace_ids_for("nope") is None
    # Logged as ctx.log does: a logger bound to the reconcile id.
    captured = structlog.testing.CapturingLogger()
    log = structlog.wrap_logger(
        captured, processors=[trace_ids_processor(traced.sink), structlog.processors.JSONRenderer()]
    ).bind(controller=CONTROLLER, reconcile_id=begin.reconcile_id)
    log.info("reconciling")
    structlog.wrap_logger(
        captured, processors=[trace_ids_processor(traced.sink), structlog.processors.JSONRenderer()]
    ).info("no reconcile here")
    traced.feed(story.end(begin))
    assert traced.sink.trace_ids_for(begin.reconcile_id) is None  # only while it runs

    span = context_of(traced.one("reconcile configmap"))
    assert ids == (f"{span.trace_id:032x}", f"{span.span_id:016x}")
    inside, outside = (json.loads(call.args[0]) for call in captured.calls)
    assert inside["trace_id"] == ids[0] and inside["span_id"] == ids[1]
    assert "trace_id" not in outside and "span_id" not in outside


# -- the SDK pipeline ------------------------------------------------------------------------


@pytest.mark.usefixtures("no_otel_env")
def test_configure_tracing_is_off_without_an_endpoint_or_otel_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert configure_tracing(None) is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert configure_tracing(None) is None
    monkeypatch.delenv("OTEL_TRACES_EXPORTER")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert configure_tracing("http://127.0.0.1:1") is None


@pytest.mark.usefixtures("no_otel_env")
def test_configure_tracing_reads_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "widgets-operator")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "512")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    configured = configure_tracing(None)
    assert configured is not None
    provider, sink, counter = configured
    try:
        assert provider.resource.attributes["service.name"] == "widgets-operator"
        assert BatchSettings.from_env().max_queue_size == 512
        sink(RunStory(synced=False).event())
        assert sink.remembered == 1  # a context is kept, but nothing was sampled to export
    finally:
        counter.shutdown(timeout_s=1)
    assert counter.exported == counter.failed == counter.dropped == 0


@pytest.mark.usefixtures("no_otel_env")
def test_configure_tracing_refuses_what_cannot_work(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TracingConfigError, match="http/json"):
        configure_tracing("http://127.0.0.1:4318", protocol="http/json")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "soon")
    with pytest.raises(TracingConfigError, match="OTEL_BSP_SCHEDULE_DELAY"):
        configure_tracing("http://127.0.0.1:4318")
    monkeypatch.delenv("OTEL_BSP_SCHEDULE_DELAY")
    with pytest.raises(TracingConfigError, match="max_queue_size"):
        configure_tracing("http://127.0.0.1:4318", batch=BatchSettings(max_queue_size=0))
    try:
        importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    except ImportError:
        with pytest.raises(TracingConfigError, match="opentelemetry-exporter-otlp-proto-grpc"):
            configure_tracing("http://127.0.0.1:4317", protocol="grpc")


@pytest.mark.usefixtures("no_otel_env")
def test_an_unreachable_collector_costs_counted_failures_never_an_exception() -> None:
    batch = BatchSettings(schedule_delay_s=0.05, export_timeout_s=0.2)
    configured = configure_tracing(f"http://127.0.0.1:{closed_port()}", batch=batch)
    assert configured is not None
    provider, sink, counter = configured
    assert provider.resource.attributes["service.name"] == "ctrltrace"
    story = RunStory(synced=False)
    story.reconciled(story.event())
    for record in story.records:
        sink(record)  # never raises, never waits for the collector
    counter.shutdown(timeout_s=2)
    # Every span was tried and failed before the give-up time: none is counted as unsent.
    assert (counter.failed, counter.exported, counter.dropped) == (3, 0, 0)
    registry = CollectorRegistry()
    registry.register(counter)
    exposition = generate_latest(registry).decode()
    assert 'ctrltrace_spans_dropped_total{reason="export_failed"} 3.0' in exposition
    assert 'ctrltrace_spans_dropped_total{reason="queue_full"} 0.0' in exposition
    assert "ctrltrace_spans_exported_total 0.0" in exposition


class Stalled(SpanExporter):
    """A collector that takes ``seconds`` to answer each batch, or until released."""

    def __init__(self, seconds: float = 30.0, result: SpanExportResult = SpanExportResult.SUCCESS):
        self.release = threading.Event()
        self.seconds = seconds
        self.result = result
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(self.seconds)
        self.exported += len(spans)
        return self.result


class Collector:
    """A local OTLP/HTTP collector that keeps every request and answers when ``release`` is set.

    ``delay_s``: how long each answer waits for ``release`` at most; ``status``: the answer's.
    """

    def __init__(self, *, delay_s: float = 0.0, status: int = 200) -> None:
        self.release = threading.Event()
        if delay_s == 0:
            self.release.set()
        self.requests: list[ExportTraceServiceRequest] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.requests.append(ExportTraceServiceRequest.FromString(body))
                collector.release.wait(delay_s)
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = False  # so that close() waits for every answer
        self._thread = threading.Thread(target=self._server.serve_forever)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def spans(self) -> list[Any]:
        return [
            span
            for request in self.requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    yield running
    running.close()


def test_spans_reach_a_collector_encoded_as_the_sdk_would_send_them(collector: Collector) -> None:
    story = RunStory(synced=False)
    story.reconciled(story.event())
    chain = story.records
    configured = configure_tracing(collector.endpoint, service_name="shape")
    assert configured is not None
    _, sink, counter = configured
    for record in chain:
        sink(record)
    counter.shutdown(timeout_s=5)
    assert (counter.exported, counter.dropped, counter.failed) == (3, 0, 0)
    [request] = collector.requests
    [resource_spans] = request.resource_spans
    resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert resource["service.name"] == "shape"
    assert resource_spans.scope_spans[0].scope.name == "ctrltrace"
    # The same spans, field for field but the ids, as the in-memory path gives.
    reference = Traced()
    reference.feed(*chain)
    expected = ExportTraceServiceRequest.FromString(encode_spans(reference.spans))
    reference.provider.shutdown()
    assert shapes(collector.spans()) == shapes(
        [span for rs in expected.resource_spans for ss in rs.scope_spans for span in ss.spans]
    )


def shapes(spans: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Each span as (name, kind, parent's name, times, attributes, status), ids left out."""
    names = {span.span_id: span.name for span in spans}
    return sorted(
        (
            span.name,
            span.kind,
            names.get(span.parent_span_id),
            span.start_time_unix_nano,
            span.end_time_unix_nano,
            sorted((kv.key, str(kv.value)) for kv in span.attributes),
            span.status.code,
            [names.get(link.span_id) for link in span.links],
        )
        for span in spans
    )


class Pipelines:
    """The two export pipelines build_tracing makes, each stalled until ``release()``.

    "sdk": any SpanExporter, behind the gated batch processor; "otlp": OTLP/HTTP to a
    collector, spans encoded as they end and sent from their own queue. Each answers a batch
    after ``seconds`` at most, with ``ok``.
    """

    def __init__(self, kind: str, *, seconds: float = 30.0, ok: bool = True) -> None:
        self.kind = kind
        self.collector: Collector | None = None
        self.exporter: Stalled | None = None
        if kind == "sdk":
            result = SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE
            self.exporter = Stalled(seconds=seconds, result=result)
        else:
            self.collector = Collector(delay_s=seconds, status=200 if ok else 400)

    def build(self, batch: BatchSettings) -> tuple[SpanSink, DropCounter]:
        if self.exporter is not None:
            _, sink, counter = build_tracing(self.exporter, batch=batch)
        else:
            assert self.collector is not None
            configured = configure_tracing(self.collector.endpoint, batch=batch)
            assert configured is not None
            _, sink, counter = configured
        return sink, counter

    def release(self) -> None:
        if self.exporter is not None:
            self.exporter.release.set()
        if self.collector is not None:
            self.collector.release.set()

    @property
    def received(self) -> int:
        if self.exporter is not None:
            return self.exporter.exported
        assert self.collector is not None
        return len(self.collector.spans())

    def close(self) -> None:
        self.release()
        if self.collector is not None:
            self.collector.close()


@pytest.mark.parametrize("kind", ["sdk", "otlp"])
def test_a_full_queue_drops_and_counts_spans_instead_of_growing(kind: str) -> None:
    pipelines = Pipelines(kind)
    batch = BatchSettings(max_queue_size=10, max_export_batch_size=5, schedule_delay_s=0.01)
    sink, counter = pipelines.build(batch)
    story = RunStory(synced=False)
    try:
        for _ in range(40):
            sink(story.event())
        # At most one batch (5) is in the stalled export and 10 wait: the rest are counted.
        assert 25 <= counter.queue_full <= 30
    finally:
        pipelines.release()
        counter.shutdown(timeout_s=5)
        pipelines.close()
    assert counter.exported == pipelines.received == 40 - counter.queue_full
    assert counter.dropped == counter.queue_full and counter.failed == 0


@pytest.mark.parametrize("kind", ["sdk", "otlp"])
def test_shutdown_gives_up_on_a_collector_that_does_not_answer(kind: str) -> None:
    pipelines = Pipelines(kind, seconds=0.3, ok=False)  # each batch times out
    batch = BatchSettings(
        max_queue_size=100, max_export_batch_size=5, schedule_delay_s=0.01, export_timeout_s=0.3
    )
    sink, counter = pipelines.build(batch)
    story = RunStory(synced=False)
    try:
        for _ in range(20):
            sink(story.event())
        counter.shutdown(timeout_s=0.1)
    finally:
        pipelines.close()
    assert counter.failed + counter.unsent == 20
    # Not four batches of 0.3 s: past the give-up time batches are counted as unsent, not sent;
    # only the batch in flight when shutdown began (and at most one more) was tried.
    assert counter.unsent >= 10 and counter.exported == 0
    sink(story.event())  # after shutdown: counted, not queued
    assert counter.unsent + counter.failed == 21


# -- replay and OTLP-JSON --------------------------------------------------------------------


def realistic_run() -> RunStory:
    """A run: lease, a watch failure, an event with a de-duplicated burst, a failed retry."""
    story = RunStory(synced=False)
    story.lease("acquired", "pod-a")
    story.watch("forbidden", "forbidden", status=403)
    story.time = T0 + 1
    queued = story.dispatch(story.event(outcome=EventOutcome.ADDED))
    merged = story.dispatch(story.event(), "deduplicated")
    story.time = T0 + 2
    failed = story.end(story.start(queued, merged), "error", "RuntimeError: boom")
    story.time = T0 + 3
    story.end(story.start(story.requeue(failed)))
    return story


def test_write_otlp_json_writes_an_export_request_with_parents_and_links(
    tmp_path: Path,
) -> None:
    records = realistic_run().records
    path = tmp_path / "traces.json"
    assert write_otlp_json(records, path) == 8
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    document = json.loads(path.read_text())
    [resource_spans] = document["resourceSpans"]
    assert {"key": "service.name", "value": {"stringValue": "ctrltrace"}} in resource_spans[
        "resource"
    ]["attributes"]
    [scope_spans] = resource_spans["scopeSpans"]
    assert scope_spans["scope"]["name"] == "ctrltrace"
    spans = scope_spans["spans"]
    for span in spans:
        assert len(span["traceId"]) == 32 and int(span["traceId"], 16)
        assert len(span["spanId"]) == 16 and int(span["spanId"], 16)
        assert span["startTimeUnixNano"].isdigit() and span["endTimeUnixNano"].isdigit()
    by_id = {span["spanId"]: span for span in spans}
    first, second = sorted(
        (s for s in spans if s["name"] == "reconcile configmap"),
        key=lambda s: int(s["startTimeUnixNano"]),
    )
    assert first["startTimeUnixNano"] == str(ns(T0 + 2))
    assert first["kind"] == 5  # SPAN_KIND_CONSUMER
    assert first["status"] == {"code": 2, "message": "RuntimeError: boom"}
    parent = by_id[first["parentSpanId"]]
    assert parent["name"] == "dispatch configmap" and parent["kind"] == 4  # PRODUCER
    assert by_id[parent["parentSpanId"]]["name"] == "event ConfigMap"
    [linked] = first["links"]
    assert by_id[linked["spanId"]]["name"] == "dispatch configmap"
    assert linked["attributes"] == [{"key": "ctrltrace.link", "value": {"stringValue": "dispatch"}}]
    assert "parentSpanId" not in second
    assert [link["spanId"] for link in second["links"]] == [first["spanId"]]
    attrs = {a["key"]: a["value"] for a in first["attributes"]}
    assert attrs["messaging.batch.message_count"] == {"intValue": "2"}
    assert attrs["ctrltrace.queue.wait_s"] == {"doubleValue": 0.002}
    assert attrs["ctrltrace.requeue"] == {"stringValue": "rate_limited"}


def test_the_json_matches_the_official_otlp_encoder_with_hex_ids() -> None:
    tracing = Traced()
    tracing.feed(*realistic_run().records)
    tracing.provider.shutdown()
    spans = tracing.spans
    # protobuf ships no type information: reach it by name, as Any.
    json_format: Any = importlib.import_module("google.protobuf.json_format")
    encoder: Any = importlib.import_module("opentelemetry.exporter.otlp.proto.common.trace_encoder")
    official = json_format.MessageToDict(encoder.encode_spans(spans), use_integers_for_enums=True)

    def hex_ids(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: base64.b64decode(item).hex()
                if key in ("traceId", "spanId", "parentSpanId")
                else hex_ids(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [hex_ids(item) for item in value]
        return value

    assert encode_otlp_json(spans) == hex_ids(official)


def test_replay_makes_the_same_spans_as_the_live_sink_and_closes_what_is_open() -> None:
    story = realistic_run()
    live = Traced()
    live.feed(*story.records)
    story.time = T0 + 9
    running = story.start(request="shop/web")  # its dispatch fell before the journal's window
    replayed = Traced()
    replay(story.records, replayed.provider)
    for tracing in (live, replayed):
        tracing.provider.shutdown()

    def shape(spans: Sequence[ReadableSpan]) -> list[tuple[Any, ...]]:
        return sorted(
            (s.name, s.start_time, s.end_time, sorted(attributes(s).items()), s.parent is None)
            for s in spans
        )

    cut = [
        s
        for s in replayed.spans
        if attributes(s).get("ctrltrace.reconcile_id") == running.reconcile_id
    ]
    assert [attributes(s)["ctrltrace.outcome"] for s in cut] == ["unfinished"]
    assert cut[0].end_time == ns(T0 + 9)
    assert shape([s for s in replayed.spans if s not in cut]) == shape(live.spans)


@pytest.mark.parametrize("flush_every", [0, 400])
def test_replay_into_a_collector_waits_for_it_instead_of_overflowing(flush_every: int) -> None:
    exporter = Stalled(seconds=0.05)  # a collector taking 50 ms a batch
    batch = BatchSettings(max_queue_size=500, max_export_batch_size=250, schedule_delay_s=60)
    provider, _, counter = build_tracing(exporter, batch=batch)
    records = [record for _ in range(250) for record in realistic_run().records]  # 2,000 spans
    replay(records, provider, flush_every=flush_every)
    counter.shutdown(timeout_s=5)
    assert counter.exported + counter.dropped == 2_000
    if flush_every:
        assert counter.dropped == 0
    else:
        assert counter.queue_full > 0


@pytest.mark.parametrize(("start_id", "same_run"), [(5, False), (45, True)])
def test_replay_does_not_follow_causes_across_runs_of_a_journal(
    start_id: int, same_run: bool
) -> None:
    # Record ids restart with each process. Run one: event 1, dispatch 2, events 3 to 41.
    story = RunStory(synced=False, numbered=True)
    story.dispatch(story.event(outcome=EventOutcome.ADDED))
    for _ in range(39):
        story.event()
    # A start naming dispatch 2: with id 5 it is run two's (whose dispatch 2 fell before the
    # journal's window), with id 45 it is run one's own.
    story.time = T0 + 100
    begin = story.start(request="shop/web")
    begin.cause_ids, begin.id = (2,), start_id
    story.end(begin).id = start_id + 1  # its end comes next in the same run
    tracing = Traced()
    replay(story.records, tracing.provider)
    tracing.provider.shutdown()
    parent = tracing.one("reconcile configmap").parent
    assert (parent is not None) is same_run


def test_a_processor_or_queue_needs_an_sdk_provider_for_its_ids() -> None:
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    processor = SimpleSpanProcessor(InMemorySpanExporter())
    with pytest.raises(TypeError, match="TracerProvider"):
        SpanSink(provider.get_tracer("ctrltrace"), processor=processor)
    provider.shutdown()
