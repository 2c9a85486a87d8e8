"""Jaeger and Prometheus on loopback, started and stopped like the control plane.

Test infrastructure, like ``controlplane``: owns finding (or building) the all-in-one Jaeger
binary, the two servers' generated configs and ports (their life as processes is
``servers``'), and the small clients tests use to read them back — Jaeger's ``/api/v3``, Prometheus'
``/api/v1/query`` and ``promtool check metrics``. Prometheus is Debian's ``prometheus``
package, started by hand; the package's own service is never used.

``python -m ctrltrace.envtest.observability --build`` finds or builds Jaeger and prints where
it is (``scripts/_bootstrap.sh`` runs it).
"""

from __future__ import annotations

import abc
import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ctrltrace.envtest.binaries import (
    BinariesNotFoundError,
    GoTool,
    Log,
    ctrltrace_cache,
    find_or_build,
    required_version,
)
from ctrltrace.envtest.servers import LoopbackServers, free_port

JAEGER_GOMOD_DIR = Path(__file__).parent / "gomod-jaeger"
JAEGER_MODULE = "github.com/jaegertracing/jaeger"
JAEGER_TOOL = f"{JAEGER_MODULE}/cmd/jaeger"

# Jaeger's memory store refuses a search deeper than the traces it keeps.
_MAX_TRACES = 100_000


class ObservabilityError(RuntimeError):
    """Jaeger or Prometheus could not be found or started, or a request to it failed."""


# -- finding the binaries ----------------------------------------------------------------------


@dataclass(frozen=True)
class JaegerBinary:
    path: Path
    # The Jaeger module version pinned in gomod-jaeger/, e.g. v1.76.0 (released as Jaeger
    # v2.13.0); a CTRLTRACE_JAEGER binary is taken on trust to be a compatible v2 build.
    version: str
    origin: str  # where it came from, in words ("CTRLTRACE_JAEGER", "cache ...", "built ...")


def jaeger_version(gomod: Path = JAEGER_GOMOD_DIR / "go.mod") -> str:
    """The Jaeger module version the shipped Go module pins."""
    return required_version(gomod, JAEGER_MODULE)


def find_jaeger(
    *, build: bool = True, env: Mapping[str, str] = os.environ, log: Log = print
) -> JaegerBinary:
    """Locate the all-in-one ``jaeger`` binary (Jaeger v2), building it with Go as a last resort.

    Order: ``CTRLTRACE_JAEGER`` (a path to an existing binary); the cache
    (``$XDG_CACHE_HOME/ctrltrace/jaeger/<version>/jaeger``); a Go build into that cache from
    the module in ``gomod-jaeger/``.
    """
    version = jaeger_version()
    if configured := env.get("CTRLTRACE_JAEGER"):
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ObservabilityError(f"CTRLTRACE_JAEGER: {path} is not an executable file")
        return JaegerBinary(path, version, "CTRLTRACE_JAEGER")
    target = ctrltrace_cache(env) / "jaeger" / version
    try:
        origin = find_or_build(
            JAEGER_GOMOD_DIR,
            (GoTool(JAEGER_TOOL, "jaeger"),),
            target,
            # What `jaeger version` and the start-up log report; Jaeger's Makefile sets the same.
            ldflags=f"-X {JAEGER_MODULE}/internal/version.latestVersion={version} -s -w",
            remedy=(
                "either set CTRLTRACE_JAEGER to an existing jaeger (v2, cmd/jaeger) binary or "
                f"install Go >= 1.25 so ctrltrace can build it into {target}"
            ),
            build=build,
            env=env,
            log=log,
        )
    except BinariesNotFoundError as error:
        raise ObservabilityError(str(error)) from error
    return JaegerBinary(target / "jaeger", version, origin)


