"""Records written as the journal's pickles: the encoding, in Python, and the C accelerator.

Owns the one encoding the journal stores: a record as a tuple of its fields in the order of
``RECORD_FIELDS``, its ObjectRef as a tuple of ``REF_FIELDS``, its Stage (and any value that
is not exactly a built-in scalar, tuple, list or dict) as its str(); written in pickle
protocol 5 opcodes, without frames, that the journal's restricted unpickler reads back.
Non-empty strings and ObjectRefs are memoised by identity within one pickle, as the pickle
module does; tuples, lists and dicts are not.

``dumps`` and ``seal`` are the C extension's (``ctrltrace._picklerecords``) when it was built
and ``CTRLTRACE_NO_ACCELERATORS`` is not set, else this module's Python writer, which produces
the same bytes; ``ACCELERATED`` says which. The standard pickler cannot stand in: it frames
protocol 5 and memoises tuples, so its bytes differ.

It may not: do I/O, keep state between calls, or write an opcode that names a class (the
journal's reader refuses every global but str and tuple, and needs neither).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection
from operator import attrgetter
from typing import Any

from ctrltrace import accelerators
from ctrltrace.records import ObjectRef, Record, Stage

__all__ = [
    "ACCELERATED",
    "RECORD_FIELDS",
    "REF_FIELDS",
    "dumps",
    "pure_dumps",
    "pure_seal",
    "seal",
]

# The stored order, written once for Python: this writer and the journal's reader derive from
# it. The C extension keeps its own list of names; test_picklerecords holds it to this one.
RECORD_FIELDS = (
    "id",
    "time",
    "stage",
    "outcome",
    "reason",
    "controller",
    "object",
    "request",
    "reconcile_id",
    "cause_ids",
    "attrs",
)
REF_FIELDS = (
    "api_version",
    "kind",
    "namespace",
    "name",
    "uid",
    "resource_version",
    "generation",
)
_record_fields = attrgetter(*RECORD_FIELDS)
_ref_fields = attrgetter(*REF_FIELDS)

Sealed = tuple[bytes, float, float, set[str], list[int]]

_PROTO = b"\x80\x05"
_STOP = b"."
_MARK = b"("
_NONE = b"N"
_TRUE = b"\x88"
_FALSE = b"\x89"
_EMPTY_TUPLE = b")"
_TUPLE = b"t"
_TUPLES = (b"", b"\x85", b"\x86", b"\x87")  # TUPLE1, TUPLE2, TUPLE3
_EMPTY_LIST = b"]"
_APPENDS = b"e"
_EMPTY_DICT = b"}"
_SETITEMS = b"u"
_MEMOIZE = b"\x94"
_EMPTY_TEXT = b"\x8c\x00"
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)

_binint1 = struct.Struct("<cB").pack
_binint2 = struct.Struct("<cH").pack
_binint = struct.Struct("<ci").pack
_long8 = struct.Struct("<2sq").pack
_binfloat = struct.Struct(">cd").pack
_text32 = struct.Struct("<cI").pack
_text64 = struct.Struct("<cQ").pack
_get4 = struct.Struct("<cI").pack
_GET = [bytes((ord("h"), index)) for index in range(256)]  # BINGET of each one-byte index
_SHORT_TEXT = [bytes((0x8C, length)) for length in range(256)]  # SHORT_BINUNICODE's heads


class _Writer:
    """One pickle being written: its bytes and its memo (object id -> memo index)."""

    __slots__ = ("_held", "_memo", "_save", "out")

    def __init__(self) -> None:
        self.out = bytearray(_PROTO)
        self._memo: dict[int, int] = {}
        # Every memoised object stays alive until the pickle is done, so no id comes back.
        self._held: list[object] = []
        self._save: dict[type, Callable[[Any], None]] = {
            str: self._str,
            int: self._int,
            float: self._float,
            bool: self._bool,
            type(None): self._none,
            tuple: self._tuple,
            list: self._list,
            dict: self._dict,
            ObjectRef: self._ref,
        }

    def save(self, value: object) -> None:
        self._save.get(type(value), self._as_str)(value)

    def record(self, record: object) -> Record:
        if type(record) is not Record:
            raise TypeError(f"the journal stores Records, not {type(record).__name__}")
        self._items(_record_fields(record))
        return record

    def finish(self) -> bytes:
        self.out += _STOP
        return bytes(self.out)

    def _memoised(self, key: object) -> bool:
        """Refer to ``key`` if it was written before; whether it was."""
        index = self._memo.get(id(key))
        if index is None:
            return False
        self.out += _GET[index] if index < 256 else _get4(b"j", index)
        return True

    def _memoise(self, key: object) -> None:
        self._memo[id(key)] = len(self._memo)
        self._held.append(key)
        self.out += _MEMOIZE

    def _text(self, text: str, key: object = None) -> None:
        """A non-empty str, memoised under ``key``: the str itself, or what it was made from."""
        if key is None:
            key = text
        memo = self._memo
        index = memo.get(id(key))
        if index is not None:
            self.out += _GET[index] if index < 256 else _get4(b"j", index)
            return
        utf8 = text.encode()
        length = len(utf8)
        out = self.out
        if length < 256:
            out += _SHORT_TEXT[length]
        elif length <= 0xFFFFFFFF:
            out += _text32(b"X", length)
        else:
            out += _text64(b"\x8d", length)
        out += utf8
        out += _MEMOIZE
        memo[id(key)] = len(memo)
        self._held.append(key)

    def _str(self, text: str) -> None:
        if text:
            self._text(text)
        else:
            self.out += _EMPTY_TEXT

    def _int(self, number: int) -> None:
        if 0 <= number < 256:
            self.out += _binint1(b"K", number)
        elif 0 <= number < 65536:
            self.out += _binint2(b"M", number)
        elif _INT32[0] <= number <= _INT32[1]:
            self.out += _binint(b"J", number)
        elif _INT64[0] <= number <= _INT64[1]:
            self.out += _long8(b"\x8a\x08", number)
        else:  # past 64 bits (rare): the int's own little-endian two's complement bytes
            size = number.bit_length() // 8 + 1
            if size > 255:
                raise OverflowError("an int in a record is too large for the journal")
            self.out += bytes((0x8A, size)) + number.to_bytes(size, "little", signed=True)

    def _float(self, number: float) -> None:
        self.out += _binfloat(b"G", number)

    def _bool(self, value: bool) -> None:
        self.out += _TRUE if value else _FALSE

    def _none(self, value: None) -> None:
        self.out += _NONE

    def _items(self, items: tuple[object, ...]) -> None:
        """A tuple of these items, each saved as ``save`` would."""
        count = len(items)
        if count == 0:
            self.out += _EMPTY_TUPLE
            return
        out = self.out
        if count > 3:
            out += _MARK
        inline = self._inline
        for item in items:
            inline(item)
        out += _TUPLE if count > 3 else _TUPLES[count]

    def _inline(self, item: object) -> None:
        """``save``, with the values records are mostly made of written without a call."""
        kind = type(item)
        if kind is str:
            index = self._memo.get(id(item)) if item else -1
            if index is None:
                self._text(item)  # type: ignore[arg-type]
            elif 0 <= index < 256:
                self.out += _GET[index]
            else:
                self.out += _EMPTY_TEXT if index < 0 else _get4(b"j", index)
        elif item is None:
            self.out += _NONE
        elif kind is int and 0 <= item < 256:  # type: ignore[operator]
            self.out += _binint1(b"K", item)
        else:
            self._save.get(kind, self._as_str)(item)

    def _tuple(self, items: tuple[object, ...]) -> None:
        self._items(items)

    def _list(self, items: list[object]) -> None:
        self.out += _EMPTY_LIST
        if items:
            self.out += _MARK
            for item in items:
                self._inline(item)
            self.out += _APPENDS

    def _dict(self, mapping: dict[object, object]) -> None:
        self.out += _EMPTY_DICT
        if mapping:
            self.out += _MARK
            inline = self._inline
            for key, value in mapping.items():
                inline(key)
                inline(value)
            self.out += _SETITEMS

    def _ref(self, ref: ObjectRef) -> None:
        if self._memoised(ref):
            return
        self._items(_ref_fields(ref))
        self._memoise(ref)

    def _as_str(self, value: object) -> None:
        """Anything else is written as its str(), once per object (a Stage, say)."""
        if not self._memoised(value):
            text = str(value)
            if text:
                self._text(text, value)
            else:
                self.out += _EMPTY_TEXT


def pure_dumps(record: Record, /) -> bytes:
    """One record as the journal stores it: the pickle of its fields tuple."""
    writer = _Writer()
    writer.record(record)
    return writer.finish()


def pure_seal(records: list[Record], health: Collection[Stage], /) -> Sealed:
    """A chunk of records as the journal stores it: (body, first time, last time, keys, health).

    body is the pickle of the list of their fields tuples; keys the set of requests and object
    names they mention; health the indices of the records whose stage is in ``health``.
    """
    if not isinstance(records, list):
        raise TypeError("seal(records: list[Record], health: frozenset[Stage])")
    if not records:
        raise ValueError("seal needs at least one record")
    writer = _Writer()
    writer.out += _EMPTY_LIST + _MARK
    keys: set[str] = set()
    unhealthy: list[int] = []
    first = last = 0.0
    for index, given in enumerate(records):
        record = writer.record(given)
        time = float(record.time)
        if index == 0 or time < first:
            first = time
        if index == 0 or time > last:
            last = time
        request = record.request
        if isinstance(request, str) and request:
            keys.add(request)
        ref = record.object
        if type(ref) is ObjectRef and isinstance(ref.name, str) and ref.name:
            keys.add(ref.name)
        if record.stage in health:
            unhealthy.append(index)
    writer.out += _APPENDS
    return writer.finish(), first, last, keys, unhealthy


def _accelerated() -> tuple[Callable[[Record], bytes], Callable[..., Sealed]] | None:
    extension = accelerators.load("ctrltrace._picklerecords")
    return None if extension is None else (extension.dumps, extension.seal)


_chosen = _accelerated()
ACCELERATED = _chosen is not None
"""Whether ``dumps`` and ``seal`` are the C extension's."""
dumps: Callable[[Record], bytes] = pure_dumps if _chosen is None else _chosen[0]
seal: Callable[[list[Record], Collection[Stage]], Sealed] = (
    pure_seal if _chosen is None else _chosen[1]
)
