"""The TUI over hand-made records: the model, the feeds, every view and key, SVG snapshots.

Snapshots are Textual's own SVG screenshots (``App.export_screenshot``) kept in
``tests/snapshots/``; a test fails when the screen differs. After a deliberate change of the
view, ``CTRLTRACE_SNAPSHOT_UPDATE=1 pytest tests/unit/test_tui.py`` writes them anew; review
the diff (the SVGs open in a browser) before committing. pytest-textual-snapshot is not used:
it pins syrupy 4, which requires pytest < 9.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Input, Static

from ctrltrace import BuildError, Manager
from ctrltrace.cli import ExitCode
from ctrltrace.cli import main as cli_main
from ctrltrace.evidence import EvidenceRefused, EvidenceUnreachable, EvidenceUnreadable, Opener
from ctrltrace.explain import Code, explain
from ctrltrace.explain_text import render_text
from ctrltrace.funnel import Funnel, Loss, Step
from ctrltrace.journal import Journal, JournalError, JournalWriter
from ctrltrace.records import ObjectRef, Record, Stage
from ctrltrace.testing import RunStory
from ctrltrace.tui import cells, funnel_cells
from ctrltrace.tui.app import JOURNAL_EXIT, LostScreen, TraceApp
from ctrltrace.tui.command import exit_code as tui_exit_code
from ctrltrace.tui.command import run_with_tui, tui_command
from ctrltrace.tui.feed import (
    Batch,
    EventRow,
    EvidenceFeed,
    Feed,
    Notify,
    RecorderFeed,
    Target,
    ViewState,
    explain_object,
    replay,
)
from ctrltrace.tui.table import LiveTable

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
SNAPSHOTS = Path(__file__).parents[1] / "snapshots"
FORBIDDEN = (
    'secrets is forbidden: User "system:serviceaccount:ops:widget-controller" cannot list '
    'resource "secrets" in API group "" in the namespace "shop"'
)


# -- records -----------------------------------------------------------------------------------


def widget_story(start: float = T0) -> RunStory:
    """Records as a run of controller ``widget`` over Widgets writes them, with ids from 1 (so
    screens repeat)."""
    return RunStory(
        synced=False,
        start=start,
        controller="widget",
        kind="Widget",
        numbered=True,
        reconcile_s=0.04,
    )


def demo() -> RunStory:
    """A run with one of each: every outcome, a 403, a kind not served, a lease handover."""
    story = widget_story()
    story.manager()
    story.lease("standby", "pod-b")
    story.watch("listed", "listed 0 at resourceVersion 100")
    story.watch("synced", "cache synced: 0 objects")
    story.watch("listed", "listed 0 at resourceVersion 100", kind="ConfigMap")
    story.watch("synced", "cache synced: 0 objects", kind="ConfigMap")
    story.watch("forbidden", FORBIDDEN, kind="Secret", namespace="shop", status=403)
    story.watch("kind_not_found", "example.com/v1 Gadget is not served", kind="Gadget")
    story.lease("acquired", "pod-a")
    story.controller("started")
    story.controller("cache_not_synced", "caches not synced after 120s: Gadget", name="gadget")
    # a: reconciled, then a label-only edit dropped by GenerationChanged
    added = story.event("a", "ADDED")
    story.end(story.start(story.dispatch(added)))
    label = story.event("a", "MODIFIED")
    story.dispatch(
        label, "dropped_by_predicate", reason="generation unchanged", predicate="GenerationChanged"
    )
    # b: fails once, succeeds on the retry
    failed = story.start(story.dispatch(story.event("b", "ADDED")))
    error = story.end(failed, "error", "RuntimeError: simulated failure")
    story.end(story.start(story.requeue(error)))
    # c: fails terminally
    story.end(
        story.start(story.dispatch(story.event("c", "ADDED"))),
        "terminal_error",
        "TerminalError: bad spec",
    )
    # a's ConfigMap maps to a, whose reconcile asks to run again in 5 minutes
    owned = story.event("a-config", "ADDED", kind="ConfigMap")
    after = story.end(story.start(story.dispatch(owned, request="shop/a")), "requeue_after")
    story.requeue(after, "after", 300.0)
    # a ConfigMap nobody owns
    loose = story.event("loose", "ADDED", kind="ConfigMap")
    story.dispatch(loose, "not_mapped", reason="no controller owner reference")
    # d: two events merged into one run, still running; e waits for a worker
    first = story.dispatch(story.event("d", "ADDED"))
    merged = story.dispatch(story.event("d", "MODIFIED"), "deduplicated")
    story.start(first, merged)
    story.dispatch(story.event("e", "ADDED", namespace="other"))
    return story


def write_journal(path: Path, records: list[Record]) -> None:
    with JournalWriter(path) as writer:
        for record in records:
            writer(record)


# -- running the app ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times on screen in UTC, whatever the machine's zone: snapshots must repeat anywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo run's journal, at a relative path (the status line shows it)."""
    monkeypatch.chdir(tmp_path)
    path = Path("journal.sqlite")
    write_journal(path, demo().records)
    return path


def at(seconds: float) -> Callable[[], float]:
    return lambda: seconds


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


async def settled(pilot: Pilot[None], records: int, within: float = 10.0) -> None:
    """Wait until the app has ``records`` records and has rendered them."""
    app = pilot.app
    assert isinstance(app, TraceApp)
    deadline = time.monotonic() + within
    status = app.query_one("#status", Static)

    def shown() -> bool:
        # The status line is rendered last: once it counts every record, the views show them
        # too. The footer lists the keys once it has recomposed for the focused table.
        counted = f"{app.live.applied:,} records" in str(status.content)
        return app.live.applied >= records and counted and bool(app.query("FooterKey"))

    while not shown():
        assert time.monotonic() < deadline, f"only {app.live.applied} of {records} records"
        await pilot.pause(0.02)
    await pilot.pause()


def screen_text(app: TraceApp) -> str:
    """The screen as plain text, as the SVG snapshot shows it without colour."""
    console = Console(
        width=app.size.width,
        file=io.StringIO(),
        record=True,
        color_system=None,
        legacy_windows=False,
    )
    # What App.export_screenshot renders, as text rather than SVG.
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()


