"""The TUI over records of real runs against the local kube-apiserver.

``recorded_run`` runs a manager with a Widget controller through a fixed sequence of steps
(each waits for its last record before the next starts, so the sequence of records is the same
every time) into a ``JournalWriter``. The snapshots are taken over a copy of that journal with
what legitimately differs between runs made fixed: times (one second per step, 10 ms per
record), record and reconcile ids, the test's namespace, uids, resourceVersions, queue waits
and durations. The order and content of the records are the real run's.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from ctrltrace import Context, Manager, Request, Result, Stage, TerminalError, predicates
from ctrltrace.envtest import ControlPlane
from ctrltrace.envtest.pytest_plugin import MintIdentity
from ctrltrace.journal import Journal, JournalWriter
from ctrltrace.records import AttrValue, ObjectRef, Record
from ctrltrace.tui.app import TraceApp
from ctrltrace.tui.command import ManagerThread
from ctrltrace.tui.feed import EvidenceFeed, RecorderFeed
from ctrltrace.tui.table import LiveTable

from ..unit.test_tui import (  # noqa: F401  # utc: an autouse fixture, used by being imported
    T0,
    app_on,
    assert_no_cells_touch,
    assert_snapshot,
    run,
    screen_text,
    settled,
    utc,
)
from .conftest import Running, start, stop, widget

ManagerFactory = Callable[..., Manager]
SIZE = (110, 30)


def reconciler() -> Callable[[Context, Request], Any]:
    """Widgets: spec.fail once / terminal fails so; spec.requeue asks to run again in 5 min.

    It writes nothing, so no event of its own comes back to race with the next step.
    """
    failed: set[str] = set()

    async def reconcile(ctx: Context, req: Request) -> Result | None:
        spec = (await ctx.client.get("example.com/v1", "Widget", req.name, req.namespace))["spec"]
        if spec.get("fail") == "terminal":
            raise TerminalError("spec.fail=terminal: this widget cannot be made")
        if spec.get("fail") == "once" and req.key not in failed:
            failed.add(req.key)
            raise RuntimeError("simulated failure (spec.fail=once): the retry will succeed")
        return Result(requeue_after=300) if spec.get("requeue") else None

    return reconcile


def widget_manager(factory: ManagerFactory, namespace: str) -> Manager:
    manager = factory(namespaces=[namespace])
    (
        manager.controller()
        .for_("example.com/v1", "Widget", predicates.GenerationChanged())
        .owns("v1", "ConfigMap")
        .named("widget")
        .with_options(max_concurrent_reconciles=2)
        .complete(reconciler())
    )
    return manager


def _ends(running: Running, name: str, outcome: str | None = None) -> int:
    key = f"{running.manager.options.namespaces[0]}/{name}"
    return sum(
        1 for record in running.records.where(Stage.RECONCILE, outcome) if record.request == key
    )


@dataclass
class RecordedRun:
    journal: Path
    namespace: str
    steps: list[int]  # records written before each step began


async def _run_steps(plane: ControlPlane, running: Running, namespace: str) -> list[int]:
    """Drive the run one step at a time; return where each step's records begin."""
    records = running.records
    widgets = f"/apis/example.com/v1/namespaces/{namespace}/widgets"
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    steps: list[int] = []

    async def step(action: Callable[[], object], done: Callable[[], bool]) -> None:
        steps.append(len(records.records))
        action()
        await running.until(done)

    await running.until(lambda: bool(records.where(Stage.CONTROLLER, "started")))
    await step(
        lambda: plane.request("POST", widgets, widget(namespace, "a")),
        lambda: _ends(running, "a") == 1,
    )
    await step(
        lambda: plane.request("POST", widgets, widget(namespace, "b", fail="once")),
        lambda: _ends(running, "b", "success") == 1,
    )
    label = {"metadata": {"labels": {"tier": "gold"}}}
    await step(
        lambda: plane.request(
            "PATCH", f"{widgets}/a", label, content_type="application/merge-patch+json"
        ),
        lambda: bool(records.where(Stage.DISPATCH, "dropped_by_predicate")),
    )
    uid = plane.request("GET", f"{widgets}/a")["metadata"]["uid"]
    owner = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "name": "a",
        "uid": uid,
        "controller": True,
    }
    owned = {"metadata": {"name": "a-config", "ownerReferences": [owner]}, "data": {"k": "v"}}
    await step(lambda: plane.request("POST", configmaps, owned), lambda: _ends(running, "a") == 2)
    await step(
        lambda: plane.request("POST", configmaps, {"metadata": {"name": "loose"}}),
        lambda: bool(records.where(Stage.DISPATCH, "not_mapped")),
    )
    await step(
        lambda: plane.request("POST", widgets, widget(namespace, "c", fail="terminal")),
        lambda: _ends(running, "c") == 1,
    )
    await step(
        lambda: plane.request("POST", widgets, widget(namespace, "d", requeue=True)),
        lambda: bool(records.where(Stage.REQUEUE, "after")),
    )
    steps.append(len(records.records))  # the stop
    return steps


