"""What RBAC a manager needs, and the Role / ClusterRole YAML that grants exactly that.

Owns the rules a manager needs (get/list/watch of each watched kind where it caches, the
leader-election Lease in its namespace, Events, the writes the app declares, and the
TokenReview and SubjectAccessReview its debug endpoint checks callers with), the ClusterRole
a person needs to read that endpoint, how kinds become resources (discovery through
``RestMapper``, or a guessed plural when nothing answers), the YAML and JSON rendering (which
``manifests`` reuses for its other objects), and the ``ctrltrace rbac`` command. Also owns
loading an app for the commands that inspect one without running it (``rbac``, ``doctor``
and ``manifests``).

Reads the Manager and asks discovery; never starts the manager and never writes to the
cluster. The runtime core does not import this module.

Over 500 lines because the rules, the objects that grant them and the command that prints them
are one plan read three ways (``rbac`` prints it, ``doctor`` checks an identity against it,
``manifests`` renders it beside its own objects) through the same ``Plan``, ``Rule`` and
``Subject``; the YAML writer (``yaml_documents``) is the one part with no RBAC in it, here
because nothing else writes YAML.
"""

from __future__ import annotations

import asyncio
import enum
import json
import re
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import click

from ctrltrace import debugwire
from ctrltrace.cli.app import (
    AppArgs,
    app_parameters,
    cluster_for,
    command_errors,
    connect,
    load_manager_for,
)
from ctrltrace.cli.errors import ExitCode
from ctrltrace.cli.options import FC
from ctrltrace.kinds import Kind, KindNotFound, Resource, RestMapper
from ctrltrace.leaderelection import lease_namespace
from ctrltrace.loader import AppError
from ctrltrace.manager import Manager, Unreachable
from ctrltrace.transport import ApiError, ConfigError

READ_VERBS = ("get", "list", "watch")  # an informer lists and watches; the client gets
LEASE_VERBS = ("get", "create", "update")  # what leaderelection.LeaderElector sends
EVENT_VERBS = ("create", "patch")  # kubeevents creates Events and patches their count
# The debug endpoint's paths. The authorizer matches a non-resource URL ending in "*" as a
# prefix (only there): this grants /debug/ctrltrace/explain, /state and /records.
DEBUG_URLS = f"{debugwire.PREFIX}/*"
WRITES_ATTRIBUTE = "RBAC_WRITES"
_RBAC_API = "rbac.authorization.k8s.io"
_WIDTH = 100  # header comments wrap here, like doctor's checklist
_ROLE_FOR = {"for": "for_()", "owns": "owns()", "watches": "watches()"}


class Purpose(enum.StrEnum):
    """Why the manager needs a rule: doctor checks each purpose in its own section."""

    WATCH = "watch"
    WRITE = "write"
    EVENTS = "events"
    LEASE = "lease"
    TOKENS = "tokens"  # not checked by doctor: only an endpoint off loopback needs them


