"""The Event recorder without a cluster: aggregation, rate limits, the queue, the records."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from ctrltrace import Collect, EventRecorder, FakeClock, Recorder, Stage
from ctrltrace.kubeevents import EventBroadcaster
from ctrltrace.transport import ApiError, Json, NotFound

FOO = {
    "apiVersion": "samplecontroller.k8s.io/v1alpha1",
    "kind": "Foo",
    "metadata": {"name": "foo", "namespace": "a", "uid": "u1", "resourceVersion": "7"},
}


class FakeApi:
    """Answers Event requests like the API server, keeping the Events; ``fail`` injects."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.events: dict[str, dict[str, Any]] = {}
        self.fail: list[BaseException] = []
        self.hang = False  # requests never answer

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Json:
        self.calls.append((method, path, body))
        if self.hang:
            await asyncio.Event().wait()
        if self.fail:
            raise self.fail.pop(0)
        if method == "POST":
            self.events[f"{path}/{body['metadata']['name']}"] = dict(body)
            return dict(body)
        if path not in self.events:
            raise NotFound(404, "NotFound", "events not found", method, path)
        self.events[path] |= body
        return self.events[path]


Scenario = Callable[[EventRecorder, FakeApi, FakeClock], Awaitable[None]]


def _run(
    scenario: Scenario, collect: Collect | None = None, **options: Any
) -> tuple[FakeApi, EventBroadcaster]:
    api, clock = FakeApi(), FakeClock()
    broadcaster = EventBroadcaster(
        recorder=Recorder(collect or Collect()), clock=clock, host="node-1", **options
    )
    recorder = broadcaster.recorder_for("foo-controller").scoped("foo", "rid-1", "a/foo")

    async def main() -> None:
        sender = asyncio.create_task(broadcaster.run(api))
        await clock.advance(0)
        await scenario(recorder, api, clock)
        await clock.advance(0)
        sender.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sender

    asyncio.run(main())
    return api, broadcaster


def test_the_same_event_three_times_is_one_event_object_with_count_3() -> None:
    collect = Collect()

    async def three(events: EventRecorder, api: FakeApi, clock: FakeClock) -> None:
        for _ in range(3):
            events.normal(FOO, "Synced", "Foo synced successfully")
            await clock.advance(1)

    api, _ = _run(three, collect)
    assert [method for method, _, _ in api.calls] == ["POST", "PATCH", "PATCH"]
    [(path, event)] = api.events.items()
    assert path.startswith("/api/v1/namespaces/a/events/foo.")
    assert event["count"] == 3
    assert event["involvedObject"] == {
        "apiVersion": "samplecontroller.k8s.io/v1alpha1",
        "kind": "Foo",
        "namespace": "a",
        "name": "foo",
        "uid": "u1",
        "resourceVersion": "7",
    }
    assert event["source"] == {"component": "foo-controller", "host": "node-1"}
    assert event["lastTimestamp"] > event["firstTimestamp"]
    records = collect.where(Stage.KUBE_EVENT)
    assert [r.outcome for r in records] == ["created", "counted", "counted"]
    assert records[-1].reason == "Normal Synced: Foo synced successfully (count 3)"
    assert {(r.controller, r.reconcile_id, r.request) for r in records} == {
        ("foo", "rid-1", "a/foo")
    }
    assert records[0].object is not None and records[0].object.key == "a/foo"


def test_another_message_or_type_is_another_event_object() -> None:
    async def different(events: EventRecorder, api: FakeApi, clock: FakeClock) -> None:
        events.normal(FOO, "Synced", "one")
        await clock.advance(1)
        events.normal(FOO, "Synced", "two")
        await clock.advance(1)
        events.warning(FOO, "Synced", "two")

    api, _ = _run(different)
    assert [method for method, _, _ in api.calls] == ["POST", "POST", "POST"]
    assert len(api.events) == 3


def test_an_expired_event_is_created_again_with_its_count() -> None:
    async def expired(events: EventRecorder, api: FakeApi, clock: FakeClock) -> None:
        events.normal(FOO, "Synced", "ok")
        await clock.advance(1)
        api.events.clear()  # the API server dropped it (Events live an hour)
        events.normal(FOO, "Synced", "ok")

    api, _ = _run(expired)
    assert [method for method, _, _ in api.calls] == ["POST", "PATCH", "POST"]
    [event] = api.events.values()
    assert event["count"] == 2


