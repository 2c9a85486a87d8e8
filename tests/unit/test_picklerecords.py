"""The C pickler of journal records: what it writes reads back as the journal's stored tuples."""

from __future__ import annotations

import enum
import pickletools
from typing import Any

import pytest

from ctrltrace._picklerecords import dumps, seal
from ctrltrace.journal import _HEALTH, _unpickle
from ctrltrace.records import ObjectRef, Record, Stage

REF = ObjectRef("v1", "ConfigMap", "default", "widget", "uid-1", "42", 3)


class Colour(enum.Enum):
    RED = "red"


def stored(record: Record) -> tuple[Any, ...]:
    """The tuple the journal promises for a record, spelled out field by field."""
    ref = record.object
    return (
        record.id,
        record.time,
        record.stage.value,
        record.outcome,
        record.reason,
        record.controller,
        None
        if ref is None
        else (
            ref.api_version,
            ref.kind,
            ref.namespace,
            ref.name,
            ref.uid,
            ref.resource_version,
            ref.generation,
        ),
        record.request,
        record.reconcile_id,
        record.cause_ids,
        dict(record.attrs),
    )


def test_a_record_reads_back_as_its_fields_tuple() -> None:
    record = Record(
        1_700_000_000.25,
        Stage.DISPATCH,
        "queued",
        "passed every predicate",
        "widgets",
        REF,
        "default/widget",
        "",
        cause_ids=(7, 8, 9, 10),
        attrs={"predicate": "ResourceVersionChanged", "handler": "for"},
    )
    assert _unpickle(dumps(record)) == stored(record)


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        None,
        0,
        255,
        256,
        65_535,
        65_536,
        -1,
        2**31 - 1,
        -(2**31),
        2**31,
        -(2**63),
        2**63 - 1,
        2**63,
        -(2**200),
        0.1,
        -0.0,
        float("inf"),
        "",
        "ünïcode ✓",
        "x" * 255,
        "y" * 256,
        "z" * 70_000,
        (),
        (1, 2),
        (1, "two", (3.0,)),
        [1, [2, {"k": "v"}]],
        {"nested": {"deeper": [None]}},
    ],
)
def test_built_in_attribute_values_keep_their_value_and_type(value: object) -> None:
    record = Record(1.0, Stage.EVENT, "MODIFIED", attrs={"value": value})  # type: ignore[dict-item]
    back = _unpickle(dumps(record))[-1]["value"]
    assert back == value
    assert type(back) is type(value)


def test_any_other_value_is_stored_as_its_text() -> None:
    record = Record(1.0, Stage.EVENT, "MODIFIED", attrs={"colour": Colour.RED})  # type: ignore[dict-item]
    assert _unpickle(dumps(record))[-1] == {"colour": "Colour.RED"}


def test_the_pickle_names_no_class_at_all() -> None:
    opcodes = {op.name for op, _, _ in pickletools.genops(dumps(Record(1.0, Stage.LEASE, "x")))}
    assert not opcodes & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "NEWOBJ", "INST", "OBJ"}


def test_a_chunk_reads_back_record_by_record_with_shared_values_memoised() -> None:
    # More than 256 distinct strings, then each again: both memo reference forms get used.
    records = [
        Record(float(i), Stage.EVENT, "ADDED", request=f"default/widget-{i}", object=REF)
        for i in range(300)
    ]
    records += [
        Record(float(i), Stage.DISPATCH, "queued", request=records[i].request, object=REF)
        for i in range(300)
    ]
    body, *_ = seal(records, _HEALTH)
    assert _unpickle(body) == [stored(record) for record in records]
    # The shared ref and each request are written once, then referred to.
    assert body.count(b"uid-1") == 1
    assert body.count(b"default/widget-299") == 1


def test_seal_gives_the_time_span_the_keys_and_where_the_health_records_are() -> None:
    records = [
        Record(5.0, Stage.EVENT, "ADDED", object=REF),
        Record(3.0, Stage.LEASE, "acquired"),
        Record(9.0, Stage.DISPATCH, "queued", request="default/other", object=REF),
        Record(4.0, Stage.WATCH, "synced"),
    ]
    body, first, last, keys, health = seal(records, _HEALTH)
    assert (first, last) == (3.0, 9.0)
    assert keys == {"widget", "default/other"}
    assert health == [1, 3]
    assert len(_unpickle(body)) == 4


def test_what_is_not_a_record_is_refused_with_its_type() -> None:
    with pytest.raises(TypeError, match="not dict"):
        seal([{"time": 1.0}], _HEALTH)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least one"):
        seal([], _HEALTH)
