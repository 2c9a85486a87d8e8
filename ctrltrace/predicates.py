"""Predicates: which events a watch lets through to its handler, and why.

Owns the verdict type, the predicate protocol with its combinators (``&``, ``|``, ``~``,
``all_of``), the built-in predicates of controller-runtime's ``predicate`` package and the
label-selector grammar they need. Unlike controller-runtime, every predicate returns a verdict
naming itself and the values it compared instead of a bare bool.

No I/O. Runs once per event per controller, so no copies or serialisation of objects here.

Over 500 lines because every built-in predicate and the label selector share the one base that
decides in ``check`` and names itself in its verdict; a module of their own would have to
import that base back, and controller-runtime keeps them in one package for the same reason.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from ctrltrace.events import Event, EventType
from ctrltrace.records import Obj


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an event passes, which predicate decided, and why in words a user can act on."""

    allowed: bool
    predicate: str
    reason: str


ALL = "all"
"""The ``predicate`` of a verdict that every predicate of a list passed: no single one decided."""


class Predicate:
    """Decides per event type; every type passes unless a subclass overrides its hook.

    Letting unhandled types pass is controller-runtime's ``predicate.Funcs`` rule (a nil
    function means true): a filter written for updates must not silently eat creates.
    """

    __slots__ = ()

    @property
    def name(self) -> str:
        return type(self).__name__

    def check(self, event: Event) -> Verdict:
        kind = event.type
        if kind is EventType.UPDATE:  # by far the most frequent, so tested first
            return self.update(event)
        if kind is EventType.CREATE:
            return self.create(event)
        if kind is EventType.DELETE:
            return self.delete(event)
        return self.generic(event)

    def create(self, event: Event) -> Verdict:
        return self._passes_by_default(event)

    def update(self, event: Event) -> Verdict:
        return self._passes_by_default(event)

    def delete(self, event: Event) -> Verdict:
        return self._passes_by_default(event)

    def generic(self, event: Event) -> Verdict:
        return self._passes_by_default(event)

    def _passes_by_default(self, event: Event) -> Verdict:
        return Verdict(True, self.name, f"{self.name} lets every {event.type} event pass")

    def __and__(self, other: Predicate) -> And:
        return And(*_flatten(self, And), *_flatten(other, And))

    def __or__(self, other: Predicate) -> Or:
        return Or(*_flatten(self, Or), *_flatten(other, Or))

    def __invert__(self) -> Not:
        return Not(self)


def all_of(predicates: Sequence[Predicate], event: Event) -> Verdict:
    """AND every predicate of a watch: the first that says no decides and is named."""
    return _first_no(predicates, event, ALL)


def first_refusal(predicates: Sequence[Predicate], event: Event) -> Verdict | None:
    """The verdict of the first predicate that says no, or None when all pass.

    The dispatch hot path: unlike ``all_of`` it builds no words for events that pass.
    """
    for predicate in predicates:
        verdict = predicate.check(event)
        if not verdict.allowed:
            return verdict
    return None


def _first_no(predicates: Sequence[Predicate], event: Event, name: str) -> Verdict:
    passed: list[Verdict] = []
    for predicate in predicates:
        verdict = predicate.check(event)
        if not verdict.allowed:
            return verdict
        passed.append(verdict)
    if not passed:
        return Verdict(True, name, "no predicates: every event passes")
    return Verdict(True, name, f"all passed: {_listing(passed)}")


def _listing(verdicts: Sequence[Verdict]) -> str:
    return "; ".join(f"{v.predicate}: {v.reason}" for v in verdicts)


class _DecidesInCheck(Predicate, abc.ABC):
    """A predicate that decides the same way for every event type, in ``check``.

    Its hooks route back to ``check`` so that calling a hook directly gives the same answer.
    """

    __slots__ = ()

    @abc.abstractmethod
    def check(self, event: Event) -> Verdict: ...

    def create(self, event: Event) -> Verdict:
        return self.check(event)

    def update(self, event: Event) -> Verdict:
        return self.check(event)

    def delete(self, event: Event) -> Verdict:
        return self.check(event)

    def generic(self, event: Event) -> Verdict:
        return self.check(event)


class _Combination(_DecidesInCheck):
    __slots__ = ("_name", "predicates")
    _symbol: ClassVar[str]

    def __init__(self, *predicates: Predicate) -> None:
        if not predicates:
            raise ValueError(f"{type(self).__name__} needs at least one predicate")
        self.predicates = predicates
        # Built once: the name appears in every verdict this combination decides.
        self._name = f" {self._symbol} ".join(_operand_name(p) for p in predicates)

    @property
    def name(self) -> str:
        return self._name


class And(_Combination):
    """Passes iff every operand passes; operands run in order and the first no is named."""

    __slots__ = ()
    _symbol = "&"

    def check(self, event: Event) -> Verdict:
        return _first_no(self.predicates, event, self._name)


