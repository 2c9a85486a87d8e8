"""Tracing's configuration: ``--otlp-endpoint`` and the standard ``OTEL_*`` variables.

Installed as ``ctrltrace.exporters.config``.

Owns reading the environment, as the OpenTelemetry SDK and its OTLP/HTTP exporter read it:
whether tracing is on and over which protocol (``OTEL_SDK_DISABLED``, ``OTEL_TRACES_EXPORTER``,
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` and ``…_PROTOCOL``), how spans wait and go out
(``OTEL_BSP_*``: ``BatchSettings``), and where and how OTLP/HTTP requests go
(``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``, ``…_HEADERS``, ``…_COMPRESSION``,
``…_CERTIFICATE``, ``…_CLIENT_KEY``, ``…_CLIENT_CERTIFICATE``: ``OtlpHttpSettings``). A value
that cannot work is a ``TracingConfigError`` whose message says how to fix it.

It may not build anything or send anything: ``tracing`` wires what this module reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_CERTIFICATE,
    OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE,
    OTEL_EXPORTER_OTLP_CLIENT_KEY,
    OTEL_EXPORTER_OTLP_COMPRESSION,
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_HEADERS,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE,
    OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE,
    OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY,
    OTEL_EXPORTER_OTLP_TRACES_COMPRESSION,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_HEADERS,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_SDK_DISABLED,
    OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG,
)
from opentelemetry.util.re import parse_env_headers

__all__ = [
    "BatchSettings",
    "OtlpHttpSettings",
    "TracingConfigError",
    "sampler_setting",
    "wanted_protocol",
]

Compression = Literal["none", "gzip", "deflate"]
_COMPRESSIONS: tuple[Compression, ...] = ("none", "gzip", "deflate")
OTEL_TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"  # read by the SDK's auto-configuration only
_TRACES_PATH = "/v1/traces"
_DEFAULT_ENDPOINT = "http://localhost:4318"


class TracingConfigError(ValueError):
    """Tracing is asked for in a way that cannot work; the message says how to fix it."""


def _flag(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip().lower()


def sampler_setting(environ: Mapping[str, str] = os.environ) -> str:
    """The sampler the SDK takes from ``OTEL_TRACES_SAMPLER[_ARG]``, as "name" or "name:arg"."""
    name = _flag(environ, OTEL_TRACES_SAMPLER) or "parentbased_always_on"
    argument = environ.get(OTEL_TRACES_SAMPLER_ARG, "").strip()
    return f"{name}:{argument}" if argument and "traceidratio" in name else name


def wanted_protocol(
    endpoint: str | None, protocol: str | None, environ: Mapping[str, str] = os.environ
) -> str | None:
    """The OTLP protocol tracing should use, or None when tracing is off.

    With no ``endpoint`` tracing is on when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set and ``OTEL_TRACES_EXPORTER`` is not "none";
    ``OTEL_SDK_DISABLED=true`` turns it off regardless. ``protocol`` wins, else
    ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` or ``OTEL_EXPORTER_OTLP_PROTOCOL``, else
    "http/protobuf".
    """
    if _flag(environ, OTEL_SDK_DISABLED) == "true":
        return None
    if endpoint is None and (
        _flag(environ, OTEL_TRACES_EXPORTER) == "none"
        or not (
            environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
            or environ.get(OTEL_EXPORTER_OTLP_ENDPOINT)
        )
    ):
        return None
    return (
        protocol
        or _flag(environ, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)
        or _flag(environ, OTEL_EXPORTER_OTLP_PROTOCOL)
        or "http/protobuf"
    )


@dataclass(frozen=True)
class BatchSettings:
    """How spans wait for export and go out.

    Every event makes about three spans (event, dispatch, reconcile), so 20,000 queued spans
    hold most of a second of the fastest burst one core can trace (bench/README.md) and
    minutes of ordinary traffic (the SDK's default, 2,048, drops most of a burst), yet stay
    bounded when the collector is away: a finished span is about 3 KB, so about 60 MB at
    most. Batches of 2,048 take a burst out in few requests, well under the
    collectors' request limits; half a second keeps traces near live in Jaeger; and a
    five-second export timeout keeps a collector that does not answer from holding the export
    thread, or shutdown, for long.
    """

    max_queue_size: int = 20_000
    max_export_batch_size: int = 2_048
    schedule_delay_s: float = 0.5
    export_timeout_s: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> BatchSettings:
        """The defaults, overridden by ``OTEL_BSP_*`` where set (times in milliseconds)."""
        default = cls()

        def number(name: str, value: float) -> float:
            raw = environ.get(name, "").strip()
            try:
                return float(raw) if raw else value
            except ValueError as error:
                raise TracingConfigError(f"{name}={raw!r} is not a number") from error

        return cls(
            max_queue_size=int(number("OTEL_BSP_MAX_QUEUE_SIZE", default.max_queue_size)),
            max_export_batch_size=int(
                number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", default.max_export_batch_size)
            ),
            schedule_delay_s=number("OTEL_BSP_SCHEDULE_DELAY", default.schedule_delay_s * 1e3)
            / 1e3,
            export_timeout_s=number("OTEL_BSP_EXPORT_TIMEOUT", default.export_timeout_s * 1e3)
            / 1e3,
        )


@dataclass(frozen=True)
class OtlpHttpSettings:
    """Where OTLP/HTTP span requests go and how, as the SDK's OTLP/HTTP exporter reads it.

    ``endpoint`` is the full URL, ``/v1/traces`` included; ``headers`` are sent with every
    request; ``compression`` is applied to the body; the three files are a CA bundle to trust
    and a client key and certificate to present (paths, "" for none); ``timeout_s`` bounds one
    export, retries included.
    """

    endpoint: str
    timeout_s: float
    headers: Mapping[str, str] = field(default_factory=dict)
    compression: Compression = "none"
    certificate: str = ""
    client_key: str = ""
    client_certificate: str = ""

    @classmethod
    def from_env(
        cls, endpoint: str | None, timeout_s: float, environ: Mapping[str, str] = os.environ
    ) -> OtlpHttpSettings:
        """``endpoint`` (a base URL; ``/v1/traces`` is added unless present) or else the
        variables: the traces-specific one first, then the generic one (to which
        ``/v1/traces`` is added), then ``http://localhost:4318/v1/traces``."""

        def either(traces: str, generic: str) -> str:
            return environ.get(traces, "").strip() or environ.get(generic, "").strip()

        if endpoint is not None:
            url = _with_traces_path(endpoint)
        elif traces_endpoint := environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "").strip():
            url = traces_endpoint
        else:
            base = environ.get(OTEL_EXPORTER_OTLP_ENDPOINT, "").strip() or _DEFAULT_ENDPOINT
            url = f"{base.rstrip('/')}{_TRACES_PATH}"
        compression = (
            either(OTEL_EXPORTER_OTLP_TRACES_COMPRESSION, OTEL_EXPORTER_OTLP_COMPRESSION).lower()
            or "none"
        )
        if compression not in _COMPRESSIONS:
            raise TracingConfigError(
                f"OTLP compression {compression!r} is not supported: use none, gzip or deflate"
            )
        if not url.startswith(("http://", "https://")):
            raise TracingConfigError(f"the OTLP endpoint {url!r} is not an http(s) URL")
        headers = either(OTEL_EXPORTER_OTLP_TRACES_HEADERS, OTEL_EXPORTER_OTLP_HEADERS)
        return cls(
            endpoint=url,
            timeout_s=timeout_s,
            headers=parse_env_headers(headers, liberal=True),
            compression=compression,  # checked just above
            certificate=either(
                OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE, OTEL_EXPORTER_OTLP_CERTIFICATE
            ),
            client_key=either(OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY, OTEL_EXPORTER_OTLP_CLIENT_KEY),
            client_certificate=either(
                OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE, OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE
            ),
        )


def _with_traces_path(url: str) -> str:
    base = url.rstrip("/")
    return base if base.endswith(_TRACES_PATH) else f"{base}{_TRACES_PATH}"
