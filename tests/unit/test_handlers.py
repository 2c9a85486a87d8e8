from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ctrltrace.events import Event, EventType
from ctrltrace.handlers import EventHandler, MapResult, for_object, for_owner, map_to
from ctrltrace.records import Obj
from ctrltrace.request import Request
from ctrltrace.vocabulary import Unmapped

NOT_UPDATE = [EventType.CREATE, EventType.DELETE, EventType.GENERIC]


def ref(
    name: str,
    kind: str = "Widget",
    api_version: str = "example.com/v1",
    *,
    controller: bool | None = True,
) -> dict[str, Any]:
    reference: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": f"uid-{name}",
    }
    if controller is not None:
        reference["controller"] = controller
    return reference


def pod(*owners: dict[str, Any], name: str = "web-123-abc", namespace: str = "apps") -> Obj:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if owners:
        meta["ownerReferences"] = list(owners)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta}


def event(kind: EventType, obj: Obj, old: Obj | None = None) -> Event:
    return Event(kind, obj, old)


WIDGET_OWNER = for_owner("example.com/v1", "Widget")


# -- for_object -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", NOT_UPDATE)
def test_for_object_enqueues_the_object(kind: EventType) -> None:
    result = for_object().map(event(kind, pod(name="p", namespace="ns")))
    assert result == MapResult((Request("ns", "p"),), "the object itself")


def test_for_object_enqueues_the_new_object_of_an_update() -> None:
    result = for_object().map(event(EventType.UPDATE, pod(name="new"), pod(name="old")))
    assert result.requests == (Request("apps", "new"),)


def test_for_object_enqueues_a_cluster_scoped_object_without_namespace() -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}
    assert for_object().map(event(EventType.CREATE, node)).requests == (Request("", "n1"),)


# -- for_owner: which reference maps ------------------------------------------------------------


@pytest.mark.parametrize("kind", [*NOT_UPDATE, EventType.UPDATE])
def test_for_owner_enqueues_the_controller_owner(kind: EventType) -> None:
    obj = pod(ref("w1"))
    result = WIDGET_OWNER.map(event(kind, obj, obj if kind is EventType.UPDATE else None))
    assert result == MapResult((Request("apps", "w1"),), "controller owner example.com/Widget w1")


def test_for_owner_ignores_the_version_of_the_owner_reference() -> None:
    result = WIDGET_OWNER.map(
        event(EventType.CREATE, pod(ref("w1", api_version="example.com/v1beta1")))
    )
    assert result.requests == (Request("apps", "w1"),)


def test_for_owner_takes_only_the_controller_among_several_owners() -> None:
    obj = pod(ref("w0", controller=False), ref("w1"), ref("w2", controller=None))
    assert WIDGET_OWNER.map(event(EventType.CREATE, obj)).requests == (Request("apps", "w1"),)


def test_for_owner_without_owner_references_says_so() -> None:
    result = WIDGET_OWNER.map(event(EventType.CREATE, pod()))
    assert result.requests == ()
    assert result.reason == (
        "no ownerReferences, so no controller owner example.com/Widget to enqueue"
    )
    assert result.unmapped == Unmapped.NO_OWNER


@pytest.mark.parametrize("controller", [False, None])
def test_for_owner_names_a_reference_without_controller_true(controller: bool | None) -> None:
    result = WIDGET_OWNER.map(event(EventType.CREATE, pod(ref("w1", controller=controller))))
    assert result.requests == ()
    assert result.reason == (
        "the ownerReference to example.com/Widget w1 lacks controller: true; "
        "set controller: true on it or use match_every_owner=True"
    )
    assert result.unmapped == Unmapped.NOT_CONTROLLER


def test_for_owner_names_the_controller_of_another_kind() -> None:
    rs = ref("web-123", kind="ReplicaSet", api_version="apps/v1")
    result = WIDGET_OWNER.map(event(EventType.DELETE, pod(rs)))
    assert result == MapResult(
        (), "controlled by apps/ReplicaSet web-123, not example.com/Widget", Unmapped.OTHER_OWNER
    )


def test_for_owner_names_a_controller_of_the_same_kind_in_another_group() -> None:
    result = WIDGET_OWNER.map(event(EventType.CREATE, pod(ref("w1", api_version="other.io/v1"))))
    assert result == MapResult(
        (), "controlled by other.io/Widget w1, not example.com/Widget", Unmapped.OTHER_OWNER
    )