def debian_tool(name: str) -> Path:
    """``prometheus`` or ``promtool`` from Debian's prometheus package (or anywhere on PATH)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/bin")
    if found is None:
        raise ObservabilityError(
            f"{name} not found: install Debian's prometheus package "
            "(apt-get install --no-install-recommends prometheus; scripts/test does it)"
        )
    return Path(found)


# -- the server lifecycle both share -----------------------------------------------------------


class _LoopbackServer(LoopbackServers):
    """One server process: its ``_launch`` writes the config for fresh ports and ``_spawn``s it.

    It can be paused and resumed on the same ports (a collector that goes away and comes back).
    """

    error = ObservabilityError

    def __init__(self, *, start_timeout: float) -> None:
        super().__init__(start_timeout=start_timeout)
        self._argv: list[str] = []
        self._resumes = 0

    def _launch(self, attempt: int) -> bool:
        self._argv = self._argv_for_fresh_ports(attempt)
        return self._wait(self._spawn(self.name, self._argv, attempt), self._ready)

    @abc.abstractmethod
    def _argv_for_fresh_ports(self, attempt: int) -> list[str]:
        """Choose free ports, write the config for them, and say how to start the server."""

    @abc.abstractmethod
    def _ready(self) -> bool:
        """Whether the server answers, once spawned."""

    def pause(self) -> None:
        """Stop the server process but keep its config and ports, for ``resume``."""
        assert self._servers, f"{self.name} not running"
        self._stop_servers()

    def resume(self) -> None:
        """Start the server again with the same config, on the same ports."""
        assert not self._servers and self._argv, f"{self.name} not paused"
        self._resumes += 1
        server = self._spawn(self.name, self._argv, f"resumed-{self._resumes}")
        if not self._wait(server, self._ready):
            raise self.error(f"{self.name} could not take its ports back on resume")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(server.log_tail(lines) for server in self._servers)


# Loopback servers only: an http_proxy set for package registries must not be asked for them.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _request(url: str, method: str = "GET", timeout: float = 5.0) -> tuple[int, bytes]:
    """``method`` ``url``: the status and body, for error statuses too."""
    # Only http://127.0.0.1 URLs built here reach this, never a file: or user URL.
    request = urllib.request.Request(url, method=method)  # noqa: S310
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def _answers(url: str) -> bool:
    try:
        return _request(url, timeout=2)[0] == 200
    except OSError:
        return False


# -- Jaeger ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundSpan:
    """One span as Jaeger's ``/api/v3`` returns it, with OTLP attribute values unwrapped."""

    trace_id: str  # hex
    span_id: str  # hex
    parent_span_id: str  # hex, "" for a root span
    name: str
    service: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)


class Jaeger(_LoopbackServer):
    """Jaeger v2 all-in-one with in-memory storage on loopback; a context manager.

    >>> with Jaeger() as jaeger:
    ...     exporter = OTLPSpanExporter(endpoint=f"{jaeger.otlp_http_endpoint}/v1/traces")
    """

    name = "jaeger"

    def __init__(self, binary: JaegerBinary | None = None, *, start_timeout: float = 60.0) -> None:
        super().__init__(start_timeout=start_timeout)
        self._binary = binary
        self.otlp_http_endpoint = ""  # "http://127.0.0.1:PORT": OTLP/HTTP, paths /v1/traces…
        self.otlp_grpc_endpoint = ""  # "127.0.0.1:PORT": OTLP/gRPC
        self.query_url = ""  # "http://127.0.0.1:PORT": the query service's HTTP API and UI

    def _argv_for_fresh_ports(self, attempt: int) -> list[str]:
        binary = self._binary = self._binary or find_jaeger()
        grpc, http, query_http, query_grpc = free_port(), free_port(), free_port(), free_port()
        config = self._path(f"config-{attempt}.yaml")
        config.write_text(json.dumps(_jaeger_config(grpc, http, query_http, query_grpc), indent=2))
        self.otlp_http_endpoint = f"http://127.0.0.1:{http}"
        self.otlp_grpc_endpoint = f"127.0.0.1:{grpc}"
        self.query_url = f"http://127.0.0.1:{query_http}"
        return [str(binary.path), f"--config=file:{config}"]

    def _ready(self) -> bool:
        return _answers(f"{self.query_url}/api/v3/services")

    def _api(self, path: str, params: Mapping[str, str] | None = None) -> tuple[int, Any]:
        query = "" if not params else "?" + urllib.parse.urlencode(params)
        status, body = _request(f"{self.query_url}{path}{query}")
        try:
            return status, json.loads(body)
        except json.JSONDecodeError as error:
            raise ObservabilityError(f"jaeger {path}: HTTP {status}, not JSON: {body!r}") from error

    def services(self) -> list[str]:
        status, answer = self._api("/api/v3/services")
        if status != 200:
            raise ObservabilityError(f"jaeger /api/v3/services: HTTP {status}: {answer}")
        return list(answer.get("services", []))

    def find_traces(
        self,
        service: str,
        start: datetime,
        end: datetime,
        *,
        operation: str = "",
        limit: int = 100,
    ) -> list[FoundSpan]:
        """Every span of the traces of ``service`` that started between ``start`` and ``end``.

        ``start`` and ``end`` are required by the API (naive datetimes are taken as UTC);
        ``limit`` is the number of traces searched. No match is an empty list, not an error.
        """
        params = {
            "query.service_name": service,
            "query.start_time_min": _rfc3339(start),
            "query.start_time_max": _rfc3339(end),
            "query.num_traces": str(min(limit, _MAX_TRACES - 1)),
        }
        if operation:
            params["query.operation_name"] = operation
        status, answer = self._api("/api/v3/traces", params)
        if status == 404:  # how the API says "no traces found"
            return []
        if status != 200:
            raise ObservabilityError(f"jaeger /api/v3/traces: HTTP {status}: {answer}")
        return list(_spans(answer["result"].get("resourceSpans", [])))


