"""Spans to records and back: explain gives the same answer from the trace backend as from the
journal, for every object, and names the replica each record came from; Jaeger's failures are
one-line evidence errors."""

from __future__ import annotations

import datetime
import http.server
import json
import math
import socket
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import pytest
from click.testing import CliRunner
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from ctrltrace.cli import ExitCode, main
from ctrltrace.evidence import EvidenceUnreachable, EvidenceUnreadable, explain_from
from ctrltrace.evidence.traces import TraceEvidence, records_from_otlp
from ctrltrace.exporters.export import build_tracing
from ctrltrace.exporters.otlp_json import encode_otlp_json
from ctrltrace.exporters.spans import replay
from ctrltrace.journal import Journal, JournalWriter
from ctrltrace.records import Record, Stage
from ctrltrace.spanmodel import (
    REPLICA,
    SAMPLER,
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    stage_of,
)
from ctrltrace.testing import RunStory

# What cannot survive spans: record ids (a write's event_id is one), times below the µs.
_NOT_CARRIED = frozenset({REPLICA, "event_id"})


def _otlp(records: Sequence[Record], **resource: str) -> dict[str, Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource({SERVICE_NAME: "shop-controller", **resource}),
        sampler=ALWAYS_ON,
        shutdown_on_exit=False,
    )
    replay(records, provider, processor=SimpleSpanProcessor(exporter))
    return encode_otlp_json(exporter.get_finished_spans())


