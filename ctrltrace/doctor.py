"""``ctrltrace doctor``: the reasons a controller never reconciles, found before it runs.

Owns the checks and their words: start-up validation (the messages start-up prints), the
leader election id and namespace, whether each watched kind is served, whether the running
identity may do what ``rbac.make_plan`` says the manager needs (asked with
SelfSubjectAccessReviews; Events only warn, since a refused Event breaks no reconcile), who
holds the Lease, and warnings for known traps (owning a kind that an intermediate owner
controls, GenerationChanged where status or deletion matter, a namespace filter without the
Lease's namespace), each with a code that ``--accept-trap`` acknowledges. Also owns the
checklist, its JSON and the exit code.

Loads the Manager but never starts it; writes nothing to the cluster.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import json
import textwrap
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import aiohttp
import click

from ctrltrace.builder import ControllerSpec, WatchSpec
from ctrltrace.cli.app import AppArgs, app_parameters, cluster_for, command_errors, connect
from ctrltrace.cli.errors import ExitCode
from ctrltrace.kinds import Kind, RestMapper
from ctrltrace.leaderelection import lease_namespace, pod_namespace, validate_lease_name
from ctrltrace.manager import Manager
from ctrltrace.predicates import And, GenerationChanged, Predicate
from ctrltrace.printable import printable
from ctrltrace.rbac import (
    App,
    Need,
    Plan,
    Purpose,
    Resolution,
    guessed_resource,
    load_app,
    make_plan,
    resolve,
    watch_uses,
)
from ctrltrace.transport import ApiError, NotFound, Transport, kubeconfig_path

WIDTH = 100
_RBAC_HINT = "`ctrltrace rbac` prints every rule the manager needs"
_TRANSIENT = (ApiError, aiohttp.ClientError, OSError, TimeoutError)


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


_MARKS = {Status.OK: "✓", Status.WARN: "!", Status.FAIL: "✗"}
_SEVERITY = [Status.OK, Status.WARN, Status.FAIL]


@dataclass(frozen=True)
class Check:
    """One line of the checklist: what was checked, and for warnings and failures the fix."""

    status: Status
    section: str
    title: str
    detail: str = ""
    fix: str = ""
    code: str = ""  # a known trap's code, which --accept-trap takes


STARTUP = "Start-up validation"
LEADER = "Leader election"
KINDS = "Kinds served"
ACCESS = {
    Purpose.WATCH: "Access: watched kinds",
    Purpose.WRITE: "Access: declared writes",
    Purpose.EVENTS: "Access: Events",
    Purpose.LEASE: "Access: leader election Lease",
}
TRAPS = "Known traps"


class Trap(enum.StrEnum):
    """The known traps, by the code ``--accept-trap`` takes."""

    OWNS_INTERMEDIATE = "owns-intermediate-owner"
    GENERATION_CHANGED = "generation-changed"
    LEASE_OUTSIDE_CACHE = "lease-outside-cache"


@dataclass(frozen=True)
class Report:
    app: str
    server: str
    version: str
    identity: str
    checks: tuple[Check, ...]

    def count(self, status: Status) -> int:
        return sum(check.status is status for check in self.checks)

    @property
    def worst(self) -> Status:
        """FAIL if any check failed, else WARN if any warned, else OK: what the exit code says."""
        return max((check.status for check in self.checks), key=_SEVERITY.index, default=Status.OK)

    def summary(self) -> str:
        failed, warned = self.count(Status.FAIL), self.count(Status.WARN)
        return (
            f"{failed} failed, {warned} warning{'s' if warned != 1 else ''}, "
            f"{self.count(Status.OK)} ok"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "cluster": {"server": self.server, "version": self.version},
            "identity": self.identity,
            "status": self.worst.value,
            "summary": {status.value: self.count(status) for status in Status},
            "checks": [asdict(check) for check in self.checks],
        }

    def render(self, width: int = WIDTH) -> str:
        """The checklist as plain text: a mark per line (✓ ok, ! warning, ✗ failed)."""
        lines = _wrap(f"ctrltrace doctor {self.app}", "", "", width)
        lines += _wrap(
            f"cluster {self.server} ({self.version}), as {self.identity}", "", "  ", width
        )
        section = ""
        for check in self.checks:
            if check.section != section:
                section = check.section
                lines += ["", section]
            lines += _wrap(check.title, f"  {_MARKS[check.status]} ", "    ", width)
            if check.detail:
                lines += _wrap(check.detail, "    ", "    ", width)
            if check.fix:
                lines += _wrap(check.fix, "    fix: ", "         ", width)
        return "\n".join([*lines, "", self.summary()]) + "\n"


def _wrap(text: str, first: str, rest: str, width: int) -> list[str]:
    return textwrap.wrap(
        printable(text), width, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False
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


async def diagnose(
    app: App,
    transport: Transport,
    version: str,
    in_cluster: bool,
    accepted_traps: Collection[str] = (),
) -> Report:
    """Every check, in checklist order, against the cluster ``transport`` talks to."""
    manager = app.manager
    resolutions = await resolve(list(watch_uses(manager)), RestMapper(transport))
    plan = make_plan(manager, resolutions, app.writes)
    identity = await whoami(transport)
    lease_name = manager.options.leader_election_id
    checks = [
        *startup_checks(manager),
        *leader_election_checks(manager, in_cluster),
        *await kind_checks(transport, resolutions),
        *await access_checks(transport, plan, identity, lease_name),
        *await lease_holder_check(transport, manager),
        *trap_checks(manager, resolutions=resolutions, accepted=accepted_traps),
    ]
    # Sections in checklist order, each check staying with its own section.
    order = [STARTUP, LEADER, KINDS, *ACCESS.values(), TRAPS]
    checks.sort(key=lambda check: order.index(check.section))
    return Report(app.spec, transport.host, version, identity, tuple(checks))


async def _diagnose_app(app: App, accepted_traps: Collection[str]) -> Report:
    in_cluster = kubeconfig_path(app.manager.options.kubeconfig) is None
    transport, version = await connect(app.manager.options)
    try:
        return await diagnose(app, transport, version, in_cluster, accepted_traps)
    finally:
        await transport.close()


@click.command("doctor")
@app_parameters
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option(
    "--accept-trap",
    "accepted_traps",
    multiple=True,
    type=click.Choice([trap.value for trap in Trap]),
    help="A known trap that does not apply to this app: listed as accepted, not warned about.",
)
def doctor_command(args: AppArgs, *, as_json: bool, accepted_traps: tuple[str, ...]) -> None:
    """Check, without starting it, why the Manager APP (MODULE:ATTR) might never reconcile.

    Against the cluster of the kubeconfig (or --envtest): builder problems, the leader
    election id and namespace, that every watched kind is served, that this identity may
    get/list/watch them, make its declared writes, send Events and take the Lease, and known
    traps (each with a code for --accept-trap).
    Exit code 0 all good, 1 warnings only, 3 any failure.
    """

    with command_errors():
        app = load_app(args)
        with cluster_for(args, app.manager.options):
            report = asyncio.run(_diagnose_app(app, accepted_traps))
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2, ensure_ascii=False))
    else:
        click.echo(report.render(), nl=False)
    exit_codes = {Status.OK: ExitCode.OK, Status.WARN: ExitCode.WARNINGS}
    click.get_current_context().exit(exit_codes.get(report.worst, ExitCode.FAILED))