@dataclass(frozen=True)
class Rule:
    """One RBAC PolicyRule (without resourceNames, which no need here can use): on resources,
    or with ``non_resource_urls`` on those paths (then groups and resources are empty)."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    non_resource_urls: tuple[str, ...] = ()

    def as_policy(self) -> dict[str, list[str]]:
        if self.non_resource_urls:
            return {"nonResourceURLs": list(self.non_resource_urls), "verbs": list(self.verbs)}
        return {
            "apiGroups": list(self.api_groups),
            "resources": list(self.resources),
            "verbs": list(self.verbs),
        }

    def group_resources(self) -> list[str]:
        """Each resource as ``plural.group`` (``plural`` in the core group)."""
        return [f"{r}.{g}" if g else r for g in self.api_groups for r in self.resources]

    def __str__(self) -> str:
        return (
            f"apiGroups {_flow(self.api_groups)}, resources {_flow(self.resources)}, "
            f"verbs {_flow(self.verbs)}"
        )


# The reviews the debug endpoint sends to check a caller's bearer token, as
# controller-runtime's metrics endpoint does (kubebuilder's metrics_auth_role).
TOKEN_CHECKS = (
    Rule(("authentication.k8s.io",), ("tokenreviews",), ("create",)),
    Rule(("authorization.k8s.io",), ("subjectaccessreviews",), ("create",)),
)
DEBUG_READ = Rule((), (), ("get",), (DEBUG_URLS,))


@dataclass(frozen=True)
class Need:
    """A rule the manager needs in one namespace (``""``: cluster-wide), and why."""

    rule: Rule
    namespace: str
    purpose: Purpose
    why: str


@dataclass(frozen=True)
class Resolution:
    """A watched kind and the resource serving it; a guessed resource carries the reason."""

    kind: Kind
    resource: Resource
    problem: str = ""  # why the plural is a guess; "" when discovery served the kind
    not_served: bool = False  # discovery answered, and the kind is not there

    @property
    def guessed(self) -> bool:
        return bool(self.problem)


@dataclass(frozen=True)
class Plan:
    """Everything a manager needs, per namespace: what ``rbac`` grants and ``doctor`` checks."""

    needs: tuple[Need, ...]
    resolutions: tuple[Resolution, ...]
    writes_declared: bool

    def scopes(self) -> dict[str, list[Need]]:
        """Needs by namespace, the cluster-wide ones (``""``) first."""
        grouped: dict[str, list[Need]] = {}
        for need in sorted(self.needs, key=lambda need: need.namespace != ""):
            grouped.setdefault(need.namespace, []).append(need)
        return grouped

    def warnings(self) -> list[str]:
        found = [
            f"{r.kind}: plural guessed as {r.resource.plural!r} (namespaced), because "
            f"{r.problem}; check it before applying"
            for r in self.resolutions
            if r.guessed
        ]
        if not self.writes_declared:
            found.append(
                f"the app declares no writes (writes() or {WRITES_ATTRIBUTE}): this grants reads, "
                "Events "
                "and the Lease only, so every create/update/patch/delete in Reconcile will be "
                "forbidden"
            )
        return found


# -- reading the manager ---------------------------------------------------------------------


def watch_uses(manager: Manager) -> dict[Kind, list[str]]:
    """Each watched kind, with every use of it in words ("owns() in controller widget")."""
    uses: dict[Kind, list[str]] = {}
    for spec in manager.controller_specs:
        for watch in spec.watches:
            use = f"{_ROLE_FOR[watch.role]} in controller {spec.name or '(unnamed)'}"
            uses.setdefault(watch.kind, []).append(use)
    return uses


@dataclass(frozen=True)
class DeclaredWrite:
    """A write rule the app declares, and where: ``RBAC_WRITES`` or a controller's writes()."""

    rule: Rule
    source: str


def declared_writes(
    module: ModuleType | None, manager: Manager | None = None
) -> tuple[DeclaredWrite, ...] | None:
    """The writes the app declares for its reconcilers, or None when it declares none at all.

    Read from each controller's ``writes()`` and from the app module's ``RBAC_WRITES`` (a list
    of PolicyRule mappings); an empty ``RBAC_WRITES`` declares that there are none.
    """
    found: list[DeclaredWrite] = []
    for spec in manager.controller_specs if manager is not None else ():
        source = f"writes() of controller {spec.name or '(unnamed)'}"
        found += (
            DeclaredWrite(Rule((write.api_group,), write.resources, write.verbs), source)
            for write in spec.writes
        )
    value = getattr(module, WRITES_ATTRIBUTE, None)
    if value is not None:
        found += (
            DeclaredWrite(rule, WRITES_ATTRIBUTE) for rule in parse_rules(value, WRITES_ATTRIBUTE)
        )
    elif not found:
        return None
    return tuple(found)


