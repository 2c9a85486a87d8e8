"""How the TUI words, marks and filters what ``ViewState`` holds: cells of rich ``Text``.

Owns the filter language of ``/``, the mark and words of every outcome and state, and the
columns of each view but the funnel and time views (``funnel_cells``). Every cell says what it
means in words and with a mark (✓ ✗ ◷ ▶ ↻ ≡ ■); its colour only repeats that, so the views
read without colour.

Pure functions of the model: no Textual (the data side is tested without a terminal), no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

from ctrltrace.explain import Code, names_kind
from ctrltrace.printable import printable
from ctrltrace.timetext import clock, span
from ctrltrace.tui.feed import (
    IDLE_AFTER_S,
    MAX_WORK_ROWS,
    ControllerState,
    EventRow,
    LeaseState,
    Outcome,
    Scheduled,
    Transition,
    ViewState,
    WatchState,
)
from ctrltrace.vocabulary import (
    ControllerOutcome,
    LeaseOutcome,
    ManagerOutcome,
    RequeueOutcome,
    WatchOutcome,
)

Cells = tuple[Text, ...]


# -- the filter --------------------------------------------------------------------------------

_FIELDS = {
    "ns": "namespace",
    "namespace": "namespace",
    "name": "name",
    "kind": "kind",
    "verdict": "verdict",
    "v": "verdict",
    "controller": "controller",
}


@dataclass(frozen=True, slots=True)
class RowFilter:
    """What ``/`` typed: words that must all occur (case-insensitive) in an event row.

    ``ns:``, ``name:``, ``verdict:`` (or ``v:``) and ``controller:`` limit a word to one field;
    ``kind:`` names a kind as ``explain --kind`` does (``kind:job`` or ``kind:jobs.batch`` is
    Job, never CronJob); a bare word may occur anywhere: kind, namespace, name, event type,
    controller, verdict code (``dropped_by_predicate``, ``reconcile_failed``, …) or the
    outcome's words (``merged``, the predicate's name, the error).
    """

    text: str = ""
    terms: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> RowFilter:
        terms = []
        for token in text.lower().split():
            name, colon, value = token.partition(":")
            if colon and value and name in _FIELDS:
                terms.append((_FIELDS[name], value))
            else:
                terms.append(("", token))
        return cls(text.strip(), tuple(terms))

    def __bool__(self) -> bool:
        return bool(self.terms)

    def matches(self, row: EventRow) -> bool:
        if not self.terms:
            return True
        fields = _searchable(row)
        return all(
            names_kind(value, row.kind, row.api_version)
            if name == "kind"
            else value in fields[name]
            for name, value in self.terms
        )


def _searchable(row: EventRow) -> dict[str, str]:
    outcomes = row.outcomes.values()
    verdicts = " ".join(
        f"{outcome.code} {'merged ' if outcome.merged else ''}{outcome_words(outcome, row)}"
        for outcome in outcomes
    )
    fields = {
        "namespace": row.namespace,
        "name": row.name,
        "kind": row.kind,
        "verdict": verdicts,
        "controller": " ".join(outcome.controller for outcome in outcomes),
    }
    fields[""] = " ".join((*fields.values(), row.event_type))
    return {name: value.lower() for name, value in fields.items()}


# -- words and marks ---------------------------------------------------------------------------

_LOOKS: dict[str, tuple[str, str]] = {
    "": ("·", "dim"),
    Code.DROPPED_BY_PREDICATE: ("✗", "red"),
    Code.NOT_MAPPED: ("✗", "red"),
    Code.QUEUED: ("◷", "yellow"),
    Code.IN_PROGRESS: ("▶", "cyan"),
    Code.RECONCILED: ("✓", "green"),
    Code.RECONCILE_FAILED: ("✗", "red"),
    Code.TERMINAL_ERROR: ("✗", "bold red"),
    Code.REQUEUE_SCHEDULED: ("↻", "yellow"),
}
_MERGED = ("≡", "yellow")


def outcome_words(outcome: Outcome, row: EventRow) -> str:
    """One controller's outcome for an event, e.g. ``widget: dropped by GenerationChanged``."""
    who = outcome.controller
    if outcome.request != row.object_key:  # mapped to another object (an owner)
        who += f" → {outcome.request}"
    merged = " (merged)" if outcome.merged else ""
    runs = f" after {outcome.runs} runs" if outcome.runs > 1 else ""
    detail = f": {outcome.detail}" if outcome.detail else ""
    due = "" if outcome.due is None else f" at {clock(outcome.due)}"
    match outcome.code:
        case Code.DROPPED_BY_PREDICATE:
            what = f"dropped by {outcome.detail}"
        case Code.NOT_MAPPED:
            what = f"not mapped{detail}"
        case Code.QUEUED:
            what = "merged into a queued run" if outcome.merged else f"queued{detail}"
        case Code.IN_PROGRESS:
            what = f"reconciling{merged}" + (f", run {outcome.runs}" if outcome.runs > 1 else "")
        case Code.RECONCILED:
            what = f"reconciled{merged}{runs}"
        case Code.RECONCILE_FAILED:
            retry = f", retry {outcome.attempt}{due}" if outcome.due is not None else ""
            what = f"failed{runs}{retry}{detail}"
        case Code.TERMINAL_ERROR:
            what = f"terminal error, no retry{detail}"
        case Code.REQUEUE_SCHEDULED:
            what = f"reconciled{merged}, requeue{due}"
        case _:
            what = outcome.detail or "seen"
    return f"{who}: {what}"