class Or(_Combination):
    """Passes iff some operand passes; the first yes decides, or the reason lists every no."""

    __slots__ = ()
    _symbol = "|"

    def check(self, event: Event) -> Verdict:
        refused: list[Verdict] = []
        for predicate in self.predicates:
            verdict = predicate.check(event)
            if verdict.allowed:
                return verdict
            refused.append(verdict)
        return Verdict(False, self._name, f"none passed: {_listing(refused)}")


class Not(_DecidesInCheck):
    """Inverts its operand; the verdict names the operand that decided, as ``not(X)``."""

    __slots__ = ("_name", "predicate")

    def __init__(self, predicate: Predicate) -> None:
        self.predicate = predicate
        self._name = f"not({predicate.name})"

    @property
    def name(self) -> str:
        return self._name

    def check(self, event: Event) -> Verdict:
        verdict = self.predicate.check(event)
        decider = f"not({verdict.predicate})"
        return Verdict(not verdict.allowed, decider, f"{decider}: {verdict.reason}")


def _flatten(predicate: Predicate, combination: type[_Combination]) -> tuple[Predicate, ...]:
    # a & b & c is one And of three, so its name and its reasons read as written.
    if isinstance(predicate, combination):
        return predicate.predicates
    return (predicate,)


def _operand_name(predicate: Predicate) -> str:
    if isinstance(predicate, _Combination):
        return f"({predicate.name})"
    return predicate.name


class EventFilter(Protocol):
    """A plain function deciding one event type, as in controller-runtime's ``predicate.Funcs``."""

    def __call__(self, event: Event, /) -> bool: ...


class _Funcs(_DecidesInCheck):
    __slots__ = ("_filters", "_name")

    def __init__(self, filters: Mapping[EventType, EventFilter | None], name: str) -> None:
        self._filters = filters
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def check(self, event: Event) -> Verdict:
        kind = event.type
        fn = self._filters[kind]
        if fn is None:
            return Verdict(True, self._name, f"no {kind} function: {kind} events pass")
        allowed = bool(fn(event))
        fn_name = getattr(fn, "__qualname__", repr(fn))
        return Verdict(allowed, self._name, f"{kind} function {fn_name} returned {allowed}")


def funcs(
    create: EventFilter | None = None,
    update: EventFilter | None = None,
    delete: EventFilter | None = None,
    generic: EventFilter | None = None,
    *,
    name: str = "Funcs",
) -> Predicate:
    """A predicate from one function per event type; a type without a function passes.

    An exception from a function propagates: the caller decides what a broken filter means.
    """
    filters = {
        EventType.CREATE: create,
        EventType.UPDATE: update,
        EventType.DELETE: delete,
        EventType.GENERIC: generic,
    }
    return _Funcs(filters, name)


def _meta(obj: Obj) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    return meta


class _ComparesUpdate(Predicate, abc.ABC):
    """Filters updates by comparing old and new; create, delete and generic events pass."""

    __slots__ = ()
    _compares: ClassVar[str]

    def update(self, event: Event) -> Verdict:
        if event.old is None:
            # controller-runtime drops such an update too (and logs an error).
            return Verdict(
                False, self.name, f"update event has no old object to compare {self._compares}"
            )
        return self._compare(event.old, event.object)

    @abc.abstractmethod
    def _compare(self, old: Obj, new: Obj) -> Verdict: ...


class GenerationChanged(_ComparesUpdate):
    """Passes updates that change ``metadata.generation``: spec changes, for most kinds."""

    __slots__ = ()
    _compares = "generations"

    def _compare(self, old: Obj, new: Obj) -> Verdict:
        old_meta, new_meta = _meta(old), _meta(new)
        before, after = old_meta.get("generation", 0), new_meta.get("generation", 0)
        if before != after:
            return Verdict(True, self.name, f"generation changed ({before} → {after})")
        why = _why_same_generation(old_meta, new_meta)
        return Verdict(False, self.name, f"generation unchanged ({before} → {after}): {why}")


def _why_same_generation(old_meta: Mapping[str, Any], new_meta: Mapping[str, Any]) -> str:
    if not new_meta.get("generation"):
        return (
            "the object has no metadata.generation (its kind does not use one), so "
            "GenerationChanged drops every update of it; use ResourceVersionChanged instead"
        )
    if new_meta.get("deletionTimestamp"):
        if not old_meta.get("deletionTimestamp"):
            return (
                "this update set deletionTimestamp without bumping generation, so it is "
                "dropped; handle deletion with a finalizer or OR in a predicate that passes it"
            )
        return "the object is being deleted and only metadata (e.g. finalizers) or status changed"
    return "only metadata or status changed"


