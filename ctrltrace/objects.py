"""Helpers every controller writes, over objects as plain dicts: who controls an object, its
finalizers, and its status conditions.

Owns controller-runtime's ``controllerutil`` (SetControllerReference with its AlreadyOwnedError,
the finalizer helpers) and apimachinery's ``meta`` condition helpers (SetStatusCondition and
friends), with their semantics. Each function changes the object it is given in place and
returns whether it changed anything, so a reconciler writes only when something did. No I/O,
no clock of its own (the condition helpers take ``now``), no knowledge of kinds or caches.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

Object = MutableMapping[str, Any]
"""A Kubernetes object as the API serves it (decoded JSON) that a helper may change."""

CONDITION_STATUSES = ("True", "False", "Unknown")
# metav1.Condition's validation of reason (kube-apiserver answers 422 to anything else).
_REASON = re.compile(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?")


class AlreadyOwnedError(Exception):
    """The object already has a controller, and it is another object."""

    def __init__(self, obj: Mapping[str, Any], owner: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        super().__init__(
            f"{obj.get('kind', 'object')} {_key(meta)} is already controlled by "
            f"{owner.get('kind')} {owner.get('name')}"
        )
        self.object = obj
        self.owner = owner


# -- owner references ------------------------------------------------------------------------


def controller_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference with ``controller: true``, if any (metav1.GetControllerOf)."""
    for reference in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if reference.get("controller") is True:
            return reference  # type: ignore[no-any-return]
    return None


def is_controlled_by(obj: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    """Whether ``owner`` (compared by uid) is the controller of ``obj`` (metav1.IsControlledBy)."""
    reference = controller_of(obj)
    uid = (owner.get("metadata") or {}).get("uid")
    return reference is not None and bool(uid) and reference.get("uid") == uid


def set_controller_reference(owner: Mapping[str, Any], obj: Object) -> bool:
    """Make ``owner`` the controller of ``obj``, as controller-runtime's SetControllerReference.

    Adds (or updates) an ownerReference with ``controller: true`` and
    ``blockOwnerDeletion: true``, so that garbage collection deletes ``obj`` with its owner and
    ``owns()`` maps ``obj``'s events to ``owner``. Raises ``AlreadyOwnedError`` when another
    object controls ``obj`` already, and ``ValueError`` when the owner cannot own it (no uid
    yet, or a namespaced owner in another namespace).
    """
    return _upsert(owner, obj, controller=True)


def set_owner_reference(owner: Mapping[str, Any], obj: Object) -> bool:
    """Add (or update) a plain ownerReference to ``owner``: garbage collection only, no
    ``controller`` (controller-runtime's SetOwnerReference); ``owns()`` does not map it."""
    return _upsert(owner, obj, controller=False)


def _upsert(owner: Mapping[str, Any], obj: Object, *, controller: bool) -> bool:
    reference = _reference_to(owner, obj, controller=controller)
    meta = obj.setdefault("metadata", {})
    if controller:
        existing = controller_of(obj)
        if existing is not None and not _same_object(existing, reference):
            raise AlreadyOwnedError(obj, existing)
    references: list[Any] = meta.setdefault("ownerReferences", [])
    for index, current in enumerate(references):
        if _same_object(current, reference):
            if controller or "controller" not in current:
                merged = reference
            else:  # a plain reference never takes controller away
                merged = {**reference, "controller": current["controller"]}
                merged["blockOwnerDeletion"] = current.get("blockOwnerDeletion", False)
            if current == merged:
                return False
            references[index] = merged
            return True
    references.append(reference)
    return True


def _reference_to(owner: Mapping[str, Any], obj: Object, *, controller: bool) -> dict[str, Any]:
    owner_meta = owner.get("metadata") or {}
    api_version, kind = owner.get("apiVersion"), owner.get("kind")
    if not (api_version and kind and owner_meta.get("name") and owner_meta.get("uid")):
        raise ValueError(
            "the owner needs apiVersion, kind, metadata.name and metadata.uid (an object read "
            "from the API server has them; one not yet created has no uid)"
        )
    owner_namespace = owner_meta.get("namespace", "")
    namespace = (obj.get("metadata") or {}).get("namespace", "")
    if owner_namespace and owner_namespace != namespace:
        where = f"namespace {namespace}" if namespace else "no namespace (cluster-scoped)"
        raise ValueError(
            f"{kind} {owner_namespace}/{owner_meta['name']} cannot own an object in {where}: "
            "a namespaced owner must be in the same namespace"
        )
    reference: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "name": owner_meta["name"],
        "uid": owner_meta["uid"],
    }
    if controller:
        reference |= {"controller": True, "blockOwnerDeletion": True}
    return reference