def _jaeger_config(grpc: int, http: int, query_http: int, query_grpc: int) -> dict[str, Any]:
    """The smallest all-in-one config: OTLP in, memory store, query API; all on loopback.

    Modelled on cmd/jaeger/internal/all-in-one.yaml, without the receivers, extensions and
    telemetry endpoints that would listen on fixed ports (8888, 13133, 5778, 9411, …). JSON is
    YAML, so no YAML writer is needed.
    """
    store = "memstore"
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            # No batch processor: spans are stored as they arrive, so tests need not wait.
            "pipelines": {
                "traces": {"receivers": ["otlp"], "exporters": ["jaeger_storage_exporter"]}
            },
            # "none" keeps the collector's own metrics server off port 8888.
            "telemetry": {"metrics": {"level": "none"}, "traces": {"level": "none"}},
        },
        "extensions": {
            "jaeger_storage": {"backends": {store: {"memory": {"max_traces": _MAX_TRACES}}}},
            "jaeger_query": {
                "storage": {"traces": store},
                # On, the query service traces itself to the default OTLP endpoint :4318.
                "enable_tracing": False,
                "http": {"endpoint": f"127.0.0.1:{query_http}"},
                "grpc": {"endpoint": f"127.0.0.1:{query_grpc}"},
            },
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"127.0.0.1:{grpc}"},
                    "http": {"endpoint": f"127.0.0.1:{http}"},
                }
            }
        },
        "exporters": {"jaeger_storage_exporter": {"trace_storage": store}},
    }


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _spans(resource_spans: Iterable[Mapping[str, Any]]) -> Iterable[FoundSpan]:
    for resource_span in resource_spans:
        resource = _attributes(resource_span.get("resource", {}).get("attributes", []))
        for scope_span in resource_span.get("scopeSpans", []):
            for span in scope_span.get("spans", []):
                yield FoundSpan(
                    # OTLP/JSON: ids in lower-case hex, as W3C traceparent writes them.
                    trace_id=span["traceId"],
                    span_id=span["spanId"],
                    parent_span_id=span.get("parentSpanId", ""),
                    name=span.get("name", ""),
                    service=str(resource.get("service.name", "")),
                    attributes=_attributes(span.get("attributes", [])),
                    resource=resource,
                    raw=dict(span),
                )