class ResourceVersionChanged(_ComparesUpdate):
    """Drops updates whose resourceVersion did not change: periodic informer resyncs."""

    __slots__ = ()
    _compares = "resourceVersions"

    def _compare(self, old: Obj, new: Obj) -> Verdict:
        before = _meta(old).get("resourceVersion", "")
        after = _meta(new).get("resourceVersion", "")
        if before != after:
            return Verdict(True, self.name, f"resourceVersion changed ({before} → {after})")
        return Verdict(
            False,
            self.name,
            f"resourceVersion unchanged ({before} → {after}): an informer resync, not a change",
        )


class _MetadataMapChanged(_ComparesUpdate):
    """Passes updates that change one ``metadata`` map; a missing map equals an empty one."""

    __slots__ = ()

    def _compare(self, old: Obj, new: Obj) -> Verdict:
        field = self._compares
        before: Mapping[str, str] = _meta(old).get(field) or {}
        after: Mapping[str, str] = _meta(new).get(field) or {}
        if before == after:
            return Verdict(False, self.name, f"{field} unchanged")
        changed = [
            self._changed(key, before[key], after[key])
            for key in sorted(before.keys() & after.keys())
            if before[key] != after[key]
        ]
        added = [self._entry(key, after[key]) for key in sorted(after.keys() - before.keys())]
        removed = [self._entry(key, before[key]) for key in sorted(before.keys() - after.keys())]
        parts = [
            text
            for text in (
                ", ".join(changed),
                "added " + ", ".join(added) if added else "",
                "removed " + ", ".join(removed) if removed else "",
            )
            if text
        ]
        return Verdict(True, self.name, f"{field} changed: {'; '.join(parts)}")

    @abc.abstractmethod
    def _entry(self, key: str, value: str) -> str: ...

    @abc.abstractmethod
    def _changed(self, key: str, before: str, after: str) -> str: ...


class LabelChanged(_MetadataMapChanged):
    __slots__ = ()
    _compares = "labels"

    def _entry(self, key: str, value: str) -> str:
        return f"{key}={value}"

    def _changed(self, key: str, before: str, after: str) -> str:
        return f"{key}={before} → {key}={after}"


class AnnotationChanged(_MetadataMapChanged):
    # Keys only: annotation values can be whole objects (last-applied-configuration of a
    # Secret holds its data), and a reason must never carry a value nobody asked to record.
    __slots__ = ()
    _compares = "annotations"

    def _entry(self, key: str, value: str) -> str:
        return key

    def _changed(self, key: str, before: str, after: str) -> str:
        return f"{key} (new value)"


_IN, _NOT_IN, _EXISTS, _DOES_NOT_EXIST = "In", "NotIn", "Exists", "DoesNotExist"
_EXPRESSION_OPERATORS = frozenset({_IN, _NOT_IN, _EXISTS, _DOES_NOT_EXIST})
# The string grammar's operators: what each means, and whether it is a one-value "=" form.
_STRING_OPERATORS = {
    "=": (_IN, True),
    "==": (_IN, True),
    "!=": (_NOT_IN, True),
    "in": (_IN, False),
    "notin": (_NOT_IN, False),
}


@dataclass(frozen=True, slots=True)
class _Requirement:
    """One term of a label selector, with the set semantics of k8s.io/apimachinery/labels."""

    key: str
    operator: str  # one of _EXPRESSION_OPERATORS
    values: frozenset[str]
    text: str  # as the API's labelSelector parameter accepts it

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == _IN:
            return present and labels[self.key] in self.values
        if self.operator == _NOT_IN:
            return not present or labels[self.key] not in self.values
        if self.operator == _EXISTS:
            return present
        return not present


_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_SUBDOMAIN = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
_KEY = re.compile(rf"(?:(?=[^/]{{1,253}}/){_DNS_SUBDOMAIN}/)?{_NAME}")
_VALUE = re.compile(rf"(?:{_NAME})?")

# One term of the string grammar, then its separator. Set values are split and checked later.
_TERM = re.compile(
    r"""\s*(?:
        !\s*(?P<absent>[^\s!=(),]+)
      | (?P<key>[^\s!=(),]+)\s*(?:
            (?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)
          | (?<=\s)(?P<setop>in|notin)\s*\((?P<values>[^()]*)\)
        )?
    )\s*(?:(?P<comma>,)|\Z)""",
    re.VERBOSE,
)