def _same_object(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Same group, kind and name; the version does not matter (controller-runtime's rule)."""
    group = str(a.get("apiVersion", "")).rpartition("/")[0]
    other_group = str(b.get("apiVersion", "")).rpartition("/")[0]
    return (group, a.get("kind"), a.get("name")) == (other_group, b.get("kind"), b.get("name"))


def _key(meta: Mapping[str, Any]) -> str:
    namespace, name = meta.get("namespace"), meta.get("name", "")
    return f"{namespace}/{name}" if namespace else str(name)


# -- finalizers ------------------------------------------------------------------------------


def contains_finalizer(obj: Mapping[str, Any], finalizer: str) -> bool:
    return finalizer in ((obj.get("metadata") or {}).get("finalizers") or ())


def add_finalizer(obj: Object, finalizer: str) -> bool:
    """Add ``finalizer`` unless present; whether it was added."""
    if contains_finalizer(obj, finalizer):
        return False
    obj.setdefault("metadata", {}).setdefault("finalizers", []).append(finalizer)
    return True


def remove_finalizer(obj: Object, finalizer: str) -> bool:
    """Remove every occurrence of ``finalizer``; whether there was one."""
    meta = obj.get("metadata") or {}
    finalizers = meta.get("finalizers") or []
    kept = [name for name in finalizers if name != finalizer]
    if len(kept) == len(finalizers):
        return False
    meta["finalizers"] = kept
    return True


# -- status conditions -----------------------------------------------------------------------


def find_condition(obj: Mapping[str, Any], condition_type: str) -> Mapping[str, Any] | None:
    """The condition of ``condition_type`` in ``status.conditions`` (meta.FindStatusCondition)."""
    for condition in (obj.get("status") or {}).get("conditions") or ():
        if condition.get("type") == condition_type:
            return condition  # type: ignore[no-any-return]
    return None


def is_condition_true(obj: Mapping[str, Any], condition_type: str) -> bool:
    condition = find_condition(obj, condition_type)
    return condition is not None and condition.get("status") == "True"


def set_condition(
    obj: Object,
    condition_type: str,
    status: bool | str,
    reason: str,
    message: str = "",
    *,
    observed_generation: int | None = None,
    now: datetime.datetime | None = None,
) -> bool:
    """Set a condition in ``status.conditions``, as apimachinery's meta.SetStatusCondition.

    ``lastTransitionTime`` becomes ``now`` (default: the current time) only when the condition
    is new or its status changes; reason, message and ``observedGeneration`` are always
    updated. ``observed_generation`` defaults to the object's ``metadata.generation``: the
    generation this reconcile read. ``status`` is ``True``/``False`` or one of
    ``CONDITION_STATUSES``. Whether anything changed.
    """
    text = ("True" if status else "False") if isinstance(status, bool) else status
    if text not in CONDITION_STATUSES:
        raise ValueError(f"condition status must be one of {CONDITION_STATUSES}, got {status!r}")
    if not _REASON.fullmatch(reason):
        raise ValueError(
            f"condition reason must be a CamelCase word (letters, digits, _ , :), got {reason!r}"
        )
    if observed_generation is None:
        observed_generation = int((obj.get("metadata") or {}).get("generation") or 0)
    wanted = {
        "type": condition_type,
        "status": text,
        "observedGeneration": observed_generation,
        "reason": reason,
        "message": message,
    }
    conditions: list[Any] = obj.setdefault("status", {}).setdefault("conditions", [])
    when = rfc3339(now or datetime.datetime.now(datetime.UTC))
    for condition in conditions:
        if condition.get("type") != condition_type:
            continue
        changed = any(condition.get(field) != value for field, value in wanted.items())
        if condition.get("status") != text or not condition.get("lastTransitionTime"):
            condition["lastTransitionTime"] = when
            changed = True
        condition.update(wanted)
        return changed
    conditions.append({**wanted, "lastTransitionTime": when})
    return True


def remove_condition(obj: Object, condition_type: str) -> bool:
    """Remove the condition of ``condition_type``; whether there was one."""
    status = obj.get("status") or {}
    conditions = status.get("conditions") or []
    kept = [condition for condition in conditions if condition.get("type") != condition_type]
    if len(kept) == len(conditions):
        return False
    status["conditions"] = kept
    return True


def rfc3339(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC to the second, as metav1.Time serialises."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