def assert_snapshot(app: TraceApp, name: str) -> None:
    """Compare the screen with tests/snapshots/NAME.svg; CTRLTRACE_SNAPSHOT_UPDATE=1 writes it."""
    svg = app.export_screenshot(title="ctrltrace tui")
    path = SNAPSHOTS / f"{name}.svg"
    if os.environ.get("CTRLTRACE_SNAPSHOT_UPDATE") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(svg)
        return
    assert path.exists(), f"no snapshot {path}: run with CTRLTRACE_SNAPSHOT_UPDATE=1 to write it"
    assert svg == path.read_text(), (
        f"the screen differs from {path}; if that is intended, run with "
        f"CTRLTRACE_SNAPSHOT_UPDATE=1 and review the diff.\nScreen now:\n{screen_text(app)}"
    )


class SteadyApp(TraceApp):
    """The app with a steady cursor in the filter box.

    A blinking cursor is shown or hidden depending on when the snapshot is taken (every 0.5 s,
    later under load), so a snapshot of the focused box would fail now and then.
    """

    def on_mount(self) -> None:  # Textual calls TraceApp.on_mount too, after this one
        for field in self.query(Input):
            field.cursor_blink = False


def app_on(path: Path, clock: float, feed: Feed | None = None) -> TraceApp:
    app = SteadyApp(feed or EvidenceFeed.of_journal(path, poll_s=0.02), clock=at(clock))
    app.animation_level = "none"
    return app


class CountedWakeups:
    """A journal feed that counts the wake-ups it sent the view, each once it is sent."""

    def __init__(self, path: Path) -> None:
        self._feed = EvidenceFeed.of_journal(path, poll_s=0.02)
        self.wakeups = 0

    @property
    def evidence(self) -> Opener:
        return self._feed.evidence

    @property
    def label(self) -> str:
        return self._feed.label

    def start(self, notify: Notify) -> None:
        def counted() -> None:
            notify()
            self.wakeups += 1

        self._feed.start(counted)

    def take(self) -> Batch:
        return self._feed.take()

    def stop(self) -> None:
        self._feed.stop()


async def handled(app: TraceApp) -> None:
    """Wait until the app has handled every message posted to it so far (from any thread)."""
    await asyncio.sleep(0)  # a message posted from another thread reaches the queue first
    done = asyncio.Event()
    app.call_later(done.set)  # queued behind them: set once they are handled
    await asyncio.wait_for(done.wait(), 10)


DEMO = demo()
END = DEMO.time  # just after the demo's last record: the view is live
SIZE = (110, 30)


# -- the model ---------------------------------------------------------------------------------


def words(state: ViewState) -> dict[str, str]:
    """Each event row as 'kind ns/name TYPE' → its outcome cell, as plain text."""
    return {
        f"{row.kind} {row.object_key} {row.event_type}": cells.event_cells(row)[-1].plain
        for row in state.events.values()
    }


def test_each_event_row_merges_every_controllers_outcome_as_its_records_arrive() -> None:
    state = ViewState()
    state.apply(DEMO.records)
    assert words(state) == {
        "Widget shop/a ADDED": "✓ widget: reconciled",
        "Widget shop/a MODIFIED": "✗ widget: dropped by GenerationChanged",
        "Widget shop/b ADDED": "✓ widget: reconciled after 2 runs",
        "Widget shop/c ADDED": "✗ widget: terminal error, no retry: TerminalError: bad spec",
        "ConfigMap shop/a-config ADDED": "↻ widget → shop/a: reconciled, requeue at 22:18:20.320",
        "ConfigMap shop/loose ADDED": "✗ widget: not mapped: no controller owner reference",
        "Widget shop/d ADDED": "▶ widget: reconciling",
        "Widget shop/d MODIFIED": "▶ widget: reconciling (merged)",
        "Widget other/e ADDED": "◷ widget: queued",
    }


def test_a_row_follows_its_chain_step_by_step() -> None:
    story = widget_story()
    dispatch = story.dispatch(story.event("b", "ADDED"))
    start = story.start(dispatch)
    error = story.end(start, "error", "RuntimeError: boom")
    requeue = story.requeue(error)
    retry = story.start(requeue)
    done = story.end(retry)
    state = ViewState()
    seen = []
    for record in story.records:
        state.apply([record])
        seen.append(words(state)["Widget shop/b ADDED"])
    assert seen == [
        "· no dispatch recorded yet",
        "◷ widget: queued",
        "▶ widget: reconciling",
        "✗ widget: failed: RuntimeError: boom",
        "✗ widget: failed, retry 1 at 22:13:20.045: RuntimeError: boom",
        "▶ widget: reconciling, run 2",
        "✓ widget: reconciled after 2 runs",
    ]
    assert done.reconcile_id == retry.reconcile_id


def test_a_merged_event_says_so_while_it_waits() -> None:
    story = widget_story()
    story.dispatch(story.event("d", "ADDED"))
    story.dispatch(story.event("d", "MODIFIED"), "deduplicated")
    requeued = story.event("d", "MODIFIED")
    story.dispatch(requeued, "requeued_after_processing")
    state = ViewState()
    state.apply(story.records)
    assert [cells.event_cells(row)[-1].plain for row in state.events.values()] == [
        "◷ widget: queued",
        "≡ widget: merged into a queued run",
        "◷ widget: queued: after the running reconcile",
    ]


def test_controller_stats_queue_in_flight_errors_retries_and_next_requeue() -> None:
    state = ViewState()
    state.apply(DEMO.records)
    widget = state.controllers["widget"]
    now = END + 2.0
    text = [cell.plain for cell in cells.controller_cells(widget, now)]
    assert text == [
        "widget",
        "✓ running",
        "1/2",
        "1",
        "1 (oldest 2.0s)",
        "3",
        "✗ 2",
        "1",
        "↻ shop/a in 4m57s (requeue)",
    ]
    gadget = [cell.plain for cell in cells.controller_cells(state.controllers["gadget"], now)]
    assert gadget[1] == "◷ caches not synced"
    work = {key: [cell.plain for cell in row] for key, row in cells.work_rows(state, now)}
    assert [key[2] for key in work] == ["running", "waiting", "scheduled"]
    assert work["widget", "shop/d", "running"][2:4] == ["▶ reconciling", "2.0s"]


