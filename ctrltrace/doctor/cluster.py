"""Checks against the cluster: each watched kind served, each rule the manager needs allowed
(SelfSubjectAccessReviews), who holds the Lease, and who this identity is. Reads only."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from ctrltrace.doctor.report import ACCESS, KINDS, LEADER, Check, Status
from ctrltrace.leaderelection import lease_namespace, validate_lease_name
from ctrltrace.manager import Manager
from ctrltrace.rbac import (
    Need,
    Plan,
    Purpose,
    Resolution,
)
from ctrltrace.transport import ApiError, NotFound, Transport

_RBAC_HINT = "`ctrltrace rbac` prints every rule the manager needs"
_TRANSIENT = (ApiError, aiohttp.ClientError, OSError, TimeoutError)

# -- checks against the cluster --------------------------------------------------------------


async def kind_checks(transport: Transport, resolutions: Sequence[Resolution]) -> list[Check]:
    """Each watched kind is served; for one that is not, which CRD or version is missing."""
    return list(await asyncio.gather(*(_kind_check(transport, r) for r in resolutions)))


async def _kind_check(transport: Transport, resolution: Resolution) -> Check:
    kind, resource = resolution.kind, resolution.resource
    if not resolution.guessed:
        scope = "namespaced" if resource.namespaced else "cluster-scoped"
        return Check(Status.OK, KINDS, f"{kind} is served as {resource.plural} ({scope})")
    if not resolution.not_served:
        return Check(
            Status.FAIL,
            KINDS,
            f"cannot tell whether {kind} is served",
            resolution.problem,
            "check that this identity may read discovery (/api, /apis)",
        )
    served = await _served_versions(transport, kind.group)
    if served:
        detail = f"{kind.group or 'the core group'} is served in {', '.join(served)} only"
    else:
        detail = f"the cluster serves no API group {kind.group or 'core'}"
    consequence = "its informer retries and the controller never starts"
    if _is_builtin(kind.group):
        fix = f"check apiVersion {kind.api_version!r} and kind {kind.kind!r}: {consequence}"
    elif served:
        fix = f"use one of the served versions, or serve {kind.version} in the CRD: {consequence}"
    else:
        crd = f"{resource.plural}.{kind.group}"
        fix = f"install the CustomResourceDefinition (likely {crd}): until then {consequence}"
    return Check(Status.FAIL, KINDS, f"{kind} ({kind.api_version}) is not served", detail, fix)


def _is_builtin(group: str) -> bool:
    # Kubernetes' own groups have no dot ("apps") or end in .k8s.io; CRD groups need a dot.
    return "." not in group or group.endswith(".k8s.io")


async def _served_versions(transport: Transport, group: str) -> list[str]:
    path = "/api" if not group else f"/apis/{group}"
    try:
        listing = await transport.request("GET", path)
    except _TRANSIENT:
        return []
    if not group:
        return [str(version) for version in listing.get("versions", [])]
    return [str(entry.get("version")) for entry in listing.get("versions", [])]


@dataclass(frozen=True)
class _Question:
    verb: str
    group: str
    resource: str
    namespace: str
    name: str = ""

    def spec(self) -> dict[str, Any]:
        resource, _, subresource = self.resource.partition("/")
        attributes = {
            "verb": self.verb,
            "group": self.group,
            "resource": resource,
            "subresource": subresource,
            "namespace": self.namespace,
            "name": self.name,
        }
        return {"resourceAttributes": {k: v for k, v in attributes.items() if v or k == "group"}}


async def _may(transport: Transport, question: _Question, limit: asyncio.Semaphore) -> str:
    """Why the identity may not do what ``question`` asks, or an empty string when it may."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": question.spec(),
    }
    async with limit:
        try:
            answer = await transport.request(
                "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=review
            )
        except _TRANSIENT as error:
            return f"could not ask: {error}"
    status = answer.get("status") or {}
    if status.get("allowed"):
        return ""
    return str(status.get("reason") or status.get("evaluationError") or "denied")


def _questions(need: Need, lease_name: str) -> list[_Question]:
    rule = need.rule
    return [
        # A Lease is got and updated by name; create cannot be limited to one name.
        _Question(verb, group, resource, need.namespace, lease_name if verb != "create" else "")
        if need.purpose is Purpose.LEASE
        else _Question(verb, group, resource, need.namespace)
        for group in rule.api_groups
        for resource in rule.resources
        for verb in rule.verbs
    ]


async def _denials(
    transport: Transport, need: Need, lease_name: str, limit: asyncio.Semaphore
) -> dict[_Question, str]:
    """What of ``need`` the identity may not do, with why."""
    questions = _questions(need, lease_name)
    answers = await asyncio.gather(*(_may(transport, q, limit) for q in questions))
    return {question: why for question, why in zip(questions, answers, strict=True) if why}


