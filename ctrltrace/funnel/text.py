"""The funnel in words: the split of enqueued requests, results by outcome, and the whole
funnel as plain text for a terminal, a script or a CI log."""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping

from ctrltrace.funnel.model import LOSS_WORDS, STEP_WORDS, Funnel, Step
from ctrltrace.vocabulary import (
    ReconcileOutcome,
)

_RESULT_LOOKS = (
    (ReconcileOutcome.SUCCESS, "✓", "succeeded"),
    (ReconcileOutcome.ERROR, "✗", "failed"),
    (ReconcileOutcome.TERMINAL_ERROR, "✗", "terminal"),
    (ReconcileOutcome.REQUEUE, "↻", "requeued"),
    (ReconcileOutcome.REQUEUE_AFTER, "↻", "requeued after"),
)


def enqueued_words(funnel: Funnel) -> str:
    split = funnel.enqueued
    return (
        f"new {split['queued']} · merged into a waiting one {split['deduplicated']} · "
        f"behind a running one {split['requeued_after_processing']}"
    )


def results_words(results: Mapping[str, int]) -> str:
    return " · ".join(
        f"{mark} {results[outcome]} {words}"
        for outcome, mark, words in _RESULT_LOOKS
        if results.get(outcome)
    )


def render_funnel(funnel: Funnel, bar_width: int = 30) -> str:
    """The funnel as plain text, for a terminal, a script or a CI log."""
    most = max(max((count for _, count in funnel.steps), default=0), funnel.runs, 1)

    def row(label: str, count: str, value: int, detail: str) -> str:
        bar = "#" * (round(bar_width * value / most) if value else 0)
        return f"{label:<28}  {count:>7}  {bar:<{bar_width}}  {detail}".rstrip()

    since = "" if funnel.since is None else f" from {_utc(funnel.since)}"
    until = "" if funnel.until is None else f" to {_utc(funnel.until)}"
    lines = [f"funnel of controller {funnel.controller}{since}{until}", ""]
    for step, count in funnel.steps:
        detail = enqueued_words(funnel) if step is Step.ENQUEUED and count else ""
        lines.append(row(STEP_WORDS[step], str(count), count, detail))
        for drop in funnel.drops_after(step):
            label = f"  ✗ {LOSS_WORDS[drop.loss]}"
            lines.append(row(label, f"-{drop.count}", drop.count, drop.reason))
    lines.append(
        row("reconcile runs", str(funnel.runs), funnel.runs, results_words(funnel.results))
    )
    for label, latency in (("queue wait", funnel.queue_wait), ("reconcile time", funnel.duration)):
        if latency.count:
            lines.append(
                f"{label}: p50 {_seconds(latency.p50)}, p99 {_seconds(latency.p99)} "
                f"({latency.count} runs)"
            )
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "over 19 min"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _utc(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
