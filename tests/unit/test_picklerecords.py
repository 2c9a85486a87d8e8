"""The journal's record pickler: what it writes reads back as the journal's stored tuples, and
the Python writer and the C accelerator write the same bytes."""

from __future__ import annotations

import enum
import pickletools
from collections.abc import Callable
from dataclasses import fields
from typing import Any, NamedTuple

import pytest

from ctrltrace import _picklerecords, picklerecords
from ctrltrace.journal.format import _HEALTH, restored
from ctrltrace.journal.format import unpickle as _unpickle
from ctrltrace.records import ObjectRef, Record, Stage

REF = ObjectRef("v1", "ConfigMap", "default", "widget", "uid-1", "42", 3)

Dumps = Callable[[Record], bytes]
Seal = Callable[[list[Record], frozenset[Stage]], tuple[bytes, float, float, set[str], list[int]]]


class Pickler(NamedTuple):
    dumps: Dumps
    seal: Seal


PURE = Pickler(picklerecords.pure_dumps, picklerecords.pure_seal)
# Imported directly, whatever CTRLTRACE_NO_ACCELERATORS says: the suite builds it.
ACCELERATED = Pickler(_picklerecords.dumps, _picklerecords.seal)


@pytest.fixture(params=["python", "c"])
def pickler(request: pytest.FixtureRequest) -> Pickler:
    return PURE if request.param == "python" else ACCELERATED


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


def test_a_record_reads_back_as_its_fields_tuple(pickler: Pickler) -> None:
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
    assert _unpickle(pickler.dumps(record)) == stored(record)


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
def test_built_in_attribute_values_keep_their_value_and_type(
    pickler: Pickler, value: object
) -> None:
    record = Record(1.0, Stage.EVENT, "MODIFIED", attrs={"value": value})  # type: ignore[dict-item]
    back = _unpickle(pickler.dumps(record))[-1]["value"]
    assert back == value
    assert type(back) is type(value)


def test_any_other_value_is_stored_as_its_text(pickler: Pickler) -> None:
    record = Record(1.0, Stage.EVENT, "MODIFIED", attrs={"colour": Colour.RED})  # type: ignore[dict-item]
    assert _unpickle(pickler.dumps(record))[-1] == {"colour": "Colour.RED"}


def test_the_pickle_names_no_class_at_all(pickler: Pickler) -> None:
    pickle = pickler.dumps(Record(1.0, Stage.LEASE, "x"))
    opcodes = {op.name for op, _, _ in pickletools.genops(pickle)}
    assert not opcodes & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "NEWOBJ", "INST", "OBJ"}


def test_a_chunk_reads_back_record_by_record_with_shared_values_memoised(
    pickler: Pickler,
) -> None:
    # More than 256 distinct strings, then each again: both memo reference forms get used.
    records = [
        Record(float(i), Stage.EVENT, "ADDED", request=f"default/widget-{i}", object=REF)
        for i in range(300)
    ]
    records += [
        Record(float(i), Stage.DISPATCH, "queued", request=records[i].request, object=REF)
        for i in range(300)
    ]
    body, *_ = pickler.seal(records, _HEALTH)
    assert _unpickle(body) == [stored(record) for record in records]
    # The shared ref and each request are written once, then referred to.
    assert body.count(b"uid-1") == 1
    assert body.count(b"default/widget-299") == 1


def test_seal_gives_the_time_span_the_keys_and_where_the_health_records_are(
    pickler: Pickler,
) -> None:
    records = [
        Record(5.0, Stage.EVENT, "ADDED", object=REF),
        Record(3.0, Stage.LEASE, "acquired"),
        Record(9.0, Stage.DISPATCH, "queued", request="default/other", object=REF),
        Record(4.0, Stage.WATCH, "synced"),
    ]
    body, first, last, keys, health = pickler.seal(records, _HEALTH)
    assert (first, last) == (3.0, 9.0)
    assert keys == {"widget", "default/other"}
    assert health == [1, 3]
    assert len(_unpickle(body)) == 4


def test_what_is_not_a_record_is_refused_with_its_type(pickler: Pickler) -> None:
    with pytest.raises(TypeError, match="not dict"):
        pickler.seal([{"time": 1.0}], _HEALTH)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least one"):
        pickler.seal([], _HEALTH)


