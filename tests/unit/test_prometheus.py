from __future__ import annotations

import asyncio

import aiohttp
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from ctrltrace.clock import FakeClock
from ctrltrace.controller import Controller, ControllerOptions
from ctrltrace.exporters.prometheus import PrometheusSink, serve
from ctrltrace.manager import Manager
from ctrltrace.reconcile import Result
from ctrltrace.records import AttrValue, Record, Recorder, Stage
from ctrltrace.request import Request

NAME = "widgets"
Q = f'controller="{NAME}",name="{NAME}"'  # the work queue labels, as the exposition sorts them


def record(stage: Stage, outcome: str, controller: str = NAME, **attrs: AttrValue) -> Record:
    return Record(time=0.0, stage=stage, outcome=outcome, controller=controller, attrs=attrs)


def reconciled(outcome: str, metric_result: str, duration: float = 0.01) -> Record:
    return record(Stage.RECONCILE, outcome, duration_s=duration, metric_result=metric_result)


def lines(sink: PrometheusSink) -> list[str]:
    return sink.render().decode().splitlines()


def samples(sink: PrometheusSink) -> dict[str, float]:
    """Every sample line of the exposition, ``name{labels}`` → value."""
    found = {}
    for line in lines(sink):
        if not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            found[series] = float(value)
    return found


def buckets(sink: PrometheusSink, histogram: str, **labels: str) -> dict[str, float]:
    """A histogram's cumulative bucket counts for one label set, ``le`` → count, in order."""
    found = {}
    for family in text_string_to_metric_families(sink.render().decode()):
        for sample in family.samples:
            others = dict(sample.labels)
            le = others.pop("le", None)
            if sample.name == f"{histogram}_bucket" and others == labels and le:
                found[le] = sample.value
    return found


async def no_op(ctx: object, request: Request) -> Result | None:
    return None


def make_controller(clock: FakeClock, name: str = NAME, workers: int = 1) -> Controller:
    return Controller(
        name,
        no_op,
        recorder=Recorder(),
        clock=clock,
        options=ControllerOptions(max_concurrent_reconciles=workers),
    )


def test_reconcile_outcomes_count_under_controller_runtime_result_labels() -> None:
    sink = PrometheusSink()
    recorder = Recorder(sink)
    for outcome, result in [
        ("success", "success"),
        ("success", "success"),
        ("error", "error"),
        ("terminal_error", "error"),
        ("requeue", "requeue"),
        ("requeue_after", "requeue_after"),
    ]:
        recorder.emit(reconciled(outcome, result))
    assert recorder.sink_errors == 0
    text = lines(sink)
    for line in [
        f'controller_runtime_reconcile_total{{controller="{NAME}",result="error"}} 2.0',
        f'controller_runtime_reconcile_total{{controller="{NAME}",result="requeue"}} 1.0',
        f'controller_runtime_reconcile_total{{controller="{NAME}",result="requeue_after"}} 1.0',
        f'controller_runtime_reconcile_total{{controller="{NAME}",result="success"}} 2.0',
        f'controller_runtime_reconcile_errors_total{{controller="{NAME}"}} 2.0',
        f'controller_runtime_terminal_reconcile_errors_total{{controller="{NAME}"}} 1.0',
        f'controller_runtime_reconcile_panics_total{{controller="{NAME}"}} 0.0',
        "# TYPE controller_runtime_reconcile_total counter",
    ]:
        assert line in text


def test_a_started_controller_has_every_series_at_zero_and_its_worker_limit() -> None:
    sink = PrometheusSink()
    sink(record(Stage.CONTROLLER, "started", max_concurrent_reconciles=3))
    found = samples(sink)
    assert found[f'controller_runtime_max_concurrent_reconciles{{controller="{NAME}"}}'] == 3
    for series in [
        *(
            f'controller_runtime_reconcile_total{{controller="{NAME}",result="{result}"}}'
            for result in ("success", "error", "requeue", "requeue_after")
        ),
        f'controller_runtime_reconcile_errors_total{{controller="{NAME}"}}',
        f'controller_runtime_terminal_reconcile_errors_total{{controller="{NAME}"}}',
        f'controller_runtime_reconcile_panics_total{{controller="{NAME}"}}',
        f'controller_runtime_reconcile_time_seconds_count{{controller="{NAME}"}}',
        f"workqueue_adds_total{{{Q}}}",
        f"workqueue_retries_total{{{Q}}}",
        f"workqueue_queue_duration_seconds_count{{{Q}}}",
        f"workqueue_work_duration_seconds_count{{{Q}}}",
    ]:
        assert found[series] == 0, series


