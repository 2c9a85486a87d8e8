from __future__ import annotations

from typing import Any

import pytest

from ctrltrace.events import Event, EventType
from ctrltrace.predicates import (
    ALL,
    And,
    AnnotationChanged,
    GenerationChanged,
    LabelChanged,
    LabelSelector,
    Or,
    Predicate,
    ResourceVersionChanged,
    Verdict,
    all_of,
    funcs,
)
from ctrltrace.records import Obj

NOT_UPDATE = [EventType.CREATE, EventType.DELETE, EventType.GENERIC]


def widget(
    *,
    generation: int | None = 3,
    rv: str = "100",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "w", "namespace": "default", "resourceVersion": rv}
    if generation is not None:
        meta["generation"] = generation
    if labels is not None:
        meta["labels"] = labels
    if annotations is not None:
        meta["annotations"] = annotations
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
        meta["finalizers"] = ["example.com/cleanup"]
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": meta}


def update(old: Obj | None, new: Obj) -> Event:
    return Event(EventType.UPDATE, new, old)


def event(kind: EventType, obj: Obj | None = None) -> Event:
    return Event(kind, obj if obj is not None else widget())


def labelled(labels: dict[str, str]) -> Event:
    return event(EventType.CREATE, widget(labels=labels))


# -- the base class and its dispatch ---------------------------------------------------------


@pytest.mark.parametrize("kind", list(EventType))
def test_base_predicate_lets_every_event_type_pass(kind: EventType) -> None:
    verdict = Predicate().check(event(kind))
    assert verdict == Verdict(True, "Predicate", f"Predicate lets every {kind} event pass")


class DeniesOnly(Predicate):
    """Says no from one hook only, naming it, so each test sees which hook check() called."""

    def __init__(self, hook: EventType) -> None:
        self.hook = hook

    def update(self, event: Event) -> Verdict:
        return self._deny_if(EventType.UPDATE, event)

    def create(self, event: Event) -> Verdict:
        return self._deny_if(EventType.CREATE, event)

    def delete(self, event: Event) -> Verdict:
        return self._deny_if(EventType.DELETE, event)

    def generic(self, event: Event) -> Verdict:
        return self._deny_if(EventType.GENERIC, event)

    def _deny_if(self, hook: EventType, event: Event) -> Verdict:
        return Verdict(hook is not self.hook, self.name, f"{hook} hook")


@pytest.mark.parametrize("kind", list(EventType))
def test_check_dispatches_each_event_type_to_its_hook(kind: EventType) -> None:
    predicate = DeniesOnly(kind)
    for other in EventType:
        verdict = predicate.check(event(other))
        assert verdict == Verdict(other is not kind, "DeniesOnly", f"{other} hook")


# -- GenerationChanged ------------------------------------------------------------------------


def test_generation_changed_passes_an_update_that_bumps_generation() -> None:
    verdict = GenerationChanged().check(update(widget(generation=3), widget(generation=4)))
    assert verdict == Verdict(True, "GenerationChanged", "generation changed (3 → 4)")


def test_generation_changed_drops_a_metadata_or_status_update_naming_both_values() -> None:
    old, new = widget(generation=3, rv="1"), widget(generation=3, rv="2", labels={"a": "b"})
    verdict = GenerationChanged().check(update(old, new))
    assert not verdict.allowed
    assert verdict.predicate == "GenerationChanged"
    assert verdict.reason == "generation unchanged (3 → 3): only metadata or status changed"


def test_generation_changed_names_the_deletion_timestamp_trap() -> None:
    old, new = widget(generation=3), widget(generation=3, deleting=True)
    verdict = GenerationChanged().check(update(old, new))
    assert not verdict.allowed
    assert verdict.reason.startswith(
        "generation unchanged (3 → 3): this update set deletionTimestamp"
    )
    assert "finalizer" in verdict.reason


def test_generation_changed_passes_a_deletion_that_bumped_generation() -> None:
    # The API server bumps a non-zero generation when it first sets deletionTimestamp.
    old, new = widget(generation=3), widget(generation=4, deleting=True)
    verdict = GenerationChanged().check(update(old, new))
    assert verdict == Verdict(True, "GenerationChanged", "generation changed (3 → 4)")