@pytest.fixture
def recorded_run(
    control_plane: ControlPlane,
    kube_namespace: str,
    widget_crd: str,
    manager_factory: ManagerFactory,
    tmp_path: Path,
) -> RecordedRun:
    path = tmp_path / "real" / "journal.sqlite"

    async def scenario() -> list[int]:
        manager = widget_manager(manager_factory, kube_namespace)
        with JournalWriter(path) as writer:
            manager.add_sink(writer)
            running = await start(manager)
            try:
                steps = await _run_steps(control_plane, running, kube_namespace)
            finally:
                await stop(running)
        return steps

    return RecordedRun(path, kube_namespace, asyncio.run(scenario()))


# -- the deterministic copy --------------------------------------------------------------------


class _Fixed:
    """Replaces what differs between runs with values that depend only on order of appearance."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.ids: dict[int, int] = {}
        self.rids: dict[str, str] = {}
        self.rvs: dict[str, str] = {}

    def _rv(self, found: re.Match[str] | str) -> str:
        value = found if isinstance(found, str) else found[1]
        if not value:
            return value
        rv = self.rvs.setdefault(value, str(100 + len(self.rvs)))
        return rv if isinstance(found, str) else f"resourceVersion {rv}"

    def text(self, value: str) -> str:
        value = value.replace(self.namespace, "demo")
        # how long the first list took depends on the machine's load
        value = re.sub(r"objects in \d+\.\ds", "objects in 0.0s", value)
        return re.sub(r"resourceVersion (\d+)", self._rv, value)

    def record(self, record: Record, at: float) -> Record:
        self.ids[record.id] = len(self.ids) + 1
        ref = record.object
        if ref is not None:
            ref = ObjectRef(
                ref.api_version,
                ref.kind,
                "demo" if ref.namespace else "",
                ref.name,
                f"uid-{ref.kind.lower()}-{ref.name}",
                self._rv(ref.resource_version),
                ref.generation,
            )
        attrs: dict[str, AttrValue] = {
            name: self.text(value) if isinstance(value, str) else value
            for name, value in record.attrs.items()
        }
        for name, fixed in (("queue_wait_s", 0.002), ("duration_s", 0.01), ("seconds", 0.0)):
            if name in attrs:
                attrs[name] = fixed
        if "due" in attrs:
            attrs["due"] = at + float(attrs["delay_s"])
        rid = record.reconcile_id
        return replace(
            record,
            time=at,
            id=self.ids[record.id],
            object=ref,
            reason=self.text(record.reason),
            request=self.text(record.request),
            reconcile_id=self.rids.setdefault(rid, f"rid-{len(self.rids) + 1}") if rid else "",
            cause_ids=tuple(self.ids[cause] for cause in record.cause_ids if cause in self.ids),
            attrs=attrs,
        )


def fixed_copy(run: RecordedRun, into: Path) -> list[Record]:
    """The run's journal with its run-to-run differences fixed, written to ``into``."""
    with Journal(run.journal) as journal:
        records = [record for _, record in journal.tail(0, 100_000)]
    fixed = _Fixed(run.namespace)
    copied: list[Record] = []
    bounds = [*run.steps, len(records)]
    # Before the first step the two informers start concurrently: their records come in
    # either order. None links to another, so they are put in one order: by stage and kind.
    startup = sorted(
        records[: bounds[0]],
        key=lambda r: (str(r.stage), r.outcome, str(r.attrs.get("kind", "")), r.controller),
    )
    for index, record in enumerate(startup):
        copied.append(fixed.record(record, T0 + index * 0.01))
    for number, (begin, end) in enumerate(itertools.pairwise(bounds), start=1):
        for index, record in enumerate(records[begin:end]):
            copied.append(fixed.record(record, T0 + number + index * 0.01))
    with JournalWriter(into) as writer:
        for record in copied:
            writer(record)
    return copied


