"""The TUI's screens over the tabbed views: the object view (explain's answer for one object,
read in a thread worker), the objects a funnel drop lost, help, and the failure to read the
records with its exit code. They word nothing themselves: ``cells`` and ``explain_text`` do."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.console import RenderableType
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Static

from ctrltrace.evidence import EvidenceError, Opener
from ctrltrace.explain_text import ExplanationView
from ctrltrace.funnel import LOSS_WORDS, STEP_WORDS, Drop
from ctrltrace.journal import JournalError
from ctrltrace.timetext import clock
from ctrltrace.tui import funnel_cells
from ctrltrace.tui.feed import (
    Target,
    explain_object,
)
from ctrltrace.tui.table import Column, LiveTable

# ctrltrace.cli.ExitCode.JOURNAL, the code explain exits with when it cannot read the journal:
# the app's exit for a failed feed unless its command says otherwise (``TraceApp``'s
# ``exit_code``). Not imported: the CLI imports envtest and the exporters, and the TUI must stay
# independent of both (import-linter's independence contract follows imports through the CLI).
JOURNAL_EXIT = 5


_LOST_COLUMNS = (
    Column("time", 12, 12),
    Column("kind", 16, 6),
    Column("namespace/name", 36, 12),
    Column("request", 36, 6),
    Column("why", 200, 10),
)


HELP = """\
[b]ctrltrace tui[/b]: the records of a controller run, live or replayed. It reads records only.

[b]Views[/b] (tabs, or the keys 1 2 3 4 5)
  1 events       each watch event and what every controller did with it: dropped by
                 which predicate, not mapped, queued, merged, reconciled with its result
  2 controllers  queue depth, workers busy/total, in-flight reconciles and their age,
                 errors, retries, next requeue; then each request running, queued, scheduled
  3 leader       the lease, its holder, this replica's role, the transitions
  4 watches      per kind: synced, last event, errors (403, kind not found), their message
  5 funnel       per controller (c: the next one), over all records or, w, the last
                 1 or 10 min: events seen → passed its predicates → mapped → enqueued →
                 reconciled, each drop with its reason (Enter lists the objects lost
                 there); events/s, reconciles/s, errors/s, queue depth and p99 queue
                 wait and reconcile time, a column a second

[b]Keys[/b]
  /        filter the events: words that must all occur; ns: name: kind: verdict:
           controller: limit a word to one field, e.g. ns:shop verdict:dropped
  Enter    open the object under the cursor (an event, or a request in controllers):
           what ctrltrace explain says about it; r refreshes it. On a drop in the
           funnel: the objects lost there, and Enter on one opens it
  Esc      back: closes the object view or this help, clears the filter
  p        pause or resume: the view holds still, records wait in the feed
  [ ]      move the time cursor 1 s back or forward: the views (and the funnel's
           lines, which end at the cursor) as they were then
  { }      10 s back or forward;  g  back to live
  ↑ ↓ PgUp PgDn Home End   move in a table; End follows the newest row
  ?        this help;  q  quit

[b]Marks[/b]  ✓ done  ✗ failed or refused  ◷ waiting  ▶ running  ↻ requeue or retry
  ≡ merged  ■ stopped  · nothing yet. Colour only repeats the mark and the words.
"""


class Explained(Message):
    """The object view's worker has the explanation (or why there is none)."""

    def __init__(self, content: RenderableType) -> None:
        super().__init__()
        self.content = content


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "back"),
        Binding("question_mark", "dismiss", "back", show=False),
        Binding("q", "dismiss", "back", show=False),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 100; max-width: 100%; height: auto; max-height: 100%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            # Rich's markup, not Textual's: it keeps the spaces that align the columns.
            yield Static(Text.from_markup(HELP))