def _look(outcome: Outcome) -> tuple[str, str]:
    if outcome.merged and outcome.code == Code.QUEUED:
        return _MERGED
    return _LOOKS.get(outcome.code, _LOOKS[""])


def event_cells(row: EventRow) -> Cells:
    event = row.event_type + (" (own write)" if row.self_caused else "")
    outcomes = Text(no_wrap=True)
    for outcome in row.outcomes.values():
        if outcomes:
            outcomes.append("  ")
        mark, style = _look(outcome)
        outcomes.append(f"{mark} {printable(outcome_words(outcome, row))}", style)
    if not outcomes:
        outcomes.append("· no dispatch recorded yet", "dim")
    return (
        Text(clock(row.time)),
        Text(row.kind),
        Text(printable(row.object_key), "bold"),
        Text(event),
        outcomes,
    )


_LIFECYCLE = {
    ControllerOutcome.STARTED: ("✓ running", "green"),
    ControllerOutcome.CACHE_NOT_SYNCED: ("◷ caches not synced", "yellow"),
}
_STOPPED = ("■ stopped", "dim")


def controller_cells(
    controller: ControllerState, now: float, blocking: Sequence[WatchState] = ()
) -> Cells:
    """``blocking``: the watches its workers wait for that failed (``ViewState.blocking``)."""
    state, style = (
        _STOPPED
        if controller.stopped
        else _LIFECYCLE.get(controller.outcome, ("· not started", "dim"))
    )
    if blocking:
        named = ", ".join(
            f"{watch.kind} {watch.last_error.outcome}"
            for watch in blocking
            if watch.last_error is not None
        )
        state, style = f"✗ blocked by {named}", "red"
    running = controller.running
    oldest = min((start for start, _ in running.values()), default=None)
    in_flight = str(len(running)) + (f" (oldest {span(now - oldest)})" if oldest else "")
    errors = controller.errors
    upcoming = controller.next_requeue()
    next_requeue = Text("—", "dim")
    if upcoming is not None:
        request, item = upcoming
        next_requeue = Text(f"↻ {request} {_due_words(item, now)}", "yellow")
    return (
        Text(controller.name, "bold"),
        Text(state, style),
        Text(f"{len(running)}/{controller.workers or '?'}"),
        Text(str(controller.queue_depth(now))),
        Text(in_flight, "cyan" if running else ""),
        Text(str(controller.reconciled)),
        Text(f"✗ {errors}", "red") if errors else Text("0"),
        Text(str(controller.retries), "yellow" if controller.retries else ""),
        next_requeue,
    )


def _due_words(item: Scheduled, now: float) -> str:
    why = f"retry {item.attempt}" if item.outcome == RequeueOutcome.RATE_LIMITED else "requeue"
    late = now - item.due
    when = f"due {span(late)} ago" if late > 0 else f"in {span(-late)}"
    return f"{when} ({why})"


WorkKey = tuple[str, str, str]  # (controller, request, state)


def work_rows(
    state: ViewState, now: float, limit: int = MAX_WORK_ROWS
) -> list[tuple[WorkKey, Cells]]:
    """The requests each controller is reconciling, has waiting and has scheduled, capped."""
    running: list[tuple[float, WorkKey, Cells]] = []
    waiting: list[tuple[float, WorkKey, Cells]] = []
    scheduled: list[tuple[float, WorkKey, Cells]] = []
    for controller in state.controllers.values():
        name = controller.name
        blocking = state.blocking(controller)
        queued = (
            Text(f"◷ blocked by {blocking[0].kind}", "red")
            if blocking
            else Text("◷ queued", "yellow")
        )
        for request, (start, rid) in controller.running.items():
            cells = (Text("▶ reconciling", "cyan"), Text(span(now - start)), Text(rid, "dim"))
            running.append((start, (name, request, "running"), cells))
        for request, since in controller.waiting.items():
            cells = (queued, Text(span(now - since)), Text(""))
            waiting.append((since, (name, request, "waiting"), cells))
        for request, item in controller.scheduled.items():
            cells = (Text("↻ scheduled", "yellow"), Text(_due_words(item, now)), Text(""))
            scheduled.append((item.due, (name, request, "scheduled"), cells))
    rows: list[tuple[WorkKey, Cells]] = []
    for group in (running, waiting, scheduled):
        for _, key, state_cells in sorted(group, key=lambda entry: entry[0]):
            rows.append((key, (Text(key[0]), Text(key[1], "bold"), *state_cells)))
    return rows[:limit]