def test_generation_changed_explains_updates_while_the_object_is_being_deleted() -> None:
    old, new = widget(generation=4, deleting=True), widget(generation=4, deleting=True, rv="7")
    verdict = GenerationChanged().check(update(old, new))
    assert not verdict.allowed
    assert "is being deleted" in verdict.reason
    assert "(4 → 4)" in verdict.reason


def test_generation_changed_explains_a_kind_without_generation() -> None:
    old, new = widget(generation=None, rv="1"), widget(generation=None, rv="2")
    verdict = GenerationChanged().check(update(old, new))
    assert not verdict.allowed
    assert verdict.reason.startswith("generation unchanged (0 → 0): the object has no")
    assert "ResourceVersionChanged" in verdict.reason


def test_generation_changed_drops_an_update_without_old_object() -> None:
    verdict = GenerationChanged().check(update(None, widget()))
    assert verdict == Verdict(
        False, "GenerationChanged", "update event has no old object to compare generations"
    )


@pytest.mark.parametrize("kind", NOT_UPDATE)
def test_generation_changed_lets_other_event_types_pass(kind: EventType) -> None:
    verdict = GenerationChanged().check(event(kind))
    assert verdict == Verdict(
        True, "GenerationChanged", f"GenerationChanged lets every {kind} event pass"
    )


# -- ResourceVersionChanged -------------------------------------------------------------------


def test_resource_version_changed_drops_a_resync() -> None:
    verdict = ResourceVersionChanged().check(update(widget(rv="42"), widget(rv="42")))
    assert verdict == Verdict(
        False,
        "ResourceVersionChanged",
        "resourceVersion unchanged (42 → 42): an informer resync, not a change",
    )


def test_resource_version_changed_passes_a_real_update() -> None:
    verdict = ResourceVersionChanged().check(update(widget(rv="42"), widget(rv="43")))
    assert verdict == Verdict(True, "ResourceVersionChanged", "resourceVersion changed (42 → 43)")


def test_resource_version_changed_drops_an_update_without_old_object() -> None:
    verdict = ResourceVersionChanged().check(update(None, widget()))
    assert not verdict.allowed
    assert "no old object" in verdict.reason


@pytest.mark.parametrize("kind", NOT_UPDATE)
def test_resource_version_changed_lets_other_event_types_pass(kind: EventType) -> None:
    verdict = ResourceVersionChanged().check(event(kind))
    assert verdict.allowed
    assert verdict.predicate == "ResourceVersionChanged"


# -- LabelChanged and AnnotationChanged ---------------------------------------------------------


def test_label_changed_names_the_changed_value() -> None:
    verdict = LabelChanged().check(update(widget(labels={"app": "a"}), widget(labels={"app": "b"})))
    assert verdict == Verdict(True, "LabelChanged", "labels changed: app=a → app=b")


def test_label_changed_names_added_and_removed_labels() -> None:
    old = widget(labels={"app": "a", "env": "prod", "keep": "x"})
    new = widget(labels={"app": "b", "keep": "x", "tier": "web"})
    verdict = LabelChanged().check(update(old, new))
    assert verdict.allowed
    assert verdict.reason == "labels changed: app=a → app=b; added tier=web; removed env=prod"


def test_label_changed_drops_an_update_with_the_same_labels() -> None:
    old, new = widget(labels={"app": "a"}, generation=1), widget(labels={"app": "a"}, generation=2)
    verdict = LabelChanged().check(update(old, new))
    assert verdict == Verdict(False, "LabelChanged", "labels unchanged")


def test_label_changed_treats_missing_labels_as_empty() -> None:
    verdict = LabelChanged().check(update(widget(), widget(labels={})))
    assert not verdict.allowed


def test_label_changed_drops_an_update_without_old_object() -> None:
    verdict = LabelChanged().check(update(None, widget(labels={"a": "b"})))
    assert verdict == Verdict(
        False, "LabelChanged", "update event has no old object to compare labels"
    )


def test_annotation_changed_names_keys_but_never_values() -> None:
    secret = '{"data":{"password":"hunter2"}}'
    old = widget(annotations={"last-applied": "{}", "gone": "x"})
    new = widget(annotations={"last-applied": secret, "note": "y"})
    verdict = AnnotationChanged().check(update(old, new))
    assert verdict.allowed
    assert verdict.predicate == "AnnotationChanged"
    assert verdict.reason == (
        "annotations changed: last-applied (new value); added note; removed gone"
    )
    assert "hunter2" not in verdict.reason


