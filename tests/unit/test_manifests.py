"""`ctrltrace manifests` without a cluster: the objects it prints, their YAML, and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from ctrltrace.cli import ExitCode
from ctrltrace.cli.manifests import ENTRYPOINT, RUN_AS, check_image, manifests_command

EXAMPLES = Path(__file__).parents[2] / "examples"
DOCKERFILE = EXAMPLES / "Dockerfile"
IMAGE = "registry.example.com/widgets:0.1.0"


@pytest.fixture
def app_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    # A fresh module each time: the loaded manager takes the command line's overrides.
    (tmp_path / "manifestsapp.py").write_text((EXAMPLES / "widgets.py").read_text())
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_TRACES_SAMPLER",
    ):
        monkeypatch.delenv(name, raising=False)
    # No cluster: plurals are guessed, which is a warning (exit 1) and changes nothing else.
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    return str(tmp_path / "manifestsapp.py") + ":mgr"


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(manifests_command, list(args))


def _documents(*args: str) -> list[dict[str, Any]]:
    result = _invoke(*args)
    assert result.exit_code == ExitCode.WARNINGS, result.output  # the guessed plurals only
    assert "plural guessed" in result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    as_json = _invoke(*args, "--json")
    assert json.loads(as_json.stdout)["items"] == documents
    return documents


def _container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = [d for d in documents if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_a_service_account_the_rbac_and_a_deployment_running_ctrltrace_run(app_file: str) -> None:
    documents = _documents(app_file, "--image", IMAGE, "--service-account", "ops/widgets-sa")
    assert [(d["kind"], d["metadata"].get("namespace")) for d in documents] == [
        ("ServiceAccount", "ops"),
        ("ClusterRole", None),  # watches, Events, writes, token reviews: a cluster-wide manager
        ("ClusterRoleBinding", None),
        ("Role", "ops"),  # the Lease, in the pod's namespace
        ("RoleBinding", "ops"),
        ("ClusterRole", None),  # the debug endpoint's readers
        ("Deployment", "ops"),
    ]
    assert documents[0]["metadata"]["name"] == "widgets-sa"
    assert documents[2]["subjects"] == [
        {"kind": "ServiceAccount", "name": "widgets-sa", "namespace": "ops"}
    ]
    assert documents[3]["rules"][0]["resources"] == ["leases"]
    deployment = documents[-1]
    assert deployment["metadata"]["name"] == "widgets"
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    labels = spec["selector"]["matchLabels"]
    assert spec["template"]["metadata"]["labels"] == labels == {"app.kubernetes.io/name": "widgets"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "widgets-sa"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == RUN_AS
    container = _container(documents)
    assert container["image"] == IMAGE
    assert container["command"] == ["ctrltrace", "run"]
    assert container["args"] == [
        app_file,
        "--leader-elect",
        "--metrics-bind-address=:8080",
        "--health-probe-bind-address=:8081",
        "--debug-bind-address=:8082",
        "--journal=/var/lib/ctrltrace/journal.sqlite",
        "--journal-max-size=256",
    ]
    assert container["ports"] == [
        {"name": "metrics", "containerPort": 8080},
        {"name": "health", "containerPort": 8081},
        {"name": "debug", "containerPort": 8082},
    ]
    assert container["livenessProbe"] == {"httpGet": {"path": "/healthz", "port": "health"}}
    assert container["readinessProbe"] == {"httpGet": {"path": "/readyz", "port": "health"}}
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # The journal's volume leaves room above the limit; /tmp is writable, in memory.
    assert container["volumeMounts"] == [
        {"name": "journal", "mountPath": "/var/lib/ctrltrace"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    assert pod["volumes"] == [
        {"name": "journal", "emptyDir": {"sizeLimit": "384Mi"}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]


def test_the_debug_endpoint_serves_a_tls_secret_when_given_one(app_file: str) -> None:
    args = [app_file, "--image", IMAGE, "--namespace", "a"]
    result = _invoke(*args)
    assert "--insecure-skip-tls-verify" in result.stdout.split("\n---")[0]  # the header
    assert "--debug-cert-dir=/etc/ctrltrace/debug-tls" not in _container(_documents(*args))["args"]
    documents = _documents(*args, "--debug-cert-secret", "widgets-debug-tls")
    container = _container(documents)
    assert "--debug-cert-dir=/etc/ctrltrace/debug-tls" in container["args"]
    assert container["volumeMounts"][-1] == {
        "name": "debug-tls",
        "mountPath": "/etc/ctrltrace/debug-tls",
        "readOnly": True,
    }
    volumes = documents[-1]["spec"]["template"]["spec"]["volumes"]
    assert volumes[-1] == {"name": "debug-tls", "secret": {"secretName": "widgets-debug-tls"}}
    header = _invoke(*args, "--debug-cert-secret", "widgets-debug-tls").stdout.split("\n---")[0]
    assert "with the Secret widgets-debug-tls (tls.crt, tls.key)" in " ".join(
        line.lstrip("# ") for line in header.splitlines()
    )


def test_each_replica_names_itself_in_its_spans_and_no_endpoint_is_invented(app_file: str) -> None:
    env = _env(_container(_documents(app_file, "--image", IMAGE)))
    assert list(env) == [
        "POD_NAME",
        "POD_NAMESPACE",
        "POD_UID",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
    ]
    assert env["POD_UID"] == {"fieldRef": {"fieldPath": "metadata.uid"}}
    assert env["OTEL_SERVICE_NAME"] == "widgets"
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == (
        "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE),"
        "service.instance.id=$(POD_UID)"
    )


def test_otel_variables_come_from_the_environment_or_the_option_but_never_headers(
    app_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.observability:4318")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer s3cr3t-t0ken")
    result = _invoke(app_file, "--image", IMAGE)
    env = _env(_container(list(yaml.safe_load_all(result.stdout))))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector.observability:4318"
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert "OTEL_EXPORTER_OTLP_HEADERS" not in env
    assert "s3cr3t-t0ken" not in result.stdout
    assert "# OTEL_EXPORTER_OTLP_ENDPOINT comes from the environment that printed this" in (
        result.stdout
    )
    given = _invoke(app_file, "--image", IMAGE, "--otlp-endpoint", "http://jaeger.tracing:4318")
    env = _env(_container(list(yaml.safe_load_all(given.stdout))))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger.tracing:4318"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT comes from the environment" not in given.stdout


def test_the_manager_overrides_reach_the_pod_and_size_the_journal(app_file: str) -> None:
    documents = _documents(
        app_file, "--image", IMAGE, "--namespace", "a", "--journal-max-size", "100",
        "--leader-election-id", "w.example.com", "--name", "w", "--replicas", "3",
    )  # fmt: skip
    # A namespaced manager: its Roles, and the pod, in the namespace it caches.
    assert [(d["kind"], d["metadata"].get("namespace")) for d in documents] == [
        ("ServiceAccount", "a"),
        ("ClusterRole", None),  # the token reviews only
        ("ClusterRoleBinding", None),
        ("Role", "a"),  # with the Lease: an unset Lease namespace is the pod's own
        ("RoleBinding", "a"),
        ("ClusterRole", None),
        ("Deployment", "a"),
    ]
    assert documents[3]["rules"][-1]["resources"] == ["leases"]
    assert documents[-1]["spec"]["replicas"] == 3
    assert documents[-1]["metadata"]["name"] == "w"
    assert documents[0]["metadata"]["name"] == "widgets"  # the account: the manager's name
    container = _container(documents)
    assert container["args"][-4:] == [
        "--journal=/var/lib/ctrltrace/journal.sqlite",
        "--journal-max-size=100",
        "--namespace=a",
        "--leader-election-id=w.example.com",
    ]
    volumes = documents[-1]["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["emptyDir"] == {"sizeLimit": "150Mi"}


def test_the_yaml_stays_within_100_columns_and_says_where_it_goes(app_file: str) -> None:
    result = _invoke(app_file, "--image", IMAGE, "--namespace", "demo")
    lines = result.stdout.splitlines()
    assert all(len(line) <= 100 for line in lines if line.startswith("#"))
    assert lines[0].startswith("# Manifests for the ctrltrace manager 'widgets' (")
    assert "# Into the namespace demo, which must exist (it is not created here)." in lines
    # The run arguments do not fit one line: one per line.
    start = lines.index("          args:")
    assert lines[start + 1 : start + 4] == [
        f"            - {app_file}",
        "            - --leader-elect",
        "            - --metrics-bind-address=:8080",
    ]


def test_the_dockerfile_runs_what_the_deployment_expects() -> None:
    text = DOCKERFILE.read_text()
    [entrypoint] = re.findall(r"^ENTRYPOINT (.+)$", text, re.MULTILINE)
    assert tuple(json.loads(entrypoint)) == ENTRYPOINT
    [user] = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user == f"{RUN_AS}:{RUN_AS}"  # numeric, so that the kubelet can check runAsNonRoot
    assert re.search(r"^FROM python:3\.\d+-slim$", text, re.MULTILINE)


@pytest.mark.parametrize(
    "image",
    [
        "widgets",
        "widgets:0.1.0",
        "registry.example.com:5000/team/widgets:v1.2.3-rc.1",
        "localhost/widgets@sha256:" + "a" * 64,
        "ghcr.io/o/my_widgets__x:latest",
    ],
)
def test_image_references_are_accepted(image: str) -> None:
    assert check_image(image) == image


@pytest.mark.parametrize(
    "image", ["", "Widgets", "a b", "widgets:", "widgets@sha256:12", "-w", "r.io//w", "w:-x"]
)
def test_a_bad_image_is_a_usage_error_on_one_line(app_file: str, image: str) -> None:
    result = _invoke(app_file, "--image", image)
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr == (
        f"ctrltrace: error: --image {image!r} is not an image reference "
        "(like registry.example.com/widgets:0.1.0, the path in lower case)\n"
    )
    assert not result.stdout


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("no_such_module_here:mgr", "no module named 'no_such_module_here'"),
        ("json:__name__", "json:__name__ is a str, not a ctrltrace.Manager"),
        ("json:dumps", "json:dumps failed as a factory: TypeError: dumps() missing 1 required"),
    ],
)
def test_an_app_that_is_not_a_manager_is_an_app_error(app: str, message: str) -> None:
    result = _invoke(app, "--image", IMAGE)
    assert result.exit_code == ExitCode.APP
    [line] = result.stderr.splitlines()
    assert line.startswith("ctrltrace: error: ") and message in line
    assert not result.stdout


def test_the_command_is_listed_in_the_group() -> None:
    from ctrltrace.cli import main

    result = CliRunner().invoke(main, ["manifests", "--help"])
    assert result.exit_code == 0
    assert "--image" in result.output and "Exit codes:" in result.output


def test_every_flag_the_deployment_passes_is_one_ctrltrace_run_takes(app_file: str) -> None:
    from ctrltrace.cli.run import run

    documents = _documents(
        app_file, "--image", IMAGE, "--namespace", "a", "--debug-cert-secret", "s"
    )
    args = _container(documents)["args"]
    taken = {option for parameter in run.params for option in parameter.opts}
    flags = {arg.partition("=")[0] for arg in args[1:]}
    assert flags <= taken
    assert "--debug-cert-dir" in flags
    assert {"--leader-elect", "--journal", "--journal-max-size", "--namespace"} <= flags


def test_a_journal_size_below_one_mib_is_a_usage_error(app_file: str) -> None:
    result = _invoke(app_file, "--image", IMAGE, "--journal-max-size", "0")
    assert result.exit_code == ExitCode.USAGE
    assert "--journal-max-size" in result.stderr and not result.stdout


def test_no_leader_election_is_refused_as_replicas_would_each_reconcile(app_file: str) -> None:
    result = _invoke(app_file, "--image", IMAGE, "--no-leader-elect")
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.startswith("ctrltrace: error: manifests runs its replicas with leader")
    assert len(result.stderr.splitlines()) == 1 and not result.stdout