def test_for_owner_names_both_the_other_controller_and_the_plain_owner() -> None:
    rs = ref("web-123", kind="ReplicaSet", api_version="apps/v1")
    result = WIDGET_OWNER.map(event(EventType.CREATE, pod(ref("w1", controller=False), rs)))
    assert result.requests == ()
    assert result.reason.startswith(
        "controlled by apps/ReplicaSet web-123, not example.com/Widget; "
        "the ownerReference to example.com/Widget w1 is not the controller reference"
    )
    assert result.reason.endswith("use match_every_owner=True")


def test_for_owner_names_owners_of_other_kinds_when_none_is_a_controller() -> None:
    cm = ref("settings", kind="ConfigMap", api_version="v1", controller=None)
    result = WIDGET_OWNER.map(event(EventType.CREATE, pod(cm)))
    assert result == MapResult(
        (),
        "owned by ConfigMap settings, not example.com/Widget, "
        "and no ownerReference has controller: true",
        Unmapped.OTHER_OWNER,
    )


def test_for_owner_matches_the_core_group() -> None:
    handler = for_owner("v1", "ConfigMap")
    core = ref("settings", kind="ConfigMap", api_version="v1")
    fake = ref("settings", kind="ConfigMap", api_version="fake.io/v1")
    assert handler.map(event(EventType.CREATE, pod(core))).requests == (
        Request("apps", "settings"),
    )
    result = handler.map(event(EventType.CREATE, pod(fake)))
    assert result == MapResult(
        (), "controlled by fake.io/ConfigMap settings, not ConfigMap", Unmapped.OTHER_OWNER
    )


# -- for_owner: every owner, cluster-scoped owners ---------------------------------------------


def test_for_owner_can_match_every_owner() -> None:
    handler = for_owner("example.com/v1", "Widget", match_every_owner=True)
    rs = ref("web-123", kind="ReplicaSet", api_version="apps/v1")
    obj = pod(ref("a", controller=False), rs, ref("b", controller=None), ref("a", controller=False))
    result = handler.map(event(EventType.CREATE, obj))
    assert result == MapResult(
        (Request("apps", "a"), Request("apps", "b")), "owner example.com/Widget a, b"
    )


def test_for_owner_matching_every_owner_names_the_owners_it_skipped() -> None:
    handler = for_owner("example.com/v1", "Widget", match_every_owner=True)
    rs = ref("web-123", kind="ReplicaSet", api_version="apps/v1")
    cm = ref("settings", kind="ConfigMap", api_version="v1", controller=False)
    result = handler.map(event(EventType.CREATE, pod(rs, cm)))
    assert result == MapResult(
        (),
        "owned by apps/ReplicaSet web-123, ConfigMap settings, not example.com/Widget",
        Unmapped.OTHER_OWNER,
    )


def test_for_owner_of_a_cluster_scoped_owner_has_no_namespace() -> None:
    handler = for_owner("example.com/v1", "Cluster", owner_namespaced=False)
    result = handler.map(event(EventType.CREATE, pod(ref("c1", kind="Cluster"))))
    assert result.requests == (Request("", "c1"),)


# -- for_owner: updates map the old and the new object -----------------------------------------


def test_for_owner_update_with_a_changed_owner_enqueues_both() -> None:
    old, new = pod(ref("w1")), pod(ref("w2"))
    result = WIDGET_OWNER.map(event(EventType.UPDATE, new, old))
    assert set(result.requests) == {Request("apps", "w1"), Request("apps", "w2")}
    assert len(result.requests) == 2
    assert result.reason.startswith("controller owner example.com/Widget ")
    assert "w1 (before the update)" in result.reason
    assert "w2 (before" not in result.reason


def test_for_owner_update_that_removes_the_owner_still_enqueues_it() -> None:
    result = WIDGET_OWNER.map(event(EventType.UPDATE, pod(), pod(ref("w1"))))
    assert result == MapResult(
        (Request("apps", "w1"),), "controller owner example.com/Widget w1 (before the update)"
    )


def test_for_owner_update_with_the_same_owner_enqueues_it_once() -> None:
    result = WIDGET_OWNER.map(event(EventType.UPDATE, pod(ref("w1")), pod(ref("w1"))))
    assert result.requests == (Request("apps", "w1"),)