def test_a_stopped_manager_leaves_nothing_queued_or_running() -> None:
    story = demo()
    story.manager("stopped")
    state = ViewState()
    state.apply(story.records)
    widget = state.controllers["widget"]
    assert (widget.stopped, widget.outcome, widget.running, widget.waiting, widget.scheduled) == (
        True,
        "",
        {},
        {},
        {},
    )
    assert cells.work_rows(state, story.time) == []
    assert "manager stopped" in cells.feed_status(state, story.time + 60).plain
    assert cells.controller_cells(widget, story.time)[1].plain == "■ stopped"
    story.manager()  # the next run: not started until its controller says so
    state.apply(story.records[-1:])
    assert cells.controller_cells(widget, story.time)[1].plain == "· not started"


def test_lease_holder_role_and_transitions() -> None:
    state = ViewState()
    state.apply(DEMO.records)
    summary = cells.lease_summary(state.lease).plain
    assert "holder        pod-a" in summary
    assert "this replica  pod-a: ✓ leader since 22:13:20.080" in summary
    assert "transitions   2" in summary
    assert [t.outcome for t in state.lease.transitions] == ["standby", "acquired"]
    assert "no lease records" in cells.lease_summary(ViewState().lease).plain


def test_watches_synced_last_event_and_errors_with_their_message() -> None:
    state = ViewState()
    state.apply(DEMO.records)
    rows = {
        kind: [cell.plain for cell in cells.watch_cells(w)] for kind, w in state.watches.items()
    }
    assert rows["Widget"][2:5] == ["✓ 22:13:20.030", "✓ watching", "7"]
    assert rows["Secret"][1:4] == ["shop", "✗ not synced", "✗ forbidden (403)"]
    assert FORBIDDEN in rows["Secret"][6]
    assert rows["Gadget"][3] == "✗ kind not found"
    assert "Gadget is not served" in cells.watch_detail(state.watches["Gadget"]).plain


def test_rows_and_links_stay_capped() -> None:
    story = widget_story()
    for index in range(500):
        story.end(story.start(story.dispatch(story.event(f"w{index}", "ADDED"))))
        story.dispatch(
            story.event(f"x{index}", "ADDED")
        )  # queued, never started: its link must go too
    state = ViewState(max_events=50)
    state.apply(story.records)
    assert len(state.events) == 50
    assert state.first_key == 951
    links = (state._event_rows, state._by_dispatch, state._by_reconcile, state._by_requeue)
    assert all(len(table) <= 100 for table in links)
    assert state.take_changed() == list(range(951, 1001))


def test_ids_repeating_in_a_second_run_link_to_that_run() -> None:
    first, second = widget_story(), widget_story(T0 + 100)
    first.dispatch(first.event("a", "ADDED"))
    second.end(second.start(second.dispatch(second.event("b", "ADDED"))))
    state = ViewState()
    state.apply(first.records + second.records)
    assert words(state) == {
        "Widget shop/a ADDED": "◷ widget: queued",
        "Widget shop/b ADDED": "✓ widget: reconciled",
    }


def test_the_filter_matches_namespace_name_kind_verdict_and_controller() -> None:
    state = ViewState()
    state.apply(DEMO.records)

    def shown(text: str) -> list[str]:
        row_filter = cells.RowFilter.parse(text)
        return [
            f"{row.object_key} {row.event_type}"
            for row in state.events.values()
            if row_filter.matches(row)
        ]

    assert shown("ns:other") == ["other/e ADDED"]
    assert shown("kind:configmap") == ["shop/a-config ADDED", "shop/loose ADDED"]
    assert shown("verdict:dropped") == ["shop/a MODIFIED"]
    assert shown("v:terminal_error") == ["shop/c ADDED"]
    assert shown("merged") == ["shop/d MODIFIED"]
    assert shown("name:d modified") == ["shop/d MODIFIED"]
    assert shown("generationchanged") == ["shop/a MODIFIED"]
    assert shown("controller:gadget") == []
    assert len(shown("")) == len(state.events)
    assert not cells.RowFilter.parse("  ")


def test_kind_filters_name_whole_kinds_as_explain_kind_does() -> None:
    story = widget_story()
    for api_version, kind in (("batch/v1", "Job"), ("batch.tutorial.kubebuilder.io/v1", "CronJob")):
        ref = ObjectRef(api_version, kind, "shop", kind.lower(), "uid", "1", 1)
        story.record(Stage.EVENT, "ADDED", object=ref, attrs={"self_caused": False})
    state = ViewState()
    state.apply(story.records)

    def shown(text: str) -> list[str]:
        row_filter = cells.RowFilter.parse(text)
        return [row.kind for row in state.events.values() if row_filter.matches(row)]

    assert shown("kind:job") == shown("kind:Jobs") == shown("kind:job.batch") == ["Job"]
    assert shown("kind:cronjob") == ["CronJob"]
    assert shown("kind:cronjob.batch") == []
    assert shown("kind:cronjob.batch.tutorial.kubebuilder.io") == ["CronJob"]
    assert shown("job") == ["Job", "CronJob"]  # a bare word still matches anywhere


def test_an_own_write_is_marked_even_when_its_event_came_before_its_answer() -> None:
    story = widget_story()
    early = story.event("a", "MODIFIED")
    other = story.event("b", "MODIFIED")
    for event, version in ((early, ""), (other, "999")):
        ref = event.object
        assert ref is not None
        story.record(
            Stage.WRITE,
            "update",
            object=replace(ref, resource_version=version or ref.resource_version),
            attrs={"event_id": event.id},
        )
    state = ViewState()
    state.apply(story.records)
    assert [cells.event_cells(row)[3].plain for row in state.events.values()] == [
        "MODIFIED (own write)",
        "MODIFIED",  # the write names the event, but another version: not this event's write
    ]


def test_a_row_keeps_its_own_outcome_when_the_request_runs_again_later() -> None:
    story = widget_story()
    first = story.dispatch(story.event("a", "ADDED"))
    after = story.end(story.start(first), "requeue_after")
    requeue = story.requeue(after, "after", 60.0)
    second = story.dispatch(story.event("a", "MODIFIED"))
    story.end(story.start(second, requeue), "error", "RuntimeError: boom")
    state = ViewState()
    state.apply(story.records)
    assert words(state) == {
        "Widget shop/a ADDED": "↻ widget: reconciled, requeue at 22:14:20.040",
        "Widget shop/a MODIFIED": "✗ widget: failed: RuntimeError: boom",
    }


def test_live_until_the_journal_stops_growing_then_idle_since_its_last_record() -> None:
    state = ViewState()
    assert cells.feed_status(state, T0).plain == "◷ waiting for records"
    state.apply(DEMO.records)
    assert cells.feed_status(state, END + 1).plain == "● live"
    assert cells.feed_status(state, END + 60).plain == "◌ idle since 22:13:20.410"


