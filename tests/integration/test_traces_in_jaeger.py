"""Spans reach a real Jaeger: live from `ctrltrace run`, and replayed by `ctrltrace export`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ctrltrace.envtest import ControlPlane
from ctrltrace.envtest.observability import FoundSpan, Jaeger
from ctrltrace.journal import Journal, JournalError
from ctrltrace.records import Record, Stage

FLAKY_APP = """
import ctrltrace as ct

mgr = ct.Manager(health_probe_bind_address="0", metrics_bind_address="0")
failed = set()

async def reconcile(ctx, request):
    ctx.log.info("reconciling")
    if request.name == "flaky" and request.name not in failed:
        failed.add(request.name)
        raise RuntimeError("first attempt fails")

mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
"""


def _spans(jaeger: Jaeger, service: str, since: datetime, want: int) -> list[FoundSpan]:
    deadline = time.monotonic() + 30
    spans: list[FoundSpan] = []
    while time.monotonic() < deadline:
        spans = jaeger.find_traces(service, since, datetime.now(UTC) + timedelta(minutes=1))
        if len([s for s in spans if s.name.startswith("reconcile")]) >= want:
            return spans
        time.sleep(0.5)
    raise AssertionError(f"Jaeger has {len(spans)} spans for {service}: {[s.name for s in spans]}")


def _wait_for_reconciles(journal: Path, request: str, count: int) -> None:
    """Wait until the run's journal holds ``count`` ended reconciles of ``request``."""
    deadline = time.monotonic() + 30
    ended: list[Record] = []
    while len(ended) < count:
        assert time.monotonic() < deadline, f"{len(ended)} reconciles of {request} journaled"
        time.sleep(0.2)
        with contextlib.suppress(JournalError), Journal(journal) as reader:  # not there yet
            ended = [
                r
                for r in reader.reconciles()
                if r.stage == Stage.RECONCILE and r.request == request
            ]


def _check_shape(spans: list[FoundSpan], namespace: str) -> None:
    by_id = {span.span_id: span for span in spans}
    reconciles = [
        s
        for s in spans
        if s.name == "reconcile configmap"
        and s.attributes.get("ctrltrace.request") == f"{namespace}/flaky"
    ]
    assert len(reconciles) == 2
    first, retry = sorted(reconciles, key=lambda s: int(s.raw["startTimeUnixNano"]))
    dispatch = by_id[first.parent_span_id]
    event = by_id[dispatch.parent_span_id]
    assert dispatch.name == "dispatch configmap" and event.name == "event ConfigMap"
    assert event.attributes["k8s.namespace.name"] == namespace
    assert event.attributes["ctrltrace.event.type"] == "ADDED"
    assert dispatch.attributes["ctrltrace.outcome"] == "queued"
    assert first.attributes["ctrltrace.outcome"] == "error"
    assert first.attributes["ctrltrace.reconcile_id"]
    assert retry.attributes["ctrltrace.outcome"] == "success"
    # The retry links to the reconcile that asked for it rather than nesting under it.
    assert first.span_id in {link["spanId"] for link in retry.raw.get("links", [])}
    assert retry.parent_span_id != first.span_id


