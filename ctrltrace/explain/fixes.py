"""The words of a verdict's fix: what the API server's status means for a reconciler, what to do
about a failing watch, a function that raised, a handler that mapped nothing, a predicate.

Pure: no I/O. The watch texts come from ``ctrltrace.remedies``, the words the runtime logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from ctrltrace import remedies
from ctrltrace.explain.model import (
    Code,
    PipelineWarning,
    Verdict,
    WarningCode,
)
from ctrltrace.explain.words import event_type_of
from ctrltrace.records import Record
from ctrltrace.timetext import clock
from ctrltrace.vocabulary import WATCH_FAILURES, Attr, DispatchOutcome, Unmapped, WatchOutcome

_REPEATED = 3  # the same API status this many runs in a row is a pattern, not bad luck


_TRANSIENT_TYPES = frozenset(
    {
        "TimeoutError",
        "ServerTimeoutError",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "ClientOSError",
        "ClientConnectionError",
    }
)
_INVALID_FIELD = re.compile(r"is invalid: (?P<field>[\w.\[\]-]+): (?P<message>.*)")


def watch_warning(kind: str, records: list[Record], code: Code) -> PipelineWarning | None:
    """A warning about the object's own kind's watch: failing now, or refused (403)."""
    failures = [record for record in records if record.outcome in WATCH_FAILURES]
    if not failures:
        return None
    if any(r.outcome == WatchOutcome.RESUMED for r in records if r.time >= failures[-1].time):
        return None  # the server took a watch again after the last failure: it works now
    latest = records[-1]
    if latest.outcome in (WatchOutcome.DISCONNECTED, WatchOutcome.ERROR):
        since = latest
        for record in reversed(records):
            if record.outcome not in WATCH_FAILURES:
                break
            since = record
        return PipelineWarning(
            WarningCode.WATCH_DISCONNECTED,
            f"the watch for {kind} has failed since {clock(since.time)} ({latest.outcome}: "
            f"{latest.reason}): changes made since have not reached the controller",
            "Check the connection from the controller to the API server; the informer "
            "retries with back-off and resumes from the last resourceVersion it saw (it "
            "lists again only if the server no longer has it).",
        )
    refused = failures[-1]
    if refused.outcome != WatchOutcome.FORBIDDEN or code is Code.WATCH_FORBIDDEN:
        return None
    problem, fix, _ = forbidden_words(kind, refused)
    count = sum(record.outcome == WatchOutcome.FORBIDDEN for record in records)
    return PipelineWarning(
        WarningCode.WATCH_FORBIDDEN,
        f"{problem} ({count} time(s), latest at {clock(refused.time)}): changes reach the "
        "cache only when the informer lists again after each refused watch, late and "
        "without the states in between",
        fix,
    )


_RAISED = re.compile(r"raised (?P<type>[A-Za-z_][\w.]*)")


def raised_verdict(dispatch: Record) -> Verdict | None:
    """A predicate or map function that raised: the verdict is about that function."""
    controller, event = dispatch.controller, event_type_of(dispatch)
    found = _RAISED.search(dispatch.reason)
    raised = dispatch.attrs.get(Attr.RAISED) or (found["type"] if found else None)
    details: dict[str, Any] = {
        "controller": controller,
        "exception": raised,
        "error": dispatch.reason,
    }
    where = str(dispatch.attrs.get(Attr.RAISED_IN, ""))
    if dispatch.outcome == DispatchOutcome.DROPPED_BY_PREDICATE and Attr.RAISED in dispatch.attrs:
        name = str(dispatch.attrs.get(Attr.PREDICATE, "a predicate"))
        function = where or name
        within = f" (in {where})" if where and where != name else ""
        return Verdict(
            Code.DROPPED_BY_PREDICATE,
            f"{controller}: predicate {name}{within} {dispatch.reason} on the {event} event, "
            "so the event was dropped",
            f"Fix {function}: a predicate that raises drops the event (it counts as a no). "
            f"Make it return a verdict for every {event} event it can be given (missing "
            "fields, no old object) instead of raising.",
            details | {"predicate": name, "function": function},
        )
    if dispatch.outcome == DispatchOutcome.NOT_MAPPED and raised:
        handler = str(dispatch.attrs.get(Attr.HANDLER, "the map function"))
        return Verdict(
            Code.NOT_MAPPED,
            f"{controller}: {handler} raised {raised} on the {event} event ({dispatch.reason}), "
            "so the event was dropped: no request was queued",
            f"Fix {handler}: it must return the requests to reconcile (an empty list for none) "
            "for every object it can be given, not raise.",
            details | {"handler": handler, "function": handler},
        )
    return None


def api_words(end: Record, ends: Sequence[Record]) -> tuple[str, str, dict[str, Any]] | None:
    """What the API server's answer to a failed reconcile means, and the fix for that cause:
    (words appended to the message, the fix, details). None for an error of user code."""
    status = end.attrs.get(Attr.API_STATUS)
    if not isinstance(status, int):
        if end.attrs.get(Attr.ERROR_TYPE) in _TRANSIENT_TYPES:
            return (
                " (a timeout or lost connection: transient)",
                "Nothing to fix if it passes: the request is retried with back-off; if it "
                "persists, check the API server's health and the network.",
                {"transient": True},
            )
        return None
    method = str(end.attrs.get(Attr.API_METHOD, ""))
    said = f"{status} {end.attrs.get(Attr.API_REASON, '')}"
    server = end.reason.partition(f"{said}: ")[2].removesuffix(
        " (the Result returned with it is ignored)"
    )
    details: dict[str, Any] = {"api_status": status, "api_method": method, "api_message": server}
    if status == 409:
        conflicts = 0
        for earlier in reversed(ends):
            if earlier.attrs.get(Attr.API_STATUS) != 409:
                break
            conflicts += 1
        details["conflicts_in_a_row"] = conflicts
        fix = (
            "Re-read the object before each update (the cached copy was stale), or patch "
            "instead of update: a merge patch carries no resourceVersion and cannot conflict."
        )
        if conflicts >= _REPEATED:
            return (
                f" (409 Conflict {conflicts} times in a row: the reconciler keeps writing a "
                "stale copy; something else keeps changing the object, or it updates twice)",
                fix,
                details,
            )
        return (
            " (409 Conflict: the object changed after it was read, a stale read; normal when "
            "rare, and retried)",
            fix,
            details,
        )
    if status == 404:
        if method == "GET":
            return (
                " (404 on a read: the object is gone)",
                "Return without error when the object is not found: it was deleted, there is "
                "nothing left to reconcile (use finalizers for clean-up that must run).",
                details,
            )
        return (
            f" (404 on a {method}: the object or its namespace is gone)",
            "Return without error when the object being written is gone; re-create it only "
            "if the reconciler owns it.",
            details,
        )
    if status == 403:
        found = remedies.FORBIDDEN.search(server)
        if found is None:
            return (
                " (403 Forbidden)",
                f"Grant the controller's identity what it asked: {server}",
                details,
            )
        group = found["group"] or ""
        namespace = re.search(r'in the namespace "(?P<ns>[^"]+)"', server)
        holder = f"a Role in {namespace['ns']}" if namespace else "a ClusterRole"
        rule = (
            f"apiGroups [{group or chr(34) * 2}], resources [{found['resource']}], "
            f"verbs [{found['verb']}]"
        )
        details["rule"] = {
            "apiGroups": [group],
            "resources": [found["resource"]],
            "verbs": [found["verb"]],
        }
        return (
            f" (403 on a {method}: {found['user']} may not {found['verb']} {found['resource']})",
            f"grant {found['user']} this rule in {holder}: {rule} "
            "(`ctrltrace rbac` prints every rule the manager needs)",
            details,
        )
    if status == 422:
        invalid = _INVALID_FIELD.search(server)
        field_name = invalid["field"] if invalid else ""
        details["field"] = field_name
        where = f" in {field_name}" if field_name else ""
        return (
            f" (422 Invalid: the API server rejected the object{where})",
            f"Fix what the reconciler writes{where}: the server said "
            f"{invalid['message'] if invalid else server}. Retrying the same write fails again.",
            details,
        )
    if status == 429 or status >= 500:
        return (
            f" ({said}: the API server is overloaded or failing: transient)",
            "Nothing to fix if it passes: the request is retried with back-off; if it "
            "persists, look at the API server's health.",
            details | {"transient": True},
        )
    return None


WATCH_ORDER = (Code.WATCH_FORBIDDEN, Code.KIND_NOT_FOUND, Code.CACHE_NOT_SYNCED, Code.NO_EVENTS)

# Not being mapped is often right: owns() follows only the controller owner, so an object
# nobody (or something else) controls is not this controller's to reconcile.
UNMAPPED_FIXES = {
    Unmapped.NO_OWNER: (
        "Nothing to fix if {controller} did not create this object: owns() reconciles an "
        "object's controller owner, and it has none. If {controller} should manage it, give "
        "it a controller reference to its owner (set_controller_reference) when creating it."
    ),
    Unmapped.OTHER_OWNER: (
        "Nothing to fix if this object is not {controller}'s: it belongs to another owner, "
        "so owns() rightly leaves it alone. Do not add controller: true for {controller}: "
        "an object has one controller. To react to it anyway, use .watches() with a map "
        "function."
    ),
    Unmapped.NOT_CONTROLLER: (
        "Its ownerReference to the owner kind is not the controller reference: make it one "
        "(set_controller_reference sets controller: true) if {controller} controls it, or "
        "use owns(..., match_every_owner=True) to follow every owner of that kind."
    ),
    Unmapped.MAP_EMPTY: (
        "The map function returned no request for this object: return one if it should "
        "trigger {controller}, or filter such events out with a predicate."
    ),
}
UNMAPPED_FIX = (
    "Make the handler map it: set controller: true on the ownerReference that owns() should "
    "follow (or use match_every_owner=True), or make the map function return a request for "
    "this object."
)

PREDICATE_FIXES = {
    "GenerationChanged": (
        "GenerationChanged drops updates that leave metadata.generation unchanged (status, "
        "labels, annotations, finalizers); add LabelChanged()/AnnotationChanged() with | or "
        "use ResourceVersionChanged() if the controller must see them."
    ),
    "ResourceVersionChanged": (
        "ResourceVersionChanged drops resyncs (same resourceVersion); nothing about the "
        "object changed, so there is nothing to reconcile."
    ),
}


def forbidden_verdict(kind: str, record: Record, details: dict[str, Any]) -> Verdict:
    problem, fix, more = forbidden_words(kind, record)
    return Verdict(Code.WATCH_FORBIDDEN, problem, fix, details | more)


def forbidden_words(kind: str, record: Record) -> tuple[str, str, dict[str, Any]]:
    """A 403 on a list or watch: (what, the fix with the exact grant, details), in the words
    the runtime's log uses too."""
    remedy = remedies.forbidden(kind, record.reason, record.attrs)
    return remedy.message, remedy.fix, remedy.details


def not_served_words(kind: str, record: Record) -> tuple[str, str, dict[str, Any]]:
    remedy = remedies.kind_not_found(kind, record.reason, record.attrs)
    return remedy.message, remedy.fix, remedy.details


def by_kind(records: Iterable[Record], kind: str | None) -> dict[str, list[Record]]:
    kinds: dict[str, list[Record]] = {}
    for record in records:
        record_kind = str(record.attrs.get(Attr.KIND, ""))
        if kind is None or record_kind == kind:
            kinds.setdefault(record_kind, []).append(record)
    return kinds