class FailureScreen(Screen[None]):
    """The records cannot be read: say so, and exit with explain's code on any key."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "leave", "quit"),
        Binding("escape", "leave", "quit", show=False),
        Binding("enter", "leave", "quit", show=False),
    ]
    DEFAULT_CSS = """
    FailureScreen { align: center middle; }
    FailureScreen > Static {
        width: 90; max-width: 100%; height: auto; border: heavy $error; padding: 0 1;
    }
    """

    def __init__(self, message: str, code: int = JOURNAL_EXIT) -> None:
        super().__init__()
        self.message = message
        self.code = code

    def compose(self) -> ComposeResult:
        yield Static(
            Text.assemble(
                ("✗ cannot read the records\n\n", "bold red"),
                self.message,
                "\n\nctrltrace tui reads the journal that `ctrltrace run` writes (--journal PATH "
                "or $CTRLTRACE_JOURNAL). Press q, Esc or Enter to exit "
                f"(exit code {self.code}).",
            )
        )
        yield Footer()

    def action_leave(self) -> None:
        self.app.exit(return_code=self.code)  # the command says why, once, in its one line


class ObjectScreen(Screen[None]):
    """What ``ctrltrace explain`` says about one object, from the evidence, in a worker."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("r", "refresh", "refresh"),
        Binding("q", "app.quit", "quit"),
    ]
    DEFAULT_CSS = """
    ObjectScreen > #object-title {
        height: 1; background: $panel; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis;
    }
    ObjectScreen > VerticalScroll { padding: 0 1; }
    """

    def __init__(
        self, evidence: Opener | None, target: Target, now: Callable[[], float], until: float | None
    ) -> None:
        super().__init__()
        self.evidence = evidence
        self.target = target
        self._now = now
        self._until = until

    def compose(self) -> ComposeResult:
        kind = f"{self.target.kind} " if self.target.kind else ""
        when = "latest" if self._until is None else f"as of {clock(self._until)}"
        yield Static(f"object {kind}{self.target.key} · {when} · Esc back", id="object-title")
        with VerticalScroll():
            yield Static(Text("◷ explaining…", "yellow"), id="explanation")
        yield Footer()

    def on_mount(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        if self.evidence is None:
            self._show(
                Text(
                    "· no journal: the object view explains from the journal the run writes; "
                    "run with a journal to use it",
                    "yellow",
                )
            )
            return
        self._explain(self.evidence, self._now())

    @work(thread=True, exclusive=True)
    def _explain(self, evidence: Opener, now: float) -> None:
        content: RenderableType
        try:
            content = ExplanationView(
                explain_object(evidence, self.target, now=now, until=self._until)
            )
        except (JournalError, EvidenceError) as error:
            content = Text(f"✗ {error}", "red")
        self.post_message(Explained(content))

    def on_explained(self, message: Explained) -> None:
        self._show(message.content)

    def _show(self, content: RenderableType) -> None:
        self.query_one("#explanation", Static).update(content)


class LostScreen(Screen[None]):
    """The objects whose events a funnel drop lost (the newest first); Enter opens one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("enter", "open", "open"),
        Binding("q", "app.quit", "quit"),
    ]
    DEFAULT_CSS = """
    LostScreen > #lost-title { height: auto; background: $panel; padding: 0 1; }
    """

    def __init__(
        self,
        controller: str,
        drop: Drop,
        evidence: Opener | None,
        now: Callable[[], float],
        until: float | None,
    ) -> None:
        super().__init__()
        self.controller = controller
        self.drop = drop
        self.evidence = evidence
        self._now = now
        self._until = until
        self._lost = list(reversed(drop.objects))

    def compose(self) -> ComposeResult:
        drop = self.drop
        yield Static(
            Text.assemble(
                f"{self.controller}: ",
                (f"✗ {drop.count} {LOSS_WORDS[drop.loss]}", "red"),
                f" after '{STEP_WORDS[drop.after]}': {drop.reason}",
                f" · the newest {len(self._lost)} · Enter opens one · Esc back",
            ),
            id="lost-title",
        )
        yield LiveTable(_LOST_COLUMNS, empty="no objects kept", id="lost")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#lost", LiveTable)
        table.replace_rows(
            (index, funnel_cells.lost_cells(lost)) for index, lost in enumerate(self._lost)
        )
        table.focus()

    def action_open(self) -> None:
        key = self.query_one("#lost", LiveTable).cursor_key
        if not isinstance(key, int):
            return
        lost = self._lost[key]
        target = Target(lost.namespace, lost.name, lost.kind or None)
        self.app.push_screen(ObjectScreen(self.evidence, target, self._now, self._until))