def test_run_sends_event_dispatch_and_reconcile_spans_to_jaeger(
    control_plane: ControlPlane, kube_namespace: str, jaeger: Jaeger, tmp_path: Path
) -> None:
    (tmp_path / "flakyapp.py").write_text(FLAKY_APP)
    service = f"ctrltrace-test-{kube_namespace}"
    since = datetime.now(UTC) - timedelta(seconds=5)
    env = {**os.environ, "OTEL_SERVICE_NAME": service}
    command = [
        sys.executable, "-m", "ctrltrace", "run", "flakyapp:mgr",
        "--kubeconfig", str(control_plane.kubeconfig), "--namespace", kube_namespace,
        "--otlp-endpoint", jaeger.otlp_http_endpoint, "--log-format", "json",
        "--journal", str(tmp_path / "journal.sqlite"),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        control_plane.request(
            "POST",
            f"/api/v1/namespaces/{kube_namespace}/configmaps",
            {"metadata": {"name": "flaky"}},
        )
        _wait_for_reconciles(tmp_path / "journal.sqlite", f"{kube_namespace}/flaky", 2)
        process.send_signal(signal.SIGINT)
        _, logs = process.communicate(timeout=30)
        assert process.returncode == 0, logs
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    spans = _spans(jaeger, service, since, want=2)
    _check_shape(spans, kube_namespace)
    # Logs inside a reconcile carry the ids of its span.
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    reconciling = [line for line in lines if line.get("event") == "reconciling"]
    span_ids = {s.span_id for s in spans if s.name == "reconcile configmap"}
    assert reconciling and all(line["span_id"] in span_ids for line in reconciling)
    assert all(line["trace_id"] for line in reconciling)

    # The same journal, replayed by `ctrltrace export` under another service name.
    replayed = f"{service}-replayed"
    export = subprocess.run(
        [sys.executable, "-m", "ctrltrace", "export", "--journal", str(tmp_path / "journal.sqlite"),
         "--otlp-endpoint", jaeger.otlp_http_endpoint],
        env={**os.environ, "OTEL_SERVICE_NAME": replayed}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert export.returncode == 0, export.stdout + export.stderr
    assert "0 dropped, 0 failed" in export.stdout
    _check_shape(_spans(jaeger, replayed, since, want=2), kube_namespace)

    artifact = tmp_path / "traces.json"
    written = subprocess.run(
        [sys.executable, "-m", "ctrltrace", "export", "--journal", str(tmp_path / "journal.sqlite"),
         "--otlp-json", str(artifact)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    document = json.loads(artifact.read_text())
    names = {
        span["name"]
        for resource in document["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    }
    assert {"event ConfigMap", "dispatch configmap", "reconcile configmap"} <= names


def test_an_unreachable_collector_costs_spans_not_reconciles(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    import urllib.request

    from ctrltrace.envtest.servers import free_port

    (tmp_path / "flakyapp.py").write_text(FLAKY_APP)
    metrics_port, closed_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "ctrltrace", "run", "flakyapp:mgr",
        "--kubeconfig", str(control_plane.kubeconfig), "--namespace", kube_namespace,
        "--otlp-endpoint", f"http://127.0.0.1:{closed_port}",
        "--metrics-bind-address", f"127.0.0.1:{metrics_port}",
        "--journal", str(tmp_path / "journal.sqlite"),
    ]  # fmt: skip
    env = {**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_EXPORTER_OTLP_TIMEOUT": "1"}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        for n in range(20):
            control_plane.request(
                "POST",
                f"/api/v1/namespaces/{kube_namespace}/configmaps",
                {"metadata": {"name": f"cm-{n}"}},
            )
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as page:
                    text = page.read().decode()
            except OSError:
                text = ""
            done = (
                'controller_runtime_reconcile_total{controller="configmap",result="success"} 20.0'
            )
            failed = [
                line
                for line in text.splitlines()
                if line.startswith('ctrltrace_spans_dropped_total{reason="export_failed"}')
            ]
            if done in text and failed and float(failed[0].split()[-1]) > 0:
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"reconciles or failure counts missing:\n{text}")
        process.send_signal(signal.SIGINT)
        _, logs = process.communicate(timeout=30)
        assert process.returncode == 0, logs
        assert "Traceback" not in logs
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _metric(port: int, prefix: str) -> float:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as page:
            text = page.read().decode()
    except OSError:
        return -1.0
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].split()[-1]) if lines else -1.0


def _until(condition: object, within: float = 30.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.2)


def test_jaeger_stopped_mid_run_then_restarted(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    from ctrltrace.envtest.servers import free_port

    (tmp_path / "flakyapp.py").write_text(FLAKY_APP.replace('metrics_bind_address="0"', ""))
    service = f"ctrltrace-restart-{kube_namespace}"
    metrics_port = free_port()
    successes = 'controller_runtime_reconcile_total{controller="configmap",result="success"}'
    failed = 'ctrltrace_spans_dropped_total{reason="export_failed"}'

    def create(name: str) -> None:
        control_plane.request(
            "POST", f"/api/v1/namespaces/{kube_namespace}/configmaps", {"metadata": {"name": name}}
        )

    with Jaeger() as jaeger:
        env = {
            **os.environ,
            "OTEL_SERVICE_NAME": service,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
        }
        command = [
            sys.executable, "-m", "ctrltrace", "run", "flakyapp:mgr",
            "--kubeconfig", str(control_plane.kubeconfig), "--namespace", kube_namespace,
            "--otlp-endpoint", jaeger.otlp_http_endpoint,
            "--metrics-bind-address", f"127.0.0.1:{metrics_port}",
            "--journal", str(tmp_path / "journal.sqlite"),
        ]  # fmt: skip
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
        )
        try:
            since = datetime.now(UTC) - timedelta(seconds=5)
            create("before")
            _until(lambda: _metric(metrics_port, successes) >= 1)
            _spans(jaeger, service, since, want=1)

            jaeger.pause()
            for n in range(5):
                create(f"during-{n}")
            # Reconciles go on while the collector is gone; the lost spans are counted.
            _until(lambda: _metric(metrics_port, successes) >= 6)
            _until(lambda: _metric(metrics_port, failed) > 0)

            jaeger.resume()
            resumed = datetime.now(UTC) - timedelta(seconds=1)
            create("after")
            _until(lambda: _metric(metrics_port, successes) >= 7)
            spans = _spans(jaeger, service, resumed, want=1)
            requests = {s.attributes.get("ctrltrace.request") for s in spans}
            assert f"{kube_namespace}/after" in requests  # export resumed
            process.send_signal(signal.SIGINT)
            _, logs = process.communicate(timeout=30)
            assert process.returncode == 0, logs
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