@pytest.fixture
def fixed_journal(
    recorded_run: RecordedRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, list[Record]]]:
    monkeypatch.chdir(tmp_path)
    path = Path("journal.sqlite")  # relative: the status line shows it
    yield path, fixed_copy(recorded_run, path)


# -- the tests ---------------------------------------------------------------------------------


def test_a_recorded_real_run_replays_in_every_view(
    fixed_journal: tuple[Path, list[Record]],
) -> None:
    path, records = fixed_journal
    stages = [(r.stage, r.outcome) for r in records]
    assert (Stage.RECONCILE, "terminal_error") in stages and (Stage.MANAGER, "stopped") in stages

    async def scenario() -> None:
        app = app_on(path, records[-1].time + 3600)
        async with app.run_test(size=SIZE) as pilot:
            await settled(pilot, len(records))
            text = screen_text(app)
            assert "◌ idle since" in text and "manager stopped" in text
            for outcome in (
                "✓ widget: reconciled",
                "✓ widget: reconciled after 2 runs",
                "✗ widget: dropped by GenerationChanged",
                "✓ widget → demo/a: reconciled",
                "✗ widget: not mapped: ",
                "✗ widget: terminal error, no retry",
                "↻ widget: reconciled, requeue at",
            ):
                assert outcome in text, outcome
            assert_snapshot(app, "real-events")

            await pilot.press("2")
            await pilot.pause()
            text = screen_text(app)
            assert "widget     ■ stopped" in text
            assert_snapshot(app, "real-controllers")

            await pilot.press("4")
            await pilot.pause()
            text = screen_text(app)
            assert "ConfigMap" in text and "Widget" in text and "✓ watching" in text
            assert_snapshot(app, "real-watches")

            await pilot.press("1")
            events = app.query_one("#events", LiveTable)
            row = next(r for r in app.live.events.values() if r.name == "b")
            events.move_to(list(events.keys).index(row.key))
            await pilot.press("enter")
            deadline = time.monotonic() + 10
            while "fix:" not in screen_text(app):
                assert time.monotonic() < deadline
                await pilot.pause(0.05)
            text = screen_text(app)
            assert "✓ reconciled  Reconcile of demo/b in widget succeeded after 2 runs" in text
            assert "RuntimeError: simulated failure (spec.fail=once)" in text
            assert_snapshot(app, "real-object")

    run(scenario)


@pytest.mark.parametrize("width", [80, 200])
def test_the_funnel_and_time_views_of_a_recorded_real_run(
    fixed_journal: tuple[Path, list[Record]], width: int
) -> None:
    path, records = fixed_journal

    async def scenario() -> None:
        app = app_on(path, records[-1].time + 3600)
        async with app.run_test(size=(width, 34)) as pilot:
            await settled(pilot, len(records))
            await pilot.press("5")
            deadline = time.monotonic() + 10
            while "queue depth" not in screen_text(app):
                assert time.monotonic() < deadline
                await pilot.pause(0.05)
            text = screen_text(app)
            assert "controller widget" in text and "GenerationChanged" in text
            assert "✗ not mapped" in text and "events/s" in text and "reconcile p99" in text
            assert_no_cells_touch(text)
            assert_snapshot(app, f"real-funnel-{width}")

    run(scenario)