# -- the feeds ---------------------------------------------------------------------------------


def test_the_journal_feed_tails_records_appended_while_it_runs(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    story = demo()
    wakeups: list[int] = []
    feed = EvidenceFeed.of_journal(path, poll_s=0.01, chunk=10)
    with JournalWriter(path) as writer:
        for record in story.records[:20]:
            writer(record)
        writer.flush()
        feed.start(lambda: wakeups.append(1))
        try:
            taken = _take_until(feed, 20)
            for record in story.records[20:]:
                writer(record)
            writer.flush()
            taken += _take_until(feed, len(story.records) - 20)
        finally:
            feed.stop()
    assert taken == story.records
    # Bursts are merged: one wake-up per take at most, not one per record or chunk.
    assert 0 < len(wakeups) < len(story.records)


def _take_until(feed: EvidenceFeed, count: int) -> list[Record]:
    taken: list[Record] = []
    deadline = time.monotonic() + 10
    while len(taken) < count:
        assert time.monotonic() < deadline
        batch = feed.take()
        assert not batch.failure
        taken += batch.records
        time.sleep(0.01)
    return taken


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no journal at"),
        (b"not a database at all, just text" * 100, "is damaged or not a journal"),
        ("sqlite", "is not a ctrltrace journal"),
    ],
)
def test_the_journal_feed_reports_a_journal_it_cannot_read(
    tmp_path: Path, content: bytes | str | None, message: str
) -> None:
    path = tmp_path / "journal.sqlite"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "sqlite":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE notes (text TEXT)")
        db.close()
    feed = EvidenceFeed.of_journal(path)
    feed.start(lambda: None)
    feed.stop()  # the thread ends by itself after the failure; stop() joins it
    batch = feed.take()
    assert message in batch.failure and batch.records == []


def test_the_recorder_feed_wakes_the_view_once_per_burst_and_drops_the_oldest_past_its_cap() -> (
    None
):
    wakeups: list[int] = []
    feed = RecorderFeed(max_pending=10)
    feed.start(lambda: wakeups.append(1))
    story = demo()
    for record in story.records:
        feed(record)
    assert len(wakeups) == 1
    batch = feed.take()
    assert batch.records == story.records[-10:]
    assert batch.dropped == len(story.records) - 10
    feed(story.records[0])
    assert len(wakeups) == 2
    feed.stop()


def test_replay_folds_the_journal_up_to_the_cursor(journal: Path) -> None:
    # Just before b's retry ended: b had failed and was running again.
    retry_end = next(
        r
        for r in DEMO.records
        if r.stage is Stage.RECONCILE and r.request == "shop/b" and r.outcome == "success"
    )
    state = replay(functools.partial(Journal, journal), retry_end.time - 0.001)
    assert state is not None
    assert words(state)["Widget shop/b ADDED"] == "▶ widget: reconciling, run 2"
    assert "Widget shop/c ADDED" not in words(state)
    assert replay(functools.partial(Journal, journal), END, cancelled=lambda: True) is None


def test_the_object_view_explains_as_explain_does(journal: Path) -> None:
    target = Target("shop", "b", "Widget")
    shown = explain_object(functools.partial(Journal, journal), target, now=END)
    with Journal(journal) as reader:
        direct = explain(
            reader.about("shop", "b", kind="Widget"),
            namespace="shop",
            name="b",
            kind="Widget",
            watch_records=reader.watch_records(),
            lease_records=reader.lease_records(),
            controller_records=reader.controller_records(),
            now=END,
        )
    assert shown.to_json() == direct.to_json()
    assert shown.verdict.code is Code.RECONCILED
    # As of a cursor before the retry ended, it was still failing.
    error = next(r for r in DEMO.records if r.stage is Stage.RECONCILE and r.outcome == "error")
    earlier = explain_object(
        functools.partial(Journal, journal), target, now=error.time, until=error.time + 0.005
    )
    assert earlier.verdict.code is Code.RECONCILE_FAILED


def test_the_object_view_shows_the_events_a_reconcile_emitted(tmp_path: Path) -> None:
    story = widget_story()
    start = story.start(story.dispatch(story.event("a", "ADDED")))
    ref = story.records[0].object
    story.record(
        Stage.KUBE_EVENT,
        "counted",
        reason="Normal Synced: Widget synced (count 2)",
        controller="widget",
        object=ref,
        request="shop/a",
        reconcile_id=start.reconcile_id,
        attrs={"event": "shop/a.17a"},
    )
    story.end(start)
    path = tmp_path / "journal.sqlite"
    write_journal(path, story.records)
    shown = explain_object(
        functools.partial(Journal, path), Target("shop", "a", "Widget"), now=story.time
    )
    [entry] = [entry for entry in shown.timeline if entry.stage is Stage.KUBE_EVENT]
    assert entry.what == "counted: Normal Synced: Widget synced (count 2)"
    assert "⚑ Event" in render_text(shown)
    assert shown.verdict.code is Code.RECONCILED


def test_the_exit_code_for_an_unreadable_journal_is_explains() -> None:
    assert JOURNAL_EXIT == ExitCode.JOURNAL


# -- every view and key ------------------------------------------------------------------------


def test_the_event_stream_view(journal: Path) -> None:
    async def scenario() -> None:
        app = app_on(journal, END + 0.5)
        async with app.run_test(size=SIZE) as pilot:
            await settled(pilot, len(DEMO.records))
            text = screen_text(app)
            assert (
                "● live" in text and f"{len(DEMO.records)} records · journal journal.sqlite" in text
            )
            for line in (
                "22:13:20.170 Widget    shop/b",
                "✗ widget: dropped by GenerationChanged",
                "✓ widget: reconciled after 2 runs",
                "◷ widget: queued",
            ):
                assert line in text
            assert_snapshot(app, "events")

    run(scenario)


def test_the_controllers_view(journal: Path) -> None:
    async def scenario() -> None:
        app = app_on(journal, END + 2)
        async with app.run_test(size=SIZE) as pilot:
            await settled(pilot, len(DEMO.records))
            await pilot.press("2")
            await pilot.pause()
            text = screen_text(app)
            assert "widget     ✓ running" in text and "1/2" in text
            assert "gadget     ◷ caches not synced" in text
            assert "↻ shop/a in 4m57s (requeue)" in text
            assert "shop/d" in text and "▶ reconciling" in text and "rid-6" in text
            assert_snapshot(app, "controllers")

    run(scenario)


