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
from ctrltrace.vocabulary import RECONCILE_FAILED, Attr, DispatchOutcome

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
            retries = int(attrs.get(Attr.RETRIES, 0))
            retry = f", retry {retries}" if retries else ""
            waited = span(float(attrs.get(Attr.QUEUE_WAIT_S, 0.0)))
            return f"{record.request} after {waited} in the queue{retry}"
        case Stage.RECONCILE:
            took = span(float(attrs.get(Attr.DURATION_S, 0.0)))
            error = f": {record.reason}" if outcome in RECONCILE_FAILED else ""
            return f"{outcome} in {took}{error}"
        case Stage.REQUEUE:
            attempt = f"retry attempt {attrs[Attr.ATTEMPT]}, " if "attempt" in attrs else ""
            due = attrs.get(Attr.DUE)
            when = f" at {clock(due)}" if isinstance(due, int | float) else ""
            delay = span(float(attrs.get(Attr.DELAY_S, 0.0)))
            return f"{outcome}: {attempt}next run in {delay}{when}"
        case Stage.WRITE:
            ref = record.object
            target = f" {ref.kind} {ref.key}" if ref is not None else ""
            version = f" → rv {ref.resource_version}" if ref is not None else ""
            return f"{outcome}{target}{version}"
        case Stage.WATCH:
            return f"{attrs.get(Attr.KIND, '')} {outcome}: {record.reason}"
    return f"{outcome}: {record.reason}" if record.reason else outcome


def event_words(event: Record) -> str:
    ref = event.object
    text = event.outcome
    if ref is not None:
        text += f" {ref.kind} {ref.key} rv {ref.resource_version} gen {ref.generation}"
    writer = event.attrs.get(Attr.WRITER)
    if writer:
        text += f" by {writer}"
    if event.attrs.get(Attr.SELF_CAUSED) is True:
        text += " (own write)"
    return text


def _dispatch_words(dispatch: Record) -> str:
    attrs, outcome = dispatch.attrs, dispatch.outcome
    match outcome:
        case DispatchOutcome.DROPPED_BY_PREDICATE:
            return f"dropped by {attrs.get(Attr.PREDICATE, 'a predicate')}: {dispatch.reason}"
        case DispatchOutcome.NOT_MAPPED:
            return f"not mapped by {attrs.get(Attr.HANDLER, 'the handler')}: {dispatch.reason}"
        case DispatchOutcome.DEDUPLICATED:
            return f"{dispatch.request} already waiting: deduplicated ({dispatch.reason})"
        case DispatchOutcome.REQUEUED_AFTER_PROCESSING:
            return f"{dispatch.request} is being reconciled: queued again for after it"
    return f"{outcome} {dispatch.request} ({dispatch.reason})"


def event_type_of(dispatch: Record) -> str:
    return str(dispatch.attrs.get(Attr.EVENT_TYPE, "watch"))


def resolve_kind(text: str, watch_records: Iterable[Record]) -> str:
    """The kind a user means by ``KIND[.GROUP]``, kubectl-style: case-insensitive, singular or
    plural, matched against the kinds the journal saw watched. Unknown input is kept as typed
    (it then explains as ``not_watched``)."""
    for record in watch_records:
        kind = str(record.attrs.get(Attr.KIND, ""))
        api_version = str(record.attrs.get(Attr.API_VERSION, ""))
        plural = str(record.attrs.get(Attr.RESOURCE, "")).partition(".")[0]
        if names_kind(text, kind, api_version, plural):
            return kind
    return text


def names_kind(text: str, kind: str, api_version: str, plural: str = "") -> bool:
    """Whether ``KIND[.GROUP]`` names ``kind`` of ``api_version`` as kubectl reads it: the
    whole name in any case, singular or plural (``job`` is not ``CronJob``)."""
    wanted, _, group = text.lower().partition(".")
    names = {kind.lower(), f"{kind.lower()}s", plural} - {""}
    return wanted in names and group in ("", api_version.rpartition("/")[0].lower())
