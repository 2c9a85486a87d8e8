"""What to do about a failing watch: the words shared by the runtime's logs and ``explain``.

Owns turning a watch failure as the API server worded it (a 403, a kind it does not serve, a
lost connection) into one message and one fix a user can act on: the exact RBAC rule as
kubectl commands, the CRD to install. Pure: no I/O, no rendering.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ctrltrace.records import AttrValue
from ctrltrace.vocabulary import Attr

FORBIDDEN = re.compile(
    r'User "(?P<user>[^"]+)" cannot (?P<verb>\w+) resource "(?P<resource>[^"]+)"'
    r'(?: in API group "(?P<group>[^"]*)")?'
)
"""The API server's words for a 403: who may not do what to which resource."""


@dataclass(frozen=True)
class Remedy:
    message: str
    fix: str
    details: dict[str, Any] = field(default_factory=dict)


def forbidden(kind: str, reason: str, attrs: Mapping[str, AttrValue]) -> Remedy:
    """A 403 on a kind's list or watch: who may not do what, and the rule to grant."""
    namespace = str(attrs.get(Attr.NAMESPACE, ""))
    found = FORBIDDEN.search(reason)
    if found is None:  # not the API server's usual wording: quote it
        return Remedy(
            f"the watch for {kind} is forbidden (403): {reason}",
            f"Grant get, list and watch on {attrs.get(Attr.RESOURCE) or kind} to the "
            "controller's identity.",
            {"reason": reason},
        )
    user, verb = found["user"], found["verb"]
    group = found["group"] or ""
    resource = f"{found['resource']}.{group}" if group else found["resource"]
    account = user.removeprefix("system:serviceaccount:")
    subject = f"--user={user}" if account == user else f"--serviceaccount={account}"
    role, binding, where = (
        ("role", "rolebinding", f" -n {namespace}")
        if namespace
        else ("clusterrole", "clusterrolebinding", "")
    )
    name = f"ctrltrace-{found['resource']}"
    return Remedy(
        f"the watch for {kind} is forbidden (403): {user} cannot {verb} {resource}"
        + (f" in namespace {namespace}" if namespace else ""),
        f"Grant get, list and watch: kubectl create {role} {name}{where} "
        f"--verb=get,list,watch --resource={resource}; kubectl create {binding} {name}{where} "
        f"--{role}={name} {subject}",
        {
            "user": user,
            "verb": verb,
            "resource": resource,
            "namespace": namespace,
            "rule": {
                "apiGroups": [group],
                "resources": [found["resource"]],
                "verbs": ["get", "list", "watch"],
            },
        },
    )


def kind_not_found(kind: str, reason: str, attrs: Mapping[str, AttrValue]) -> Remedy:
    api_version = str(attrs.get(Attr.API_VERSION, ""))
    return Remedy(
        f"{kind} ({api_version}) is not served by the API server: {reason}",
        f"Install the CRD that defines {kind} (kubectl get crd) or serve this version in it, "
        "or correct the apiVersion and kind in the watch to what the server serves.",
        {"api_version": api_version},
    )


def unreachable(kind: str, reason: str, attrs: Mapping[str, AttrValue]) -> Remedy:
    """A watch that lost its connection or got an error other than 403 and 404."""
    return Remedy(
        f"the watch for {kind} is failing: {reason}",
        "The informer retries with back-off (0.8 s doubling to 30 s) and resumes from the "
        "last resourceVersion; if it persists, check the API server's health and the network "
        "between it and this process.",
    )


WATCH_REMEDIES = {
    "forbidden": forbidden,
    "kind_not_found": kind_not_found,
    "disconnected": unreachable,
    "error": unreachable,
}
"""A watch record's failure outcome → its remedy."""