# -- the Python writer and the C accelerator, byte for byte ------------------------------------


def varied_records() -> list[Record]:
    """Records with every kind of value, shared and distinct objects, and over 256 memo entries.

    Equal strings that are distinct objects are written twice and the same object once, in
    both writers; the memo's index passes 255, so both reference forms (BINGET, LONG_BINGET)
    are used.
    """
    shared_reason = "passed every predicate"
    values: list[object] = [
        True, False, None, 0, 255, 256, 65_535, 65_536, -1, 2**31, -(2**63), 2**63, -(2**200),
        0.1, -0.0, float("inf"), "", "ünïcode ✓", "x" * 300, "z" * 70_000, (), (1, "two"),
        (1, 2, 3, 4, (5,)), [], [1, [2, {"k": "v"}]], {}, {"nested": {"deeper": [None]}},
        Colour.RED, Stage.EVENT, REF,
    ]  # fmt: skip
    requests = [f"ns/d-{i}" for i in range(300)]  # the last 100 records repeat the first 100
    records = []
    for i in range(400):
        ref = REF if i % 3 == 0 else ObjectRef("apps/v1", "Deployment", "ns", f"d-{i % 50}")
        records.append(
            Record(
                1_700_000_000.0 + i / 7,
                list(Stage)[i % len(Stage)],
                "queued",
                shared_reason if i % 2 else "".join(["passed every ", "predicate"]),
                "widgets",
                ref if i % 5 else None,
                requests[i % 300] if i < 300 else requests[299 - i % 100],
                f"r-{i % 9}",
                cause_ids=tuple(range(i % 6)),
                attrs={"value": values[i % len(values)], "handler": "for"},  # type: ignore[dict-item]
            )
        )
    return records


def test_the_python_writer_writes_the_c_accelerators_bytes_record_by_record() -> None:
    for record in varied_records():
        assert PURE.dumps(record) == ACCELERATED.dumps(record), record


def test_the_python_writer_seals_a_chunk_as_the_c_accelerator_does() -> None:
    records = varied_records()
    sealed = PURE.seal(records, _HEALTH)
    assert sealed == ACCELERATED.seal(records, _HEALTH)
    opcodes = {op.name for op, _, _ in pickletools.genops(sealed[0])}
    assert {"MEMOIZE", "BINGET", "LONG_BINGET"} <= opcodes  # the memo was exercised both ways
    assert sealed[0].count(b"x" * 300) == 1  # one object, written once
    # The one shared reason once, and each of the 200 equal but distinct ones again.
    assert sealed[0].count(b"passed every predicate") == 1 + 200


@pytest.mark.parametrize(
    ("value", "error"), [(2**2040, OverflowError), ("\ud800", UnicodeEncodeError)]
)
def test_both_writers_refuse_what_the_journal_cannot_hold(
    pickler: Pickler, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        pickler.dumps(Record(1.0, Stage.EVENT, "MODIFIED", attrs={"value": value}))  # type: ignore[dict-item]


def test_the_stored_order_names_every_field_once_and_objectrefs_in_their_own_order() -> None:
    assert sorted(picklerecords.RECORD_FIELDS) == sorted(f.name for f in fields(Record))
    # The reader rebuilds an ObjectRef from its stored tuple positionally.
    assert tuple(f.name for f in fields(ObjectRef)) == picklerecords.REF_FIELDS


def test_both_writers_store_fields_in_the_one_python_order(pickler: Pickler) -> None:
    """Every field distinct, so a writer that swapped two of them could not pass: the C
    accelerator keeps its own list of names, and this holds it to ``RECORD_FIELDS``."""
    ref = ObjectRef("a/v1", "Kind", "ns", "name", "uid", "rv", 7)
    record = Record(
        1.5, Stage.WRITE, "outcome", "reason", "ctl", ref, "req", "rid", 99, (3, 4), {"k": "v"}
    )
    stored_ref = tuple(getattr(ref, name) for name in picklerecords.REF_FIELDS)
    expected = tuple(
        {"stage": record.stage.value, "object": stored_ref, "attrs": {"k": "v"}}.get(
            name, getattr(record, name)
        )
        for name in picklerecords.RECORD_FIELDS
    )
    assert len(set(map(repr, expected))) == len(expected)
    assert _unpickle(pickler.dumps(record)) == expected
    assert restored(expected) == record