def parse_rules(value: object, source: str) -> tuple[Rule, ...]:
    """PolicyRule mappings as RBAC takes them, validated; AppError says what is wrong."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise AppError(f"{source} must be a list of rules, got {type(value).__name__}")
    rules = []
    for index, entry in enumerate(value):
        where = f"{source}[{index}]"
        if not isinstance(entry, Mapping):
            raise AppError(f"{where} must be a mapping with apiGroups, resources and verbs")
        if unknown := set(entry) - {"apiGroups", "resources", "verbs"}:
            raise AppError(f"{where} has unknown fields {sorted(unknown)}")
        groups, resources, verbs = (
            _strings(entry.get(key), f"{where}.{key}")
            for key in ("apiGroups", "resources", "verbs")
        )
        if not (groups and resources and verbs):
            # As the RBAC API requires; guessing a group could grant the wrong one.
            raise AppError(f'{where} needs apiGroups ([""] is the core group), resources and verbs')
        rules.append(Rule(groups, resources, verbs))
    return tuple(rules)


def _strings(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise AppError(f"{where} must be a list of strings, got {value!r}")
    if not all(isinstance(item, str) for item in value):
        raise AppError(f"{where} must be a list of strings, got {list(value)!r}")
    return tuple(value)


# -- kinds to resources ----------------------------------------------------------------------


def guessed_resource(kind: Kind) -> Resource:
    """What most CRDs are called: lower-case kind plus "s", namespaced."""
    return Resource(kind, kind.kind.lower() + "s", namespaced=True)


async def resolve(
    kinds: Sequence[Kind], mapper: RestMapper | None, why_no_cluster: str = ""
) -> list[Resolution]:
    """Each kind's resource through discovery; without a mapper every plural is guessed."""
    if mapper is None:
        return [Resolution(kind, guessed_resource(kind), why_no_cluster) for kind in kinds]
    return list(await asyncio.gather(*(_resolve_one(kind, mapper) for kind in kinds)))


async def _resolve_one(kind: Kind, mapper: RestMapper) -> Resolution:
    try:
        return Resolution(kind, await mapper.resolve(kind))
    except KindNotFound as error:
        return Resolution(kind, guessed_resource(kind), str(error), not_served=True)
    except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
        detail = str(error) or type(error).__name__
        return Resolution(kind, guessed_resource(kind), f"discovery failed: {detail}")


# -- the plan --------------------------------------------------------------------------------


def make_plan(
    manager: Manager, resolutions: Sequence[Resolution], writes: Sequence[DeclaredWrite] | None
) -> Plan:
    """The rules ``manager`` needs, given its kinds' resources and its declared writes."""
    options = manager.options
    cache_scopes = tuple(dict.fromkeys(options.namespaces)) or ("",)
    uses = watch_uses(manager)
    needs: list[Need] = []
    # Two versions of a kind share one resource, and RBAC knows only resources.
    by_resource: dict[tuple[str, str], list[Resolution]] = {}
    for resolution in resolutions:
        key = (resolution.kind.group, resolution.resource.plural)
        by_resource.setdefault(key, []).append(resolution)
    for (group, plural), same in by_resource.items():
        why = "; ".join(f"{r.kind}: {', '.join(uses.get(r.kind, ['watched']))}" for r in same)
        # A cluster-scoped kind is listed cluster-wide even by a namespaced manager.
        scopes = cache_scopes if same[0].resource.namespaced else ("",)
        rule = Rule((group,), (plural,), READ_VERBS)
        needs.extend(Need(rule, scope, Purpose.WATCH, why) for scope in scopes)
    events = Rule(("",), ("events",), EVENT_VERBS)
    for write in writes or ():
        # Events are granted once, below: a declared Events write adds only what they lack.
        needs.extend(
            Need(rule, scope, Purpose.WRITE, f"declared in {write.source}")
            for rule in _without(write.rule, events)
            for scope in cache_scopes
        )
    # An Event about a cluster-scoped object goes to "default", as client-go puts it there.
    event_scopes = cache_scopes
    if "" not in cache_scopes and any(not r.resource.namespaced for r in resolutions):
        event_scopes = tuple(dict.fromkeys((*cache_scopes, "default")))
    needs.extend(
        Need(events, scope, Purpose.EVENTS, "Events about the objects it reconciles")
        for scope in event_scopes
    )
    if options.leader_election:
        namespace = lease_namespace(options.leader_election_namespace)
        lease = Rule(("coordination.k8s.io",), ("leases",), LEASE_VERBS)
        why = f"leader election: the Lease {namespace}/{options.leader_election_id}"
        needs.append(Need(lease, namespace, Purpose.LEASE, why))
    # Reviews are cluster-scoped; granted always, as kubebuilder does, so that moving the
    # endpoint off loopback (or --debug-auth required) needs no new RBAC.
    why = "the debug endpoint checks callers' tokens (off loopback, or with --debug-auth required)"
    needs.extend(Need(rule, "", Purpose.TOKENS, why) for rule in TOKEN_CHECKS)
    return Plan(tuple(needs), tuple(resolutions), writes is not None)