def test_more_than_the_burst_about_one_object_is_dropped_until_a_token_refills() -> None:
    collect = Collect()

    async def spam(events: EventRecorder, api: FakeApi, clock: FakeClock) -> None:
        for number in range(4):
            events.normal(FOO, "Tick", f"tick {number}")
        await clock.advance(0)
        events.normal(FOO, "Tick", "tick 0")
        await clock.advance(0)
        await clock.advance(300)
        events.normal(FOO, "Tick", "tick 0")

    api, broadcaster = _run(spam, collect, spam_burst=3)
    assert [method for method, _, _ in api.calls] == ["POST", "POST", "POST", "PATCH"]
    assert broadcaster.dropped == 2  # tick 3, and the repeat of tick 0 before the refill
    dropped = collect.where(Stage.KUBE_EVENT, "dropped")
    assert "rate-limited" in dropped[0].reason
    # Occurrences dropped meanwhile are counted, as client-go's correlator counts them.
    assert api.calls[-1][2]["count"] == 3


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    collect = Collect()

    async def flood(events: EventRecorder, api: FakeApi, clock: FakeClock) -> None:
        for number in range(5):
            events.normal(FOO, "Tick", f"tick {number}")  # no await: the sender cannot run

    api, broadcaster = _run(flood, collect, max_queued=2)
    assert len(api.calls) == 2
    assert broadcaster.dropped == 3
    reasons = [r.reason for r in collect.where(Stage.KUBE_EVENT, "dropped")]
    assert reasons[0] == "Normal Tick: tick 2; the Event queue is full (2 waiting)"


def test_events_still_queued_when_the_manager_stops_are_dropped_and_said() -> None:
    collect = Collect()

    async def stopping(events: EventRecorder, api: FakeApi, clock: FakeClock) -> None:
        api.hang = True
        events.normal(FOO, "Tick", "in flight")
        events.normal(FOO, "Tick", "waiting")
        await clock.advance(0)

    api, broadcaster = _run(stopping, collect)
    assert len(api.calls) == 1
    [dropped] = collect.where(Stage.KUBE_EVENT)
    assert dropped.reason == "Normal Tick: waiting; the manager stopped before it was sent"
    assert broadcaster.dropped == 1


def test_a_refusal_is_not_retried_and_a_lost_connection_is() -> None:
    collect = Collect()

    async def failing(events: EventRecorder, api: FakeApi, clock: FakeClock) -> None:
        api.fail = [ApiError(403, "Forbidden", "events is forbidden", "POST", "/api/v1")]
        events.warning(FOO, "Failed", "one")
        await clock.advance(0)
        api.fail = [OSError("connection reset")]
        events.warning(FOO, "Failed", "two")
        await clock.advance(0)  # the first attempt fails, the sender waits a second
        await clock.advance(1)

    api, _ = _run(failing, collect)
    assert [method for method, _, _ in api.calls] == ["POST", "POST", "POST"]
    outcomes = [(r.outcome, r.reason) for r in collect.where(Stage.KUBE_EVENT)]
    assert outcomes == [
        ("failed", "Warning Failed: one; not sent: 403 Forbidden: events is forbidden"),
        ("created", "Warning Failed: two"),
    ]


def test_events_from_a_worker_thread_reach_the_sender() -> None:
    async def threaded(events: EventRecorder, api: FakeApi, clock: FakeClock) -> None:
        thread = threading.Thread(target=events.normal, args=(FOO, "Synced", "from a thread"))
        thread.start()
        await asyncio.to_thread(thread.join)
        await clock.advance(0)

    api, _ = _run(threaded)
    assert [method for method, _, _ in api.calls] == ["POST"]


@pytest.mark.parametrize(
    ("obj", "event_type", "error"),
    [
        (FOO, "Info", "Event type must be"),
        ({"metadata": {"name": "x"}}, "Normal", "apiVersion, kind and metadata.name"),
    ],
)
def test_an_event_the_api_server_would_refuse_raises(
    obj: dict[str, Any], event_type: str, error: str
) -> None:
    events = EventBroadcaster(recorder=Recorder(), clock=FakeClock()).recorder_for("c")
    with pytest.raises(ValueError, match=error):
        events.event(obj, event_type, "Reason", "message")