def test_reconcile_time_uses_controller_runtime_buckets() -> None:
    sink = PrometheusSink()
    for duration in (0.004, 0.005, 0.3, 61.0):  # 0.005 sits on a bound: le is inclusive
        sink(reconciled("success", "success", duration))
    counts = buckets(sink, "controller_runtime_reconcile_time_seconds", controller=NAME)
    assert list(counts) == [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.15", "0.2", "0.25", "0.3", "0.35", "0.4",
        "0.45", "0.5", "0.6", "0.7", "0.8", "0.9", "1", "1.25", "1.5", "1.75", "2", "2.5", "3",
        "3.5", "4", "4.5", "5", "6", "7", "8", "9", "10", "15", "20", "25", "30", "40", "50",
        "60", "+Inf",
    ]  # fmt: skip
    assert counts["0.005"] == 2
    assert counts["0.25"] == 2
    assert counts["0.3"] == 3
    assert counts["60"] == 3
    assert counts["+Inf"] == 4
    found = samples(sink)
    assert found[f'controller_runtime_reconcile_time_seconds_count{{controller="{NAME}"}}'] == 4
    assert found[
        f'controller_runtime_reconcile_time_seconds_sum{{controller="{NAME}"}}'
    ] == pytest.approx(61.309)


def test_workqueue_durations_use_client_go_buckets_labelled_as_go_writes_them() -> None:
    sink = PrometheusSink()
    sink(record(Stage.RECONCILE_START, "started", queue_wait_s=0.002, retries=0))
    sink(record(Stage.RECONCILE_START, "started", queue_wait_s=0.0, retries=0))
    sink(reconciled("success", "success", duration=5e-6))
    waits = buckets(sink, "workqueue_queue_duration_seconds", name=NAME, controller=NAME)
    # ExponentialBuckets(10e-9, 10, 12) computed in float64, as Go prints it.
    assert list(waits) == [
        "1e-08", "1e-07", "1e-06", "9.999999999999999e-06", "9.999999999999999e-05", "0.001",
        "0.01", "0.1", "1", "10", "100", "1000", "+Inf",
    ]  # fmt: skip
    assert waits["1e-08"] == 1
    assert waits["0.001"] == 1
    assert waits["0.01"] == 2
    work = buckets(sink, "workqueue_work_duration_seconds", name=NAME, controller=NAME)
    assert work["1e-06"] == 0
    assert work["9.999999999999999e-06"] == 1


def test_workqueue_counts_inserted_adds_and_rate_limited_retries() -> None:
    sink = PrometheusSink()
    for outcome in (
        "queued",
        "deduplicated",  # merged into a waiting run: client-go counts no add
        "requeued_after_processing",
        "dropped_by_predicate",
        "not_mapped",
        "shut_down",
    ):
        sink(record(Stage.DISPATCH, outcome))
    sink(record(Stage.REQUEUE, "rate_limited", delay_s=0.005, attempt=1))
    sink(record(Stage.REQUEUE, "after", delay_s=30.0))
    text = lines(sink)
    assert f"workqueue_adds_total{{{Q}}} 4.0" in text
    assert f"workqueue_retries_total{{{Q}}} 1.0" in text


def test_records_of_other_stages_create_no_series() -> None:
    sink = PrometheusSink()
    sink(Record(time=0.0, stage=Stage.EVENT, outcome="MODIFIED"))
    sink(Record(time=0.0, stage=Stage.WATCH, outcome="synced"))
    assert sink.render() == b""


async def _busy_queue(clock: FakeClock, controller: Controller) -> None:
    """Two keys processing (since 3 s and 2 s), two waiting, one of two workers active."""
    queue = controller.queue
    queue.add(Request("ns", "a"))
    await queue.get()
    await clock.advance(1)
    queue.add(Request("ns", "b"))
    await queue.get()
    await clock.advance(2)
    queue.add(Request("ns", "c"))
    queue.add(Request("ns", "d"))
    queue.add_after(Request("ns", "e"), 60)  # delayed keys are not in the depth
    controller.stats.active_workers = 1


@pytest.mark.parametrize("source", ["manager", "callable"])
def test_live_gauges_read_the_controllers_queues(source: str) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        busy, idle = make_controller(clock, workers=2), make_controller(clock, "idle")
        await _busy_queue(clock, busy)
        if source == "manager":
            manager = Manager(name="test")
            manager.controllers.extend([busy, idle])
            sink = PrometheusSink(manager)
        else:
            sink = PrometheusSink(lambda: [busy, idle])
        text = lines(sink)
        for line in [
            f'controller_runtime_active_workers{{controller="{NAME}"}} 1.0',
            f"workqueue_depth{{{Q}}} 2.0",
            f"workqueue_unfinished_work_seconds{{{Q}}} 5.0",
            f"workqueue_longest_running_processor_seconds{{{Q}}} 3.0",
            'controller_runtime_active_workers{controller="idle"} 0.0',
            'workqueue_depth{controller="idle",name="idle"} 0.0',
            'workqueue_unfinished_work_seconds{controller="idle",name="idle"} 0.0',
            'workqueue_longest_running_processor_seconds{controller="idle",name="idle"} 0.0',
        ]:
            assert line in text
        controller_runtime = [line for line in text if line.startswith("controller_runtime_")]
        assert all(
            line.startswith("controller_runtime_active_workers") for line in controller_runtime
        )
        busy.queue.shutdown()

    asyncio.run(scenario())


