"""`ctrltrace rbac` without a cluster: the rules a manager needs and the YAML granting them."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from ctrltrace import Context, Manager, Request
from ctrltrace.cli import ExitCode
from ctrltrace.kinds import Kind, Resource
from ctrltrace.loader import AppError
from ctrltrace.rbac import (
    DEBUG_URLS,
    TOKEN_CHECKS,
    DeclaredWrite,
    Plan,
    Purpose,
    Resolution,
    Rule,
    Subject,
    declared_writes,
    make_plan,
    objects,
    rbac_command,
    render_json,
    render_yaml,
    resolve,
)

WIDGET = Kind("example.com/v1", "Widget")
CONFIGMAP = Kind("v1", "ConfigMap")
SUBJECT = Subject("ops", "widgets")
READ = ("get", "list", "watch")
TOKENS = [(Purpose.TOKENS, rule) for rule in TOKEN_CHECKS]
TOKENS_WHY = (
    "the debug endpoint checks callers' tokens (off loopback, or with --debug-auth required)"
)


async def _noop(ctx: Context, request: Request) -> None:
    return None


def _widgets(**options: Any) -> Manager:
    mgr = Manager(name="widgets", leader_election_id="widgets.example.com", **options)
    mgr.controller().for_("example.com/v1", "Widget").owns("v1", "ConfigMap").complete(_noop)
    return mgr


def _served(*kinds: tuple[Kind, str, bool]) -> list[Resolution]:
    return [
        Resolution(kind, Resource(kind, plural, namespaced)) for kind, plural, namespaced in kinds
    ]


WIDGETS_SERVED = _served((WIDGET, "widgets", True), (CONFIGMAP, "configmaps", True))


def _rules(plan: Plan, namespace: str) -> list[tuple[Purpose, Rule]]:
    return [(need.purpose, need.rule) for need in plan.scopes()[namespace]]


def test_a_cluster_wide_manager_gets_a_cluster_role_and_a_lease_role_in_its_namespace() -> None:
    mgr = _widgets(leader_election=True, leader_election_namespace="ops")
    plan = make_plan(mgr, WIDGETS_SERVED, writes=None)

    assert list(plan.scopes()) == ["", "ops"]
    assert _rules(plan, "") == [
        (Purpose.WATCH, Rule(("example.com",), ("widgets",), READ)),
        (Purpose.WATCH, Rule(("",), ("configmaps",), READ)),
        (Purpose.EVENTS, Rule(("",), ("events",), ("create", "patch"))),
        *TOKENS,
    ]
    assert _rules(plan, "ops") == [
        (Purpose.LEASE, Rule(("coordination.k8s.io",), ("leases",), ("get", "create", "update")))
    ]
    whys = [need.why for need in plan.needs]
    assert whys[:2] == [
        "Widget.example.com: for_() in controller widget",
        "ConfigMap: owns() in controller widget",
    ]
    assert whys[-3] == "leader election: the Lease ops/widgets.example.com"


def test_a_namespaced_manager_gets_a_role_per_namespace_and_the_lease_joins_its_namespace() -> None:
    mgr = _widgets(namespaces=["a", "b"], leader_election=True, leader_election_namespace="b")
    plan = make_plan(mgr, WIDGETS_SERVED, writes=None)

    assert list(plan.scopes()) == ["", "a", "b"]
    assert _rules(plan, "") == TOKENS  # reviews are cluster-scoped: a ClusterRole anyway
    assert [purpose for purpose, _ in _rules(plan, "a")] == [
        Purpose.WATCH,
        Purpose.WATCH,
        Purpose.EVENTS,
    ]
    assert [purpose for purpose, _ in _rules(plan, "b")] == [
        Purpose.WATCH,
        Purpose.WATCH,
        Purpose.EVENTS,
        Purpose.LEASE,
    ]


def test_a_lease_outside_the_cached_namespaces_gets_its_own_role() -> None:
    mgr = _widgets(namespaces=["a"], leader_election=True)  # the Lease goes to "default"
    plan = make_plan(mgr, WIDGETS_SERVED, writes=None)
    assert list(plan.scopes()) == ["", "a", "default"]
    assert [purpose for purpose, _ in _rules(plan, "default")] == [Purpose.LEASE]


def test_no_leader_election_means_no_lease_rule() -> None:
    plan = make_plan(_widgets(), WIDGETS_SERVED, writes=None)
    assert plan.needs  # the Widget watch's rules are there; a lease rule is not
    assert all(need.purpose is not Purpose.LEASE for need in plan.needs)


def test_a_cluster_scoped_kind_of_a_namespaced_manager_is_granted_cluster_wide() -> None:
    mgr = Manager(name="ns-watcher", namespaces=["a"])
    mgr.controller().for_("v1", "Namespace").complete(_noop)
    namespace = Kind("v1", "Namespace")
    plan = make_plan(mgr, _served((namespace, "namespaces", False)), writes=None)
    assert _rules(plan, "") == [(Purpose.WATCH, Rule(("",), ("namespaces",), READ)), *TOKENS]
    assert [purpose for purpose, _ in _rules(plan, "a")] == [Purpose.EVENTS]


def test_two_versions_of_a_kind_share_one_rule_that_names_both_uses() -> None:
    mgr = Manager()
    mgr.controller().for_("example.com/v1", "Widget").complete(_noop)
    mgr.controller().named("old").for_("example.com/v1beta1", "Widget").complete(_noop)
    old = Kind("example.com/v1beta1", "Widget")
    plan = make_plan(mgr, _served((WIDGET, "widgets", True), (old, "widgets", True)), writes=None)
    watches = [need for need in plan.needs if need.purpose is Purpose.WATCH]
    assert len(watches) == 1
    assert watches[0].why == (
        "Widget.example.com: for_() in controller widget; "
        "Widget.example.com: for_() in controller old"
    )


CONFIGMAP_WRITES = Rule(("",), ("configmaps",), ("create", "patch"))


def test_declared_writes_are_granted_in_every_cached_namespace() -> None:
    writes = (DeclaredWrite(CONFIGMAP_WRITES, "RBAC_WRITES"),)
    plan = make_plan(_widgets(namespaces=["a", "b"]), WIDGETS_SERVED, writes)
    for namespace in ("a", "b"):
        assert (Purpose.WRITE, CONFIGMAP_WRITES) in _rules(plan, namespace)
    assert plan.writes_declared and not plan.warnings()


def test_events_are_granted_once_even_when_the_app_declares_them_too() -> None:
    mgr = Manager(namespaces=["a", "a"])
    mgr.controller().for_("example.com/v1", "Widget").writes("", "events", "create").complete(_noop)
    mixed = Rule(("", "events.k8s.io"), ("events", "configmaps"), ("create", "delete"))
    writes = (*(declared_writes(_module(), mgr) or ()), DeclaredWrite(mixed, "RBAC_WRITES"))
    plan = make_plan(mgr, _served((WIDGET, "widgets", True)), writes)
    assert list(plan.scopes()) == ["", "a"]
    assert _rules(plan, "a") == [
        (Purpose.WATCH, Rule(("example.com",), ("widgets",), READ)),
        (Purpose.WRITE, Rule(("", "events.k8s.io"), ("configmaps",), ("create", "delete"))),
        (Purpose.WRITE, Rule(("events.k8s.io",), ("events",), ("create", "delete"))),
        (Purpose.WRITE, Rule(("",), ("events",), ("delete",))),
        (Purpose.EVENTS, Rule(("",), ("events",), ("create", "patch"))),
    ]
    granted = [
        (rule["apiGroups"], resource, verb)
        for item in objects(plan, "widgets", SUBJECT)
        for rule in item.get("rules", [])
        for resource in rule.get("resources", [])
        for verb in rule["verbs"]
    ]
    assert (
        granted.count(([""], "events", "create"))
        + granted.count((["", "events.k8s.io"], "events", "create"))
        == 1
    )


def test_events_about_cluster_scoped_objects_of_a_namespaced_manager_go_to_default() -> None:
    mgr = Manager(name="ns-watcher", namespaces=["a"])
    mgr.controller().for_("v1", "Namespace").complete(_noop)
    namespace = Kind("v1", "Namespace")
    plan = make_plan(mgr, _served((namespace, "namespaces", False)), writes=None)
    assert [purpose for purpose, _ in _rules(plan, "default")] == [Purpose.EVENTS]


def test_undeclared_writes_are_a_warning() -> None:
    plan = make_plan(_widgets(), WIDGETS_SERVED, writes=None)
    assert len(plan.warnings()) == 1
    assert "declares no writes (writes() or RBAC_WRITES)" in plan.warnings()[0]


def test_writes_declared_on_a_controller_are_granted_and_say_which_controller() -> None:
    mgr = Manager()
    (
        mgr.controller()
        .for_("example.com/v1", "Widget")
        .writes("", "configmaps", ["create", "patch"])
        .writes("apps", ["deployments", "statefulsets"], "update")
        .complete(_noop)
    )
    writes = declared_writes(_module(), mgr)
    assert writes == (
        DeclaredWrite(CONFIGMAP_WRITES, "writes() of controller widget"),
        DeclaredWrite(
            Rule(("apps",), ("deployments", "statefulsets"), ("update",)),
            "writes() of controller widget",
        ),
    )
    plan = make_plan(mgr, WIDGETS_SERVED, writes)
    [configmaps, _] = [need for need in plan.needs if need.purpose is Purpose.WRITE]
    assert configmaps.why == "declared in writes() of controller widget"
    assert plan.writes_declared


def test_a_controller_s_writes_and_rbac_writes_add_up() -> None:
    mgr = Manager()
    mgr.controller().for_("example.com/v1", "Widget").writes("", "secrets", "get").complete(_noop)
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch"]}]
    writes = declared_writes(_module(RBAC_WRITES=rules), mgr)
    assert writes is not None
    assert [(w.rule.resources, w.source) for w in writes] == [
        (("secrets",), "writes() of controller widget"),
        (("configmaps",), "RBAC_WRITES"),
    ]


def test_writes_without_resources_or_verbs_stop_start_up() -> None:
    mgr = Manager()
    mgr.controller().for_("example.com/v1", "Widget").writes("", [], "create").complete(_noop)
    assert mgr.problems() == ["widget: writes() needs at least one resource and one verb"]


def _module(**attributes: object) -> ModuleType:
    module = ModuleType("app")
    for name, value in attributes.items():
        setattr(module, name, value)
    return module


def test_rbac_writes_is_read_from_the_app_module() -> None:
    rules = [{"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["create"]}]
    assert declared_writes(_module(RBAC_WRITES=rules)) == (
        DeclaredWrite(Rule(("",), ("configmaps", "secrets"), ("create",)), "RBAC_WRITES"),
    )
    assert declared_writes(_module(RBAC_WRITES=[])) == ()
    assert declared_writes(_module()) is None
    assert declared_writes(None) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("configmaps", "RBAC_WRITES must be a list of rules, got str"),
        (["configmaps"], "RBAC_WRITES[0] must be a mapping"),
        (
            [{"resources": ["configmaps"]}],
            'RBAC_WRITES[0] needs apiGroups ([""] is the core group)',
        ),
        (
            [{"resources": "configmaps", "verbs": ["get"]}],
            "RBAC_WRITES[0].resources must be a list",
        ),
        ([{"resources": ["a"], "verbs": [1]}], "RBAC_WRITES[0].verbs must be a list of strings"),
        ([{"resources": ["a"], "verbs": ["get"], "names": ["x"]}], "unknown fields ['names']"),
    ],
)
def test_a_malformed_rbac_writes_is_an_app_error(value: object, message: str) -> None:
    with pytest.raises(AppError) as raised:
        declared_writes(_module(RBAC_WRITES=value))
    assert message in str(raised.value)


def test_without_a_cluster_plurals_are_guessed_and_the_plan_says_why() -> None:
    resolutions = asyncio.run(resolve([WIDGET, Kind("v1", "Policy")], None, "no cluster"))
    assert [(r.resource.plural, r.resource.namespaced) for r in resolutions] == [
        ("widgets", True),
        ("policys", True),  # a guess is only a guess: the warning asks to check it
    ]
    plan = make_plan(Manager(), resolutions, writes=())
    assert plan.warnings() == [
        "Widget.example.com: plural guessed as 'widgets' (namespaced), because no cluster; "
        "check it before applying",
        "Policy: plural guessed as 'policys' (namespaced), because no cluster; "
        "check it before applying",
    ]


def _plan_for_yaml() -> Plan:
    mgr = _widgets(namespaces=["a"], leader_election=True, leader_election_namespace="ops")
    return make_plan(mgr, WIDGETS_SERVED, (DeclaredWrite(CONFIGMAP_WRITES, "RBAC_WRITES"),))


def test_the_yaml_is_the_same_objects_as_the_json_and_binds_the_service_account() -> None:
    plan = _plan_for_yaml()
    text = render_yaml(plan, "widgets", SUBJECT, ["made by a test"])
    documents = list(yaml.safe_load_all(text))
    assert documents == objects(plan, "widgets", SUBJECT)
    assert json.loads(render_json(plan, "widgets", SUBJECT))["items"] == documents
    assert [(d["kind"], d["metadata"].get("namespace")) for d in documents] == [
        ("ClusterRole", None),  # the token and access reviews only
        ("ClusterRoleBinding", None),
        ("Role", "a"),
        ("RoleBinding", "a"),
        ("Role", "ops"),
        ("RoleBinding", "ops"),
        ("ClusterRole", None),  # the debug endpoint's readers: not bound
    ]
    binding = documents[3]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "widgets",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "widgets", "namespace": "ops"}
    ]
    assert documents[2]["rules"][0] == {
        "apiGroups": ["example.com"],
        "resources": ["widgets"],
        "verbs": ["get", "list", "watch"],
    }


def test_every_rule_in_the_yaml_has_a_comment_saying_why() -> None:
    text = render_yaml(_plan_for_yaml(), "widgets", SUBJECT, ["x" * 150])
    lines = text.splitlines()
    assert lines[0].startswith("# xxx") and lines[1].startswith("#   xxx")
    assert all(len(line) <= 100 for line in lines)
    rule_starts = [
        i
        for i, line in enumerate(lines)
        if line.startswith(("  - apiGroups:", "  - nonResourceURLs:"))
    ]
    assert len(rule_starts) == 8
    assert [lines[i - 1] for i in rule_starts] == [
        *[f"  # {TOKENS_WHY}"] * 2,
        "  # Widget.example.com: for_() in controller widget",
        "  # ConfigMap: owns() in controller widget",
        "  # declared in RBAC_WRITES",
        "  # Events about the objects it reconciles",
        "  # leader election: the Lease ops/widgets.example.com",
        "  # GET on every path of the debug endpoint, which explain --from and tui --from read",
    ]


def test_a_cluster_role_and_its_binding_have_no_namespace() -> None:
    plan = make_plan(_widgets(), WIDGETS_SERVED, writes=())
    documents = list(yaml.safe_load_all(render_yaml(plan, "widgets", SUBJECT)))
    assert [d["kind"] for d in documents] == ["ClusterRole", "ClusterRoleBinding", "ClusterRole"]
    assert documents[1]["metadata"] == {"name": "widgets"}
    assert documents[1]["roleRef"]["kind"] == "ClusterRole"


def test_the_manager_may_review_tokens_and_the_debug_reader_role_is_left_unbound() -> None:
    plan = make_plan(_widgets(namespaces=["a"]), WIDGETS_SERVED, writes=())
    documents = objects(plan, "widgets", SUBJECT)
    [reviews, reviews_binding] = documents[:2]
    assert reviews["kind"] == "ClusterRole"
    assert reviews["rules"] == [
        {
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["tokenreviews"],
            "verbs": ["create"],
        },
        {
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["subjectaccessreviews"],
            "verbs": ["create"],
        },
    ]
    assert reviews_binding["subjects"] == [SUBJECT.as_subject()]
    reader = documents[-1]
    assert reader == {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "widgets-debug-reader"},
        # The authorizer reads a trailing * as a prefix, so this covers every endpoint path.
        "rules": [{"nonResourceURLs": ["/debug/ctrltrace/*"], "verbs": ["get"]}],
    }
    assert DEBUG_URLS == "/debug/ctrltrace/*"
    bound = {d["roleRef"]["name"] for d in documents if d["kind"].endswith("Binding")}
    assert "widgets-debug-reader" not in bound
    assert list(yaml.safe_load_all(render_yaml(plan, "widgets", SUBJECT))) == documents


@pytest.mark.parametrize(
    "tricky",
    [
        "", "*", "true", "No", "on", "null", "1.0", "0x1f", "a b", "x:y", "x:", "a: b", "a #b",
        "-1", "-", "- a", "--x=:1", "/p", "a,b", "[a]", "{a}", "&a", "!a", "'a'", "%a", "@a",
    ],
)  # fmt: skip
def test_scalars_that_yaml_would_misread_are_quoted(tricky: str) -> None:
    plan = make_plan(Manager(), [], (DeclaredWrite(Rule((tricky,), ("r",), ("get",)), "test"),))
    documents = list(yaml.safe_load_all(render_yaml(plan, tricky or "n", SUBJECT)))
    assert documents[0]["rules"][0]["apiGroups"] == [tricky]  # in a flow list
    assert documents[0]["metadata"]["name"] == (tricky or "n")  # a block value


APP = """
import ctrltrace as ct

