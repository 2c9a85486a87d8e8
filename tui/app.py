"""The live terminal view: the Textual app and the pace at which its views change.

Owns the five views in tabs (the other screens are in ``screens``), the keys, pause, the time
cursor, and the render cadence: at most ten renders a second, tables updated in place. Records
arrive through one feed, which posts ``FeedReady`` (no payload) once per burst; the app then
takes what is pending, folds it into the ``ViewState`` and renders. Evidence reads for the
object view and the time cursor run in thread workers, so the UI thread never waits on a file
or a server; the feed does its own reading.

It never talks to Kubernetes, and it does not decide what records mean: ``feed`` folds them,
``cells`` words them, ``ctrltrace.explain`` explains them.

Over 500 lines because ``TraceApp`` is one Textual app: its key bindings, workers, timer and
renders are its methods (Textual's way) and share its state (the cursor, pause, the feed).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from itertools import takewhile
from typing import ClassVar, Protocol

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from ctrltrace.evidence import EvidenceError, Opener
from ctrltrace.funnel import Funnel
from ctrltrace.journal import JournalError
from ctrltrace.timetext import clock
from ctrltrace.tui import cells, funnel_cells
from ctrltrace.tui.feed import (
    MAX_EVENT_ROWS,
    Feed,
    Target,
    ViewState,
    replay,
)
from ctrltrace.tui.screens import (
    JOURNAL_EXIT,
    FailureScreen,
    HelpScreen,
    LostScreen,
    ObjectScreen,
)
from ctrltrace.tui.table import Column, LiveTable

__all__ = [
    "JOURNAL_EXIT",
    "ExitCodeFor",
    "LostScreen",
    "TraceApp",
]  # what the command and tests import


RENDER_EVERY_S = 0.1  # at most ten renders a second, however fast records come


# The funnel's windows, cycled by w: everything the view holds, then the last minute, 10 minutes.
FUNNEL_WINDOWS: tuple[float | None, ...] = (None, 60.0, 600.0)


_EVENT_COLUMNS = (
    Column("time", 12, 12),
    Column("kind", 16, 6),
    Column("namespace/name", 36, 12),
    Column("event", 16, 6),
    Column("outcome per controller", 200, 16),
)


_CONTROLLER_COLUMNS = (
    Column("controller", 24, 8),
    Column("state", 20, 5),
    Column("workers", 7, 5),
    Column("queue", 6, 3),
    Column("in flight", 20, 5),
    Column("done", 8, 4),
    Column("errors", 8, 4),
    Column("retries", 8, 4),
    Column("next requeue", 60, 8),
)


_WORK_COLUMNS = (
    Column("controller", 24, 8),
    Column("request", 40, 10),
    Column("state", 14, 6),
    Column("for", 24, 6),
    Column("reconcile id", 40, 4),
)


_TRANSITION_COLUMNS = (
    Column("time", 12, 12),
    Column("transition", 20, 6),
    Column("holder", 30, 6),
    Column("reason", 100, 6),
)


_WATCH_COLUMNS = (
    Column("kind", 24, 6),
    Column("namespaces", 24, 3),
    Column("synced", 14, 6),
    Column("state", 22, 6),
    Column("events", 8, 4),
    Column("last event", 12, 5),
    Column("last error", 200, 8),
)


_FUNNEL_COLUMNS = (
    Column("stage", 26, 12),
    Column("count", 7, 5),
    Column("", funnel_cells.BAR_WIDTH, 4),
    Column("why / how", 200, 10),
)


# The table of each tab that gets the focus, and whose row Enter opens.
_TABLE_OF_TAB = {
    "stream": "events",
    "work-tab": "work",
    "lease-tab": "transitions",
    "watches-tab": "watches",
    "funnel-tab": "funnel",
}


class FeedReady(Message):
    """The feed has records (or news) to take: posted once per burst, with no payload."""


class Replayed(Message):
    """The replay worker has the views as of ``until`` (``state`` None: it could not read)."""

    def __init__(self, until: float, state: ViewState | None, error: str = "") -> None:
        super().__init__()
        self.until = until
        self.state = state
        self.error = error


class ExitCodeFor(Protocol):
    """The process's exit code for the error that stopped a feed (the command's to decide)."""

    def __call__(self, error: Exception, /) -> int: ...


def _journal_exit(_: Exception) -> int:
    return JOURNAL_EXIT


class TraceApp(App[None]):
    """The views over one feed. ``clock`` gives wall time (tests freeze it); ``exit_code``
    gives the code to exit with when the feed fails (by default the journal's)."""

    TITLE = "ctrltrace"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    /* One-line bars: cut with an ellipsis when the terminal is narrower, never wrapped away. */
    #status, #funnel-title { height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    #status { background: $panel; padding: 0 1; }
    #filter { display: none; height: 3; }
    #filter.shown { display: block; }
    TabbedContent, ContentSwitcher, TabPane { height: 1fr; }
    #controllers { height: auto; max-height: 45%; }
    #lease-summary { height: auto; padding: 0 1 1 1; }
    #watch-detail { height: auto; max-height: 6; padding: 0 1; }
    #funnel-title { padding: 0 1; }
    #funnel { height: auto; max-height: 50%; }
    #funnel-detail { height: auto; max-height: 3; padding: 0 1; }
    #rates { height: auto; padding: 0 1; }
    TabPane { padding: 0; }
    """
    # The keys of the main views; the object view, help and the failure screen have their own.
    _MAIN_ACTIONS = frozenset(
        {
            "filter",
            "open",
            "clear_filter",
            "pause",
            "step",
            "live",
            "view",
            "next_controller",
            "next_window",
        }
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "filter"),
        Binding("enter", "open", "open"),
        Binding("escape", "clear_filter", "clear filter", show=False),
        Binding("p", "pause", "pause"),
        Binding("left_square_bracket", "step(-1)", "-1s"),
        Binding("right_square_bracket", "step(1)", "+1s"),
        Binding("left_curly_bracket", "step(-10)", "-10s", show=False),
        Binding("right_curly_bracket", "step(10)", "+10s", show=False),
        Binding("g", "live", "live", show=False),
        Binding("question_mark", "help", "help"),
        Binding("q", "quit", "quit"),
        Binding("1", "view('stream')", "events", show=False),
        Binding("2", "view('work-tab')", "controllers", show=False),
        Binding("3", "view('lease-tab')", "leader", show=False),
        Binding("4", "view('watches-tab')", "watches", show=False),
        Binding("5", "view('funnel-tab')", "funnel", show=False),
        Binding("c", "next_controller", "controller", show=False),
        Binding("w", "next_window", "window", show=False),
    ]

    def __init__(
        self,
        feed: Feed,
        *,
        clock: Callable[[], float] = time.time,
        max_events: int = MAX_EVENT_ROWS,
        exit_code: ExitCodeFor = _journal_exit,
    ) -> None:
        super().__init__()
        self.feed = feed
        self.clock = clock
        self.exit_code = exit_code
        self.live = ViewState(max_events=max_events)
        self.shown = self.live  # the live state, or one replayed up to the cursor
        self.cursor: float | None = None
        self.paused_at: float | None = None
        self.filter = cells.RowFilter()
        self.error: Exception | None = None  # what stopped the feed, shown on screen
        self.lag: float | None = None  # wall time minus the newest record's, at the last render
        self._trouble = ""
        self._dropped = 0
        self._rebuild = True  # the event table is rebuilt, not patched, at the next render
        self._last_render = 0.0
        self._render_timer: Timer | None = None
        self._max_events = max_events
        self.funnel_controller: str | None = None  # the controller the funnel shows
        self.funnel_window: float | None = None  # seconds up to now, or everything

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with TabbedContent(initial="stream"):
            with TabPane("1 events", id="stream"):
                yield LiveTable(
                    _EVENT_COLUMNS, empty="no events yet", follow=True, ordered=True, id="events"
                )
            with TabPane("2 controllers", id="work-tab"), Vertical():
                yield LiveTable(
                    _CONTROLLER_COLUMNS, empty="no controller records", id="controllers"
                )
                yield LiveTable(
                    _WORK_COLUMNS, empty="no request running, queued or scheduled", id="work"
                )
            with TabPane("3 leader election", id="lease-tab"), Vertical():
                yield Static(id="lease-summary")
                yield LiveTable(_TRANSITION_COLUMNS, empty="no transitions", id="transitions")
            with TabPane("4 watches", id="watches-tab"), Vertical():
                yield LiveTable(_WATCH_COLUMNS, empty="no informer records", id="watches")
                yield Static(id="watch-detail")
            with TabPane("5 funnel", id="funnel-tab"), Vertical():
                yield Static(id="funnel-title")
                yield LiveTable(_FUNNEL_COLUMNS, empty="no dispatch recorded", id="funnel")
                yield Static(id="funnel-detail")
                yield Static(id="rates")
        yield Input(
            placeholder="filter: words; or ns: name: kind: verdict: controller:  (Esc clears)",
            id="filter",
        )
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Main-view keys act (and show in the footer) only while the main views are shown."""
        return action not in self._MAIN_ACTIONS or self.screen is self.screen_stack[0]

    def on_mount(self) -> None:
        if threading.current_thread() is threading.main_thread():
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.exit)
        self.feed.start(self._feed_ready)
        self.set_interval(1.0, self._tick)
        self.query_one("#events", LiveTable).focus()
        self._redraw()

    def _feed_ready(self) -> None:
        self.post_message(FeedReady())  # thread-safe; dropped once the app is closing

    def on_unmount(self) -> None:
        self.feed.stop()
        if threading.current_thread() is threading.main_thread():
            asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)

    # -- records in --------------------------------------------------------------------------

    def on_feed_ready(self, _: FeedReady) -> None:
        if self.paused_at is not None:  # the records wait in the feed until resumed
            return
        batch = self.feed.take()
        if batch.error is not None and self.error is None:
            self.error = batch.error
            self.push_screen(FailureScreen(batch.failure, self.exit_code(batch.error)))
            return
        self._trouble = batch.trouble
        self._dropped = batch.dropped
        self.live.apply(batch.records)
        if batch.ended:  # the manager of ``run --tui`` stopped: so does its view
            self.exit()
            return
        self._schedule_render()

    def _schedule_render(self) -> None:
        elapsed = time.monotonic() - self._last_render
        if elapsed >= RENDER_EVERY_S:
            self._redraw()
        elif self._render_timer is None:
            self._render_timer = self.set_timer(RENDER_EVERY_S - elapsed, self._redraw)

    def _tick(self) -> None:
        """Once a second: ages and idleness move on even when no record comes."""
        if self.paused_at is None:
            self._redraw()

    def now(self) -> float:
        """The time the views show: the cursor's, the pause's, or the clock's."""
        if self.cursor is not None:
            return self.cursor
        return self.paused_at if self.paused_at is not None else self.clock()

    # -- rendering ---------------------------------------------------------------------------

    def _redraw(self) -> None:
        if self._render_timer is not None:
            self._render_timer.stop()
            self._render_timer = None
        self._last_render = time.monotonic()
        # Not while another screen is on top, or while the app starts or stops: the tables are
        # the main screen's (a tick then found no '#events' and raised).
        if self.error is not None or not self.is_running or not self.query("#events"):
            return
        state, now = self.shown, self.now()
        self._render_events(state)
        controllers = sorted(state.controllers.values(), key=lambda controller: controller.name)
        _sync(
            self.query_one("#controllers", LiveTable),
            [(c.name, cells.controller_cells(c, now, state.blocking(c))) for c in controllers],
        )
        self.query_one("#work", LiveTable).replace_rows(cells.work_rows(state, now))
        self.query_one("#lease-summary", Static).update(cells.lease_summary(state.lease))
        self.query_one("#transitions", LiveTable).replace_rows(
            (index, cells.transition_cells(transition))
            for index, transition in enumerate(state.lease.transitions)
        )
        watches = self.query_one("#watches", LiveTable)
        _sync(watches, [(kind, cells.watch_cells(w)) for kind, w in sorted(state.watches.items())])
        self._render_watch_detail(watches.cursor_key)
        self._render_funnel(state, now)
        self._render_status()
        if state is self.live and self.paused_at is None and state.newest is not None:
            self.lag = self.clock() - state.newest

    def _render_events(self, state: ViewState) -> None:
        table = self.query_one("#events", LiveTable)
        matches = self.filter.matches
        if self._rebuild:
            self._rebuild = False
            state.take_changed()
            table.replace_rows(
                (key, cells.event_cells(row)) for key, row in state.events.items() if matches(row)
            )
            return
        first = state.first_key
        table.remove_rows([*takewhile(lambda key: _below(key, first), table.keys)])
        changed = [state.events[key] for key in state.take_changed()]
        table.remove_rows(row.key for row in changed if not matches(row))
        table.upsert((row.key, cells.event_cells(row)) for row in changed if matches(row))

    def _render_watch_detail(self, kind: Hashable | None) -> None:
        watch = self.shown.watches.get(kind) if isinstance(kind, str) else None
        detail = self.query_one("#watch-detail", Static)
        detail.update(cells.watch_detail(watch) if watch is not None else "")

    def _shown_funnel(self) -> Funnel | None:
        fold = self.shown.funnel
        if self.funnel_controller not in fold.controllers:
            self.funnel_controller = fold.busiest()
        if self.funnel_controller is None:
            return None
        since = None if self.funnel_window is None else self.now() - self.funnel_window
        return fold.funnel(self.funnel_controller, since)

    def _render_funnel(self, state: ViewState, now: float) -> None:
        funnel = self._shown_funnel()
        table = self.query_one("#funnel", LiveTable)
        title = self.query_one("#funnel-title", Static)
        rates = self.query_one("#rates", Static)
        if funnel is None:
            title.update(Text("· no controller records yet", "dim"))
            table.replace_rows([])
            rates.update("")
            self._render_funnel_detail(None)
            return
        names = state.funnel.controllers
        title.update(
            _joined(
                [
                    Text.assemble(
                        ("controller ", "bold"),
                        (funnel.controller, "bold cyan"),
                        f" (c: {names.index(funnel.controller) + 1} of {len(names)})"
                        if len(names) > 1
                        else "",
                    ),
                    _window_words(self.funnel_window),
                    "Enter on ✗: its objects",
                ]
            )
        )
        _sync(table, funnel_cells.funnel_rows(funnel))
        width = self.size.width - 2  # the padding of #rates; its own size lags a resize
        rates.update(funnel_cells.time_view(funnel, now, width))
        self._render_funnel_detail(table.cursor_key)

    def _render_funnel_detail(self, key: Hashable | None) -> None:
        funnel = self._shown_funnel()
        detail = self.query_one("#funnel-detail", Static)
        detail.update("" if funnel is None else funnel_cells.funnel_detail(funnel, key))

    def _render_status(self) -> None:
        parts: list[Text | str] = [cells.feed_status(self.live, self.clock())]
        if self.cursor is not None:
            replaying = " (replaying…)" if self.shown is self.live else ""
            parts.append(Text(f"◀ at {clock(self.cursor)}{replaying} · g: live", "cyan"))
        if self.paused_at is not None:
            parts.append(Text(f"‖ paused at {clock(self.paused_at)} · p: resume", "cyan"))
        if self.filter:
            parts.append(Text(f"filter: {self.filter.text}", "bold"))
        if self._trouble:
            parts.append(Text(f"✗ {self._trouble}", "red"))
        if self._dropped:
            parts.append(Text(f"✗ {self._dropped} records dropped (the view fell behind)", "red"))
        parts.append(f"{self.live.applied:,} records · {self.feed.label}")
        self.query_one("#status", Static).update(_joined(parts))

    # -- keys --------------------------------------------------------------------------------

    def action_view(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self.query_one(f"#{_TABLE_OF_TAB[tab]}", LiveTable).focus()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        table = _TABLE_OF_TAB.get(event.pane.id or "")
        if table is not None:
            self.query_one(f"#{table}", LiveTable).focus()

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.add_class("shown")
        field.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter = cells.RowFilter.parse(event.value)
        self._rebuild = True
        self._redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.remove_class("shown")
        self.action_view("stream")

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter", Input)
        if field.has_focus or self.filter:
            field.value = ""  # Input.Changed re-renders without the filter
            field.remove_class("shown")
            self.query_one("#events", LiveTable).focus()

    def on_live_table_highlighted(self, event: LiveTable.Highlighted) -> None:
        if not self.is_running:  # a highlight handled while the app stops: its panes are gone
            return
        if event.table.id == "watches":
            self._render_watch_detail(event.key)
        elif event.table.id == "funnel":
            self._render_funnel_detail(event.key)

    def action_open(self) -> None:
        active = self.query_one(TabbedContent).active
        table = self.query_one(f"#{_TABLE_OF_TAB.get(active, 'events')}", LiveTable)
        key = table.cursor_key
        target: Target | None = None
        # Paused or at the cursor, the object is explained as of then, not with later records.
        until = self.cursor if self.cursor is not None else self.paused_at
        if table.id == "funnel":
            funnel = self._shown_funnel()
            drop = None if funnel is None else funnel_cells.find_drop(funnel, key)
            if funnel is None or drop is None:
                self.notify("Select a ✗ row of the funnel to list its objects.", severity="warning")
                return
            self.push_screen(
                LostScreen(funnel.controller, drop, self.feed.evidence, self.now, until)
            )
            return
        if table.id == "events" and isinstance(key, int) and key in self.shown.events:
            target = self.shown.events[key].target
        elif table.id == "work" and isinstance(key, tuple):
            target = Target.of_request(str(key[1]))
        if target is None:
            self.notify("Select an event (1) or a request (2) to open it.", severity="warning")
            return
        self.push_screen(ObjectScreen(self.feed.evidence, target, self.now, until))

    def action_next_controller(self) -> None:
        names = self.shown.funnel.controllers
        if not names:
            return
        index = names.index(self.funnel_controller) if self.funnel_controller in names else -1
        self.funnel_controller = names[(index + 1) % len(names)]
        self.query_one("#funnel", LiveTable).replace_rows([])
        self._redraw()

    def action_next_window(self) -> None:
        index = FUNNEL_WINDOWS.index(self.funnel_window)
        self.funnel_window = FUNNEL_WINDOWS[(index + 1) % len(FUNNEL_WINDOWS)]
        self._redraw()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_pause(self) -> None:
        if self.paused_at is None:
            self.paused_at = self.clock()
            self._render_status()
            return
        self.paused_at = None
        self.on_feed_ready(FeedReady())  # take what waited meanwhile
        self._redraw()

    def action_step(self, seconds: float) -> None:
        evidence = self.feed.evidence
        if evidence is None:
            self.notify("Moving in time needs a journal; this run writes none.", severity="warning")
            return
        newest = self.live.newest
        base = self.cursor if self.cursor is not None else (newest or self.clock())
        until = base + seconds
        if newest is not None and until >= newest:  # past the newest record: that is live
            self.action_live()
            return
        self.cursor = until
        self._render_status()
        self._replay(evidence, until)

    def action_live(self) -> None:
        self.cursor = None
        self.shown = self.live
        self._rebuild = True
        self._redraw()

    @work(thread=True, exclusive=True, group="replay")
    def _replay(self, evidence: Opener, until: float) -> None:
        worker = get_current_worker()
        try:
            state = replay(
                evidence,
                until,
                cancelled=lambda: worker.is_cancelled,
                max_events=self._max_events,
            )
        except (JournalError, EvidenceError) as error:
            self.post_message(Replayed(until, None, str(error)))
            return
        if state is not None:
            self.post_message(Replayed(until, state))

    def on_replayed(self, message: Replayed) -> None:
        if message.until != self.cursor:  # the cursor moved on meanwhile
            return
        if message.state is None:
            self.notify(f"Cannot replay: {message.error}", severity="error")
            self.action_live()
            return
        self.shown = message.state
        self._rebuild = True
        self._redraw()


def _window_words(window: float | None) -> str:
    if window is None:
        return "w: all records"
    return f"w: last {window / 60:g} min"


def _below(key: Hashable, first: int) -> bool:
    return isinstance(key, int) and key < first


def _joined(parts: list[Text | str]) -> Text:
    return Text(" · ").join(Text(part) if isinstance(part, str) else part for part in parts)


def _sync(table: LiveTable, rows: Sequence[tuple[Hashable, cells.Cells]]) -> None:
    """Update a small table in place: rows by key, and drop the keys that are gone."""
    keys = {key for key, _ in rows}
    table.remove_rows([key for key in table.keys if key not in keys])
    table.upsert(rows)