def _jaeger(*documents: Mapping[str, Any]) -> Callable[[str, Mapping[str, str]], Any]:
    """Jaeger's API v3 answering from OTLP documents: one service, one trace per span name."""
    spans = [
        (resource, scope, span)
        for document in documents
        for resource in document["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]

    def fetch(path: str, params: Mapping[str, str]) -> Any:
        if path == "/api/v3/services":
            return {"services": ["shop-controller"]}
        if path == "/api/v3/operations":
            return {
                "operations": [{"name": name} for name in sorted({s["name"] for *_, s in spans})]
            }
        found = [
            {
                "resource": resource["resource"],
                "scopeSpans": [{"scope": scope["scope"], "spans": [span]}],
            }
            for resource, scope, span in spans
            if span["name"] == params["query.operation_name"]
        ]
        return {"result": {"resourceSpans": found}} if found else None

    return fetch


def _story() -> RunStory:
    """Every kind of chain: success, a failure retried, a requeue, a predicate and a mapping
    that said no, a child mapped to its owner, the controller's own write coming back, a
    Kubernetes Event, a lease."""
    story = RunStory()
    story.lease("acquired", "pod-a")
    story.reconciled(story.event("web"))
    start = story.start(story.dispatch(story.event("web", "MODIFIED")))
    write = story.write(start)
    failed = story.end(start, "error", "ApiError: 409 Conflict", api_status=409)
    retry = story.start(story.requeue(failed))
    story.end(retry, "requeue_after")
    own = story.end(story.start(story.dispatch(story.event("web", owned_write=write))))
    story.record(
        Stage.KUBE_EVENT,
        "created",
        reason="Normal Synced: shop/web is in sync",
        controller="configmap",
        object=write.object,
        request="shop/web",
        reconcile_id=own.reconcile_id,
        attrs={"type": "Normal"},
    )
    story.dispatch(story.event("db"), "dropped_by_predicate", predicate="GenerationChanged")
    story.dispatch(story.event("cache"), "not_mapped", unmapped="no_owner")
    child = story.event("web-pod", kind="Pod")
    owner = story.start(story.dispatch(child, request="shop/web-owner"))
    story.end(owner)
    story.start(story.dispatch(story.event("slow")))  # never ends: the span closes unfinished
    return story


def _journal(tmp_path: Path, records: Sequence[Record]) -> Path:
    path = tmp_path / "journal.sqlite"
    with JournalWriter(path) as writer:
        for record in records:
            writer(record)
        assert writer.flush()
    return path


def _comparable(answer: Any) -> Any:
    if isinstance(answer, float):
        return round(answer, 6)
    if isinstance(answer, dict):
        return {k: _comparable(v) for k, v in answer.items() if k not in _NOT_CARRIED}
    if isinstance(answer, list):
        return [_comparable(item) for item in answer]
    return answer


def _explained(evidence: Any, name: str, now: float, namespace: str = "shop") -> Any:
    explanation = explain_from(evidence, namespace=namespace, name=name, now=now, timeline_limit=0)
    return explanation.to_json()


@pytest.mark.parametrize("name", ["web", "db", "cache", "web-pod", "web-owner", "slow", "none"])
def test_explain_from_traces_is_explain_from_the_journal(tmp_path: Path, name: str) -> None:
    story = _story()
    now = story.time + 1.0
    with Journal(_journal(tmp_path, story.records)) as journal:
        expected = _explained(journal, name, now)
    with TraceEvidence(
        "http://jaeger", fetch=_jaeger(_otlp(story.records)), now=lambda: now
    ) as traced:
        found = _explained(traced, name, now)
    # An unfinished reconcile's span ends when the run does: its start is there, its end is not.
    assert _comparable(found) == _comparable(expected)
    assert found["verdict"]["code"] == expected["verdict"]["code"]


def test_every_record_comes_back_with_its_replica() -> None:
    story = _story()
    document = _otlp(story.records, **{"k8s.pod.name": "shop-7d9-abc", SERVICE_INSTANCE_ID: "u1"})
    rebuilt = records_from_otlp([document])
    # Each record once; the reconcile of "slow" never ended, so it has no end record here either.
    assert sorted((r.stage, r.outcome) for r in rebuilt) == sorted(
        (r.stage, r.outcome) for r in story.records
    )
    assert {r.attrs[REPLICA] for r in rebuilt} == {"shop-7d9-abc"}
    uuid = "362f64b1-34c1-4907-ba85-574221773200"
    for resource, replica in (
        ({SERVICE_INSTANCE_ID: uuid}, "362f64b1"),
        ({SERVICE_INSTANCE_ID: "worker-3"}, "worker-3"),
        ({}, "shop-controller"),
    ):
        rebuilt_here = records_from_otlp([_otlp(story.records[:1], **resource)])
        assert rebuilt_here[0].attrs[REPLICA] == replica
    for original, back in zip(story.records, rebuilt, strict=True):
        assert math.isclose(original.time, back.time, abs_tol=1e-6)
        assert (original.stage, original.object, original.request, original.reason) == (
            back.stage,
            back.object,
            back.request,
            back.reason,
        )
        assert {k: v for k, v in back.attrs.items() if k not in _NOT_CARRIED} == {
            k: v for k, v in original.attrs.items() if k not in _NOT_CARRIED
        }


def test_lifecycle_and_informer_health_are_spans() -> None:
    story = RunStory()
    story.watch("forbidden", "watch configmaps is forbidden", status=403, resource="configmaps")
    story.controller("cache_not_synced", "timed out waiting for caches")
    names = {
        span["name"]
        for resource in _otlp(story.records)["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    }
    assert {stage_of(name) for name in names} == {Stage.WATCH, Stage.CONTROLLER}
    assert "watch ConfigMap" in names


def test_with_a_sampling_replica_no_event_found_is_missing_evidence_not_no_events() -> None:
    story = RunStory()
    now = story.time + 1.0
    document = _otlp(story.records, **{SAMPLER: "parentbased_traceidratio:0.1"})
    with TraceEvidence("http://jaeger", fetch=_jaeger(document), now=lambda: now) as traced:
        answer = _explained(traced, "web", now)
    verdict = answer["verdict"]
    assert verdict["code"] == "evidence_missing"
    assert "parentbased_traceidratio:0.1" in verdict["message"]
    assert "always_on" in verdict["fix"]
    assert [w["code"] for w in verdict["warnings"]] == ["evidence_missing"]


def test_a_sampling_replica_leaves_a_warning_on_the_verdict_it_reached() -> None:
    story = RunStory()
    story.reconciled(story.event())
    now = story.time + 1.0
    document = _otlp(story.records, **{SAMPLER: "parentbased_traceidratio:0.1"})
    with TraceEvidence("http://jaeger", fetch=_jaeger(document), now=lambda: now) as traced:
        answer = _explained(traced, "web", now)
    assert answer["verdict"]["code"] == "reconciled"
    [warning] = answer["verdict"]["warnings"]
    assert warning["code"] == "evidence_missing"
    assert "parentbased_traceidratio:0.1" in warning["message"]


def test_no_spans_in_the_window_names_the_window_and_services() -> None:
    def empty(path: str, params: Mapping[str, str]) -> Any:
        return {"services": ["a", "b"]} if path.endswith("services") else {"operations": []}

    with pytest.raises(
        EvidenceUnreadable, match=r"no ctrltrace spans in http://j between .* \(services: a, b\)"
    ):
        TraceEvidence("http://j", fetch=empty).lease_records()


def test_a_reply_that_is_not_jaeger_is_unreadable() -> None:
    with pytest.raises(EvidenceUnreadable, match="query API v3"):
        TraceEvidence("http://j", fetch=lambda path, params: {"hello": "world"}).lease_records()


def test_nobody_listening_is_unreachable() -> None:
    with socket.socket() as probe:  # a port nobody listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        with pytest.raises(
            EvidenceUnreachable, match=f"cannot reach Jaeger at http://127.0.0.1:{port}"
        ):
            TraceEvidence(f"http://127.0.0.1:{port}", timeout_s=2).lease_records()


def test_checked_asks_jaeger_once_and_fails_as_a_query_would() -> None:
    asked: list[str] = []

    def fetch(path: str, params: Mapping[str, str]) -> Any:
        asked.append(path)
        return {"services": ["shop-controller"]} if path.endswith("services") else {"x": 1}

    source = TraceEvidence("http://j", fetch=fetch)
    assert source.checked() is source
    assert asked == ["/api/v3/services"]
    with pytest.raises(EvidenceUnreadable, match="query API v3"):
        TraceEvidence("http://j", fetch=lambda path, params: {"hello": "world"}).checked()


def test_tail_follows_new_spans_with_a_growing_cursor() -> None:
    story = _story()
    first, later = story.records[:8], story.records[8:]
    documents = [_otlp(first)]
    now = story.time + 1.0

    def fetch(path: str, params: Mapping[str, str]) -> Any:
        return _jaeger(*documents)(path, params)

    clock = [0.0]
    with TraceEvidence(
        "http://jaeger", fetch=fetch, now=lambda: now, monotonic=lambda: clock[0]
    ) as traced:
        seen = traced.tail(0)
        assert [cursor for cursor, _ in seen] == sorted(cursor for cursor, _ in seen)
        documents.append(_otlp(later))
        clock[0] += 1.9
        assert traced.tail(seen[-1][0]) == []  # Jaeger is asked again every 2 s, not sooner
        clock[0] += 0.1
        more = traced.tail(seen[-1][0])
    assert more and all(cursor > seen[-1][0] for cursor, _ in more)
    assert {r.stage for _, r in more} >= {Stage.EVENT, Stage.DISPATCH}


def test_every_process_names_itself_and_its_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    built = [build_tracing(InMemorySpanExporter()) for _ in range(2)]
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"{SERVICE_INSTANCE_ID}=pod-uid-1")
    built.append(build_tracing(InMemorySpanExporter()))
    try:
        resources = [provider.resource.attributes for provider, _, _ in built]
        assert {r[SAMPLER] for r in resources} == {"parentbased_traceidratio:0.25"}
        first, second, given = (r[SERVICE_INSTANCE_ID] for r in resources)
        # One per process (the SDK's), unless the environment names it (a pod's uid).
        assert first == second != given == "pod-uid-1"
    finally:
        for _, _, counter in built:
            counter.shutdown()


class _FakeJaeger(http.server.ThreadingHTTPServer):
    """Jaeger's API v3 on loopback, answering from OTLP documents (or with ``body``)."""

    def __init__(
        self, *documents: Mapping[str, Any], body: bytes | None = None, status: int = 200
    ) -> None:
        answer = _jaeger(*documents)
        fixed = body

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                params = dict(urllib.parse.parse_qsl(url.query))
                found = answer(url.path, params) if fixed is None else None
                reply = fixed if fixed is not None else json.dumps(found).encode()
                self.send_response(404 if found is None and fixed is None else status)
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def test_explain_traces_prints_the_replica_of_each_line_and_the_verdict() -> None:
    story = _story()
    replica = {"k8s.pod.name": "shop-7d9-abc"}
    since = datetime.datetime.fromtimestamp(story.records[0].time - 1).isoformat()
    with _FakeJaeger(_otlp(story.records, **replica)) as jaeger:
        text = CliRunner().invoke(
            main, ["explain", "shop/web", "--traces", jaeger.url, "--since", since]
        )
        answer = CliRunner().invoke(
            main, ["explain", "shop/web", "--traces", jaeger.url, "--since", since, "--json"]
        )
    assert text.exit_code == 0, text.output
    header = next(line for line in text.output.splitlines() if line.startswith("time"))
    assert header.split() == ["time", "stage", "replica", "controller", "what", "happened"]
    assert "shop-7d9-abc" in text.output and "✓ reconciled" in text.output
    explained = json.loads(answer.output)
    assert {entry["details"]["replica"] for entry in explained["timeline"]} == {"shop-7d9-abc"}


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        (b"<html>not jaeger</html>", 200, ExitCode.JOURNAL, "did not answer JSON"),
        (b'{"services": []}', 200, ExitCode.JOURNAL, "no ctrltrace spans in"),
        (b"oops", 500, ExitCode.JOURNAL, "answered HTTP 500: oops"),
        (b"no", 403, ExitCode.ENVIRONMENT, "refused the request: HTTP 403"),
    ],
)
def test_explain_traces_fails_in_one_line(
    body: bytes, status: int, code: ExitCode, message: str
) -> None:
    with _FakeJaeger(body=body, status=status) as jaeger:
        result = CliRunner().invoke(main, ["explain", "shop/web", "--traces", jaeger.url])
    assert result.exit_code == code
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_explain_traces_nobody_listening_exits_8() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
        result = CliRunner().invoke(main, ["explain", "shop/web", "--traces", url])
    assert result.exit_code == ExitCode.UNREACHABLE
    assert f"cannot reach Jaeger at {url}" in result.output