def test_the_live_view_follows_a_real_run_as_it_writes(
    control_plane: ControlPlane,
    kube_namespace: str,
    widget_crd: str,
    manager_factory: ManagerFactory,
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"
    widgets = f"/apis/example.com/v1/namespaces/{kube_namespace}/widgets"

    async def scenario() -> None:
        manager = widget_manager(manager_factory, kube_namespace)
        with JournalWriter(path, flush_interval_s=0.05) as writer:
            manager.add_sink(writer)
            running = await start(manager)
            try:
                await running.until(
                    lambda: bool(running.records.where(Stage.CONTROLLER, "started"))
                )
                writer.flush()
                app = TraceApp(EvidenceFeed.of_journal(path, poll_s=0.05))
                async with app.run_test(size=SIZE) as pilot:
                    await settled(pilot, 1)
                    control_plane.request(
                        "POST", widgets, widget(kube_namespace, "late", fail="once")
                    )
                    deadline = time.monotonic() + 20
                    while "reconciled after 2 runs" not in screen_text(app):
                        assert time.monotonic() < deadline, screen_text(app)
                        await pilot.pause(0.05)
                    assert f"{kube_namespace}/late" in screen_text(app)
                    assert "● live" in screen_text(app)
            finally:
                await stop(running)

    run(scenario)


def test_run_with_a_tui_shows_the_manager_of_this_process(
    control_plane: ControlPlane,
    kube_namespace: str,
    widget_crd: str,
    manager_factory: ManagerFactory,
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"
    widgets = f"/apis/example.com/v1/namespaces/{kube_namespace}/widgets"
    manager = widget_manager(manager_factory, kube_namespace)
    feed = RecorderFeed(functools.partial(Journal, path))
    manager.add_sink(feed)

    async def scenario() -> None:
        app = TraceApp(feed)
        with JournalWriter(path, flush_interval_s=0.05) as writer:
            manager.add_sink(writer)
            with ManagerThread(manager) as runner:
                async with app.run_test(size=SIZE) as pilot:
                    deadline = time.monotonic() + 20
                    while "✓ running" not in screen_text(app):
                        assert time.monotonic() < deadline
                        await pilot.press("2")
                        await pilot.pause(0.1)
                    await pilot.press("1")
                    control_plane.request("POST", widgets, widget(kube_namespace, "w"))
                    while "✓ widget: reconciled" not in screen_text(app):
                        assert time.monotonic() < deadline, screen_text(app)
                        await pilot.pause(0.05)
                    writer.flush()
                    await pilot.press("enter")  # explained from the journal the run writes
                    while "fix:" not in screen_text(app):
                        assert time.monotonic() < deadline, screen_text(app)
                        await pilot.pause(0.05)
                    assert "✓ reconciled" in screen_text(app)
            runner.raise_error()  # it stopped as asked, with no error

    run(scenario)
    assert manager.controllers[0].queue.processing_count == 0


def test_real_watch_errors_show_with_their_message(
    control_plane: ControlPlane,
    kube_namespace: str,
    manager_factory: ManagerFactory,
    mint_identity: MintIdentity,
    tmp_path: Path,
) -> None:
    identity = mint_identity(
        [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        namespace=kube_namespace,
    )
    path = tmp_path / "journal.sqlite"

    async def scenario() -> None:
        manager = manager_factory(namespaces=[kube_namespace], kubeconfig=str(identity.kubeconfig))
        manager.controller().for_("v1", "ConfigMap").complete(reconciler())
        manager.controller().for_("example.com/v1", "Gadget").named("gadget").complete(reconciler())
        with JournalWriter(path) as writer:
            manager.add_sink(writer)
            running = await start(manager)
            records = running.records
            try:
                await running.until(
                    lambda: (
                        bool(records.where(Stage.WATCH, "forbidden"))
                        and bool(records.where(Stage.WATCH, "kind_not_found"))
                    )
                )
            finally:
                await stop(running)
        app = TraceApp(EvidenceFeed.of_journal(path, poll_s=0.05))
        async with app.run_test(size=SIZE) as pilot:
            await settled(pilot, 4)
            await pilot.press("4")
            await pilot.pause()
            text = " ".join(screen_text(app).split())
            assert "✗ forbidden (403)" in text and "✗ kind not found" in text
            await pilot.press("down")  # ConfigMap, Gadget: the detail shows the whole message
            await pilot.press("up")
            await pilot.pause()
            text = " ".join(screen_text(app).split())
            assert identity.name in text and 'cannot list resource "configmaps"' in text

    run(scenario)