def test_annotation_changed_drops_an_update_with_the_same_annotations() -> None:
    old, new = widget(annotations={"a": "1"}, rv="1"), widget(annotations={"a": "1"}, rv="2")
    verdict = AnnotationChanged().check(update(old, new))
    assert verdict == Verdict(False, "AnnotationChanged", "annotations unchanged")


@pytest.mark.parametrize("predicate", [LabelChanged(), AnnotationChanged()])
@pytest.mark.parametrize("kind", NOT_UPDATE)
def test_map_predicates_let_other_event_types_pass(predicate: Predicate, kind: EventType) -> None:
    verdict = predicate.check(event(kind))
    assert verdict.allowed
    assert verdict.predicate == predicate.name


# -- LabelSelector ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", NOT_UPDATE)
def test_label_selector_applies_to_every_event_type(kind: EventType) -> None:
    selector = LabelSelector("app=web")
    matching = selector.check(event(kind, widget(labels={"app": "web"})))
    other = selector.check(event(kind, widget(labels={"app": "db"})))
    assert matching == Verdict(True, "LabelSelector", "labels match selector app=web")
    assert other == Verdict(
        False, "LabelSelector", "selector app=web does not match: object has app=db; needs app=web"
    )


def test_label_selector_looks_at_the_new_object_of_an_update() -> None:
    selector = LabelSelector({"app": "web"})
    leaving = update(widget(labels={"app": "web"}), widget(labels={"app": "db"}))
    joining = update(widget(labels={"app": "db"}), widget(labels={"app": "web"}))
    assert not selector.check(leaving).allowed
    assert selector.check(joining).allowed


def test_label_selector_names_a_missing_label() -> None:
    verdict = LabelSelector("app=web,tier in (fe,be)").check(labelled({"app": "web"}))
    assert not verdict.allowed
    assert verdict.reason == (
        "selector app=web,tier in (be,fe) does not match: object has no label tier; "
        "needs tier in (be,fe)"
    )


def test_label_selector_names_a_label_that_must_be_absent() -> None:
    verdict = LabelSelector("!canary").check(labelled({"canary": "yes"}))
    assert verdict.reason == "selector !canary does not match: object has canary=yes; needs !canary"


def test_empty_label_selector_matches_everything() -> None:
    verdict = LabelSelector("").check(labelled({}))
    assert verdict == Verdict(True, "LabelSelector", "the empty selector matches every object")


FULL = "a=b,c!=d,e in (x,y),f notin (z),g,!h"


@pytest.mark.parametrize(
    ("labels", "allowed", "ending"),
    [
        ({"a": "b", "c": "x", "e": "x", "f": "q", "g": ""}, True, f"match selector {FULL}"),
        # != and notin pass when the label is absent
        ({"a": "b", "e": "y", "g": "1"}, True, f"match selector {FULL}"),
        ({"a": "z", "e": "x", "g": "1"}, False, "object has a=z; needs a=b"),
        ({"a": "b", "c": "d", "e": "x", "g": "1"}, False, "object has c=d; needs c!=d"),
        ({"a": "b", "e": "w", "g": "1"}, False, "object has e=w; needs e in (x,y)"),
        ({"a": "b", "e": "x", "f": "z", "g": "1"}, False, "object has f=z; needs f notin (z)"),
        ({"a": "b", "e": "x"}, False, "object has no label g; needs g"),
        ({"a": "b", "e": "x", "g": "1", "h": ""}, False, "object has h=; needs !h"),
    ],
)
def test_label_selector_string_grammar(labels: dict[str, str], allowed: bool, ending: str) -> None:
    verdict = LabelSelector(FULL).check(labelled(labels))
    assert verdict.allowed is allowed
    assert verdict.reason.endswith(ending)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a=b", "a=b"),
        ("a==b", "a=b"),
        (" a = b ,  c != d ", "a=b,c!=d"),
        ("e in (y, x)", "e in (x,y)"),
        ("e in(x)", "e in (x)"),
        ("f notin (z,z)", "f notin (z)"),
        ("example.com/role=x,! gone", "example.com/role=x,!gone"),
        ("a=", "a="),
        ("a in ()", "a in ()"),
        ("a in (x,)", "a in (,x)"),
        (FULL, FULL),
    ],
)
def test_label_selector_string_is_canonicalised(text: str, canonical: str) -> None:
    assert LabelSelector(text).selector == canonical


