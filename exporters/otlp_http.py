"""OTLP/HTTP: span requests POSTed to a collector, as the SDK's OTLP/HTTP exporter sends them.

Installed as ``ctrltrace.exporters.otlp_http``.

Owns ``OtlpHttpExporter``: a ``SpanExporter`` for the SDK's processors that encodes with
``otlp_proto``, and ``send_encoded`` for requests that are bytes already (``build_tracing``'s
queue of spans encoded as they end). The SDK's own exporter offers no public way to send bytes
it did not encode, so ctrltrace owns this piece. Settings come from ``config.OtlpHttpSettings``
(endpoint, headers, compression, TLS files, timeout); retries follow the SDK's exporter:
429, 502, 503 and 504 (after ``Retry-After`` when the collector sends one) and a failed
connection are retried with exponential back-off and jitter while the timeout allows, and
shutdown stops a wait.

It may not raise out of ``export`` or ``send_encoded`` (every failure is a FAILURE or False,
logged once per kind of failure) or read the environment itself. One connection is kept open
and used by one request at a time.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import math
import random
import ssl
import threading
import time
import zlib
from collections.abc import Sequence
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ctrltrace.exporters.config import OtlpHttpSettings
from ctrltrace.exporters.otlp_proto import encode_spans

__all__ = ["OtlpHttpExporter"]

_log = logging.getLogger(__name__)

_RETRYABLE = frozenset({429, 502, 503, 504})
_MAX_ATTEMPTS = 6
_JITTER = 0.2


class OtlpHttpExporter(SpanExporter):
    """Sends ``ExportTraceServiceRequest``s to ``settings.endpoint`` over HTTP(S)."""

    def __init__(self, settings: OtlpHttpSettings) -> None:
        self.settings = settings
        url = urlsplit(settings.endpoint)
        self._https = url.scheme == "https"
        self._host = url.hostname or "localhost"
        self._port = url.port
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._headers = {"Content-Type": "application/x-protobuf", **settings.headers}
        if settings.compression != "none":
            self._headers["Content-Encoding"] = settings.compression
        self._tls = self._tls_context() if self._https else None
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()  # one request at a time on the one connection
        self._closed = threading.Event()
        self._logged: set[str] = set()

    def _tls_context(self) -> ssl.SSLContext:
        settings = self.settings
        context = ssl.create_default_context(cafile=settings.certificate or None)
        if settings.client_certificate:
            context.load_cert_chain(settings.client_certificate, settings.client_key or None)
        return context

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            request = encode_spans(spans)
        except Exception as error:  # a value the encoder refuses costs its batch
            self._log_once("encode", "spans could not be encoded for OTLP: %s", error)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if self.send_encoded(request) else SpanExportResult.FAILURE

    def send_encoded(self, request: bytes) -> bool:
        """Send a serialised ``ExportTraceServiceRequest``; whether the collector took it."""
        if self._closed.is_set():
            return False
        body = self._compress(request)
        deadline = time.monotonic() + self.settings.timeout_s
        for attempt in range(_MAX_ATTEMPTS):
            backoff = 2**attempt * random.uniform(1 - _JITTER, 1 + _JITTER)  # noqa: S311 - jitter
            status, retry_after, why = self._post(body, deadline)
            if status is not None and 200 <= status < 400:
                return True
            if status is not None and status not in _RETRYABLE:
                self._log_once(f"status {status}", "the OTLP collector refused spans: %s", why)
                return False
            if retry_after is not None:
                backoff = retry_after
            last = attempt + 1 == _MAX_ATTEMPTS
            if last or backoff > deadline - time.monotonic() or self._closed.wait(backoff):
                self._log_once("gave up", "spans not exported to the OTLP collector: %s", why)
                return False
        return False

    def _post(self, body: bytes, deadline: float) -> tuple[int | None, float | None, str]:
        """One POST: (status or None when the connection failed, Retry-After seconds, why)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, None, "timed out"
        with self._lock:
            try:
                connection = self._connect(remaining)
                connection.request("POST", self._path, body, self._headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as error:
                self._disconnect()
                return None, None, f"{type(error).__name__}: {error}"
            if response.will_close:
                self._disconnect()
        return response.status, _seconds(response.getheader("Retry-After")), response.reason

    def _connect(self, timeout_s: float) -> http.client.HTTPConnection:
        connection = self._connection
        if connection is None:
            if self._tls is not None:
                connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout_s, context=self._tls
                )
            else:
                connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)
            self._connection = connection
        connection.timeout = timeout_s
        if connection.sock is not None:
            connection.sock.settimeout(timeout_s)
        return connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _compress(self, request: bytes) -> bytes:
        compression = self.settings.compression
        if compression == "gzip":
            return gzip.compress(request)
        if compression == "deflate":
            return zlib.compress(request)
        return request

    def _log_once(self, kind: str, message: str, detail: object) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            _log.warning(message, detail)

    def shutdown(self) -> None:
        self._closed.set()
        with self._lock:
            self._disconnect()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Nothing waits in the exporter itself: its callers hold the queue."""
        return True


def _seconds(retry_after: str | None) -> float | None:
    """A ``Retry-After`` of seconds as a float (an HTTP date is ignored: back-off applies)."""
    if retry_after is None:
        return None
    try:
        seconds = float(retry_after)
    except ValueError:
        return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None