def _without(rule: Rule, granted: Rule) -> list[Rule]:
    """``rule`` less what ``granted`` (one group, one resource) grants: the rules that remain."""
    [group], [resource] = granted.api_groups, granted.resources
    if group not in rule.api_groups or resource not in rule.resources:
        return [rule]
    remaining = []
    if others := tuple(r for r in rule.resources if r != resource):
        remaining.append(Rule(rule.api_groups, others, rule.verbs))
    if other_groups := tuple(g for g in rule.api_groups if g != group):
        remaining.append(Rule(other_groups, (resource,), rule.verbs))
    if extra := tuple(v for v in rule.verbs if v not in granted.verbs):
        remaining.append(Rule((group,), (resource,), extra))
    return remaining


# -- rendering -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """The service account the roles are bound to."""

    namespace: str
    name: str

    @classmethod
    def parse(cls, text: str) -> Subject:
        namespace, sep, name = text.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ValueError(f"expected NAMESPACE/NAME, got {text!r}")
        return cls(namespace, name)

    def as_subject(self) -> dict[str, str]:
        return {"kind": "ServiceAccount", "name": self.name, "namespace": self.namespace}


def default_subject(manager: Manager) -> Subject:
    """A service account named after the manager, where its Lease or its cache is."""
    options = manager.options
    namespace = options.leader_election_namespace or next(iter(options.namespaces), "default")
    return Subject(namespace, manager.name)


def reader_role_name(name: str) -> str:
    """The ClusterRole that lets a person read the debug endpoint of the manager ``name``."""
    return f"{name}-debug-reader"


def reader_hint(name: str) -> str:
    """How to give a person the reader role: it is printed unbound, as nobody is known yet."""
    reader = reader_role_name(name)
    return (
        f"The ClusterRole {reader} lets a person read the debug endpoint (explain --from); "
        f"bind it to each reader: kubectl create clusterrolebinding {reader}-alice "
        f"--clusterrole={reader} --user=alice"
    )


@dataclass(frozen=True)
class _Manifest:
    """A Role or ClusterRole (namespace ``""``), each rule with why it is granted, and its
    binding to one service account; without a subject, a role left for the user to bind."""

    name: str
    namespace: str
    rules: tuple[tuple[Rule, str], ...]
    subject: Subject | None

    def _meta(self) -> dict[str, str]:
        meta = {"name": self.name}
        if self.namespace:
            meta["namespace"] = self.namespace
        return meta

    @property
    def role_kind(self) -> str:
        return "Role" if self.namespace else "ClusterRole"

    def role(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{_RBAC_API}/v1",
            "kind": self.role_kind,
            "metadata": self._meta(),
            "rules": [rule.as_policy() for rule, _ in self.rules],
        }

    def bindings(self) -> list[dict[str, Any]]:
        if self.subject is None:
            return []
        return [
            {
                "apiVersion": f"{_RBAC_API}/v1",
                "kind": f"{self.role_kind}Binding",
                "metadata": self._meta(),
                "roleRef": {"apiGroup": _RBAC_API, "kind": self.role_kind, "name": self.name},
                "subjects": [self.subject.as_subject()],
            }
        ]


def _manifests(plan: Plan, name: str, subject: Subject) -> list[_Manifest]:
    granted = [
        _Manifest(name, namespace, tuple((need.rule, need.why) for need in needs), subject)
        for namespace, needs in plan.scopes().items()
    ]
    why = "GET on every path of the debug endpoint, which explain --from and tui --from read"
    return [*granted, _Manifest(reader_role_name(name), "", ((DEBUG_READ, why),), None)]


def objects(plan: Plan, name: str, subject: Subject) -> list[dict[str, Any]]:
    """The roles and bindings as API objects, each role followed by its binding; last the
    debug endpoint's reader role, unbound."""
    found: list[dict[str, Any]] = []
    for manifest in _manifests(plan, name, subject):
        found += [manifest.role(), *manifest.bindings()]
    return found