def test_for_owner_update_mapping_nothing_explains_both_objects_when_they_differ() -> None:
    rs = ref("web-123", kind="ReplicaSet", api_version="apps/v1")
    result = WIDGET_OWNER.map(event(EventType.UPDATE, pod(rs), pod()))
    assert result == MapResult(
        (),
        "controlled by apps/ReplicaSet web-123, not example.com/Widget; before the update: "
        "no ownerReferences, so no controller owner example.com/Widget to enqueue",
        Unmapped.OTHER_OWNER,  # what the object is now
    )


def test_for_owner_update_mapping_nothing_explains_once_when_both_agree() -> None:
    result = WIDGET_OWNER.map(event(EventType.UPDATE, pod(), pod()))
    assert result.reason == (
        "no ownerReferences, so no controller owner example.com/Widget to enqueue"
    )


# -- map_to -----------------------------------------------------------------------------------


def widgets_named_in_labels(obj: Obj) -> Iterator[Request]:
    namespace = obj["metadata"].get("namespace", "")
    for value in obj["metadata"].get("labels", {}).values():
        yield Request(namespace, value)


def labelled(**labels: str) -> Obj:
    return {"metadata": {"name": "s", "namespace": "ns", "labels": labels}}


@pytest.mark.parametrize("kind", NOT_UPDATE)
def test_map_to_enqueues_what_the_function_returns_deduplicated_in_order(kind: EventType) -> None:
    result = map_to(widgets_named_in_labels).map(event(kind, labelled(a="w2", b="w1", c="w2")))
    assert result == MapResult(
        (Request("ns", "w2"), Request("ns", "w1")), "map function returned 2 requests"
    )


def test_map_to_maps_the_old_and_the_new_object_of_an_update() -> None:
    seen: list[Obj] = []

    def record(obj: Obj) -> list[Request]:
        seen.append(obj)
        return list(widgets_named_in_labels(obj))

    old, new = labelled(a="w1", b="w2"), labelled(a="w2", b="w3")
    result = map_to(record).map(event(EventType.UPDATE, new, old))
    assert seen == [old, new]
    assert result.requests == (Request("ns", "w1"), Request("ns", "w2"), Request("ns", "w3"))
    assert result.reason == "map function returned 3 requests"


def test_map_to_says_when_the_function_returned_nothing() -> None:
    result = map_to(lambda obj: []).map(event(EventType.CREATE, labelled()))
    assert result == MapResult((), "map function returned no requests", Unmapped.MAP_EMPTY)


def test_map_to_counts_a_single_request() -> None:
    result = map_to(widgets_named_in_labels).map(event(EventType.CREATE, labelled(a="w")))
    assert result.reason == "map function returned 1 request"


def test_map_to_reports_an_exception_instead_of_raising() -> None:
    def broken(obj: Obj) -> list[Request]:
        raise ValueError("no widget label")

    result = map_to(broken).map(event(EventType.CREATE, labelled()))
    assert result == MapResult((), "map function raised ValueError: no widget label")


def test_map_to_reports_an_exception_raised_while_iterating() -> None:
    def lazy(obj: Obj) -> Iterator[Request]:
        yield Request("ns", "w1")
        raise KeyError("spec")

    result = map_to(lazy).map(event(EventType.CREATE, labelled()))
    assert result == MapResult((), "map function raised KeyError: 'spec'")


def test_map_to_reports_a_function_returning_none() -> None:
    def forgot_to_return(obj: Obj) -> Any:
        return None

    result = map_to(forgot_to_return).map(event(EventType.CREATE, labelled()))
    assert result.requests == ()
    assert result.reason.startswith("map function raised TypeError: ")


# -- describe ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "description"),
    [
        (for_object(), "for the object itself"),
        (WIDGET_OWNER, "for owner example.com/Widget (controller only)"),
        (
            for_owner("apps/v1", "ReplicaSet", match_every_owner=True),
            "for owner apps/ReplicaSet (every matching owner)",
        ),
        (
            for_owner("v1", "Namespace", owner_namespaced=False),
            "for owner Namespace (controller only, cluster-scoped)",
        ),
        (map_to(widgets_named_in_labels), "map function widgets_named_in_labels"),
    ],
)
def test_describe(handler: EventHandler, description: str) -> None:
    assert handler.describe() == description
