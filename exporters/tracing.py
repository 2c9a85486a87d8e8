"""Tracing for ctrltrace: spans from records, exported over OTLP, set up as OpenTelemetry is.

Installed as ``ctrltrace.exporters.tracing``; the entry point the CLI and users import.

Owns ``configure_tracing``: tracing from ``--otlp-endpoint`` or the standard ``OTEL_*``
variables (read by ``config``), exported over OTLP/HTTP (``otlp_http``) or gRPC through the
counted pipeline of ``export``. The rest lives in one module per role, the public names
re-exported here: ``spans`` (the record sink, log correlation and replay), ``builders`` (how
the sink's spans are made and handed on), ``export`` (batches, queues and drop counting),
``otlp_http`` (the OTLP/HTTP exporter), ``config`` (the environment). The names spans carry
are ``ctrltrace.spanmodel``'s, which readers of the traces share.

It may not be imported by the runtime core: the CLI attaches the sink only when tracing is
configured, so without it no span work is done at all.
"""

from __future__ import annotations

import importlib

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from ctrltrace.exporters.config import (
    BatchSettings,
    OtlpHttpSettings,
    TracingConfigError,
    wanted_protocol,
)
from ctrltrace.exporters.export import DropCounter, build_tracing
from ctrltrace.exporters.otlp_http import OtlpHttpExporter
from ctrltrace.exporters.spans import SpanSink, replay, trace_ids_processor

__all__ = [
    "BatchSettings",
    "DropCounter",
    "OtlpHttpExporter",
    "SpanSink",
    "TracingConfigError",
    "build_tracing",
    "configure_tracing",
    "replay",
    "trace_ids_processor",
]


def configure_tracing(
    endpoint: str | None,
    *,
    service_name: str | None = None,
    protocol: str | None = None,
    batch: BatchSettings | None = None,
) -> tuple[TracerProvider, SpanSink, DropCounter] | None:
    """Tracing from ``--otlp-endpoint``, or else the standard ``OTEL_*`` variables; None if off.

    ``endpoint`` is a base URL like ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``/v1/traces`` is added
    for HTTP unless present). With no endpoint, tracing is on when
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and
    ``OTEL_TRACES_EXPORTER`` is not "none". ``OTEL_SDK_DISABLED=true`` turns it off regardless.
    ``protocol`` is "http/protobuf" (the default) or "grpc" (needs
    opentelemetry-exporter-otlp-proto-grpc); when None, ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``
    or ``OTEL_EXPORTER_OTLP_PROTOCOL`` decides. Raises TracingConfigError for what cannot work.
    """
    protocol = wanted_protocol(endpoint, protocol)
    if protocol is None:
        return None
    batch = batch or BatchSettings.from_env()
    exporter = _otlp_exporter(endpoint, protocol, batch.export_timeout_s)
    return build_tracing(exporter, service_name=service_name, batch=batch)


def _otlp_exporter(endpoint: str | None, protocol: str, timeout_s: float) -> SpanExporter:
    if protocol == "http/protobuf":
        return OtlpHttpExporter(OtlpHttpSettings.from_env(endpoint, timeout_s))
    if protocol == "grpc":
        try:
            # Optional: imported by name so that neither mypy nor start-up needs it installed.
            grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        except ImportError as error:
            raise TracingConfigError(
                "OTLP over gRPC needs the opentelemetry-exporter-otlp-proto-grpc package "
                "(pip install opentelemetry-exporter-otlp-proto-grpc), or use http/protobuf"
            ) from error
        # With endpoint None it reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT itself.
        exporter: SpanExporter = grpc.OTLPSpanExporter(endpoint=endpoint, timeout=timeout_s)
        return exporter
    raise TracingConfigError(
        f"OTLP protocol {protocol!r} is not supported: use http/protobuf or grpc"
    )
