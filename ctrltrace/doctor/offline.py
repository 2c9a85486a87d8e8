"""Checks that need no cluster: start-up validation, the leader election id and namespace, and
the known traps, from the Manager and its resolved kinds."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from ctrltrace.builder import ControllerSpec, WatchSpec
from ctrltrace.doctor.report import LEADER, STARTUP, TRAPS, Check, Status, Trap
from ctrltrace.kinds import Kind
from ctrltrace.leaderelection import lease_namespace, pod_namespace, validate_lease_name
from ctrltrace.manager import Manager
from ctrltrace.predicates import And, GenerationChanged, Predicate
from ctrltrace.rbac import (
    Resolution,
    guessed_resource,
)

# -- checks that need no cluster -------------------------------------------------------------


def startup_checks(manager: Manager) -> list[Check]:
    """Builder and lease-timing problems, one line each, in the words start-up uses."""
    options = manager.options
    lease_id_problem = (
        validate_lease_name(options.leader_election_id) if options.leader_election else None
    )
    timing = options.lease_timing.problems() if options.leader_election else []
    checks = []
    for problem in manager.problems():
        if problem == lease_id_problem:
            continue  # reported with the rest of leader election
        fix = (
            "change lease_timing on the Manager"
            if problem in timing
            else "change the controller's builder chain: `ctrltrace run` stops with this"
        )
        checks.append(Check(Status.FAIL, STARTUP, problem, fix=fix))
    if not checks:
        count = len(manager.controller_specs)
        if count:
            title = (
                "1 controller passes start-up validation"
                if count == 1
                else f"{count} controllers pass start-up validation"
            )
            checks.append(Check(Status.OK, STARTUP, title))
        else:
            checks.append(
                Check(
                    Status.WARN,
                    STARTUP,
                    "the manager has no controllers",
                    "it will start, watch nothing and reconcile nothing",
                    "register one: mgr.controller().for_(...).complete(reconcile)",
                )
            )
    return checks


def leader_election_checks(manager: Manager, in_cluster: bool) -> list[Check]:
    """The lease name is a DNS subdomain; the Lease's namespace is chosen, not defaulted."""
    options = manager.options
    if not options.leader_election:
        return [Check(Status.OK, LEADER, "leader election is off: no Lease is needed")]
    checks = []
    name = options.leader_election_id
    if problem := validate_lease_name(name):
        fix = "pass a name like widgets.example.com as leader_election_id or --leader-election-id"
        checks.append(Check(Status.FAIL, LEADER, problem, fix=fix))
    else:
        checks.append(
            Check(Status.OK, LEADER, f"the leader election id {name!r} is a valid DNS subdomain")
        )
    namespace = options.leader_election_namespace
    if namespace:
        checks.append(Check(Status.OK, LEADER, f"the Lease's namespace is set: {namespace}"))
    elif pod := pod_namespace():
        checks.append(Check(Status.OK, LEADER, f"the Lease goes to the pod's namespace: {pod}"))
    else:
        fix = "set leader_election_namespace on the Manager or pass --leader-election-namespace"
        # controller-runtime refuses to start like this outside a cluster; inside one it uses
        # the pod's namespace, which a pod without a service account token cannot tell.
        checks.append(
            Check(
                Status.WARN if in_cluster else Status.FAIL,
                LEADER,
                "the leader election namespace is not set",
                "ctrltrace then puts the Lease in 'default'"
                + ("" if in_cluster else "; outside a cluster nothing says which namespace"),
                fix,
            )
        )
    return checks


# Kinds whose objects are controlled by an intermediate owner: (group, kind) → their usual
# controllers. Owning one from any other for_ kind maps its events to nothing.
_CONTROLLED_BY: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("", "Pod"): (
        ("apps", "ReplicaSet"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("batch", "Job"),
    ),
    ("apps", "ReplicaSet"): (("apps", "Deployment"),),
    ("batch", "Job"): (("batch", "CronJob"),),
    ("apps", "ControllerRevision"): (("apps", "StatefulSet"), ("apps", "DaemonSet")),
}
# Kinds without metadata.generation (checked on kube-apiserver v1.36): GenerationChanged
# drops every update of them.
_NO_GENERATION = frozenset(
    {
        ("", "ConfigMap"),
        ("", "Endpoints"),
        ("", "Namespace"),
        ("", "Secret"),
        ("", "Service"),
        ("", "ServiceAccount"),
        ("coordination.k8s.io", "Lease"),
    }
)


def trap_checks(
    manager: Manager,
    *,
    resolutions: Sequence[Resolution] = (),
    accepted: Collection[str] = (),
) -> list[Check]:
    """Warnings for builds that start and run but miss the events their authors expect.

    A trap whose code is in ``accepted`` is listed as ok, saying it was accepted. A controller
    that declares (``writes()``) that it creates the kind it owns is not warned about owning
    it: it makes itself the controller of what it creates. ``resolutions`` give the plurals
    those declarations name (guessed without them).
    """
    checks: list[Check] = []
    for spec in manager.controller_specs:
        for watch in spec.watches:
            if watch.role == "owns" and spec.for_kind is not None:
                checks += _intermediate_owner(spec, spec.for_kind, watch.kind, resolutions)
            filters = [*watch.predicates, *spec.global_predicates]
            if any(_drops_by_generation(predicate) for predicate in filters):
                checks.append(_generation_trap(spec.name, watch))
    checks += _lease_outside_cache(manager)
    checks = [_accept(check, accepted) for check in checks]
    if not checks:
        checks.append(Check(Status.OK, TRAPS, "none of the known traps applies"))
    return checks