def _requirement(
    key: str, operator: str, values: Sequence[str] = (), *, equality: bool = False
) -> _Requirement:
    """Validate one term as the API server would, or raise ValueError saying what is wrong."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"invalid label key {key!r}")
    for value in values:
        if not isinstance(value, str) or not _VALUE.fullmatch(value):
            raise ValueError(f"{key}: invalid label value {value!r}")
    if operator in (_IN, _NOT_IN) and not values:
        raise ValueError(f"{key}: operator {operator} needs at least one value")
    if operator in (_EXISTS, _DOES_NOT_EXIST) and values:
        raise ValueError(f"{key}: operator {operator} takes no values")
    return _Requirement(key, operator, frozenset(values), _text(key, operator, values, equality))


def _text(key: str, operator: str, values: Sequence[str], equality: bool) -> str:
    if operator == _EXISTS:
        return key
    if operator == _DOES_NOT_EXIST:
        return f"!{key}"
    if equality:
        return f"{key}{'=' if operator == _IN else '!='}{values[0]}"
    return f"{key} {'in' if operator == _IN else 'notin'} ({','.join(sorted(set(values)))})"


def _parse_string(text: str) -> Iterator[_Requirement]:
    """kubectl's grammar: ``a=b,c!=d,e in (x,y),f notin (z),g,!h``; empty selects everything."""
    if not text.strip():
        return
    position, comma = 0, None
    while position < len(text):
        term = _TERM.match(text, position)
        if term is None:
            raise ValueError(f"cannot parse {text[position:]!r}")
        position, comma = term.end(), term["comma"]
        if term["absent"] is not None:
            yield _requirement(term["absent"], _DOES_NOT_EXIST)
        elif term["op"] is not None:
            operator, equality = _STRING_OPERATORS[term["op"]]
            yield _requirement(term["key"], operator, (term["value"],), equality=equality)
        elif term["setop"] is not None:
            # As in apimachinery, "()" and a trailing comma stand for the empty value.
            values = [value.strip() for value in term["values"].split(",")]
            yield _requirement(term["key"], _STRING_OPERATORS[term["setop"]][0], values)
        else:
            yield _requirement(term["key"], _EXISTS)
    if comma:
        raise ValueError("trailing comma")


_SELECTOR_FIELDS = frozenset({"matchLabels", "matchExpressions"})


def _parse_mapping(selector: Mapping[str, Any]) -> Iterator[_Requirement]:
    """A metav1.LabelSelector (matchLabels / matchExpressions) or a plain ``{label: value}``."""
    if not selector.keys() & _SELECTOR_FIELDS:
        for key, value in selector.items():
            yield _requirement(key, _IN, (value,), equality=True)
        return
    if unknown := selector.keys() - _SELECTOR_FIELDS:
        raise ValueError(
            f"unknown fields {sorted(unknown)}; expected matchLabels, matchExpressions"
        )
    for key, value in (selector.get("matchLabels") or {}).items():
        yield _requirement(key, _IN, (value,), equality=True)
    for expression in selector.get("matchExpressions") or ():
        if not isinstance(expression, Mapping) or "key" not in expression:
            raise ValueError(f"matchExpressions entry {expression!r} needs a key and an operator")
        key, operator = expression["key"], expression.get("operator")
        if operator not in _EXPRESSION_OPERATORS:
            raise ValueError(
                f"{key}: unknown operator {operator!r}; use In, NotIn, Exists or DoesNotExist"
            )
        values = expression.get("values") or ()
        if isinstance(values, str):
            raise TypeError(f"{key}: values must be a list, not {values!r}")
        yield _requirement(key, operator, values)


class LabelSelector(_DecidesInCheck):
    """Passes events whose object's labels match a selector; applies to every event type.

    For an update it looks at the new object, as controller-runtime's LabelSelectorPredicate
    does. Accepts kubectl's string grammar, a metav1.LabelSelector mapping (``matchLabels``,
    ``matchExpressions``) or a plain ``{label: value}`` mapping; a mapping with either of the
    two LabelSelector fields is read as a LabelSelector. Invalid selectors raise ValueError.
    """

    __slots__ = ("_requirements", "_selector")

    def __init__(self, selector: str | Mapping[str, Any]) -> None:
        try:
            if isinstance(selector, str):
                requirements = tuple(_parse_string(selector))
            else:
                requirements = tuple(_parse_mapping(selector))
        except (ValueError, AttributeError, TypeError) as err:
            raise ValueError(f"invalid label selector {selector!r}: {err}") from None
        self._requirements = requirements
        self._selector = ",".join(r.text for r in requirements)

    @property
    def selector(self) -> str:
        """The selector in canonical string form, as the API's labelSelector parameter takes it."""
        return self._selector

    def check(self, event: Event) -> Verdict:
        labels: Mapping[str, str] = _meta(event.object).get("labels") or {}
        for requirement in self._requirements:
            if not requirement.matches(labels):
                key = requirement.key
                has = f"{key}={labels[key]}" if key in labels else f"no label {key}"
                return Verdict(
                    False,
                    self.name,
                    f"selector {self.selector} does not match: object has {has}; "
                    f"needs {requirement.text}",
                )
        if not self._requirements:
            return Verdict(True, self.name, "the empty selector matches every object")
        return Verdict(True, self.name, f"labels match selector {self.selector}")