def render_json(plan: Plan, name: str, subject: Subject) -> str:
    """A ``v1`` List of the objects, which ``kubectl apply -f`` takes like the YAML."""
    return json_list(objects(plan, name, subject))


def json_list(documents: Sequence[Mapping[str, Any]]) -> str:
    """API objects as one ``v1`` List."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(documents)}, indent=2)


def render_yaml(plan: Plan, name: str, subject: Subject, header: Sequence[str] = ()) -> str:
    """Multi-document YAML for ``kubectl apply -f``; every rule has a comment saying why."""
    lines = _comments(header)
    for manifest in _manifests(plan, name, subject):
        role = manifest.role()
        lines += ["---", *_block({k: v for k, v in role.items() if k != "rules"}, 0), "rules:"]
        for rule, why in manifest.rules:
            lines.append(f"  # {why}")
            lines += _block(rule.as_policy(), 4, first="  - ")
        for binding in manifest.bindings():
            lines += ["---", *_block(binding, 0)]
    return "\n".join(lines) + "\n"


def yaml_documents(documents: Sequence[Mapping[str, Any]], header: Sequence[str] = ()) -> str:
    """API objects as multi-document YAML, after ``header`` as comments, like ``render_yaml``."""
    lines = _comments(header)
    for document in documents:
        lines += ["---", *_block(document, 0)]
    return "\n".join(lines) + "\n" if lines else ""


def _comments(text: Sequence[str]) -> list[str]:
    return [
        wrapped
        for line in text
        for wrapped in textwrap.wrap(line, _WIDTH, initial_indent="# ", subsequent_indent="#   ")
    ]


# The YAML 1.1 words PyYAML and kubectl read as booleans or null when unquoted.
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"})
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9._/-]*")
# Outside flow collections a plain scalar may also hold "=" and a ":" that a non-space follows,
# and start with "/" or with dashes before a letter (a paths, a flag, an image, a URL).
_PLAIN_BLOCK = re.compile(r"(?:[A-Za-z]|/|-+[A-Za-z])(?:[A-Za-z0-9._/=-]|:(?=\S))*")


def _scalar(value: str | int, *, block: bool = False) -> str:
    if isinstance(value, bool):  # before int: a bool is one
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    plain = (_PLAIN_BLOCK if block else _PLAIN).fullmatch(value)
    if plain and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value)  # a JSON string is a YAML double-quoted scalar


def _flow(items: Sequence[str]) -> str:
    return "[" + ", ".join(_scalar(item) for item in items) + "]"


def _block(mapping: Mapping[str, Any], indent: int, first: str = "") -> list[str]:
    """A mapping of scalars (strings, integers, booleans), string lists and nested mappings
    or mapping lists, as YAML; a string list too long for one line is written one per line."""
    lines = []
    pad = " " * indent
    for index, (key, value) in enumerate(mapping.items()):
        prefix = first if index == 0 and first else pad
        if isinstance(value, str | int):
            lines.append(f"{prefix}{key}: {_scalar(value, block=True)}")
        elif isinstance(value, Mapping):
            lines += [f"{prefix}{key}:", *_block(value, len(pad) + 2)]
        elif value and isinstance(value[0], Mapping):
            lines.append(f"{prefix}{key}:")
            for item in value:
                lines += _block(item, len(pad) + 4, first=f"{pad}  - ")
        elif len(line := f"{prefix}{key}: {_flow(value)}") <= _WIDTH:
            lines.append(line)
        else:
            lines += [
                f"{prefix}{key}:",
                *(f"{pad}  - {_scalar(item, block=True)}" for item in value),
            ]
    return lines


# -- loading an app for inspection (shared with doctor) ---------------------------------------


@dataclass(frozen=True)
class App:
    spec: str
    manager: Manager
    writes: tuple[DeclaredWrite, ...] | None


def load_app(args: AppArgs) -> App:
    """The manager with the command line's overrides applied, and its declared writes."""
    manager = load_manager_for(args)
    return App(args.app, manager, declared_writes(_app_module(args.app), manager))


