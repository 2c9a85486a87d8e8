"""What the runtime says about itself, and how often: records in, log lines out."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from types import SimpleNamespace
from typing import Any, cast

import pytest
import structlog
from structlog.testing import LogCapture

from ctrltrace import FakeClock, Record, Stage
from ctrltrace.narrator import Narrator

FORBIDDEN = (
    'configmaps is forbidden: User "alice" cannot watch resource "configmaps" in API group "" '
    'in the namespace "ns"'
)


def watch(outcome: str, reason: str = "", **attrs: Any) -> Record:
    return Record(
        time=0.0,
        stage=Stage.WATCH,
        outcome=outcome,
        reason=reason,
        attrs={"kind": "ConfigMap", "api_version": "v1", "namespace": "ns", **attrs},
    )


def told(
    records: list[Record], clock: FakeClock, *, step: float = 0.0
) -> list[MutableMapping[str, Any]]:
    # A logger of its own: structlog's global set-up (cached, level-filtered) is not under test.
    capture = LogCapture()
    logger = structlog.wrap_logger(
        None, processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(0)
    )
    narrator = Narrator(clock, logger, reminders=300.0)

    async def feed() -> None:
        for record in records:
            narrator(record)
            await clock.advance(step)

    asyncio.run(feed())
    return capture.entries


def test_a_healthy_start_is_told_in_controller_runtimes_order() -> None:
    records = [
        watch("started", "watching v1/ConfigMap in namespace ns", label_selector="app=web"),
        Record(0.0, Stage.CONTROLLER, "starting", "waiting for the caches of v1/ConfigMap", "web"),
        watch("listed", "listed 3 at resourceVersion 7"),
        watch("synced", "cache synced", objects=3, seconds=0.25),
        Record(
            0.0, Stage.CONTROLLER, "started", "2 worker(s)", "web",
            attrs={"max_concurrent_reconciles": 2},
        ),
    ]  # fmt: skip
    lines = told(records, FakeClock())
    assert [line["event"] for line in lines] == [
        "Starting EventSource",
        "Starting Controller",
        "Caches synced",
        "Starting workers",
    ]
    assert lines[0]["label_selector"] == "app=web" and lines[0]["namespace"] == "ns"
    assert lines[2]["objects"] == 3 and lines[2]["seconds"] == 0.25
    assert lines[3]["worker_count"] == 2 and lines[3]["controller"] == "web"
    assert all(line["log_level"] == "info" for line in lines)


def test_a_persisting_watch_failure_is_told_once_then_reminded_with_a_count() -> None:
    clock = FakeClock()
    # A re-list and a refused watch every 2 s for 10 minutes, then the watch is allowed.
    cycle = [watch("listed", "listed 1"), watch("forbidden", FORBIDDEN, status=403)]
    lines = told([*cycle * 300, watch("resumed", "watching again")], clock, step=1.0)
    warnings = [line for line in lines if line["log_level"] == "warning"]
    repeats = [line for line in lines if line["event"] == "Watch failing again"]
    assert len(repeats) == 298 and all(line["log_level"] == "debug" for line in repeats)
    # The first at 1 s, the reminder 300 s later; the next would be due at 601 s.
    assert [line["event"] for line in warnings] == ["Watch failing", "Watch still failing"]
    first, reminder = warnings[0], warnings[1]
    assert "alice cannot watch configmaps in namespace ns" in first["error"]
    assert "kubectl create role ctrltrace-configmaps -n ns --verb=get,list,watch" in first["fix"]
    assert "occurrences" not in first
    assert reminder["occurrences"] == 151 and reminder["failing_for_s"] == 300.0
    assert lines[-1]["event"] == "Watch recovered" and lines[-1]["occurrences"] == 300


def test_a_new_kind_of_failure_is_told_at_once() -> None:
    lines = told(
        [
            watch("forbidden", FORBIDDEN, status=403),
            watch("disconnected", "connection failed: reset by peer"),
            watch("disconnected", "connection failed: reset by peer"),
        ],
        FakeClock(),
    )
    assert [(line["problem"], line["log_level"]) for line in lines] == [
        ("forbidden", "warning"),
        ("disconnected", "warning"),
        ("disconnected", "debug"),
    ]


def test_reconcile_errors_are_told_as_reconciler_error_once_per_request_and_error() -> None:
    def failed(request: str, reason: str) -> Record:
        return Record(
            0.0, Stage.RECONCILE, "error", reason, "web", request=request, reconcile_id="r-1"
        )

    lines = told(
        [
            failed("ns/a", "ValueError: boom"),
            failed("ns/a", "ValueError: boom"),
            failed("ns/b", "ValueError: boom"),
            failed("ns/a", "KeyError: 'spec'"),
            Record(0.0, Stage.RECONCILE, "success", "success", "web", request="ns/a"),
        ],
        FakeClock(),
    )
    lines = [line for line in lines if line["log_level"] != "debug"]
    assert [(line["event"], line["name"], line["error"]) for line in lines] == [
        ("Reconciler error", "a", "ValueError: boom"),
        ("Reconciler error", "b", "ValueError: boom"),
        ("Reconciler error", "a", "KeyError: 'spec'"),
    ]
    assert lines[0]["namespace"] == "ns" and lines[0]["reconcile_id"] == "r-1"
    assert all(line["log_level"] == "error" for line in lines)


def test_the_lease_and_shutdown_are_told() -> None:
    lease = {"lease": "ns/web", "identity": "me", "holder": "other"}

    def lease_record(outcome: str) -> Record:
        return Record(0.0, Stage.LEASE, outcome, "", attrs=lease)

    lines = told(
        [
            lease_record("attempting"),
            lease_record("standby"),
            lease_record("acquired"),
            lease_record("lost"),
            Record(0.0, Stage.MANAGER, "stopping", "received SIGTERM", attrs={"in_flight": 2}),
            Record(0.0, Stage.MANAGER, "drain_timed_out", "still running", attrs={"in_flight": 1}),
            Record(0.0, Stage.MANAGER, "stopped", "stopped"),
        ],
        FakeClock(),
    )
    assert [(line["event"], line["log_level"]) for line in lines] == [
        ("Attempting to acquire leader lease", "info"),
        ("Leader lease held by another replica", "info"),
        ("Successfully acquired lease", "info"),
        ("Leader election lost", "error"),
        ("Stopping and waiting for in-flight reconciles", "info"),
        ("Gave up waiting for reconciles", "warning"),
        ("Manager stopped", "info"),
    ]
    assert lines[1]["holder"] == "other" and lines[4]["in_flight"] == 2


def test_records_of_the_event_path_are_not_told() -> None:
    quiet = [
        Record(0.0, stage, "queued")
        for stage in (Stage.EVENT, Stage.DISPATCH, Stage.RECONCILE_START, Stage.REQUEUE)
    ]
    assert told(quiet, FakeClock()) == []


def test_records_and_spans_lost_are_told_when_they_grow_not_on_every_look(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ctrltrace.cli.run import _LossWatch

    capture = LogCapture()
    logger = structlog.wrap_logger(
        None, processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(0)
    )
    monkeypatch.setattr(structlog, "get_logger", lambda *_: logger)
    journal = SimpleNamespace(dropped=0, path="j.sqlite", last_error="")
    spans = SimpleNamespace(dropped=0, failed=0)
    clock = FakeClock()

    async def scenario() -> None:
        watch = _LossWatch(cast(Any, journal), cast(Any, spans), clock)
        task = asyncio.create_task(watch())
        await clock.advance(60)  # nothing lost: nothing said
        journal.dropped, journal.last_error = 128, "OperationalError: disk I/O error"
        await clock.advance(15)
        await clock.advance(60)  # the same 128: not told again
        journal.dropped = 256  # more, within the reminder interval: counted, not told
        spans.failed = 10
        await clock.advance(300)
        journal.dropped = 512  # more, and the reminder is due: told with the count
        await clock.advance(15)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    told = [(e["event"], e["lost"], e.get("occurrences")) for e in capture.entries]
    assert told == [
        ("Journal records dropped", 128, None),
        ("Spans dropped", 10, None),
        ("Journal records dropped", 512, 3),
    ]
    assert capture.entries[0]["error"] == "OperationalError: disk I/O error"
    assert all(e["log_level"] == "warning" for e in capture.entries)


def test_events_that_cannot_be_sent_are_told_once_then_their_recovery() -> None:
    def sent(outcome: str, reason: str) -> Record:
        return Record(0.0, Stage.KUBE_EVENT, outcome, reason=reason, controller="foo")

    refused = "Normal Synced: ok; not sent: 403 Forbidden: events is forbidden"
    records = [sent("failed", refused)] * 3 + [sent("created", "Normal Synced: ok")] * 2
    lines = [(e["event"], e["log_level"]) for e in told(records, FakeClock(), step=1.0)]
    assert lines == [("Event not sent", "warning"), ("Events are sent again", "info")]