def _attributes(pairs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {pair["key"]: _value(pair.get("value", {})) for pair in pairs}


def _value(wrapped: Mapping[str, Any]) -> Any:
    """An OTLP/JSON AnyValue as a Python value (int64 arrives as a string)."""
    if "intValue" in wrapped:
        return int(wrapped["intValue"])
    if "doubleValue" in wrapped:
        return float(wrapped["doubleValue"])
    if "arrayValue" in wrapped:
        return [_value(item) for item in wrapped["arrayValue"].get("values", [])]
    if "kvlistValue" in wrapped:
        return _attributes(wrapped["kvlistValue"].get("values", []))
    if "bytesValue" in wrapped:
        return base64.b64decode(wrapped["bytesValue"])
    for kind in ("stringValue", "boolValue"):
        if kind in wrapped:
            return wrapped[kind]
    return None


# -- Prometheus --------------------------------------------------------------------------------


class Prometheus(_LoopbackServer):
    """Debian's Prometheus on a free loopback port, scraping ``targets`` every second.

    Targets ("host:port" serving ``/metrics``) may be given up front or set later with
    ``scrape``, which reloads the config in place.
    """

    name = "prometheus"

    def __init__(
        self,
        targets: Sequence[str] = (),
        *,
        binary: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(start_timeout=start_timeout)
        self._binary = binary
        self._targets = list(targets)
        self.url = ""  # "http://127.0.0.1:PORT"

    def _argv_for_fresh_ports(self, attempt: int) -> list[str]:
        binary = self._binary = self._binary or debian_tool("prometheus")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._write_config()
        return [
            str(binary),
            f"--config.file={self._path('prometheus.yml')}",
            f"--storage.tsdb.path={self._path(f'data-{attempt}')}",
            f"--web.listen-address=127.0.0.1:{port}",
            # For POST /-/reload, which scrape() uses to change targets without a restart.
            "--web.enable-lifecycle",
        ]

    def _ready(self) -> bool:
        return _answers(f"{self.url}/-/ready")

    def _write_config(self) -> None:
        job = {
            "job_name": "ctrltrace",
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "static_configs": [{"targets": self._targets}],
        }
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [job] if self._targets else [],
        }
        self._path("prometheus.yml").write_text(json.dumps(config, indent=2))

    def scrape(self, targets: Sequence[str]) -> None:
        """Scrape exactly ``targets`` from now on (the config is rewritten and reloaded)."""
        self._targets = list(targets)
        self._write_config()
        status, body = _request(f"{self.url}/-/reload", method="POST", timeout=10)
        if status != 200:
            raise ObservabilityError(f"prometheus reload failed: HTTP {status}: {body.decode()}")

    def _api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        query = "" if not params else "?" + urllib.parse.urlencode(params)
        status, body = _request(f"{self.url}{path}{query}")
        answer = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            raise ObservabilityError(f"prometheus {path}: HTTP {status}: {answer}")
        return answer["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result: ``[{"metric": {labels}, "value": [time, "text"]}, …]``."""
        return list(self._api("/api/v1/query", {"query": promql})["result"])

    def query_until(
        self,
        promql: str,
        condition: Callable[[list[dict[str, Any]]], bool] = bool,
        *,
        timeout: float = 20.0,
    ) -> list[dict[str, Any]]:
        """Repeat ``query`` until ``condition`` holds for its result; that result.

        On timeout the error shows the last result and the scrape targets' health.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if condition(result):
                return result
            if time.monotonic() > deadline:
                raise ObservabilityError(
                    f"{promql} never met the condition in {timeout:.0f}s; last result {result}; "
                    f"targets {self.targets()}"
                )
            time.sleep(0.25)

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets, with their health and last error."""
        return [
            {key: target.get(key) for key in ("scrapeUrl", "health", "lastError")}
            for target in self._api("/api/v1/targets")["activeTargets"]
        ]


def promtool_check_metrics(text: str, *, promtool: Path | None = None) -> tuple[bool, str]:
    """Lint a metrics exposition with ``promtool check metrics``: (passed, its output)."""
    result = subprocess.run(
        [str(promtool or debian_tool("promtool")), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return result.returncode == 0, (result.stdout + result.stderr).strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctrltrace.envtest.observability")
    parser.add_argument(
        "--build",
        action="store_true",
        required=True,
        help="find (or build) the jaeger binary and print where it is",
    )
    parser.parse_args(argv)
    try:
        jaeger = find_jaeger(log=lambda line: print(line, file=sys.stderr))
    except ObservabilityError as error:
        print(error, file=sys.stderr)
        return 4  # the environment is missing something (README's exit codes)
    print(f"jaeger {jaeger.version}: {jaeger.path}\nfrom: {jaeger.origin}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
