"""The span export pipeline: batches to an exporter, and every span it loses counted.

Installed as ``ctrltrace.exporters.export``.

Owns ``build_tracing`` (an SDK tracer provider, its ``SpanSink`` and a ``DropCounter`` for one
exporter) and the two pipelines it builds. For ctrltrace's own OTLP/HTTP exporter the sink
encodes each span as it ends and offers the bytes to a bounded queue that a thread of its own
sends in batches (``_SpanQueue``). For any other exporter finished spans go through the SDK's
``BatchSpanProcessor`` behind a gate that refuses, and counts, what the processor would drop
unseen (``_GatedBatchProcessor``, ``_CountingExporter``). Either way every span ends up counted
as exported, failed, dropped for a full queue, or unsent at shutdown.

It may not block or raise on the sink's path (a full queue drops and counts), or hold
shutdown longer than asked for a collector that does not answer.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from ctrltrace.exporters.builders import SCOPE
from ctrltrace.exporters.config import BatchSettings, TracingConfigError, sampler_setting
from ctrltrace.exporters.otlp_http import OtlpHttpExporter
from ctrltrace.exporters.otlp_proto import encode_request
from ctrltrace.exporters.spans import SpanSink
from ctrltrace.spanmodel import SAMPLER

__all__ = ["DropCounter", "build_tracing"]


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
    ``OTEL_TRACES_SAMPLER`` (parent-based always-on by default), and the resource says which
    (``ctrltrace.sampler``). Call
    ``DropCounter.shutdown()`` when done: nothing registers it to run at exit.
    """
    resource = Resource.create({SERVICE_NAME: service_name} if service_name else {})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "ctrltrace"}))
    # Readers of the traces must know whether traces are missing because the sampler left
    # them out. (Which replica: the SDK gives each process a service.instance.id, unless
    # OTEL_RESOURCE_ATTRIBUTES sets one, such as a pod's uid from the downward API.)
    resource = resource.merge(Resource({SAMPLER: sampler_setting()}))
    # Not at exit: a collector that is away would hold the exit for the SDK's 30 s.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    counter = DropCounter(provider)
    counting = _CountingExporter(exporter, counter)
    try:
        processor = _GatedBatchProcessor(counting, counter, batch or BatchSettings.from_env())
    except ValueError as error:  # the batch processor's own checks: sizes and delay positive
        raise TracingConfigError(f"span batch settings: {error}") from error
    provider.add_span_processor(processor)
    if isinstance(exporter, OtlpHttpExporter):
        # The sink's spans skip the processors: encoded as they end, sent from their own queue.
        frame = functools.partial(encode_request, resource, SCOPE)
        queue = _SpanQueue(exporter.send_encoded, frame, counter, batch or BatchSettings.from_env())
        counter.queue = queue
        return provider, SpanSink(provider, queue=queue), counter
    return provider, SpanSink(provider, processor=processor), counter