def _accept(check: Check, accepted: Collection[str]) -> Check:
    if check.status is not Status.WARN or check.code not in accepted:
        return check
    return replace(
        check,
        status=Status.OK,
        title=f"accepted ({check.code}): {check.title}",
        detail="",
        fix="",
    )


def _intermediate_owner(
    spec: ControllerSpec, for_kind: Kind, owned: Kind, resolutions: Sequence[Resolution]
) -> list[Check]:
    usual = _CONTROLLED_BY.get((owned.group, owned.kind))
    if usual is None or (for_kind.group, for_kind.kind) in usual:
        return []
    plurals = {r.resource.plural for r in resolutions if r.kind == owned}
    plurals = plurals or {guessed_resource(owned).plural}
    if any(
        write.api_group == owned.group
        and plurals & set(write.resources)
        and "create" in write.verbs
        for write in spec.writes
    ):
        return []
    controller = spec.name
    # Qualified by group: a CRD may share its name with the built-in kind (CronJob).
    names = _either([f"{kind}.{group}" if group else kind for group, kind in usual])
    return [
        Check(
            Status.WARN,
            TRAPS,
            f"controller {controller} owns {owned}, but {owned.kind}s are usually controlled "
            f"by the built-in {names}, not by {for_kind}",
            f"owns() maps an object only to its controller owner (controller: true) of kind "
            f"{for_kind}; a {owned.kind} made through the built-in {names} names that as its "
            "controller, so its events map to nothing (explain says not_mapped)",
            f"own the direct child instead, or use watches() with a map function that walks "
            f"up the owner chain. If Reconcile creates the {owned.kind}s itself with "
            f"set_controller_reference, declare it (.writes({owned.group!r}, ..., 'create')) "
            f"or pass --accept-trap {Trap.OWNS_INTERMEDIATE}",
            Trap.OWNS_INTERMEDIATE,
        )
    ]


def _either(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _drops_by_generation(predicate: Predicate) -> bool:
    """GenerationChanged alone or inside an And: then it alone can drop an update."""
    if isinstance(predicate, GenerationChanged):
        return True
    return isinstance(predicate, And) and any(map(_drops_by_generation, predicate.predicates))


def _generation_trap(controller: str, watch: WatchSpec) -> Check:
    kind = watch.kind
    where = f"on {watch.role if watch.role != 'for' else 'for_'}({kind}) in controller {controller}"
    if (kind.group, kind.kind) in _NO_GENERATION:
        return Check(
            Status.WARN,
            TRAPS,
            f"GenerationChanged {where} drops every update: {kind} has no metadata.generation",
            "only creates and deletes of it reach Reconcile",
            "remove GenerationChanged from this watch, or use ResourceVersionChanged",
            Trap.GENERATION_CHANGED,
        )
    if watch.role == "for":
        return Check(
            Status.WARN,
            TRAPS,
            f"GenerationChanged {where} drops status-only updates and the update that sets "
            "deletionTimestamp",
            "generation changes with spec only; if Reconcile reads status, or a finalizer "
            "must clean up when deletion starts, those updates never reach it (the delete "
            "event comes only after the finalizers are gone)",
            "if you need them, OR GenerationChanged with a predicate that passes them, e.g. "
            "GenerationChanged() | predicates.funcs(update=lambda e: "
            "bool(e.object['metadata'].get('deletionTimestamp')))",
            Trap.GENERATION_CHANGED,
        )
    return Check(
        Status.WARN,
        TRAPS,
        f"GenerationChanged {where} drops status changes of the watched objects",
        f"a {kind.kind}'s status (readiness, progress) changes without a new generation, so "
        "the owner is not reconciled when it changes",
        "remove GenerationChanged from this watch if Reconcile reads the status of these objects",
        Trap.GENERATION_CHANGED,
    )


def _lease_outside_cache(manager: Manager) -> list[Check]:
    options = manager.options
    namespace = lease_namespace(options.leader_election_namespace)
    if not options.leader_election or not options.namespaces or namespace in options.namespaces:
        return []
    return [
        Check(
            Status.WARN,
            TRAPS,
            f"the Lease's namespace {namespace} is not one the manager caches "
            f"({', '.join(options.namespaces)})",
            "Roles granted per cached namespace do not cover the Lease: the manager then "
            "waits for leadership forever",
            f"grant Lease access in {namespace} too (`ctrltrace rbac` does), or keep the "
            "Lease in a cached namespace",
            Trap.LEASE_OUTSIDE_CACHE,
        )
    ]
