"""`explain --traces`: two replicas with leader election export to one real Jaeger; the leader
is killed mid-run; the answer from the traces is the survivor's, and names both replicas."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ctrltrace.envtest import ControlPlane
from ctrltrace.envtest.observability import Jaeger
from ctrltrace.evidence.traces import TraceEvidence
from ctrltrace.journal import Journal, JournalError, JournalWriter
from ctrltrace.records import Record, Stage
from ctrltrace.tui.app import TraceApp
from ctrltrace.tui.feed import EvidenceFeed
from ctrltrace.tui.table import LiveTable

from ..unit.test_traces_evidence import _comparable, _explained, _jaeger, _otlp
from ..unit.test_tui import (  # noqa: F401  # utc: an autouse fixture, used by being imported
    app_on,
    run,
    screen_text,
    settled,
    utc,
)
from .test_tui_real import (  # noqa: F401  # fixtures, used by being imported
    SIZE,
    RecordedRun,
    fixed_journal,
    recorded_run,
)

APP = """
import ctrltrace as ct

mgr = ct.Manager(
    health_probe_bind_address="0", metrics_bind_address="0", leader_election=True,
    leader_election_id="traces.example.com",
    lease_timing=ct.LeaseTiming(lease_duration=3, renew_deadline=2, retry_period=0.5),
)

async def reconcile(ctx, request):
    return None

mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
"""


def _records(journal: Path) -> list[Record]:
    with contextlib.suppress(JournalError), Journal(journal) as reader:  # not there yet
        return reader.window(0, time.time() + 60)
    return []


def _until(condition: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"waited {within}s for {what}"
        time.sleep(0.2)


def _reconciled(journal: Path, request: str, count: int = 1) -> Callable[[], bool]:
    def done() -> bool:
        ended = [
            r for r in _records(journal) if r.stage is Stage.RECONCILE and r.request == request
        ]
        return len(ended) >= count

    return done


def _explain(*args: str) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "ctrltrace", "explain", *args, "--json", "--limit", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


@contextlib.contextmanager
def _replica(
    name: str,
    tmp_path: Path,
    plane: ControlPlane,
    namespace: str,
    jaeger: Jaeger,
    service: str,
    kubeconfig: Path | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """`ctrltrace run tracedapp:mgr` as replica ``name`` (its pod name), caching ``namespace``
    and taking its Lease there, as the control plane's admin or as ``kubeconfig``'s identity;
    killed on leaving unless it has exited."""
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": service,
        "OTEL_RESOURCE_ATTRIBUTES": f"k8s.pod.name={name},service.instance.id=uid-{name}",
    }
    command = [
        sys.executable, "-m", "ctrltrace", "run", "tracedapp:mgr",
        "--kubeconfig", str(kubeconfig or plane.kubeconfig), "--namespace", namespace,
        "--leader-election-namespace", namespace,
        "--otlp-endpoint", jaeger.otlp_http_endpoint,
        "--journal", str(tmp_path / f"{name}.sqlite"),
    ]  # fmt: skip
    log = tmp_path / f"{name}.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=stderr, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def _spans_of(
    jaeger: Jaeger,
    service: str,
    pod: str,
    request: str | None = None,
    *,
    name: str = "reconcile",
    outcome: str | None = None,
    count: int = 1,
) -> Callable[[], bool]:
    """Whether Jaeger holds ``count`` spans or more of ``pod``'s in ``service`` whose name starts
    with ``name`` ("reconcile", "dispatch", "watch ConfigMap", "lease standby"), about
    ``request`` and with ``outcome`` when they are given."""

    def there() -> bool:
        from datetime import UTC, datetime, timedelta

        now = datetime.now(UTC)
        spans = jaeger.find_traces(service, now - timedelta(minutes=10), now, limit=1000)
        found = [
            s
            for s in spans
            if s.resource.get("k8s.pod.name") == pod
            and s.name.startswith(name)
            and request in (None, s.attributes.get("ctrltrace.request"))
            and outcome in (None, s.attributes.get("ctrltrace.outcome"))
        ]
        return len(found) >= count

    return there


def test_explain_from_traces_spans_a_takeover(
    control_plane: ControlPlane, kube_namespace: str, jaeger: Jaeger, tmp_path: Path
) -> None:
    (tmp_path / "tracedapp.py").write_text(APP)
    service = f"ctrltrace-takeover-{kube_namespace}"
    configmaps = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    request = f"{kube_namespace}/subject"
    control_plane.request("POST", configmaps, {"metadata": {"name": "subject"}})
    a_journal, b_journal = tmp_path / "replica-a.sqlite", tmp_path / "replica-b.sqlite"
    args = (tmp_path, control_plane, kube_namespace, jaeger, service)
    with _replica("replica-a", *args) as leader:
        _until(_reconciled(a_journal, request), "replica-a to reconcile the subject")
        with _replica("replica-b", *args) as survivor:

            def standby() -> bool:
                log = (tmp_path / "replica-b.log").read_text()
                assert survivor.poll() is None, f"replica-b exited: {log[-2000:]}"
                return any(
                    r.stage is Stage.LEASE and r.outcome == "standby" for r in _records(b_journal)
                )

            _until(standby, "replica-b to stand by", within=60)
            # The leader's spans must be in Jaeger before it dies: a killed process exports
            # nothing more.
            _until(_spans_of(jaeger, service, "replica-a", request), "replica-a's spans")
            leader.send_signal(signal.SIGKILL)
            leader.wait()
            _until(_reconciled(b_journal, request), "replica-b to take over", within=45)
            control_plane.request(
                "PATCH",
                f"{configmaps}/subject",
                {"data": {"changed": "after the takeover"}},
                content_type="application/merge-patch+json",
            )
            _until(_reconciled(b_journal, request, 2), "replica-b to reconcile the change")
            survivor.send_signal(signal.SIGINT)
            assert survivor.wait(timeout=30) == 0
    _until(_spans_of(jaeger, service, "replica-b", request), "replica-b's spans")

    journal_code, from_journal = _explain(request, "--journal", str(b_journal))
    traces_code, from_traces = _explain(
        request, "--traces", f"{jaeger.query_url}?service={service}", "--since", "10m"
    )
    assert traces_code == journal_code == 0
    assert from_traces["verdict"]["code"] == from_journal["verdict"]["code"] == "reconciled"
    assert from_traces["verdict"]["warnings"] == from_journal["verdict"]["warnings"] == []
    replicas = {entry["details"].get("replica") for entry in from_traces["timeline"]}
    assert replicas == {"replica-a", "replica-b"}
    # The events the survivor saw are the journal's, line for line.
    survivor_events = [
        (e["outcome"], e["details"]["resource_version"])
        for e in from_traces["timeline"]
        if e["stage"] == "event" and e["details"]["replica"] == "replica-b"
    ]
    assert survivor_events == [
        (e["outcome"], e["details"]["resource_version"])
        for e in from_journal["timeline"]
        if e["stage"] == "event"
    ]


def _export(records: list[Record], journal: Path, jaeger: Jaeger, service: str) -> None:
    """The spans of ``records`` into Jaeger, as `ctrltrace export` sends a journal's."""
    with JournalWriter(journal) as writer:
        for record in records:
            writer(record)
    sent = subprocess.run(
        [sys.executable, "-m", "ctrltrace", "export", "--journal", str(journal),
         "--otlp-endpoint", jaeger.otlp_http_endpoint],
        env={**os.environ, "OTEL_SERVICE_NAME": service}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr


def _screen(app: TraceApp) -> list[str]:
    """The screen without its status line, which names the source."""
    return [line for line in screen_text(app).splitlines() if "records" not in line]


def test_tui_traces_replays_and_follows_as_the_journal_does(
    recorded_run: RecordedRun,  # noqa: F811
    fixed_journal: tuple[Path, list[Record]],  # noqa: F811
    jaeger: Jaeger,
    tmp_path: Path,
) -> None:
    path, records = fixed_journal
    service = f"ctrltrace-tui-{recorded_run.namespace}"
    # Up to the step that fails terminally now, the rest while the view follows (no chain of
    # the run crosses a step).
    cut = recorded_run.steps[5]
    _export(records[:cut], tmp_path / "first.sqlite", jaeger, service)
    now = records[-1].time + 60  # the default window, an hour back from now, holds the run
    opener = functools.partial(
        TraceEvidence, f"{jaeger.query_url}?service={service}", now=lambda: now, refresh_s=0.2
    )

    async def scenario() -> None:
        with_journal = app_on(path, now)
        async with with_journal.run_test(size=SIZE) as pilot:
            await settled(pilot, len(records))
            expected = _screen(with_journal)
        app = app_on(path, now, EvidenceFeed(opener, label="traces", poll_s=0.05))
        async with app.run_test(size=SIZE) as pilot:
            await settled(pilot, cut)
            assert "✗ widget: terminal error, no retry" not in screen_text(app)
            _export(records[cut:], tmp_path / "rest.sqlite", jaeger, service)
            await settled(pilot, len(records), within=30)
            assert _screen(app) == expected
            assert "✗ widget: terminal error, no retry" in screen_text(app)
            # Enter explains the object from the traces too, naming the replica of each line.
            events = app.query_one("#events", LiveTable)
            row = next(r for r in app.live.events.values() if r.name == "b")
            events.move_to(list(events.keys).index(row.key))
            await pilot.press("enter")
            deadline = time.monotonic() + 10
            while "fix:" not in screen_text(app):
                assert time.monotonic() < deadline, screen_text(app)
                await pilot.pause(0.05)
            text = screen_text(app)
            assert "✓ reconciled  Reconcile of demo/b in widget succeeded after 2 runs" in text
            # `ctrltrace export` names no pod: the replica is its process, the SDK's UUID.
            assert re.search(r"▶ start +[0-9a-f]{8} +widget", text), text

    run(scenario)


def test_a_real_runs_records_through_spans_explain_the_same(
    recorded_run: RecordedRun,  # noqa: F811
) -> None:
    with Journal(recorded_run.journal) as journal:
        records = [record for _, record in journal.tail(0, 100_000)]
        now = records[-1].time + 1
        objects = {(r.object.namespace, r.object.name) for r in records if r.object is not None}
        keys = {r.request.partition("/") for r in records if "/" in r.request}
        objects |= {(namespace, name) for namespace, _, name in keys}
        expected = {n: _explained(journal, n[1], now, n[0]) for n in sorted(objects)}
    fetch = _jaeger(_otlp(records))
    with TraceEvidence("http://jaeger", fetch=fetch, now=lambda: now) as traced:
        found = {n: _explained(traced, n[1], now, n[0]) for n in sorted(objects)}
    assert len(found) >= 6
    codes = {answer["verdict"]["code"] for answer in found.values()}
    assert {"reconciled", "not_mapped", "terminal_error", "requeue_scheduled"} <= codes
    assert {n: _comparable(a) for n, a in found.items()} == {
        n: _comparable(a) for n, a in expected.items()
    }