async def access_checks(
    transport: Transport, plan: Plan, identity: str, lease_name: str
) -> list[Check]:
    """One line per rule and namespace: may ``identity`` do all of it, and if not, what not."""
    limit = asyncio.Semaphore(16)  # many namespaces make many reviews; keep the server calm
    checked = [need for need in plan.needs if need.purpose in ACCESS]
    denials = await asyncio.gather(
        *(_denials(transport, need, lease_name, limit) for need in checked)
    )
    checks = [
        _access_check(need, plan, identity, denied)
        for need, denied in zip(checked, denials, strict=True)
    ]
    if not plan.writes_declared:
        checks.append(
            Check(
                Status.WARN,
                ACCESS[Purpose.WRITE],
                "the app declares no writes, so its writes were not checked",
                "a create, update, patch or delete that RBAC forbids fails in Reconcile",
                'declare them on the controller: .writes("", "configmaps", ["create", "patch"]), '
                'or in the app module: RBAC_WRITES = [{"apiGroups": [""], '
                '"resources": ["configmaps"], "verbs": ["create", "patch"]}]',
            )
        )
    return checks


def _where(namespace: str) -> str:
    return f"in namespace {namespace}" if namespace else "in all namespaces"


def _access_check(need: Need, plan: Plan, identity: str, denied: dict[_Question, str]) -> Check:
    rule, section = need.rule, ACCESS[need.purpose]
    resources = ", ".join(rule.group_resources())
    if not denied:
        title = f"may {', '.join(rule.verbs)} {resources} {_where(need.namespace)}"
        return Check(Status.OK, section, title)
    verbs = list(dict.fromkeys(q.verb for q in denied))
    allowed = [verb for verb in rule.verbs if verb not in verbs]
    title = f"may not {', '.join(verbs)} {resources} {_where(need.namespace)}"
    details = [f"needed for {need.why}"]
    if allowed:
        details.append(f"{', '.join(allowed)} is allowed")
    reasons = sorted({why for why in denied.values() if why != "denied"})
    details += reasons
    guessed = [
        r.kind for r in plan.resolutions if r.guessed and r.resource.plural in rule.resources
    ]
    if need.purpose is Purpose.WATCH and guessed:
        details.append(f"the plural of {guessed[0]} is a guess: discovery did not name it")
    holder = f"a Role in {need.namespace}" if need.namespace else "a ClusterRole"
    fix = f"grant {identity} this rule in {holder}: {rule} ({_RBAC_HINT})"
    if need.purpose is Purpose.EVENTS:
        # Reconciles run on; the API server refuses their Events (recorded as failed).
        details.append("reconciles still run, but the Events they emit are refused")
        return Check(Status.WARN, section, title, "; ".join(details), fix)
    return Check(Status.FAIL, section, title, "; ".join(details), fix)


async def lease_holder_check(transport: Transport, manager: Manager) -> list[Check]:
    """Whether another replica holds the Lease now, so this one would wait as a standby."""
    options = manager.options
    if not options.leader_election or validate_lease_name(options.leader_election_id):
        return []
    namespace, name = lease_namespace(options.leader_election_namespace), options.leader_election_id
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
    try:
        lease = await transport.request("GET", path)
    except NotFound:
        return [Check(Status.OK, LEADER, f"the Lease {namespace}/{name} is free (not created yet)")]
    except _TRANSIENT:
        return []  # the access check above already says why it cannot be read
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    try:
        renewed = datetime.datetime.fromisoformat(spec.get("renewTime") or "")
    except ValueError:  # never renewed (or unreadable): nobody is keeping it
        renewed = None
    if holder and renewed is not None:
        age = datetime.datetime.now(datetime.UTC) - renewed
        left = float(spec.get("leaseDurationSeconds") or 0) - age.total_seconds()
        if left > 0:
            return [
                Check(
                    Status.WARN,
                    LEADER,
                    f"the Lease {namespace}/{name} is held by {holder}",
                    f"renewed {age.total_seconds():.0f}s ago (by this machine's clock): a "
                    "replica started now waits as a standby and does not reconcile",
                    "expected while another replica runs; otherwise wait for the Lease to "
                    "expire or delete it",
                )
            ]
    return [
        Check(Status.OK, LEADER, f"the Lease {namespace}/{name} can be taken (expired or free)")
    ]


async def whoami(transport: Transport) -> str:
    """The user name the API server knows us by (SelfSubjectReview), or how we authenticate."""
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    try:
        answer = await transport.request(
            "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body=review
        )
    except _TRANSIENT:
        return transport.user_hint
    return str(answer.get("status", {}).get("userInfo", {}).get("username") or transport.user_hint)