def test_the_leader_election_view(journal: Path) -> None:
    async def scenario() -> None:
        app = app_on(journal, END + 2)
        async with app.run_test(size=SIZE) as pilot:
            await settled(pilot, len(DEMO.records))
            await pilot.press("3")
            await pilot.pause()
            text = screen_text(app)
            assert "this replica  pod-a: ✓ leader since 22:13:20.080" in text
            assert "◷ standby" in text and "✓ leader" in text
            assert_snapshot(app, "leader")

    run(scenario)


def test_the_watches_view_shows_errors_with_their_message(journal: Path) -> None:
    async def scenario() -> None:
        app = app_on(journal, END + 2)
        async with app.run_test(size=SIZE) as pilot:
            await settled(pilot, len(DEMO.records))
            await pilot.press("4")
            await pilot.pause()
            table = app.query_one("#watches", LiveTable)
            assert list(table.keys) == ["ConfigMap", "Gadget", "Secret", "Widget"]
            await pilot.press("down", "down")  # Secret: the 403, in full below the table
            await pilot.pause()
            text = screen_text(app)
            assert "✗ forbidden (403)" in text and "✗ kind not found" in text
            flowing = " ".join(text.split())  # the detail wraps the message over lines
            assert f"Secret (v1) now ✗ forbidden (403) since 22:13:20.060: {FORBIDDEN}" in flowing
            assert_snapshot(app, "watches")

    run(scenario)


def test_enter_opens_the_object_and_esc_goes_back(journal: Path) -> None:
    async def scenario() -> None:
        app = app_on(journal, END + 2)
        async with app.run_test(size=SIZE) as pilot:
            await settled(pilot, len(DEMO.records))
            table = app.query_one("#events", LiveTable)
            table.move_to(2)  # Widget shop/b ADDED
            await pilot.press("enter")
            await _until(pilot, lambda: "fix:" in screen_text(app))
            text = screen_text(app)
            assert "object Widget shop/b · latest" in text
            assert "✓ reconciled  Reconcile of shop/b in widget succeeded after 2 runs" in text
            assert "error in 40.0 ms: RuntimeError: simulated failure" in text
            assert_snapshot(app, "object")
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is app.screen_stack[0]
            # A request in the controllers view opens too.
            await pilot.press("2")
            app.query_one("#work", LiveTable).move_to(0)
            await pilot.press("enter")
            await _until(pilot, lambda: "in_progress" in screen_text(app))
            assert "object shop/d · latest" in screen_text(app)

    run(scenario)


def shown_rows(app: TraceApp) -> list[EventRow]:
    table = app.query_one("#events", LiveTable)
    return [app.shown.events[key] for key in table.keys if isinstance(key, int)]


async def _until(pilot: Pilot[None], condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            app = pilot.app
            assert isinstance(app, TraceApp)
            raise AssertionError(f"condition not met; the screen:\n{screen_text(app)}")
        await pilot.pause(0.05)


def test_slash_filters_and_esc_clears_the_filter(journal: Path) -> None:
    async def scenario() -> None:
        app = app_on(journal, END + 2)
        async with app.run_test(size=SIZE) as pilot:
            await settled(pilot, len(DEMO.records))
            table = app.query_one("#events", LiveTable)
            await pilot.press("slash")
            assert isinstance(app.focused, Input)
            await pilot.press(*"verdict:error", "enter")
            await pilot.pause()
            assert [row.object_key for row in shown_rows(app)] == ["shop/c"]
            assert app.focused is not None and app.focused.id == "events"
            await pilot.press("slash")
            app.query_one(Input).value = "kind:ConfigMap"
            await pilot.pause()
            assert [row.name for row in shown_rows(app)] == ["a-config", "loose"]
            assert "filter: kind:ConfigMap" in screen_text(app)
            assert_snapshot(app, "filtered")
            await pilot.press("escape")
            await pilot.pause()
            assert len(table.keys) == len(app.live.events)
            assert "filter:" not in screen_text(app)

    run(scenario)


def test_p_pauses_the_view_and_resumes_with_what_came_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    story = demo()
    half = len(story.records) // 2

    async def scenario() -> None:
        with JournalWriter(path) as writer:
            for record in story.records[:half]:
                writer(record)
            writer.flush()
            feed = CountedWakeups(path)
            app = app_on(path, END, feed)
            async with app.run_test(size=SIZE) as pilot:
                await settled(pilot, half)
                await pilot.press("p")
                assert "‖ paused at" in screen_text(app)
                wakeups = feed.wakeups
                for record in story.records[half:]:
                    writer(record)
                writer.flush()
                # The feed has read the new records and woke the view, which handled that.
                await _until(pilot, lambda: feed.wakeups > wakeups)
                await handled(app)
                assert app.live.applied == half  # the records wait in the feed
                await pilot.press("p")
                await settled(pilot, len(story.records))
                assert "paused" not in screen_text(app)

    run(scenario)


def test_question_mark_shows_the_help_and_the_footer_shows_the_keys(journal: Path) -> None:
    async def scenario() -> None:
        app = app_on(journal, END + 2)
        async with app.run_test(size=SIZE) as pilot:
            await settled(pilot, len(DEMO.records))
            footer = screen_text(app).splitlines()[-1]
            for key in ("/ filter", "open", "p pause", "[ -1s", "] +1s", "? help", "q quit"):
                assert key in footer
            await pilot.press("question_mark")
            await pilot.pause()
            text = screen_text(app)
            assert "filter the events" in text and "pause or resume" in text
            assert_snapshot(app, "help")
            await pilot.press("escape")
            await pilot.pause()
            assert "pause or resume" not in screen_text(app)

    run(scenario)


def test_q_quits(journal: Path) -> None:
    async def scenario() -> None:
        app = app_on(journal, END)
        async with app.run_test(size=SIZE) as pilot:
            await settled(pilot, len(DEMO.records))
            await pilot.press("q")
            await pilot.pause()
        assert app.return_code == 0 and app.error is None

    run(scenario)


def test_the_time_cursor_replays_the_views_as_they_were(journal: Path) -> None:
    async def scenario() -> None:
        app = app_on(journal, END + 2)
        async with app.run_test(size=SIZE) as pilot:
            await settled(pilot, len(DEMO.records))
            await pilot.press("left_square_bracket")  # 1 s before the newest: before it all
            await _until(pilot, lambda: app.shown is not app.live)
            await pilot.pause(0.2)
            assert app.live.newest is not None
            assert app.cursor == pytest.approx(app.live.newest - 1)
            assert "◀ at 22:13:19.410" in screen_text(app)
            assert app.query_one("#events", LiveTable).keys == []
            await pilot.press("right_square_bracket")  # back past the newest record: live
            await pilot.pause()
            assert app.cursor is None and app.shown is app.live
            app.cursor = DEMO.records[20].time  # mid-run, as [ and ] would reach on a long run
            app.action_step(0.0)
            await _until(pilot, lambda: app.shown is not app.live)
            await pilot.pause(0.2)
            assert 0 < len(app.shown.events) < len(app.live.events)
            await pilot.press("g")
            await pilot.pause()
            assert app.shown is app.live and "◀" not in screen_text(app)

    run(scenario)


@pytest.mark.parametrize(
    ("content", "message"), [(None, "no journal at"), ("sqlite", "is not a ctrltrace journal")]
)
def test_a_missing_or_foreign_journal_is_said_on_screen_and_exits_5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    path = Path("journal.sqlite")
    if content == "sqlite":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE notes (text TEXT)")
        db.close()

    async def scenario() -> None:
        app = app_on(path, END)
        async with app.run_test(size=(80, 24)) as pilot:
            await _until(pilot, lambda: app.error is not None)
            await pilot.pause()
            text = screen_text(app)
            assert "✗ cannot read the records" in text and message in text
            if content is None:
                assert_snapshot(app, "missing-journal")
            await pilot.press("q")
            await pilot.pause()
        assert app.return_code == ExitCode.JOURNAL
        assert message in str(app.error)

    run(scenario)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (EvidenceUnreachable("cannot reach http://127.0.0.1:9: refused"), ExitCode.UNREACHABLE),
        (
            EvidenceRefused("http://a refused the request (403): bob lacks get"),
            ExitCode.ENVIRONMENT,
        ),
        (EvidenceUnreadable("http://a answered with something that is not"), ExitCode.JOURNAL),
        (JournalError("no journal at journal.sqlite"), ExitCode.JOURNAL),
    ],
)
def test_a_source_that_fails_exits_with_the_code_explain_gives_for_the_same_failure(
    error: Exception, code: ExitCode
) -> None:
    def failing() -> Journal:
        raise error

    async def scenario() -> None:
        feed = EvidenceFeed(failing, label="the source", poll_s=0.02)
        app = SteadyApp(feed, clock=at(END), exit_code=tui_exit_code)
        async with app.run_test(size=(110, 24)) as pilot:
            await _until(pilot, lambda: app.error is not None)
            await pilot.pause()
            text = screen_text(app)
            assert str(error) in text and f"(exit code {int(code)})" in text
            await pilot.press("q")
            await pilot.pause()
        assert app.return_code == code
        assert app.error is error

    run(scenario)