def test_live_gauges_follow_the_managers_current_controllers() -> None:
    manager = Manager(name="test")
    sink = PrometheusSink(manager)
    assert sink.render() == b""  # not started: no controllers yet
    manager.controllers.append(make_controller(FakeClock()))
    assert f"workqueue_depth{{{Q}}} 0.0" in lines(sink)


def test_leader_election_gauge_follows_lease_transitions() -> None:
    sink = PrometheusSink()
    status = 'leader_election_master_status{name="widgets.example.com"}'

    def after(outcome: str) -> float | None:
        sink(
            Record(
                time=0.0,
                stage=Stage.LEASE,
                outcome=outcome,
                attrs={"lease": "kube-system/widgets.example.com", "identity": "me"},
            )
        )
        return samples(sink).get(status)

    assert after("error") is None  # nothing known about leadership yet
    assert after("standby") == 0
    assert after("acquired") == 1
    assert after("renewed") == 1
    assert after("error") == 1
    assert after("lost") == 0
    assert after("acquired") == 1
    assert after("released") == 0


def test_exposition_parses_as_prometheus_text() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        controller = make_controller(clock)
        await _busy_queue(clock, controller)
        sink = PrometheusSink(lambda: [controller])
        sink(record(Stage.CONTROLLER, "started", max_concurrent_reconciles=1))
        sink(record(Stage.DISPATCH, "queued"))
        sink(record(Stage.RECONCILE_START, "started", queue_wait_s=0.1, retries=0))
        sink(reconciled("error", "error"))
        sink(record(Stage.REQUEUE, "rate_limited", delay_s=0.005, attempt=1))
        sink(Record(time=0.0, stage=Stage.LEASE, outcome="acquired", attrs={"lease": "ns/x"}))
        types = {
            family.name: family.type
            for family in text_string_to_metric_families(sink.render().decode())
        }
        assert types == {
            "controller_runtime_reconcile": "counter",
            "controller_runtime_reconcile_errors": "counter",
            "controller_runtime_terminal_reconcile_errors": "counter",
            "controller_runtime_reconcile_panics": "counter",
            "controller_runtime_reconcile_time_seconds": "histogram",
            "controller_runtime_max_concurrent_reconciles": "gauge",
            "controller_runtime_active_workers": "gauge",
            "workqueue_adds": "counter",
            "workqueue_queue_duration_seconds": "histogram",
            "workqueue_work_duration_seconds": "histogram",
            "workqueue_retries": "counter",
            "workqueue_depth": "gauge",
            "workqueue_unfinished_work_seconds": "gauge",
            "workqueue_longest_running_processor_seconds": "gauge",
            "leader_election_master_status": "gauge",
        }
        # Go's client exposes no _created series; neither do we.
        assert b"_created" not in sink.render()
        controller.queue.shutdown()

    asyncio.run(scenario())


def test_sinks_keep_private_registries() -> None:
    first, second = PrometheusSink(), PrometheusSink()
    first(reconciled("success", "success"))
    assert second.render() == b""
    assert first.registry is not second.registry
    global_names = {family.name for family in REGISTRY.collect()}
    assert "controller_runtime_reconcile" not in global_names


def test_metrics_endpoint_serves_the_exposition() -> None:
    async def scenario() -> None:
        sink = PrometheusSink()
        sink(reconciled("success", "success"))
        runner = await serve(sink, "127.0.0.1:0")
        assert runner is not None
        try:
            port = runner.addresses[0][1]
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    body = await response.read()
                async with session.get(f"http://127.0.0.1:{port}/other") as missing:
                    assert missing.status == 404
        finally:
            await runner.cleanup()
        assert body == sink.render()
        assert (
            f'controller_runtime_reconcile_total{{controller="{NAME}",result="success"}} 1.0'
            in body.decode().splitlines()
        )

    asyncio.run(scenario())


def test_address_zero_disables_the_endpoint() -> None:
    assert asyncio.run(serve(PrometheusSink(), "0")) is None


def test_a_malformed_address_is_refused() -> None:
    with pytest.raises(ValueError, match="not host:port"):
        asyncio.run(serve(PrometheusSink(), "localhost"))
