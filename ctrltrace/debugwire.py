"""What the debug endpoint (``ctrltrace.debugserver``) and its client
(``ctrltrace.evidence.endpoint``) agree on: the paths, the evidence queries, and a record as JSON.

Owns those names and the one JSON form of a ``Record`` (its fields by name, the object
reference as an object, the stage as its text), and checking a decoded one field by field, so
that a reply that is not a record is refused with a one-line ``NotARecord`` instead of failing
later in explain. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ctrltrace.records import ObjectRef, Record, Stage

PREFIX = "/debug/ctrltrace"


class Route:
    """The paths under ``PREFIX``; ``EVIDENCE`` is followed by ``/`` and a ``Query``."""

    EXPLAIN = "explain"
    STATE = "state"
    RECORDS = "records"  # NDJSON: one {CURSOR, RECORD} a line
    EVIDENCE = "evidence"  # JSON: {RECORDS: [...]}


class Query:
    """The evidence queries, one per method of the ``Evidence`` interface that lists records."""

    ABOUT = "about"
    WATCHES = "watches"
    LEASES = "leases"
    CONTROLLERS = "controllers"
    RECONCILES = "reconciles"
    WINDOW = "window"


# Keys of the answers.
CURSOR = "cursor"
RECORD = "record"
RECORDS = "records"
ERROR = "error"


class NotARecord(ValueError):
    """Decoded JSON that is not a record; the message says what is wrong, in one line."""


_STAGES = {stage.value: stage for stage in Stage}
_ATTR_TYPES = (str, int, float, bool)


def record_json(record: Record) -> dict[str, Any]:
    """``record`` as plain JSON values; ``record_from_json`` gives back an equal record."""
    ref = record.object
    return {
        "id": record.id,
        "time": record.time,
        "stage": record.stage.value,
        "outcome": record.outcome,
        "reason": record.reason,
        "controller": record.controller,
        "object": None
        if ref is None
        else {
            "api_version": ref.api_version,
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
            "uid": ref.uid,
            "resource_version": ref.resource_version,
            "generation": ref.generation,
        },
        "request": record.request,
        "reconcile_id": record.reconcile_id,
        "cause_ids": list(record.cause_ids),
        "attrs": dict(record.attrs),
    }


def record_from_json(data: Any) -> Record:
    """The record ``data`` (from ``record_json``) describes; ``NotARecord`` says what is wrong."""
    if not isinstance(data, Mapping):
        raise NotARecord(f"a record is a JSON object, not {type(data).__name__}")
    stage = _STAGES.get(_field(data, "stage", str))
    if stage is None:
        raise NotARecord(f"unknown stage {data['stage']!r}")
    ref = data.get("object")
    if ref is not None and not isinstance(ref, Mapping):
        raise NotARecord("a record's object is a JSON object or null")
    causes = data.get("cause_ids", [])
    attrs = data.get("attrs", {})
    if not isinstance(causes, list) or not all(_is_int(cause) for cause in causes):
        raise NotARecord("a record's cause_ids are a list of integers")
    if not isinstance(attrs, Mapping) or not all(
        isinstance(value, _ATTR_TYPES) for value in attrs.values()
    ):
        raise NotARecord("a record's attrs map names to strings, numbers or booleans")
    return Record(
        time=float(_field(data, "time", (int, float))),
        stage=stage,
        outcome=_field(data, "outcome", str),
        reason=_field(data, "reason", str),
        controller=_field(data, "controller", str),
        object=None
        if ref is None
        else ObjectRef(
            _field(ref, "api_version", str),
            _field(ref, "kind", str),
            _field(ref, "namespace", str),
            _field(ref, "name", str),
            _field(ref, "uid", str),
            _field(ref, "resource_version", str),
            _field(ref, "generation", int),
        ),
        request=_field(data, "request", str),
        reconcile_id=_field(data, "reconcile_id", str),
        id=_field(data, "id", int),
        cause_ids=tuple(causes),
        attrs=dict(attrs),
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise NotARecord(f"a record's {name} is missing or of the wrong type")
    return value