def _app_module(spec: str) -> ModuleType | None:
    # The names loader.load_manager imports MODULE under: a file's stem, or the dotted path.
    module_part = spec.partition(":")[0]
    name = Path(module_part).stem if module_part.endswith(".py") else module_part
    return sys.modules.get(name)


# -- the command -----------------------------------------------------------------------------


async def _resolve_for_rbac(manager: Manager) -> list[Resolution]:
    """Plurals from the cluster when one answers; guessed otherwise, saying why."""
    kinds = list(watch_uses(manager))
    try:
        transport, _ = await connect(manager.options)
    except (ConfigError, Unreachable) as error:
        return await resolve(kinds, None, f"no cluster answered ({error})")
    try:
        return await resolve(kinds, RestMapper(transport))
    finally:
        await transport.close()


def _subject(_: click.Context, __: click.Parameter, value: str | None) -> Subject | None:
    if value is None:
        return None
    try:
        return Subject.parse(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


def subject_option(help_text: str) -> Callable[[FC], FC]:
    """``--service-account NAMESPACE/NAME``, passed as ``service_account``."""
    return click.option(
        "--service-account", callback=_subject, metavar="NAMESPACE/NAME", help=help_text
    )


@click.command("rbac")
@app_parameters
@subject_option("Bind to this service account (default: one named after the manager).")
@click.option(
    "--name", "role_name", help="Name of the roles and bindings (default: the manager's)."
)
@click.option("--json", "as_json", is_flag=True, help="Print a v1 List as JSON instead of YAML.")
def rbac_command(
    args: AppArgs, *, service_account: Subject | None, role_name: str | None, as_json: bool
) -> None:
    """Print the RBAC the Manager APP (MODULE:ATTR) needs, for `kubectl apply -f -`.

    Bound to a service account: a ClusterRole, or a Role per namespace when the manager caches
    only some, with get/list/watch on each watched kind, Events, and the writes the app
    declares (writes() or RBAC_WRITES); a Role for the leader-election Lease; a ClusterRole for
    the token and access reviews the debug endpoint sends. Unbound, a ClusterRole for the people
    who read the debug endpoint. Plurals come from the cluster's discovery; with no cluster
    they are guessed, and the output says so (exit code 1).
    """
    granted = grant_for(args, service_account, role_name)
    manager, subject, name = granted.app.manager, granted.subject, granted.name
    if as_json:
        click.echo(render_json(granted.plan, name, subject))
    else:
        header = [
            f"RBAC for the ctrltrace manager {manager.name!r} ({args.app}), from `ctrltrace rbac`.",
            f"Bound to the service account {subject.namespace}/{subject.name}.",
            reader_hint(name),
            *(f"WARNING: {warning}" for warning in granted.plan.warnings()),
        ]
        click.echo(render_yaml(granted.plan, name, subject, header), nl=False)
    granted.exit_with_warnings()


@dataclass(frozen=True)
class Granted:
    """The RBAC for one app: what ``rbac`` prints and ``manifests`` embeds."""

    app: App
    plan: Plan
    subject: Subject
    name: str  # of the roles and bindings

    def exit_with_warnings(self) -> None:
        """Repeat each warning on stderr; exit 1 when there was any."""
        warnings = self.plan.warnings()
        for warning in warnings:
            click.echo(f"ctrltrace: warning: {warning}", err=True)
        if warnings:
            click.get_current_context().exit(ExitCode.WARNINGS)


def grant_for(
    args: AppArgs, service_account: Subject | None, role_name: str | None, *, in_pod: bool = False
) -> Granted:
    """Load the app and plan its RBAC, bound to ``service_account`` (default: named after the
    manager). ``in_pod``: it will run in a pod of that account's namespace, where an unset Lease
    namespace means that one."""
    with command_errors():
        app = load_app(args)
        manager = app.manager
        subject = service_account or default_subject(manager)
        if in_pod and not manager.options.leader_election_namespace:
            manager.options.leader_election_namespace = subject.namespace
        with cluster_for(args, manager.options):
            resolutions = asyncio.run(_resolve_for_rbac(manager))
    plan = make_plan(manager, resolutions, app.writes)
    return Granted(app, plan, subject, role_name or manager.name)
