"""The object helpers: controller references, finalizers, status conditions."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

import ctrltrace as ct

T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=1)


def _foo(name: str = "foo", uid: str = "uid-foo", namespace: str = "a") -> dict[str, Any]:
    return {
        "apiVersion": "samplecontroller.k8s.io/v1alpha1",
        "kind": "Foo",
        "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": 4},
    }


def _deployment(namespace: str = "a") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "foo", "namespace": namespace},
    }


def test_set_controller_reference_adds_a_controlling_reference_once() -> None:
    child = _deployment()
    assert ct.set_controller_reference(_foo(), child) is True
    assert child["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "samplecontroller.k8s.io/v1alpha1",
            "kind": "Foo",
            "name": "foo",
            "uid": "uid-foo",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert ct.set_controller_reference(_foo(), child) is False
    assert ct.controller_of(child) == child["metadata"]["ownerReferences"][0]
    assert ct.is_controlled_by(child, _foo())
    assert not ct.is_controlled_by(child, _foo(uid="another"))


def test_a_second_controller_is_refused_and_the_same_owner_in_another_version_is_not() -> None:
    child = _deployment()
    ct.set_controller_reference(_foo(), child)
    with pytest.raises(ct.AlreadyOwnedError, match="already controlled by Foo foo"):
        ct.set_controller_reference(_foo(name="bar", uid="uid-bar"), child)
    newer = _foo() | {"apiVersion": "samplecontroller.k8s.io/v1"}
    assert ct.set_controller_reference(newer, child) is True
    [reference] = child["metadata"]["ownerReferences"]
    assert reference["apiVersion"] == "samplecontroller.k8s.io/v1"


def test_a_plain_owner_reference_sits_beside_the_controller_and_never_removes_it() -> None:
    child = _deployment()
    ct.set_controller_reference(_foo(), child)
    assert ct.set_owner_reference(_foo(name="bar", uid="uid-bar"), child) is True
    assert ct.set_owner_reference(_foo(), child) is False
    references = child["metadata"]["ownerReferences"]
    assert [ref["name"] for ref in references] == ["foo", "bar"]
    assert "controller" not in references[1]
    assert ct.controller_of(child) is references[0]


def test_an_owner_that_cannot_own_is_a_clear_error() -> None:
    unsaved = _foo()
    del unsaved["metadata"]["uid"]
    with pytest.raises(ValueError, match=r"metadata\.uid"):
        ct.set_controller_reference(unsaved, _deployment())
    with pytest.raises(ValueError, match="same namespace"):
        ct.set_controller_reference(_foo(namespace="b"), _deployment("a"))


def test_finalizers_are_added_once_and_removed() -> None:
    obj = _foo()
    assert not ct.contains_finalizer(obj, "example.com/cleanup")
    assert ct.add_finalizer(obj, "example.com/cleanup") is True
    assert ct.add_finalizer(obj, "example.com/cleanup") is False
    assert obj["metadata"]["finalizers"] == ["example.com/cleanup"]
    assert ct.contains_finalizer(obj, "example.com/cleanup")
    assert ct.remove_finalizer(obj, "example.com/cleanup") is True
    assert ct.remove_finalizer(obj, "example.com/cleanup") is False
    assert obj["metadata"]["finalizers"] == []


def test_a_new_condition_gets_the_transition_time_and_the_objects_generation() -> None:
    obj = _foo()
    assert ct.set_condition(obj, "Ready", True, "Deployed", "2 replicas", now=T0) is True
    assert obj["status"]["conditions"] == [
        {
            "type": "Ready",
            "status": "True",
            "observedGeneration": 4,
            "reason": "Deployed",
            "message": "2 replicas",
            "lastTransitionTime": "2026-01-02T03:04:05Z",
        }
    ]
    assert ct.is_condition_true(obj, "Ready")


def test_the_transition_time_moves_only_when_the_status_changes() -> None:
    obj = _foo()
    ct.set_condition(obj, "Ready", True, "Deployed", now=T0)
    assert ct.set_condition(obj, "Ready", True, "Deployed", now=T1) is False
    assert ct.set_condition(obj, "Ready", "True", "Scaled", "3 replicas", now=T1) is True
    condition = ct.find_condition(obj, "Ready")
    assert condition is not None
    assert (condition["reason"], condition["lastTransitionTime"]) == (
        "Scaled",
        "2026-01-02T03:04:05Z",
    )
    assert ct.set_condition(obj, "Ready", False, "Failed", observed_generation=5, now=T1)
    assert condition["lastTransitionTime"] == "2026-01-02T03:05:05Z"
    assert (condition["status"], condition["observedGeneration"]) == ("False", 5)


def test_conditions_are_found_and_removed_by_type() -> None:
    obj = _foo()
    ct.set_condition(obj, "Ready", True, "Deployed", now=T0)
    ct.set_condition(obj, "Progressing", "Unknown", "Waiting", now=T0)
    assert ct.find_condition(obj, "Missing") is None
    assert ct.remove_condition(obj, "Ready") is True
    assert ct.remove_condition(obj, "Ready") is False
    assert [c["type"] for c in obj["status"]["conditions"]] == ["Progressing"]
    assert not ct.is_condition_true(obj, "Progressing")


@pytest.mark.parametrize(
    ("status", "reason", "error"),
    [
        ("Yes", "Deployed", "status must be one of"),
        (True, "not ok", "CamelCase"),
        (True, "", "CamelCase"),
    ],
)
def test_a_condition_the_api_server_would_reject_is_refused(
    status: bool | str, reason: str, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        ct.set_condition(_foo(), "Ready", status, reason)