def test_service_on_the_url_reads_that_service_alone() -> None:
    asked: list[tuple[str, dict[str, str]]] = []
    answer = _jaeger(_otlp(RunStory().records))

    def fetch(path: str, params: Mapping[str, str]) -> Any:
        asked.append((path, dict(params)))
        return answer(path, params)

    with TraceEvidence("http://j:16686/?service=shop-controller", fetch=fetch) as traced:
        assert traced.url == "http://j:16686"
        assert traced.lease_records() == []
    assert "/api/v3/services" not in {path for path, _ in asked}
    assert {params.get("service") or params["query.service_name"] for _, params in asked} == {
        "shop-controller"
    }


def test_the_funnel_reads_from_traces_as_from_the_journal(tmp_path: Path) -> None:
    story = _story()
    since = datetime.datetime.fromtimestamp(story.records[0].time - 1).isoformat()
    funnel = ["explain", "--controller", "configmap", "--funnel", "--json", "--since", since]
    from_journal = CliRunner().invoke(
        main, [*funnel, "--journal", str(_journal(tmp_path, story.records))]
    )
    with _FakeJaeger(_otlp(story.records)) as jaeger:
        from_traces = CliRunner().invoke(main, [*funnel, "--traces", jaeger.url])
    assert from_traces.exit_code == from_journal.exit_code == 0, from_traces.output
    assert json.loads(from_traces.output) == json.loads(from_journal.output)


def test_a_search_that_hit_its_limit_makes_missing_evidence_a_warning() -> None:
    story = _story()
    now = story.time + 1.0
    fetch = _jaeger(_otlp(story.records))
    with TraceEvidence("http://j", fetch=fetch, now=lambda: now, num_traces=3) as traced:
        answer = _explained(traced, "web", now)
    assert answer["verdict"]["code"] == "reconciled"  # what was read still decides
    messages = [w["message"] for w in answer["verdict"]["warnings"]]
    assert any("Jaeger gave only the newest" in m for m in messages), messages
    with TraceEvidence("http://j", fetch=fetch, now=lambda: now, num_traces=100) as traced:
        assert _explained(traced, "web", now)["verdict"]["warnings"] == []
