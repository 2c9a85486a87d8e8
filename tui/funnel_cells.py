"""How the TUI draws a controller's funnel and its time view: the funnel's rows with a bar per
stage and drop, the selected row in full, the objects a drop lost, and the rates and latencies
second by second as sparklines. Cells of rich ``Text``, each saying what it means in words.

Pure functions of ``ctrltrace.funnel``'s picture: no Textual, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from rich.text import Text

from ctrltrace.funnel import (
    LOSS_WORDS,
    STEP_WORDS,
    Drop,
    Funnel,
    Histogram,
    Latency,
    Loss,
    Lost,
    Second,
    Step,
    enqueued_words,
    results_words,
)
from ctrltrace.timetext import clock, span
from ctrltrace.tui.cells import Cells

BAR_WIDTH = 20
FunnelKey = tuple[str, ...]  # ("step", step) / ("drop", loss, reason) / ("runs",)


def _bar(count: int, most: int, style: str) -> Text:
    filled = round(BAR_WIDTH * count / most) if most else 0
    return Text("█" * max(filled, 1 if count else 0), style)


def funnel_rows(funnel: Funnel) -> list[tuple[FunnelKey, Cells]]:
    """The funnel as table rows: each stage, then the drops before the next, then the runs."""
    most = max((count for _, count in funnel.steps), default=0)
    rows: list[tuple[FunnelKey, Cells]] = []
    for step, count in funnel.steps:
        detail = enqueued_words(funnel) if step is Step.ENQUEUED and count else ""
        rows.append(
            (
                ("step", str(step)),
                (
                    Text(STEP_WORDS[step], "bold"),
                    Text(str(count)),
                    _bar(count, most, "green"),
                    Text(detail),
                ),
            )
        )
        for drop in funnel.drops_after(step):
            style = "yellow" if drop.loss is Loss.WAITING else "red"
            mark = "◷" if drop.loss is Loss.WAITING else "✗"
            rows.append(
                (
                    ("drop", str(drop.loss), drop.reason),
                    (
                        Text(f"  {mark} {LOSS_WORDS[drop.loss]}", style),
                        Text(f"-{drop.count}", style),
                        _bar(drop.count, most, style),
                        Text(drop.reason),
                    ),
                )
            )
    rows.append(
        (
            ("runs",),
            (
                Text("reconcile runs", "bold"),
                Text(str(funnel.runs)),
                _bar(funnel.runs, most, "cyan"),
                Text(results_words(funnel.results) or "none yet"),
            ),
        )
    )
    return rows


def find_drop(funnel: Funnel, key: object) -> Drop | None:
    """The drop a funnel row's key names (None for the stage rows)."""
    if not (isinstance(key, tuple) and len(key) == 3 and key[0] == "drop"):
        return None
    return next((drop for drop in funnel.drops if (str(drop.loss), drop.reason) == key[1:]), None)


def funnel_detail(funnel: Funnel, key: object) -> Text:
    """The selected funnel row in full: the reason a table cell has to cut."""
    drop = find_drop(funnel, key)
    if drop is not None:
        return Text.assemble(
            (f"✗ {drop.count} lost after '{STEP_WORDS[drop.after]}': ", "red"),
            f"{LOSS_WORDS[drop.loss]}: {drop.reason}. Enter lists the objects "
            f"(the newest {len(drop.objects)}).",
        )
    if key == ("runs",):
        return Text(
            f"Reconciles that ran, retries and requeues included: "
            f"{results_words(funnel.results) or 'none yet'}"
        )
    return Text(
        "Each stage counts events, then requests from 'mapped' on (an event can map to "
        "several). Select a ✗ row and press Enter for the objects lost there."
    )


def lost_cells(lost: Lost) -> Cells:
    return (
        Text(clock(lost.time)),
        Text(lost.kind or "?"),
        Text(lost.key, "bold"),
        Text(lost.request if lost.request != lost.key else ""),
        Text(lost.reason),
    )


SPARKS = "▁▂▃▄▅▆▇█"
_LABEL_WIDTH = 15
_FIGURES_WIDTH = 28


def sparkline(values: Sequence[float | None]) -> Text:
    """One character a value, scaled to the largest; nothing known is a space, zero is ▁."""
    known = [value for value in values if value is not None]
    most = max(known, default=0.0)
    text = Text()
    for value in values:
        if value is None:
            text.append(" ")
        elif value <= 0 or most <= 0:
            text.append(SPARKS[0], "dim")
        else:
            text.append(SPARKS[max(math.ceil(value / most * len(SPARKS)) - 1, 0)])
    return text


def _figure(seconds: float | None) -> str:
    return "—" if seconds is None else ("≥ 19m" if math.isinf(seconds) else span(seconds))


def time_view(funnel: Funnel, now: float, width: int) -> Text:
    """Rates, queue depth and latencies over the last seconds up to ``now``, one a column."""
    columns = max(width - _LABEL_WIDTH - _FIGURES_WIDTH - 2, 8)
    end = int(now if funnel.until is None else min(now, funnel.until))
    by_second = {second.at: second for second in funnel.seconds}
    window = [by_second.get(at) for at in range(end - columns + 1, end + 1)]
    last = by_second.get(end)

    def line(label: str, values: Sequence[float | None], figures: str, style: str) -> Text:
        spark = sparkline(values)
        spark.stylize(style)
        return Text.assemble(
            (f"{label:<{_LABEL_WIDTH}}", "bold"), spark, "  ", figures[:_FIGURES_WIDTH]
        )

    def rate(label: str, pick: Callable[[Second], int], style: str) -> Text:
        values = [0 if second is None else pick(second) for second in window]
        now_value = pick(last) if last is not None else 0
        return line(label, values, f"{now_value}/s now · max {max(values)}/s", style)

    def p99(label: str, latency: Latency, pick: Callable[[Second], Histogram]) -> Text:
        values = [None if second is None else pick(second).percentile(0.99) for second in window]
        finite = [None if value is None or math.isinf(value) else value for value in values]
        figures = f"p50 {_figure(latency.p50)} · p99 {_figure(latency.p99)}"
        return line(f"{label} p99", finite, figures, "magenta")

    depth: list[int] = []
    held = 0
    for second in window:
        held = second.depth if second is not None else held
        depth.append(held)
    first = clock(end - columns + 1).split(".")[0]
    lines = [
        Text(f"last {columns} s, {first} to {clock(end).split('.')[0]}, a column a second", "dim"),
        rate("events/s", lambda second: second.events, "green"),
        rate("reconciles/s", lambda second: second.reconciles, "cyan"),
        rate("errors/s", lambda second: second.errors, "red"),
        line("queue depth", depth, f"{held} now · max {max(depth)}", "yellow"),
        p99("queue wait", funnel.queue_wait, lambda second: second.tally.queue_wait),
        p99("reconcile", funnel.duration, lambda second: second.tally.duration),
    ]
    return Text("\n").join(lines)