mgr = ct.Manager(name="widgets", leader_election_id="widgets.example.com")

async def reconcile(ctx, request):
    return None

mgr.controller().for_("example.com/v1", "Widget").owns("v1", "ConfigMap").complete(reconcile)
RBAC_WRITES = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]
"""


@pytest.fixture
def app_file(tmp_path: Path) -> str:
    (tmp_path / "widgetsapp.py").write_text(APP)
    return str(tmp_path / "widgetsapp.py") + ":mgr"


def test_the_command_guesses_plurals_when_no_kubeconfig_exists_and_says_so(
    app_file: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        rbac_command,
        [app_file, "--kubeconfig", str(tmp_path / "missing"), "--service-account", "ops/w"],
    )
    assert result.exit_code == ExitCode.WARNINGS
    assert result.stderr.splitlines() == [
        "ctrltrace: warning: Widget.example.com: plural guessed as 'widgets' (namespaced), "
        f"because no cluster answered (kubeconfig {tmp_path / 'missing'} does not exist); "
        "check it before applying",
        "ctrltrace: warning: ConfigMap: plural guessed as 'configmaps' (namespaced), because "
        f"no cluster answered (kubeconfig {tmp_path / 'missing'} does not exist); check it "
        "before applying",
    ]
    assert "# WARNING: Widget.example.com: plural guessed" in result.stdout
    assert (
        "# The ClusterRole widgets-debug-reader lets a person read the debug endpoint"
        in result.stdout
    )
    assert "#   --clusterrole=widgets-debug-reader --user=alice" in result.stdout
    documents = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in documents] == ["ClusterRole", "ClusterRoleBinding", "ClusterRole"]
    assert documents[1]["subjects"][0] == {
        "kind": "ServiceAccount",
        "name": "w",
        "namespace": "ops",
    }


def test_the_command_guesses_plurals_when_the_server_does_not_answer(
    app_file: str, tmp_path: Path
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(config))
    result = CliRunner().invoke(
        rbac_command, [app_file, "--kubeconfig", str(kubeconfig), "--json", "--name", "w-rbac"]
    )
    assert result.exit_code == ExitCode.WARNINGS
    assert "cannot reach the API server" in result.stderr
    listing = json.loads(result.stdout)
    assert listing["kind"] == "List"
    assert [item["metadata"]["name"] for item in listing["items"]] == [
        "w-rbac",
        "w-rbac",
        "w-rbac-debug-reader",
    ]
    # The default subject is named after the manager, in "default" when nothing says otherwise.
    assert listing["items"][1]["subjects"][0]["name"] == "widgets"


@pytest.mark.parametrize("bad", ["widgets", "/widgets", "ops/", "a/b/c"])
def test_a_malformed_service_account_is_a_usage_error(app_file: str, bad: str) -> None:
    result = CliRunner().invoke(rbac_command, [app_file, "--service-account", bad])
    assert result.exit_code == ExitCode.USAGE
    assert "expected NAMESPACE/NAME" in result.output


def test_a_malformed_rbac_writes_is_reported_as_an_app_error(tmp_path: Path) -> None:
    (tmp_path / "badwrites.py").write_text(APP.replace('"verbs": ["create"]', '"verbs": "create"'))
    result = CliRunner().invoke(rbac_command, [str(tmp_path / "badwrites.py") + ":mgr"])
    assert result.exit_code == ExitCode.APP
    assert result.stderr == (
        "ctrltrace: error: RBAC_WRITES[0].verbs must be a list of strings, got 'create'\n"
    )
