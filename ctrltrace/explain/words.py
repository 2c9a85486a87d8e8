"""How explain words records: a timeline entry per record, events and dispatches in a line,
and kinds matched the way kubectl matches them.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from ctrltrace.explain.model import (
    TimelineEntry,
)
from ctrltrace.records import AttrValue, Record, Stage
from ctrltrace.timetext import clock, span

# -- words -----------------------------------------------------------------------------------


def timeline_entry(record: Record) -> TimelineEntry:
    details: dict[str, AttrValue] = dict(record.attrs)
    if record.reason:
        details["reason"] = record.reason
    if record.request:
        details["request"] = record.request
    if record.reconcile_id:
        details["reconcile_id"] = record.reconcile_id
    if record.object is not None:
        ref = record.object
        details |= {
            "kind": ref.kind,
            "object": ref.key,
            "resource_version": ref.resource_version,
            "generation": ref.generation,
        }
    return TimelineEntry(
        record.time, record.stage, record.outcome, _what(record), record.controller, details
    )


def _what(record: Record) -> str:
    attrs, outcome = record.attrs, record.outcome
    match record.stage:
        case Stage.EVENT:
            return event_words(record)
        case Stage.DISPATCH:
            return _dispatch_words(record)
        case Stage.RECONCILE_START:
            retries = int(attrs.get("retries", 0))
            retry = f", retry {retries}" if retries else ""
            waited = span(float(attrs.get("queue_wait_s", 0.0)))
            return f"{record.request} after {waited} in the queue{retry}"
        case Stage.RECONCILE:
            took = span(float(attrs.get("duration_s", 0.0)))
            error = f": {record.reason}" if outcome in ("error", "terminal_error") else ""
            return f"{outcome} in {took}{error}"
        case Stage.REQUEUE:
            attempt = f"retry attempt {attrs['attempt']}, " if "attempt" in attrs else ""
            due = attrs.get("due")
            when = f" at {clock(due)}" if isinstance(due, int | float) else ""
            delay = span(float(attrs.get("delay_s", 0.0)))
            return f"{outcome}: {attempt}next run in {delay}{when}"
        case Stage.WRITE:
            ref = record.object
            target = f" {ref.kind} {ref.key}" if ref is not None else ""
            version = f" → rv {ref.resource_version}" if ref is not None else ""
            return f"{outcome}{target}{version}"
        case Stage.WATCH:
            return f"{attrs.get('kind', '')} {outcome}: {record.reason}"
    return f"{outcome}: {record.reason}" if record.reason else outcome


def event_words(event: Record) -> str:
    ref = event.object
    text = event.outcome
    if ref is not None:
        text += f" {ref.kind} {ref.key} rv {ref.resource_version} gen {ref.generation}"
    writer = event.attrs.get("writer")
    if writer:
        text += f" by {writer}"
    if event.attrs.get("self_caused") is True:
        text += " (own write)"
    return text


def _dispatch_words(dispatch: Record) -> str:
    attrs, outcome = dispatch.attrs, dispatch.outcome
    match outcome:
        case "dropped_by_predicate":
            return f"dropped by {attrs.get('predicate', 'a predicate')}: {dispatch.reason}"
        case "not_mapped":
            return f"not mapped by {attrs.get('handler', 'the handler')}: {dispatch.reason}"
        case "deduplicated":
            return f"{dispatch.request} already waiting: deduplicated ({dispatch.reason})"
        case "requeued_after_processing":
            return f"{dispatch.request} is being reconciled: queued again for after it"
    return f"{outcome} {dispatch.request} ({dispatch.reason})"


def event_type_of(dispatch: Record) -> str:
    return str(dispatch.attrs.get("event_type", "watch"))


def resolve_kind(text: str, watch_records: Iterable[Record]) -> str:
    """The kind a user means by ``KIND[.GROUP]``, kubectl-style: case-insensitive, singular or
    plural, matched against the kinds the journal saw watched. Unknown input is kept as typed
    (it then explains as ``not_watched``)."""
    for record in watch_records:
        kind = str(record.attrs.get("kind", ""))
        api_version = str(record.attrs.get("api_version", ""))
        plural = str(record.attrs.get("resource", "")).partition(".")[0]
        if names_kind(text, kind, api_version, plural):
            return kind
    return text


def names_kind(text: str, kind: str, api_version: str, plural: str = "") -> bool:
    """Whether ``KIND[.GROUP]`` names ``kind`` of ``api_version`` as kubectl reads it: the
    whole name in any case, singular or plural (``job`` is not ``CronJob``)."""
    wanted, _, group = text.lower().partition(".")
    names = {kind.lower(), f"{kind.lower()}s", plural} - {""}
    return wanted in names and group in ("", api_version.rpartition("/")[0].lower())