def test_a_journal_that_stops_growing_is_idle_not_an_error(journal: Path) -> None:
    async def scenario() -> None:
        app = app_on(journal, END + 3600)
        async with app.run_test(size=SIZE) as pilot:
            await settled(pilot, len(DEMO.records))
            status = screen_text(app).splitlines()[0]
            assert "◌ idle since 22:13:20.410" in status and "✗" not in status
            assert app.screen is app.screen_stack[0]

    run(scenario)


def test_the_live_view_picks_up_records_appended_while_it_is_open(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    story = widget_story()
    story.manager()
    story.controller()

    async def scenario() -> None:
        with JournalWriter(path, flush_interval_s=0.02) as writer:
            for record in story.records:
                writer(record)
            writer.flush()
            app = TraceApp(EvidenceFeed.of_journal(path, poll_s=0.02))  # the real clock: live
            async with app.run_test(size=SIZE) as pilot:
                await settled(pilot, 2)
                table = app.query_one("#events", LiveTable)
                assert table.keys == []
                event = widget_story(time.time())
                writer(event.event("late", "ADDED"))
                await _until(pilot, lambda: len(table.keys) == 1)
                assert "shop/late" in screen_text(app)
                assert "● live" in screen_text(app)

    run(scenario)


def test_the_tick_is_harmless_under_other_screens_and_when_stopping(
    journal: Path,
) -> None:
    async def scenario() -> None:
        app = app_on(journal, END + 2)
        async with app.run_test(size=(120, 40)) as pilot:
            await settled(pilot, len(DEMO.records))
            await pilot.press("question_mark")
            await pilot.pause()
            app._tick()  # with the help on top: the main screen's tables are not there
            await pilot.press("escape")
            await pilot.pause()
            app._tick()
            assert "shop/" in screen_text(app)
            await pilot.exit(None)
        app._tick()  # a tick that comes as the app stops

    run(scenario)


@pytest.mark.parametrize("size", [(80, 24), (60, 16), (40, 10)])
def test_small_terminals_render_without_a_crash(journal: Path, size: tuple[int, int]) -> None:
    async def scenario() -> None:
        app = app_on(journal, END + 2)
        async with app.run_test(size=size) as pilot:
            await settled(pilot, len(DEMO.records))
            for key in ("2", "3", "4", "question_mark", "escape", "1", "enter"):
                await pilot.press(key)
                await pilot.pause()
            await pilot.press("escape")
            await pilot.resize_terminal(30, 8)
            await pilot.pause()
            await pilot.resize_terminal(*size)
            await pilot.pause()
            assert "shop/" in screen_text(app)
            if size == (60, 16):
                assert_snapshot(app, "small")

    run(scenario)


# -- the command and run --tui -----------------------------------------------------------------


def test_the_command_without_a_terminal_checks_the_journal_and_exits_5_or_2(
    journal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    missing = runner.invoke(tui_command, ["--journal", "nowhere.sqlite"])
    assert missing.exit_code == ExitCode.JOURNAL
    assert "ctrltrace: error: no journal at nowhere.sqlite" in missing.output
    monkeypatch.setenv("CTRLTRACE_JOURNAL", "elsewhere.sqlite")
    assert "no journal at elsewhere.sqlite" in runner.invoke(tui_command, []).output
    readable = runner.invoke(tui_command, ["--journal", str(journal)])
    assert readable.exit_code == ExitCode.USAGE
    assert "needs a terminal" in readable.output


def test_run_with_tui_raises_what_ended_the_manager_and_closes_the_view(
    traced: Callable[[object], bool],
) -> None:
    manager = Manager(name="broken", health_probe_bind_address="0", metrics_bind_address="0")
    manager.controller().named("lonely").complete(lambda ctx, request: None)
    before = ["made at start-up"]
    with pytest.raises(BuildError, match="will never get triggered"):
        run_with_tui(manager, None, headless=True)
    assert not traced(before)  # set aside from the collector, as Manager.run does


def test_an_ended_recorder_feed_hands_over_what_is_left_then_says_it_ended() -> None:
    feed = RecorderFeed()
    story = demo()
    for record in story.records:
        feed(record)
    feed.end()
    wakeups: list[int] = []
    feed.start(lambda: wakeups.append(1))  # the view comes after the end: it still hears of it
    batch = feed.take()
    assert wakeups == [1] and batch.ended and batch.records == story.records
    feed.stop()


def test_a_controller_blocked_by_a_failed_watch_is_shown_blocked_by_that_watch() -> None:
    story = widget_story()
    for kind, role in (("Widget", "for_"), ("ConfigMap", "owns")):
        attrs = {"kind": kind, "api_version": "v1", "role": role}
        story.record(Stage.CONTROLLER, "watching", controller="widget", attrs=attrs)
    story.manager()
    story.watch("listed")
    story.watch("synced")
    story.watch("forbidden", "cannot watch configmaps", kind="ConfigMap", status=403)
    story.dispatch(story.event("a", "ADDED"))
    state = ViewState()
    state.apply(story.records)
    widget = state.controllers["widget"]
    assert widget.outcome == ""  # a watching record is no outcome of its life
    assert [watch.kind for watch in state.blocking(widget)] == ["ConfigMap"]
    text = [
        cell.plain for cell in cells.controller_cells(widget, story.time, state.blocking(widget))
    ]
    assert text[1] == "✗ blocked by ConfigMap forbidden"
    work = {key: [cell.plain for cell in row] for key, row in cells.work_rows(state, story.time)}
    assert work["widget", "shop/a", "waiting"][2] == "◷ blocked by ConfigMap"
    story.controller("started")  # the caches synced after all: no longer blocked
    state.apply(story.records[-1:])
    assert state.blocking(widget) == []


def test_a_journal_gap_is_said_in_the_feed_status_and_is_not_the_managers_life() -> None:
    story = demo()
    story.record(Stage.MANAGER, "journal_gap", reason="buffer full", attrs={"count": 3})
    state = ViewState()
    state.apply(story.records)
    assert state.manager == "started"
    assert "⚠ 1 gap(s) in the records" in cells.feed_status(state, story.time).plain
    story.record(Stage.MANAGER, "evidence_missing", reason="dropped", attrs={"count": 2})
    state.apply(story.records[-1:])
    assert state.manager == "started"
    assert "⚠ 2 gap(s) in the records" in cells.feed_status(state, story.time).plain


# -- the funnel and the time views -------------------------------------------------------------


def three_losses() -> RunStory:
    """One controller losing events at three stages: a predicate, an unmapped child, and a
    forbidden watch that keeps its workers from starting (what it queued waits, blocked)."""
    story = widget_story()
    for kind, role in (("Widget", "for_"), ("ConfigMap", "owns"), ("Secret", "watches")):
        attrs = {"kind": kind, "api_version": "v1", "role": role}
        story.record(Stage.CONTROLLER, "watching", controller="widget", attrs=attrs)
    story.manager()
    story.watch("synced")
    story.watch("synced", kind="ConfigMap")
    story.watch("forbidden", FORBIDDEN, kind="Secret", status=403)
    for name in ("a", "b"):
        story.dispatch(
            story.event(name, "MODIFIED"),
            "dropped_by_predicate",
            reason="generation unchanged",
            predicate="GenerationChanged",
        )
    story.dispatch(
        story.event("loose", "ADDED", kind="ConfigMap"), "not_mapped", reason="no controller owner"
    )
    for name in ("c", "d", "e"):
        story.dispatch(story.event(name, "ADDED"))
    story.dispatch(story.event("e", "MODIFIED"), "deduplicated")
    return story


def funnel_of(story: RunStory, controller: str = "widget") -> Funnel:
    state = ViewState()
    state.apply(story.records)
    funnel = state.funnel.funnel(controller)
    assert funnel is not None
    return funnel


def test_the_funnel_counts_each_stage_and_each_drop_with_its_reason_and_objects() -> None:
    funnel = funnel_of(three_losses())
    assert dict(funnel.steps) == {
        Step.SEEN: 7,
        Step.PASSED: 5,
        Step.MAPPED: 4,
        Step.ENQUEUED: 4,
        Step.RECONCILED: 0,
    }
    assert [(d.after, d.loss, d.reason, d.count) for d in funnel.drops] == [
        (Step.SEEN, Loss.PREDICATE, "GenerationChanged", 2),
        (Step.PASSED, Loss.NOT_MAPPED, "no controller owner", 1),
        (Step.ENQUEUED, Loss.BLOCKED, "blocked by unsynced watch Secret forbidden (403)", 4),
    ]
    assert [lost.key for lost in funnel.drops[0].objects] == ["shop/a", "shop/b"]
    assert funnel.enqueued == {"queued": 3, "deduplicated": 1, "requeued_after_processing": 0}


def test_the_funnel_follows_requests_to_their_reconciles_and_counts_runs_by_result() -> None:
    funnel = funnel_of(demo())
    assert dict(funnel.steps) == {
        Step.SEEN: 9,
        Step.PASSED: 8,
        Step.MAPPED: 7,
        Step.ENQUEUED: 7,
        Step.RECONCILED: 6,
    }
    waiting = funnel.drops_after(Step.ENQUEUED)
    assert [(d.loss, d.reason, [o.key for o in d.objects]) for d in waiting] == [
        (Loss.WAITING, "queued, waiting for a worker", ["other/e"])
    ]
    assert funnel.results == {"error": 1, "requeue_after": 1, "success": 2, "terminal_error": 1}
    assert funnel.duration.p50 == pytest.approx(0.04)  # every run took 40 ms
    assert funnel.queue_wait.p99 == pytest.approx(0.002)


def test_what_a_stopped_process_had_queued_is_lost_at_stop_not_waiting() -> None:
    story = demo()
    story.manager("stopped")
    losses = {drop.loss: drop.count for drop in funnel_of(story).drops}
    assert losses[Loss.STOPPED] == 1 and Loss.WAITING not in losses


def test_rates_and_latencies_per_second_end_at_the_time_cursor() -> None:
    story = widget_story()
    story.manager()
    story.controller("started")
    for second in range(3):
        story.time = T0 + second
        for index in range(second + 1):  # 1, 2, 3 events a second
            event = story.event(f"o{second}-{index}", "ADDED")
            story.end(story.start(story.dispatch(event)), "error" if second == 2 else "success")
    funnel = funnel_of(story)
    assert [(s.events, s.reconciles, s.errors) for s in funnel.seconds] == [
        (1, 1, 0),
        (2, 2, 0),
        (3, 3, 3),
    ]
    text = funnel_cells.time_view(funnel, T0 + 2, 60).plain.splitlines()
    assert text[1].startswith("events/s") and "3/s now · max 3/s" in text[1]
    assert "▃▆█" in text[1] and "3/s now" in text[3]  # errors/s
    before = funnel_cells.time_view(funnel, T0 + 1, 60).plain.splitlines()
    assert "2/s now · max 2/s" in before[1] and "0/s now" in before[3]


def test_a_window_counts_only_its_seconds_and_the_objects_lost_in_it() -> None:
    story = three_losses()
    story.time = T0 + 100
    late = story.event("late", "MODIFIED")
    story.dispatch(late, "dropped_by_predicate", predicate="GenerationChanged")
    state = ViewState()
    state.apply(story.records)
    everything = state.funnel.funnel("widget")
    window = state.funnel.funnel("widget", since=T0 + 50)
    assert everything is not None and window is not None
    assert everything.count(Step.SEEN) == 8 and window.count(Step.SEEN) == 1
    assert [(d.loss, d.count, [o.name for o in d.objects]) for d in window.drops] == [
        (Loss.PREDICATE, 1, ["late"])
    ]


def test_explain_funnel_prints_the_funnel_as_text_and_json(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    write_journal(path, three_losses().records)
    runner = CliRunner()
    args = ["explain", "--controller", "widget", "--funnel", "--journal", str(path)]
    text = runner.invoke(cli_main, args)
    assert text.exit_code == 0, text.output
    assert "✗ dropped by predicate" in text.output and "GenerationChanged" in text.output
    assert "blocked by unsynced watch Secret forbidden (403)" in text.output
    data = json.loads(runner.invoke(cli_main, [*args, "--json"]).output)
    assert [(d["loss"], d["count"]) for d in data["drops"]] == [
        ("dropped_by_predicate", 2),
        ("not_mapped", 1),
        ("blocked", 4),
    ]
    assert data["stages"][0] == {"stage": "seen", "count": 7}
    unknown = runner.invoke(
        cli_main, ["explain", "--controller", "x", "--funnel", "--journal", str(path)]
    )
    assert unknown.exit_code == ExitCode.USAGE and "controllers: widget" in unknown.output
    no_target = runner.invoke(cli_main, ["explain", "--journal", str(path)])
    assert no_target.exit_code == ExitCode.USAGE


def test_the_funnel_view_lists_the_objects_a_drop_lost_and_opens_one(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    story = three_losses()
    write_journal(path, story.records)

    async def scenario() -> None:
        app = app_on(path, story.time)
        async with app.run_test(size=SIZE) as pilot:
            await settled(pilot, len(story.records))
            await pilot.press("5")
            await _until(pilot, lambda: "dropped by predicate" in screen_text(app))
            text = screen_text(app)
            assert "✗ dropped by predicate -2" in " ".join(text.split())
            assert "w: all records" in text
            await pilot.press("w")
            await pilot.pause(0.2)
            assert "w: last 1 min" in screen_text(app)
            await pilot.press("w", "w")
            await pilot.press("down", "enter")
            await _until(pilot, lambda: isinstance(app.screen, LostScreen))
            lost = screen_text(app)
            assert "shop/b" in lost and "shop/a" in lost
            await pilot.press("enter")
            await _until(pilot, lambda: "dropped_by_predicate" in screen_text(app))

    run(scenario)


@pytest.mark.parametrize("width", [80, 200])
def test_the_funnel_and_time_views(journal: Path, width: int) -> None:
    async def scenario() -> None:
        app = app_on(journal, END)
        async with app.run_test(size=(width, 34)) as pilot:
            await settled(pilot, len(DEMO.records))
            await pilot.press("5")
            await _until(pilot, lambda: "queue depth" in screen_text(app))
            text = screen_text(app)
            assert "controller widget" in text
            assert_no_cells_touch(text)
            assert_snapshot(app, f"funnel-{width}")

    run(scenario)


# Every glyph the views draw, checked present in DejaVu Sans Mono (``fc-list ':charset=HEX'``),
# the monospace font most terminals fall back to; Textual's own (tabs, footer) are in it too.
FONT_GLYPHS = set("✓✗◷▶↻≡■·●◌⚠→…—◀‖▁▂▃▄▅▆▇█━╸╺⏎▔▁▎│─╭╮╰╯▊▌▐")


# Where two cells or two styled runs met without a space in the screens.
_GLUED = re.compile(r"stopped\d|leadersince|\d\d\d·|reconciled[A-Z]|/[a-z]+at \d")


def assert_no_cells_touch(text: str) -> None:
    """No two cells glued together (e.g. '■ stopped0/2') and no glyph outside the font."""
    glued = _GLUED.search(text)
    assert glued is None, f"cells touch: {glued.group()!r}"
    for glyph in {ch for ch in text if ord(ch) > 127}:
        assert glyph in FONT_GLYPHS, f"{glyph!r} (U+{ord(glyph):04X}) is not in common fonts"


@pytest.mark.parametrize("width", [80, 200])
def test_every_view_at_80_and_200_columns_uses_glyphs_common_fonts_have(
    journal: Path, width: int
) -> None:
    async def scenario() -> None:
        app = app_on(journal, END)
        async with app.run_test(size=(width, 34)) as pilot:
            await settled(pilot, len(DEMO.records))
            for key in "12345":
                await pilot.press(key)
                await pilot.pause(0.2)
                assert_no_cells_touch(screen_text(app))
            await pilot.press("1", "enter")
            await _until(pilot, lambda: "fix:" in screen_text(app))
            assert_no_cells_touch(screen_text(app))

    run(scenario)