_ROLES = {
    LeaseOutcome.ACQUIRED: ("✓ leader", "green"),
    LeaseOutcome.STANDBY: ("◷ standby: not the leader, no reconciles", "yellow"),
    LeaseOutcome.LOST: ("✗ lost the lease: reconciles stopped", "red"),
    LeaseOutcome.RELEASED: ("■ released the lease", "dim"),
}


def lease_summary(lease: LeaseState) -> Text:
    if not lease.lease:
        return Text(
            "· no lease records: leader election is off (every replica reconciles) or has "
            "not started",
            "dim",
        )
    role, style = _ROLES.get(lease.outcome, ("◷ electing", "yellow"))
    text = Text.assemble(
        ("lease         ", "bold"),
        lease.lease,
        ("\nholder        ", "bold"),
        lease.holder or "nobody yet",
        ("\nthis replica  ", "bold"),
        f"{lease.identity}: ",
        (role, style),
        f" since {clock(lease.since)}" if lease.since else "",
        ("\ntransitions   ", "bold"),
        str(lease.transition_count),
    )
    if lease.last_error:
        text.append_text(
            Text.assemble(("\nlast error    ", "bold"), ("✗ " + lease.last_error, "red"))
        )
    return text


def transition_cells(transition: Transition) -> Cells:
    role, style = _ROLES.get(transition.outcome, ("·", ""))
    return (
        Text(clock(transition.time)),
        Text(f"{role.split(':')[0]}", style),
        Text(printable(transition.holder)),
        Text(printable(transition.reason)),
    )


_WATCH_STATES = {
    WatchOutcome.LISTED: ("✓ watching", "green"),
    WatchOutcome.SYNCED: ("✓ watching", "green"),
    WatchOutcome.GONE: ("↻ listing again (410)", "yellow"),
    WatchOutcome.FORBIDDEN: ("✗ forbidden", "red"),
    WatchOutcome.KIND_NOT_FOUND: ("✗ kind not found", "red"),
    WatchOutcome.DISCONNECTED: ("✗ disconnected", "red"),
    WatchOutcome.ERROR: ("✗ error", "red"),
}


def _watch_words(outcome: str, status: int = 0) -> tuple[str, str]:
    words, style = _WATCH_STATES.get(outcome, ("· no informer record", "dim"))
    return (f"{words} ({status})" if status else words), style


def watch_cells(watch: WatchState) -> Cells:
    failure = watch.last_error
    current = failure if failure is not None and failure.at == watch.at else None
    state, style = _watch_words(watch.outcome, current.status if current else 0)
    namespaces = ", ".join(sorted(watch.namespaces)) if any(watch.namespaces) else "all"
    synced = (
        Text(f"✓ {clock(watch.synced_at)}", "green")
        if watch.synced_at is not None
        else Text("✗ not synced", "red" if current else "yellow")
    )
    last_error = Text("—", "dim")
    if failure is not None:
        words, _ = _watch_words(failure.outcome, failure.status)
        last_error = Text(f"{clock(failure.at)} {words}: {printable(failure.reason)}", "red")
    return (
        Text(watch.kind, "bold"),
        Text(namespaces),
        synced,
        Text(state, style),
        Text(str(watch.events)),
        Text(clock(watch.last_event) if watch.last_event is not None else "—"),
        last_error,
    )


def watch_detail(watch: WatchState) -> Text:
    """The selected watch in full: the error message a table cell has to cut."""
    text = Text.assemble((watch.kind, "bold"), f" ({watch.api_version or '?'})")
    failure = watch.last_error
    if watch.at is not None:
        status = failure.status if failure is not None and failure.at == watch.at else 0
        words, style = _watch_words(watch.outcome, status)
        text.append(" now ")
        text.append(words, style)
        text.append(f" since {clock(watch.at)}: {printable(watch.reason)}")
    if failure is not None and failure.at != watch.at:
        words, _ = _watch_words(failure.outcome, failure.status)
        text.append(
            f"\nlast error at {clock(failure.at)}: {words}: {printable(failure.reason)}", "red"
        )
    return text


def feed_status(state: ViewState, now: float) -> Text:
    """Live, or idle since the newest record: a journal that stops growing is not an error.
    Records the journal lost, or its source dropped, are said either way: what is shown may be
    incomplete."""
    if state.newest is None:
        return Text("◷ waiting for records", "yellow")
    gaps = f" · ⚠ {state.gaps} gap(s) in the records" if state.gaps else ""
    if now - state.newest <= IDLE_AFTER_S:
        return Text(f"● live{gaps}", "green")
    stopped = " · manager stopped" if state.manager == ManagerOutcome.STOPPED else ""
    return Text(f"◌ idle since {clock(state.newest)}{stopped}{gaps}", "yellow")
