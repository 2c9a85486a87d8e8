"""ctrltrace's OTLP/HTTP exporter and its settings: what the SDK's exporter would send, and how.

The collector is a local HTTP server that records each request and answers from a script.
"""

from __future__ import annotations

import gzip
import os
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

from ctrltrace.exporters.config import OtlpHttpSettings, TracingConfigError
from ctrltrace.exporters.otlp_http import OtlpHttpExporter
from ctrltrace.exporters.otlp_proto import encode_spans


class Collector:
    """Answers each POST with the next (status, headers) of ``answers``, then 200s."""

    def __init__(self, *answers: tuple[int, dict[str, str]]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as collectors answer

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.requests.append((dict(self.headers), body))
                status, headers = collector.answers.pop(0) if collector.answers else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = False
        self._thread = threading.Thread(target=self._server.serve_forever)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def spans() -> list[ReadableSpan]:
    context = SpanContext(0xABC, 1, False, TraceFlags(TraceFlags.SAMPLED))
    return [
        ReadableSpan(
            name="event ConfigMap",
            context=context,
            resource=Resource({"service.name": "t"}),
            start_time=1,
            end_time=2,
        )
    ]


@contextmanager
def exporter_for(collector: Collector, **settings: Any) -> Iterator[OtlpHttpExporter]:
    """An exporter to ``collector``; both are closed afterwards."""
    exporter = OtlpHttpExporter(
        OtlpHttpSettings(endpoint=collector.endpoint, timeout_s=5.0, **settings)
    )
    try:
        yield exporter
    finally:
        exporter.shutdown()
        collector.close()


@pytest.fixture
def collector() -> Collector:
    return Collector()


def test_a_request_goes_out_as_protobuf_with_the_configured_headers(collector: Collector) -> None:
    with exporter_for(collector, headers={"authorization": "Bearer t"}) as exporter:
        assert exporter.export(spans()).name == "SUCCESS"
        assert exporter.send_encoded(b"")  # bytes encoded elsewhere go out as they are
    (headers, body), (_, empty) = collector.requests
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["authorization"] == "Bearer t"
    assert body == encode_spans(spans()) and empty == b""
    assert ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans


@pytest.mark.parametrize(
    ("compression", "decompress"), [("gzip", gzip.decompress), ("deflate", zlib.decompress)]
)
def test_compression_is_applied_and_announced(
    compression: str, decompress: Any, collector: Collector
) -> None:
    with exporter_for(collector, compression=compression) as exporter:
        assert exporter.send_encoded(b"payload " * 100)
    [(headers, body)] = collector.requests
    assert headers["Content-Encoding"] == compression
    assert decompress(body) == b"payload " * 100


def test_throttling_is_retried_after_the_time_the_collector_asks_for() -> None:
    collector = Collector((429, {"Retry-After": "0"}), (503, {"Retry-After": "0"}))
    with exporter_for(collector) as exporter:
        assert exporter.send_encoded(b"x")
    assert len(collector.requests) == 3  # two refusals, then accepted


def test_a_refusal_that_retrying_cannot_fix_fails_at_once() -> None:
    collector = Collector((400, {}))
    with exporter_for(collector) as exporter:
        assert not exporter.send_encoded(b"x")
        assert exporter.export(spans()).name == "SUCCESS"  # the next one goes through
    assert len(collector.requests) == 2


def test_after_shutdown_nothing_is_sent(collector: Collector) -> None:
    with exporter_for(collector) as exporter:
        exporter.shutdown()
        assert not exporter.send_encoded(b"x")
    assert collector.requests == []


@pytest.mark.usefixtures("no_otel_env")
def test_settings_come_from_the_traces_variables_before_the_generic_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=two%20words")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem")
    generic = OtlpHttpSettings.from_env(None, 3.0)
    assert generic == OtlpHttpSettings(
        endpoint="http://collector:4318/v1/traces",
        timeout_s=3.0,
        headers={"a": "1", "b": "two words"},
        compression="gzip",
        certificate="/ca.pem",
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example/custom")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "c=3")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none")
    specific = OtlpHttpSettings.from_env(None, 3.0)
    assert (specific.endpoint, dict(specific.headers), specific.compression) == (
        "https://traces.example/custom",  # used as given, no path added
        {"c": "3"},
        "none",
    )
    # An endpoint given outright is a base URL, as --otlp-endpoint takes it.
    assert OtlpHttpSettings.from_env("http://here:4318", 1.0).endpoint == (
        "http://here:4318/v1/traces"
    )
    assert OtlpHttpSettings.from_env("http://here/v1/traces", 1.0).endpoint == (
        "http://here/v1/traces"
    )


@pytest.mark.usefixtures("no_otel_env")
def test_settings_that_cannot_work_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OtlpHttpSettings.from_env(None, 1.0).endpoint == "http://localhost:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli")
    with pytest.raises(TracingConfigError, match="compression 'brotli'"):
        OtlpHttpSettings.from_env(None, 1.0)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_COMPRESSION")
    with pytest.raises(TracingConfigError, match="not an http"):
        OtlpHttpSettings.from_env("collector:4318", 1.0)