@pytest.mark.parametrize(
    "text",
    [
        "a=b,",
        ",a=b",
        "a=b,,c=d",
        "a b",
        "a=b=c",
        "=b",
        "a in (x",
        "a in x",
        "ain (x)",
        "a notin",
        "!a=b",
        "a>1",
        "-bad=x",
        "a=-bad",
        "x" * 64 + "=y",
        "UPPER.example.com/a=b",
    ],
)
def test_label_selector_rejects_invalid_strings(text: str) -> None:
    with pytest.raises(ValueError, match="invalid label selector"):
        LabelSelector(text)


def test_label_selector_accepts_a_metav1_label_selector() -> None:
    selector = LabelSelector(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "team", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist", "values": []},
            ],
        }
    )
    assert selector.selector == "app=web,tier in (be,fe),env notin (dev),team,!legacy"
    assert selector.check(labelled({"app": "web", "tier": "fe", "team": "x"})).allowed
    verdict = selector.check(labelled({"app": "web", "tier": "fe", "team": "x", "env": "dev"}))
    assert not verdict.allowed
    assert verdict.reason.endswith("object has env=dev; needs env notin (dev)")


def test_label_selector_accepts_a_plain_mapping() -> None:
    selector = LabelSelector({"app": "web", "tier": "fe"})
    assert selector.selector == "app=web,tier=fe"
    assert selector.check(labelled({"app": "web", "tier": "fe", "x": "y"})).allowed
    assert not selector.check(labelled({"app": "web"})).allowed


