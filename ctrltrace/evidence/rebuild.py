"""Records rebuilt from ctrltrace's spans in OTLP JSON, as ``ctrltrace.spanmodel`` wrote them.

Owns reading OTLP-JSON ``ExportTraceServiceRequest`` documents (or Jaeger's answers, which
are the same) for ctrltrace's own scope, and turning each span back into the records it was
made from: one per span, or a reconcile's start, writes, end and requeue, with causes that
follow the spans' parents and links. Each rebuilt record names the replica it came from in
``Attr.REPLICA`` (the resource's ``k8s.pod.name``, else its ``service.instance.id``, a UUID's
first 8 digits, else its ``service.name``).

What does not survive the trip: record ids (rebuilt ones are numbered here), times below the
nanosecond, a reconcile still running (its span is exported when it ends) and causes a sink
forgot (it remembers a bounded number).

No I/O (``traces`` reads Jaeger), no OpenTelemetry SDK; it decides nothing.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ctrltrace.records import AttrValue, ObjectRef, Record, Stage
from ctrltrace.spanmodel import (
    CAUSED_LINK,
    COMPLETE_SAMPLERS,
    CONTROLLER,
    DISPATCH_LINK,
    EVENT_TYPE,
    K8S_POD_NAME,
    LINK,
    OUTCOME,
    REASON,
    RECONCILE_ID,
    REPLICA,
    REQUEST,
    REQUEUE_EVENT,
    REQUEUE_LINK,
    SAMPLER,
    SCOPE_NAME,
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    START_REASON,
    UNFINISHED,
    WRITE_EVENT,
    WRITE_LINK,
    WRITE_VERB,
    get_attrs,
    object_of,
    stage_of,
)
from ctrltrace.vocabulary import Attr, ReconcileStartOutcome

__all__ = ["Rebuild", "records_from_otlp"]

_UUID = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", re.IGNORECASE)
# Records of one time in the order a run emits them (a fake clock gives many ties).
_RANK = {
    Stage.WATCH: 0,
    Stage.LEASE: 0,
    Stage.CONTROLLER: 0,
    Stage.MANAGER: 0,
    Stage.EVENT: 1,
    Stage.DISPATCH: 2,
    Stage.RECONCILE_START: 3,
    Stage.WRITE: 4,
    Stage.KUBE_EVENT: 4,
    Stage.RECONCILE: 5,
    Stage.REQUEUE: 6,
}

# -- spans -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Span:
    key: str  # trace id + span id, hex
    stage: Stage
    parent: str  # the parent's key, "" for a root
    start: int  # ns
    end: int
    attributes: dict[str, AttrValue]
    events: list[tuple[str, int, dict[str, AttrValue]]]
    links: list[tuple[str, str]]  # (key, what the link says it is)
    replica: str
    sampler: str = field(default="")


def _spans(document: Mapping[str, Any]) -> Iterator[_Span]:
    """ctrltrace's spans in an OTLP-JSON ``ExportTraceServiceRequest`` (or Jaeger's answer)."""
    for resource_spans in document.get("resourceSpans") or ():
        resource = _attributes(resource_spans.get("resource", {}).get("attributes"))
        replica = _replica(resource)
        sampler = str(resource.get(SAMPLER, ""))
        for scope_spans in resource_spans.get("scopeSpans") or ():
            if (scope_spans.get("scope") or {}).get("name") != SCOPE_NAME:
                continue  # other instrumentation in the same process
            for span in scope_spans.get("spans") or ():
                stage = stage_of(str(span.get("name", "")))
                if stage is None:
                    continue
                trace_id = str(span["traceId"])
                parent = str(span.get("parentSpanId") or "")
                yield _Span(
                    trace_id + str(span["spanId"]),
                    stage,
                    trace_id + parent if parent else "",
                    int(span.get("startTimeUnixNano", 0)),
                    int(span.get("endTimeUnixNano", 0)),
                    _attributes(span.get("attributes")),
                    [
                        (
                            str(event.get("name", "")),
                            int(event.get("timeUnixNano", 0)),
                            _attributes(event.get("attributes")),
                        )
                        for event in span.get("events") or ()
                    ],
                    [
                        (
                            str(link["traceId"]) + str(link["spanId"]),
                            str(_attributes(link.get("attributes")).get(LINK, "")),
                        )
                        for link in span.get("links") or ()
                    ],
                    replica,
                    sampler,
                )


def _replica(resource: Mapping[str, AttrValue]) -> str:
    """The pod, else the process (a UUID shortened as git shortens hashes), else the service."""
    pod = str(resource.get(K8S_POD_NAME, ""))
    instance = str(resource.get(SERVICE_INSTANCE_ID, ""))
    if pod or not instance:
        return pod or str(resource.get(SERVICE_NAME, ""))
    return instance[:8] if _UUID.fullmatch(instance) else instance


def _attributes(pairs: Iterable[Mapping[str, Any]] | None) -> dict[str, AttrValue]:
    found: dict[str, AttrValue] = {}
    for pair in pairs or ():
        value = _value(pair.get("value") or {})
        if value is not None:
            found[str(pair["key"])] = value
    return found


def _value(wrapped: Mapping[str, Any]) -> AttrValue | None:
    """An OTLP-JSON AnyValue that a record can hold (int64 arrives as a string)."""
    if "stringValue" in wrapped:
        return str(wrapped["stringValue"])
    if "boolValue" in wrapped:
        return bool(wrapped["boolValue"])
    if "intValue" in wrapped:
        return int(wrapped["intValue"])
    if "doubleValue" in wrapped:
        return float(wrapped["doubleValue"])
    return None


# -- records -----------------------------------------------------------------------------------


def _seconds(ns: int) -> float:
    return ns / 1e9


class Rebuild:
    """Records from the spans in OTLP-JSON ``documents``: one per span, or a reconcile's start,
    writes, end and requeue; ``samplers`` names the replicas that leave traces out, and how."""

    def __init__(self, documents: Iterable[Mapping[str, Any]]) -> None:
        self.spans = {span.key: span for document in documents for span in _spans(document)}
        self.samplers = {  # replicas that leave traces out, and how
            span.replica: span.sampler
            for span in self.spans.values()
            if span.sampler and span.sampler not in COMPLETE_SAMPLERS
        }
        self._ids: dict[tuple[str, str], int] = {}
        self._next = itertools.count(1)

    def id(self, key: str, role: str) -> int:
        """The rebuilt record id of one record of a span: the same for its causes' lookups."""
        found = self._ids.get((key, role))
        if found is None:
            found = self._ids[(key, role)] = next(self._next)
        return found

    def records(self) -> list[Record]:
        records: list[Record] = []
        for span in self.spans.values():
            if span.stage is Stage.RECONCILE:
                records += self._reconcile(span)
            else:
                records.append(self._point(span))
        records.sort(key=lambda record: (record.time, _RANK.get(record.stage, 4)))
        return records

    def _point(self, span: _Span) -> Record:
        attributes = span.attributes
        stage = span.stage
        ref = object_of(attributes)
        causes: tuple[int, ...] = ()
        if stage is Stage.DISPATCH and span.parent:
            # A dispatch's object is its event's: the parent span names it.
            causes = (self.id(span.parent, Stage.EVENT.value),)
            parent = self.spans.get(span.parent)
            ref = object_of(parent.attributes) if parent is not None else None
        elif stage is Stage.EVENT:
            causes = self._write_behind(span, ref)
        return Record(
            time=_seconds(span.start),
            stage=stage,
            outcome=str(attributes.get(OUTCOME) or attributes.get(EVENT_TYPE, "")),
            reason=str(attributes.get(REASON, "")),
            controller=str(attributes.get(CONTROLLER, "")),
            object=ref,
            request=str(attributes.get(REQUEST, "")),
            reconcile_id=str(attributes.get(RECONCILE_ID, "")),
            id=self.id(span.key, stage.value),
            cause_ids=causes,
            attrs=get_attrs(stage, attributes) | {REPLICA: span.replica},
        )

    def _write_behind(self, event: _Span, ref: ObjectRef | None) -> tuple[int, ...]:
        """The write an event is the controller's own coming back: the one in the linked
        reconcile that returned the event's resourceVersion."""
        for key, what in event.links:
            reconcile = self.spans.get(key)
            if what != WRITE_LINK or reconcile is None or ref is None:
                continue
            for index, (name, _, attributes) in enumerate(reconcile.events):
                written = object_of(attributes)
                version = written.resource_version if written is not None else None
                if name == WRITE_EVENT and version == ref.resource_version:
                    return (self.id(key, f"{WRITE_EVENT}{index}"),)
        return ()

    def _reconcile(self, span: _Span) -> list[Record]:
        attributes = span.attributes
        common: dict[str, Any] = {
            "controller": str(attributes.get(CONTROLLER, "")),
            "request": str(attributes.get(REQUEST, "")),
            "reconcile_id": str(attributes.get(RECONCILE_ID, "")),
        }
        replica = {REPLICA: span.replica}
        causes = [self.id(span.parent, Stage.DISPATCH.value)] if span.parent else []
        for key, what in span.links:
            if what == DISPATCH_LINK:
                causes.append(self.id(key, Stage.DISPATCH.value))
            elif what == REQUEUE_LINK:
                causes.append(self.id(key, Stage.REQUEUE.value))
        start_id = self.id(span.key, Stage.RECONCILE_START.value)
        records = [
            Record(
                time=_seconds(span.start),
                stage=Stage.RECONCILE_START,
                outcome=ReconcileStartOutcome.STARTED,
                reason=str(attributes.get(START_REASON, "")),
                id=start_id,
                cause_ids=tuple(causes),
                attrs=get_attrs(Stage.RECONCILE_START, attributes) | replica,
                **common,
            )
        ]
        caused = [self.spans.get(key) for key, what in span.links if what == CAUSED_LINK]
        for index, (name, at, event_attributes) in enumerate(span.events):
            if name == WRITE_EVENT:
                written = object_of(event_attributes)
                attrs = get_attrs(Stage.WRITE, event_attributes) | replica
                self._pair_with_event(attrs, written, [e for e in caused if e is not None])
                records.append(
                    Record(
                        time=_seconds(at),
                        stage=Stage.WRITE,
                        outcome=str(event_attributes.get(WRITE_VERB, "")),
                        reason=str(event_attributes.get(REASON, "")),
                        controller=common["controller"],
                        object=written,
                        request=str(event_attributes.get(REQUEST, "")),
                        reconcile_id=common["reconcile_id"],
                        id=self.id(span.key, f"{WRITE_EVENT}{index}"),
                        attrs=attrs,
                    )
                )
        outcome = str(attributes.get(OUTCOME, ""))
        if not outcome or outcome == UNFINISHED:
            return records
        end_id = self.id(span.key, Stage.RECONCILE.value)
        records.append(
            Record(
                time=_seconds(span.end),
                stage=Stage.RECONCILE,
                outcome=outcome,
                reason=str(attributes.get(REASON, "")),
                id=end_id,
                cause_ids=(start_id,),
                attrs=get_attrs(Stage.RECONCILE, attributes) | replica,
                **common,
            )
        )
        for name, at, event_attributes in span.events:
            if name == REQUEUE_EVENT:
                records.append(
                    Record(
                        time=_seconds(at),
                        stage=Stage.REQUEUE,
                        outcome=str(event_attributes.get(OUTCOME, "")),
                        reason=str(event_attributes.get(REASON, "")),
                        id=self.id(span.key, Stage.REQUEUE.value),
                        cause_ids=(end_id,),
                        attrs=get_attrs(Stage.REQUEUE, event_attributes) | replica,
                        **common,
                    )
                )
        return records

    def _pair_with_event(
        self, attrs: dict[str, AttrValue], written: ObjectRef | None, events: Sequence[_Span]
    ) -> None:
        """A write's ``event_id`` (its event came back before its answer) as a rebuilt id: the
        linked event of the written resourceVersion; dropped when that span is not here."""
        if Attr.EVENT_ID not in attrs:
            return
        del attrs[Attr.EVENT_ID]
        version = written.resource_version if written is not None else None
        for event in events:
            ref = object_of(event.attributes)
            if ref is not None and ref.resource_version == version:
                attrs[Attr.EVENT_ID] = self.id(event.key, Stage.EVENT.value)


def records_from_otlp(documents: Iterable[Mapping[str, Any]]) -> list[Record]:
    """The records ctrltrace's spans in OTLP-JSON ``documents`` were made from, in time order.

    Spans that appear in several documents (one trace found by two searches) count once.
    """
    return Rebuild(documents).records()
