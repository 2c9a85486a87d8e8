"""How an explanation reads: plain text that fits 100 columns without colour for the terminal
and CI logs, or a rich renderable (with colour) for a terminal and the TUI's object view.

Owns the layout (title, timeline table, verdict, fix, one line per warning) and the marks of
each stage and verdict. It decides nothing: ``ctrltrace.explain`` does, without rendering.
"""

from __future__ import annotations

import datetime
import io

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from ctrltrace.explain import Code, Explanation, clock
from ctrltrace.printable import printable
from ctrltrace.records import Stage
from ctrltrace.spanmodel import REPLICA
from ctrltrace.vocabulary import (
    ControllerOutcome,
    DispatchOutcome,
    KubeEventOutcome,
    LeaseOutcome,
    ReconcileOutcome,
    WatchOutcome,
)


def render_text(explanation: Explanation, width: int = 100) -> str:
    """Plain text, no colour or escape codes, no line wider than ``width``."""
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        color_system=None,
        force_terminal=False,
        no_color=True,
        highlight=False,
        emoji=False,
    )
    console.print(ExplanationView(explanation))
    # Rich pads table cells to the column width; trailing blanks only get in the way.
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


class ExplanationView:
    """An explanation as a rich renderable."""

    def __init__(self, explanation: Explanation) -> None:
        self.explanation = explanation

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        explanation = self.explanation
        target, verdict = explanation.target, explanation.verdict
        title = Text.assemble(
            ("explain ", "bold"),
            (f"{target.kind} " if target.kind else "", "bold"),
            (printable(target.key), "bold cyan"),
            f"  controller {printable(target.controller)}" if target.controller else "",
            f"  at {_local(explanation.now)}",
        )
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        table.add_column("time", no_wrap=True)
        table.add_column("stage", no_wrap=True)
        # Records read from traces say which replica (pod or process) each came from.
        replicas = any(REPLICA in entry.details for entry in explanation.timeline)
        if replicas:
            table.add_column("replica", overflow="fold", max_width=24)
        table.add_column("controller", overflow="fold", max_width=20)
        table.add_column("what happened", overflow="fold", ratio=1)
        for entry in explanation.timeline:
            mark, style = _mark(entry.stage, entry.outcome)
            replica = [printable(str(entry.details.get(REPLICA, "")))] if replicas else []
            table.add_row(
                clock(entry.time),
                Text(f"{mark} {_STAGE_LABELS.get(entry.stage, entry.stage)}", style=style),
                *replica,
                printable(entry.controller),
                printable(entry.what),
            )
        parts: list[RenderableType] = [title]
        if explanation.omitted:
            parts.append(
                Text(
                    f"… {explanation.omitted} earlier records not shown (--limit 0 shows all)",
                    style="dim",
                )
            )
        parts.append(table if explanation.timeline else Text("no records about this object", "dim"))
        mark, style = _VERDICT_MARKS.get(verdict.code, ("✗", "red"))
        parts += [
            Text(""),
            Text.assemble(
                (f"{mark} {verdict.code}", f"bold {style}"), "  ", printable(verdict.message)
            ),
            Text.assemble(("fix: ", "bold"), printable(verdict.fix)),
        ]
        for warning in verdict.warnings:
            parts += [
                Text.assemble(
                    (f"⚠ {warning.code}", "bold yellow"), "  ", printable(warning.message)
                ),
                Text.assemble(("  fix: ", "bold"), printable(warning.fix)),
            ]
        yield Group(*parts)


_MARKS = {
    (Stage.DISPATCH, DispatchOutcome.DROPPED_BY_PREDICATE): ("✗", "red"),
    (Stage.DISPATCH, DispatchOutcome.NOT_MAPPED): ("✗", "red"),
    (Stage.RECONCILE, ReconcileOutcome.SUCCESS): ("✓", "green"),
    (Stage.RECONCILE, ReconcileOutcome.ERROR): ("✗", "red"),
    (Stage.RECONCILE, ReconcileOutcome.TERMINAL_ERROR): ("✗", "red"),
    (Stage.RECONCILE, ReconcileOutcome.REQUEUE): ("↻", "yellow"),
    (Stage.RECONCILE, ReconcileOutcome.REQUEUE_AFTER): ("↻", "yellow"),
    (Stage.WATCH, WatchOutcome.SYNCED): ("✓", "green"),
    (Stage.WATCH, WatchOutcome.FORBIDDEN): ("✗", "red"),
    (Stage.WATCH, WatchOutcome.KIND_NOT_FOUND): ("✗", "red"),
    (Stage.WATCH, WatchOutcome.ERROR): ("✗", "red"),
    (Stage.WATCH, WatchOutcome.DISCONNECTED): ("✗", "red"),
    (Stage.LEASE, LeaseOutcome.ACQUIRED): ("✓", "green"),
    (Stage.LEASE, LeaseOutcome.STANDBY): ("◷", "yellow"),
    (Stage.LEASE, LeaseOutcome.LOST): ("✗", "red"),
    (Stage.LEASE, LeaseOutcome.ERROR): ("✗", "red"),
    (Stage.CONTROLLER, ControllerOutcome.STARTED): ("✓", "green"),
    (Stage.CONTROLLER, ControllerOutcome.CACHE_NOT_SYNCED): ("◷", "yellow"),
    (Stage.KUBE_EVENT, KubeEventOutcome.DROPPED): ("✗", "yellow"),
    (Stage.KUBE_EVENT, KubeEventOutcome.FAILED): ("✗", "red"),
}
_STAGE_MARKS = {
    Stage.EVENT: ("●", "cyan"),
    Stage.DISPATCH: ("→", ""),
    Stage.RECONCILE_START: ("▶", ""),
    Stage.REQUEUE: ("↻", "yellow"),
    Stage.WRITE: ("✎", ""),
    Stage.KUBE_EVENT: ("⚑", ""),
}
_VERDICT_MARKS = {
    Code.RECONCILED: ("✓", "green"),
    Code.REQUEUE_SCHEDULED: ("↻", "yellow"),
} | dict.fromkeys(
    (Code.QUEUED, Code.IN_PROGRESS, Code.NOT_LEADER, Code.CACHE_NOT_SYNCED), ("◷", "yellow")
)


_STAGE_LABELS = {Stage.RECONCILE_START: "start", Stage.KUBE_EVENT: "Event"}


def _mark(stage: Stage, outcome: str) -> tuple[str, str]:
    return _MARKS.get((stage, outcome)) or _STAGE_MARKS.get(stage, ("·", ""))


def _local(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