@pytest.mark.parametrize(
    "selector",
    [
        {"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]},
        {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
        {"matchExpressions": [{"key": "a", "operator": "In"}]},
        {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
        {"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]},
        {"matchExpressions": [{"operator": "Exists"}]},
        {"matchExpressions": ["a"]},
        {"matchLabels": {"a": "b"}, "app": "x"},
        {"matchLabels": ["a"]},
        {"matchLabels": {"a": 1}},
        {"app": "not valid"},
        {"bad key": "x"},
    ],
)
def test_label_selector_rejects_invalid_mappings(selector: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="invalid label selector"):
        LabelSelector(selector)


# -- funcs ------------------------------------------------------------------------------------


def no(event: Event) -> bool:
    return False


REFUSING = {
    EventType.CREATE: funcs(create=no),
    EventType.UPDATE: funcs(update=no),
    EventType.DELETE: funcs(delete=no),
    EventType.GENERIC: funcs(generic=no),
}


def test_funcs_without_a_function_lets_that_type_pass() -> None:
    predicate = funcs(update=no)
    verdict = predicate.check(event(EventType.CREATE))
    assert verdict == Verdict(True, "Funcs", "no create function: create events pass")


@pytest.mark.parametrize("kind", list(EventType))
def test_funcs_names_the_function_that_said_no(kind: EventType) -> None:
    verdict = REFUSING[kind].check(event(kind))
    assert verdict == Verdict(False, "Funcs", f"{kind} function no returned False")


def test_funcs_reports_a_yes_and_takes_a_name() -> None:
    predicate = funcs(generic=lambda e: e.object["kind"] == "Widget", name="OnlyWidgets")
    verdict = predicate.check(event(EventType.GENERIC))
    assert verdict.allowed
    assert verdict.predicate == "OnlyWidgets"
    assert verdict.reason.startswith("generic function ")
    assert verdict.reason.endswith("<lambda> returned True")


# -- combinators ------------------------------------------------------------------------------


class Counting(Predicate):
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.calls = 0

    def create(self, event: Event) -> Verdict:
        self.calls += 1
        return Verdict(self.answer, self.name, f"said {self.answer}")


def test_and_stops_at_the_first_no_and_names_it() -> None:
    first, second = Counting(False), Counting(True)
    verdict = (GenerationChanged() & first & second).check(event(EventType.CREATE))
    assert verdict == Verdict(False, "Counting", "said False")
    assert (first.calls, second.calls) == (1, 0)


def test_and_of_passing_predicates_lists_every_reason() -> None:
    predicate = GenerationChanged() & LabelChanged()
    verdict = predicate.check(
        update(widget(generation=1, labels={"a": "x"}), widget(generation=2, labels={"a": "y"}))
    )
    assert verdict == Verdict(
        True,
        "GenerationChanged & LabelChanged",
        "all passed: GenerationChanged: generation changed (1 → 2); "
        "LabelChanged: labels changed: a=x → a=y",
    )


def test_or_takes_the_first_yes() -> None:
    first, second, third = Counting(False), Counting(True), Counting(True)
    verdict = (first | second | third).check(event(EventType.CREATE))
    assert verdict == Verdict(True, "Counting", "said True")
    assert (first.calls, second.calls, third.calls) == (1, 1, 0)


def test_or_that_says_no_lists_every_reason() -> None:
    predicate = GenerationChanged() | LabelChanged()
    verdict = predicate.check(update(widget(labels={"a": "x"}), widget(labels={"a": "x"})))
    assert verdict == Verdict(
        False,
        "GenerationChanged | LabelChanged",
        "none passed: GenerationChanged: generation unchanged (3 → 3): only metadata or status "
        "changed; LabelChanged: labels unchanged",
    )


def test_not_inverts_and_says_so() -> None:
    predicate = ~LabelChanged()
    same = predicate.check(update(widget(labels={"a": "x"}), widget(labels={"a": "x"})))
    changed = predicate.check(update(widget(labels={"a": "x"}), widget(labels={"a": "y"})))
    assert same == Verdict(True, "not(LabelChanged)", "not(LabelChanged): labels unchanged")
    assert changed == Verdict(
        False, "not(LabelChanged)", "not(LabelChanged): labels changed: a=x → a=y"
    )


def test_not_names_the_operand_that_decided() -> None:
    predicate = ~(GenerationChanged() | LabelChanged())
    verdict = predicate.check(update(widget(labels={"a": "x"}), widget(labels={"a": "y"})))
    assert verdict == Verdict(
        False, "not(LabelChanged)", "not(LabelChanged): labels changed: a=x → a=y"
    )
    assert predicate.name == "not(GenerationChanged | LabelChanged)"


@pytest.mark.parametrize("kind", list(EventType))
def test_combinations_decide_per_event_type_of_their_operands(kind: EventType) -> None:
    predicate = REFUSING[kind] & Predicate()
    for other in EventType:
        assert predicate.check(event(other)).allowed is (other is not kind)
    # Calling a hook directly gives the same answer as check().
    hook = {
        EventType.CREATE: predicate.create,
        EventType.UPDATE: predicate.update,
        EventType.DELETE: predicate.delete,
        EventType.GENERIC: predicate.generic,
    }[kind]
    assert hook(event(kind)) == predicate.check(event(kind))


def test_operators_flatten_and_bracket_names() -> None:
    a, b, c = GenerationChanged(), LabelChanged(), AnnotationChanged()
    assert (a & b & c).name == "GenerationChanged & LabelChanged & AnnotationChanged"
    assert len((a & b & c).predicates) == 3
    assert (a & (b | c)).name == "GenerationChanged & (LabelChanged | AnnotationChanged)"
    assert ((a | b) | c).name == "GenerationChanged | LabelChanged | AnnotationChanged"
    assert (~a & b).name == "not(GenerationChanged) & LabelChanged"


def test_combinations_need_an_operand() -> None:
    with pytest.raises(ValueError, match="needs at least one predicate"):
        And()
    with pytest.raises(ValueError, match="needs at least one predicate"):
        Or()


# -- all_of -----------------------------------------------------------------------------------


def test_all_of_nothing_passes_everything() -> None:
    verdict = all_of([], event(EventType.GENERIC))
    assert verdict == Verdict(True, ALL, "no predicates: every event passes")


def test_all_of_stops_at_the_first_no() -> None:
    later = Counting(True)
    resync = update(widget(rv="9"), widget(rv="9"))
    verdict = all_of([Predicate(), ResourceVersionChanged(), later], resync)
    assert not verdict.allowed
    assert verdict.predicate == "ResourceVersionChanged"
    assert "(9 → 9)" in verdict.reason
    assert later.calls == 0


def test_all_of_says_when_everything_passed() -> None:
    verdict = all_of(
        [LabelSelector("app=web"), GenerationChanged()],
        event(EventType.CREATE, widget(labels={"app": "web"})),
    )
    assert verdict == Verdict(
        True,
        "all",
        "all passed: LabelSelector: labels match selector app=web; "
        "GenerationChanged: GenerationChanged lets every create event pass",
    )
