"""Controllers on the fake clock: events merged into one reconcile that names them, per-item
back-off, and no worker dying silently, whatever the reconciler returns or raises."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import pytest

from ctrltrace import Collect, FakeClock, Recorder, Request, Result, Stage
from ctrltrace.builder import Builder, _Registry
from ctrltrace.client import Client
from ctrltrace.context import Context
from ctrltrace.controller import Controller, ControllerFailed, ControllerOptions, Watch
from ctrltrace.events import Event, EventType
from ctrltrace.handlers import MapResult, for_object
from ctrltrace.kinds import Kind, RestMapper
from ctrltrace.queue import WorkQueue
from ctrltrace.source import Informer, WriteLog
from ctrltrace.transport import Transport

CONFIGMAP = Kind("v1", "ConfigMap")


def cm(name: str, rv: str = "1", namespace: str = "ns", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv, **meta},
    }


class Harness:
    """A controller fed by an offline informer, its workers running on a fake clock."""

    def __init__(self, reconcile: Callable[..., Any], workers: int = 1) -> None:
        self.records = Collect()
        recorder = Recorder(self.records)
        self.clock = FakeClock()
        self.informer = Informer(
            cast(Transport, None),
            cast(RestMapper, None),
            CONFIGMAP,
            recorder=recorder,
            clock=self.clock,
            writes=WriteLog(),
        )
        self.controller = Controller(
            "test",
            reconcile,
            recorder=recorder,
            clock=self.clock,
            options=ControllerOptions(max_concurrent_reconciles=workers),
        )
        self.controller.watch(Watch(self.informer, for_object(), (), "for"))
        self.informer.synced.set()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.controller.run(cast(Client, None)))

    def add(self, name: str) -> None:
        self.informer._apply("ADDED", cm(name))

    async def until(self, condition: Callable[[], bool]) -> None:
        for _ in range(500):
            if condition():
                return
            await asyncio.sleep(0)
        raise AssertionError(f"never held; records: {self.records.records[-10:]}")

    async def stop(self) -> None:
        assert self.task is not None
        self.controller.queue.shutdown()
        await asyncio.wait_for(self.task, 5)

    def reconciled(self, outcome: str) -> list[str]:
        return [r.request for r in self.records.where(Stage.RECONCILE, outcome)]


@pytest.mark.parametrize(
    "returned",
    [True, 5, Result, "requeue"],
    ids=["bool", "int", "the Result class", "str"],
)
def test_a_reconciler_returning_what_is_not_a_result_fails_that_reconcile_only(
    returned: object,
) -> None:
    async def reconcile(ctx: Context, request: Request) -> Any:
        return returned if request.name == "bad" else None

    async def scenario() -> None:
        harness = Harness(reconcile)
        harness.start()
        harness.add("bad")
        harness.add("good")
        await harness.until(lambda: harness.reconciled("success") == ["ns/good"])
        await harness.stop()
        error = harness.records.where(Stage.RECONCILE, "error")[0]
        assert error.request == "ns/bad"
        assert f"returned {returned!r} ({type(returned).__name__}), not a Result" in error.reason
        assert harness.records.where(Stage.REQUEUE, "rate_limited")  # retried like any error

    asyncio.run(scenario())


def test_requeue_after_accepts_a_timedelta() -> None:
    async def reconcile(ctx: Context, request: Request) -> Result:
        return Result(requeue_after=timedelta(minutes=2))

    async def scenario() -> None:
        harness = Harness(reconcile)
        harness.start()
        harness.add("x")
        await harness.until(lambda: bool(harness.records.where(Stage.REQUEUE)))
        await harness.stop()
        requeue = harness.records.where(Stage.REQUEUE, "after")[0]
        assert requeue.attrs["delay_s"] == 120.0

    asyncio.run(scenario())
    with pytest.raises(TypeError, match="requeue_after must be seconds or a timedelta"):
        Result(requeue_after="5")  # type: ignore[arg-type]


def test_a_reconciler_raising_cancelled_error_by_itself_is_an_error_and_the_worker_lives() -> None:
    async def reconcile(ctx: Context, request: Request) -> None:
        if request.name == "bad":
            raise asyncio.CancelledError("an inner task was cancelled")

    async def scenario() -> None:
        harness = Harness(reconcile)
        harness.start()
        harness.add("bad")
        harness.add("good")
        await harness.until(lambda: harness.reconciled("success") == ["ns/good"])
        assert harness.task is not None and not harness.task.done()
        await harness.stop()
        error = harness.records.where(Stage.RECONCILE, "error")[0]
        assert error.request == "ns/bad" and error.attrs["error_type"] == "CancelledError"

    asyncio.run(scenario())


class BrokenQueue(WorkQueue[Request]):
    def forget(self, item: Request) -> None:
        raise RuntimeError("the queue broke")


def test_a_worker_that_dies_ends_run_naming_its_exception() -> None:
    async def reconcile(ctx: Context, request: Request) -> None:
        return None

    async def scenario() -> None:
        harness = Harness(reconcile, workers=2)
        harness.controller.queue = BrokenQueue(clock=harness.clock)
        harness.start()
        harness.add("x")
        assert harness.task is not None
        with pytest.raises(ControllerFailed, match="a worker died: RuntimeError: the queue broke"):
            await asyncio.wait_for(harness.task, 5)

    asyncio.run(scenario())


def test_a_requeue_asked_for_during_shutdown_is_not_recorded_as_scheduled() -> None:
    harness: Harness

    async def reconcile(ctx: Context, request: Request) -> Result:
        harness.controller.queue.shutdown()  # the manager stops while this reconcile runs
        return Result(requeue_after=30)

    async def scenario() -> None:
        nonlocal harness
        harness = Harness(reconcile)
        harness.start()
        harness.add("x")
        await harness.until(lambda: bool(harness.records.where(Stage.RECONCILE)))
        await harness.stop()

    asyncio.run(scenario())
    done = harness.records.where(Stage.RECONCILE)[0]
    assert done.outcome == "requeue_after"
    assert "not requeued: the queue is shut down" in done.reason
    assert done.attrs["not_requeued"] == "the queue is shut down"
    assert harness.records.where(Stage.REQUEUE) == []


class RaisingHandler:
    def map(self, event: Event) -> MapResult:
        raise KeyError("spec")

    def describe(self) -> str:
        return "my handler"


def test_a_custom_handler_that_raises_maps_nothing_and_the_informer_goes_on() -> None:
    records = Collect()
    informer = Informer(
        cast(Transport, None),
        cast(RestMapper, None),
        CONFIGMAP,
        recorder=Recorder(records),
        clock=FakeClock(),
        writes=WriteLog(),
    )
    controller = Controller(
        "test", lambda ctx, req: None, recorder=Recorder(records), clock=FakeClock()
    )
    controller.watch(Watch(informer, RaisingHandler(), (), "watches"))
    informer._apply("ADDED", cm("x"))
    informer._apply("ADDED", cm("y"))
    dropped = records.where(Stage.DISPATCH, "not_mapped")
    assert len(dropped) == 2
    assert dropped[0].reason == "my handler raised KeyError: 'spec'"
    assert dropped[0].attrs["handler"] == "my handler"
    assert informer.get("ns", "y") is not None


def test_recover_panic_is_gone_python_exceptions_are_always_errors() -> None:
    names = {field.name for field in dataclasses.fields(ControllerOptions)}
    assert "recover_panic" not in names


class Scopes:
    def __init__(self, namespaced: bool | None) -> None:
        self.value = namespaced

    def namespaced(self, kind: Kind) -> bool | None:
        return self.value


def test_owns_under_a_cluster_scoped_for_kind_enqueues_the_owner_without_a_namespace() -> None:
    spec = (
        Builder(_Registry())
        .for_("example.com/v1", "Cluster")
        .owns("v1", "ConfigMap")
        .complete(lambda ctx, req: None)
    )
    for_watch, owns_watch = spec.watches
    child = cm("child", ownerReferences=[
        {"apiVersion": "example.com/v1", "kind": "Cluster", "name": "c1", "controller": True}
    ])  # fmt: skip
    owner = {"apiVersion": "example.com/v1", "kind": "Cluster", "metadata": {"name": "c1"}}
    created = Event(EventType.CREATE, child)
    cluster_scoped = owns_watch.handler(spec.for_kind, Scopes(False))
    assert cluster_scoped.map(created).requests == (Request("", "c1"),)
    assert for_watch.handler(spec.for_kind, Scopes(False)).map(
        Event(EventType.CREATE, owner)
    ).requests == (Request("", "c1"),)  # one key for both watches
    assert owns_watch.handler(spec.for_kind, Scopes(True)).map(created).requests == (
        Request("ns", "c1"),
    )
    unknown = owns_watch.handler(spec.for_kind, Scopes(None)).map(created)
    assert unknown.requests == () and "scope of example.com/Cluster is not known" in unknown.reason


def test_events_waiting_for_one_request_are_merged_into_one_reconcile_that_names_them() -> None:
    """On the fake clock: two events for one object before a worker runs are one reconcile,
    chained event → dispatch → reconcile start → reconcile."""
    ran: list[str] = []

    async def reconcile(ctx: Context, request: Request) -> None:
        ran.append(request.key)

    async def scenario() -> Harness:
        harness = Harness(reconcile)
        harness.add("a")
        harness.informer._apply("MODIFIED", cm("a", rv="2"))
        harness.start()
        await harness.until(lambda: bool(harness.reconciled("success")))
        await harness.stop()
        return harness

    harness = asyncio.run(scenario())
    assert ran == ["ns/a"]
    events = harness.records.where(Stage.EVENT)
    dispatches = harness.records.where(Stage.DISPATCH)
    assert [d.outcome for d in dispatches] == ["queued", "deduplicated"]
    assert [d.cause_ids for d in dispatches] == [(events[0].id,), (events[1].id,)]
    (start,) = harness.records.where(Stage.RECONCILE_START)
    assert start.cause_ids == tuple(d.id for d in dispatches)
    (done,) = harness.records.where(Stage.RECONCILE)
    assert (done.cause_ids, done.reconcile_id) == ((start.id,), start.reconcile_id)
    assert done.attrs["metric_result"] == "success"


def test_a_failing_reconcile_backs_off_per_item_on_the_fake_clock_and_success_forgets() -> None:
    failures = 2

    async def reconcile(ctx: Context, request: Request) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise RuntimeError("not yet")

    async def scenario() -> Harness:
        harness = Harness(reconcile)
        harness.start()
        harness.add("a")
        await harness.until(lambda: len(harness.records.where(Stage.REQUEUE)) == 1)
        await harness.clock.advance(0.004)  # not due yet: 5 ms
        assert len(harness.records.where(Stage.RECONCILE)) == 1
        await harness.clock.advance(0.001)
        await harness.until(lambda: len(harness.records.where(Stage.REQUEUE)) == 2)
        await harness.clock.advance(0.010)  # 5 ms · 2
        await harness.until(lambda: bool(harness.reconciled("success")))
        await harness.stop()
        return harness

    harness = asyncio.run(scenario())
    requeues = harness.records.where(Stage.REQUEUE)
    assert [(r.outcome, r.attrs["delay_s"], r.attrs["attempt"]) for r in requeues] == [
        ("rate_limited", 0.005, 1),
        ("rate_limited", 0.01, 2),
    ]
    assert [r.outcome for r in harness.records.where(Stage.RECONCILE)] == [
        "error",
        "error",
        "success",
    ]
    assert [r.attrs["retries"] for r in harness.records.where(Stage.RECONCILE_START)] == [0, 1, 2]
    assert harness.controller.queue.retries(Request("ns", "a")) == 0
