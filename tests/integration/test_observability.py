"""Jaeger and Prometheus as the tests start them: spans in over OTLP, metrics scraped for real."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from ctrltrace import Context, LeaseTiming, Manager, Request, Stage
from ctrltrace.envtest import ControlPlane
from ctrltrace.envtest.observability import (
    FoundSpan,
    Jaeger,
    JaegerBinary,
    ObservabilityError,
    Prometheus,
    find_jaeger,
    jaeger_version,
    promtool_check_metrics,
)
from ctrltrace.envtest.pytest_plugin import unique_name
from ctrltrace.envtest.servers import free_port
from ctrltrace.exporters.prometheus import MetricsEndpoint, PrometheusSink

from .conftest import start, stop

ManagerFactory = Callable[..., Manager]
FAST = LeaseTiming(lease_duration=3, renew_deadline=2, retry_period=0.5)


def _executable(path: Path, script: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(") ", 1)[1].startswith("Z")


def _wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_the_jaeger_module_pins_cmd_jaeger_with_jaegers_own_replace() -> None:
    gomod = (Path(__file__).parents[2] / "ctrltrace/envtest/gomod-jaeger/go.mod").read_text()
    assert jaeger_version() == "v1.76.0"
    assert "tool github.com/jaegertracing/jaeger/cmd/jaeger\n" in gomod
    # Copied by scripts/gen-jaeger-gomod.sh from Jaeger's go.mod, which Go ignores in a dependency.
    assert "replace github.com/Shopify/sarama => github.com/Shopify/sarama v1.33.0\n" in gomod


def test_ctrltrace_jaeger_comes_before_the_cache(tmp_path: Path) -> None:
    mine = _executable(tmp_path / "bin" / "jaeger")
    _executable(tmp_path / "ctrltrace" / "jaeger" / jaeger_version() / "jaeger")
    env = {"CTRLTRACE_JAEGER": str(mine), "XDG_CACHE_HOME": str(tmp_path), "PATH": ""}
    assert find_jaeger(env=env) == JaegerBinary(mine, jaeger_version(), "CTRLTRACE_JAEGER")


def test_jaeger_cache_is_keyed_by_version_and_reused(tmp_path: Path) -> None:
    cached = _executable(tmp_path / "ctrltrace" / "jaeger" / "v1.76.0" / "jaeger")
    found = find_jaeger(env={"XDG_CACHE_HOME": str(tmp_path), "PATH": ""})
    assert found.path == cached
    assert found.origin.startswith("cache ")


def test_no_jaeger_and_no_go_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ObservabilityError, match=r"no Go toolchain.*CTRLTRACE_JAEGER"):
        find_jaeger(env={"XDG_CACHE_HOME": str(tmp_path), "PATH": ""})


def test_start_failure_shows_the_log_and_leaves_nothing(tmp_path: Path) -> None:
    broken = _executable(tmp_path / "jaeger", "echo 'pretend config error' >&2; exit 3")
    server = Jaeger(JaegerBinary(broken, "v0", "test"))
    with pytest.raises(ObservabilityError, match="exited with code 3") as failed:
        server.start()
    assert "pretend config error" in str(failed.value)
    assert server.workdir is None
    assert server.pids == []


_OWNER = textwrap.dedent(
    """
    import json, sys, time
    from ctrltrace.envtest.observability import Jaeger, Prometheus
    jaeger, prometheus = Jaeger(), Prometheus()
    jaeger.start()
    prometheus.start()
    print(json.dumps({
        "pids": jaeger.pids + prometheus.pids,
        "dirs": [str(jaeger.workdir), str(prometheus.workdir)],
        "urls": [jaeger.query_url, jaeger.otlp_http_endpoint, prometheus.url],
    }))
    sys.stdout.flush()
    time.sleep(600)
    """
)


def test_sigkill_of_the_owner_leaves_no_processes_ports_or_dirs() -> None:
    owner = subprocess.Popen([sys.executable, "-c", _OWNER], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        started = json.loads(owner.stdout.readline())
    finally:
        owner.kill()
        owner.wait()
    # Jaeger and Prometheus: a process, a folder and a port or two each.
    assert len(started["pids"]) >= 2 and len(started["dirs"]) == 2 and len(started["urls"]) == 3
    assert _wait_until(lambda: all(_gone(pid) for pid in started["pids"]))
    assert _wait_until(lambda: not any(Path(folder).exists() for folder in started["dirs"]))
    for url in started["urls"]:
        with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))


def test_jaeger_answers_api_v3(jaeger: Jaeger) -> None:
    assert isinstance(jaeger.services(), list)
    now = datetime.now(UTC)
    assert jaeger.find_traces(unique_name("nobody"), now - timedelta(minutes=1), now) == []


def test_a_span_sent_over_otlp_http_is_found_with_its_attributes(jaeger: Jaeger) -> None:
    service = unique_name("otlp")
    since = datetime.now(UTC) - timedelta(seconds=5)
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    # Simple, not batch: exports as each span ends, with no background thread to outlive us.
    exporter = OTLPSpanExporter(endpoint=f"{jaeger.otlp_http_endpoint}/v1/traces", timeout=10)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("ctrltrace.tests")
    try:
        with (
            tracer.start_as_current_span(
                "reconcile", attributes={"controller": "configmap", "attempt": 2, "requeue": False}
            ) as parent,
            tracer.start_as_current_span("get") as child,
        ):
            child.set_attribute("k8s.namespace.name", "default")
    finally:
        provider.shutdown()

    spans = _wait_for_spans(jaeger, service, since, count=2)
    by_name = {span.name: span for span in spans}
    assert set(by_name) == {"reconcile", "get"}
    reconcile, get = by_name["reconcile"], by_name["get"]
    assert reconcile.service == get.service == service
    assert reconcile.trace_id == get.trace_id == f"{parent.get_span_context().trace_id:032x}"
    assert reconcile.span_id == f"{parent.get_span_context().span_id:016x}"
    assert reconcile.parent_span_id == ""
    assert get.parent_span_id == reconcile.span_id
    assert reconcile.attributes == {"controller": "configmap", "attempt": 2, "requeue": False}
    assert get.attributes == {"k8s.namespace.name": "default"}


def _wait_for_spans(jaeger: Jaeger, service: str, since: datetime, count: int) -> list[FoundSpan]:
    deadline = time.monotonic() + 15
    spans: list[FoundSpan] = []
    while len(spans) < count:
        assert time.monotonic() < deadline, (
            f"{count} spans of {service} never reached Jaeger (found {spans}); its log:\n"
            f"{jaeger.log_tail()}"
        )
        time.sleep(0.1)
        spans = jaeger.find_traces(service, since, datetime.now(UTC) + timedelta(seconds=5))
    return spans


def test_prometheus_scrapes_controller_runtime_metrics_from_a_running_manager(
    # control_plane first: its fixture replaces the set of session pids the others add to.
    control_plane: ControlPlane,
    prometheus_server: Prometheus,
    kube_namespace: str,
    manager_factory: ManagerFactory,
) -> None:
    target = f"127.0.0.1:{free_port()}"
    prometheus_server.scrape([target])
    lease = "metrics.example.com"
    failed: set[str] = set()

    async def reconcile(ctx: Context, request: Request) -> None:
        if request.name == "flaky" and request.name not in failed:
            failed.add(request.name)
            raise RuntimeError("fails once, then succeeds on the retry")

    def series(metric: str, /, **labels: str) -> str:
        matchers = ",".join(
            f'{key}="{value}"' for key, value in {**labels, "instance": target}.items()
        )
        return f"{metric}{{{matchers}}}"

    def value(result: list[dict[str, Any]]) -> float | None:
        return float(result[0]["value"][1]) if len(result) == 1 else None

    async def until(promql: str, expected: float) -> None:
        await asyncio.to_thread(
            prometheus_server.query_until, promql, lambda result: value(result) == expected
        )

    async def scenario() -> str:
        mgr = manager_factory(
            namespaces=[kube_namespace],
            leader_election=True,
            leader_election_id=lease,
            leader_election_namespace=kube_namespace,
            lease_timing=FAST,
        )
        mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
        sink = PrometheusSink(mgr)
        mgr.add_sink(sink)
        mgr.add(MetricsEndpoint(sink, target))
        running = await start(mgr)
        records = running.records
        try:
            await running.until(lambda: bool(records.where(Stage.WATCH, "synced")))
            for name in ("a", "b", "flaky"):
                control_plane.request(
                    "POST",
                    f"/api/v1/namespaces/{kube_namespace}/configmaps",
                    {"metadata": {"name": name}},
                )
            await running.until(lambda: len(records.where(Stage.RECONCILE, "success")) == 3)
            assert len(records.where(Stage.RECONCILE, "error")) == 1
            # Blocking calls go to threads: this loop must keep serving the scrapes meanwhile.
            configmap = {"controller": "configmap"}
            await until(series("up"), 1)
            await until(
                series("controller_runtime_reconcile_total", **configmap, result="success"), 3
            )
            await until(
                series("controller_runtime_reconcile_total", **configmap, result="error"), 1
            )
            await until(series("workqueue_depth", name="configmap", **configmap), 0)
            await until(series("leader_election_master_status", name=lease), 1)
            return await asyncio.to_thread(_get, f"http://{target}/metrics")
        finally:
            await stop(running)

    exposition = asyncio.run(scenario())
    assert 'leader_election_master_status{name="metrics.example.com"} 1.0' in exposition
    passed, output = promtool_check_metrics(exposition)
    assert passed, f"promtool check metrics:\n{output}"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        text: str = answer.read().decode()
        return text
