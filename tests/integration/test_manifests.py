"""`ctrltrace manifests` against the real API server: what it prints passes server-side
validation (dryRun=All, strict fields), is created for real by server-side apply, and its RBAC
grants what it says (asked with SubjectAccessReviews).

No pod runs: the control plane has no scheduler or kubelet. The Deployment is checked as the
API server stored it.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from click.testing import CliRunner

from ctrltrace.cli import ExitCode
from ctrltrace.cli.manifests import manifests_command
from ctrltrace.envtest import ApiError, ControlPlane
from ctrltrace.envtest.pytest_plugin import unique_name

APP = "examples.widgets:mgr"
IMAGE = "registry.example.com/widgets:0.1.0"
APPLY = "application/apply-patch+yaml"


def _path(document: dict[str, Any]) -> str:
    """Where the API server serves ``document``: every kind printed here pluralizes with "s"."""
    api_version, meta = document["apiVersion"], document["metadata"]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    scope = f"{base}/namespaces/{meta['namespace']}" if "namespace" in meta else base
    return f"{scope}/{document['kind'].lower()}s/{meta['name']}"


def _apply(plane: ControlPlane, document: dict[str, Any], *query: str) -> Any:
    """``kubectl apply --server-side`` of one object; strict: an unknown field is an error."""
    params = "&".join(("fieldManager=ctrltrace-test", "fieldValidation=Strict", *query))
    return plane.request("PATCH", f"{_path(document)}?{params}", document, APPLY)


def _apply_text(plane: ControlPlane, tmp_path: Path, text: str, *query: str) -> None:
    """``_apply`` of one YAML document as printed: the API server reads the text with the YAML
    parser kubectl uses, not the one this test reads it with."""
    document = yaml.safe_load(text)
    config = json.loads(plane.kubeconfig.read_text())  # JSON: written by the control plane
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    cert, key = tmp_path / "admin.crt", tmp_path / "admin.key"
    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    context.load_cert_chain(cert, key)
    server = urlsplit(cluster["server"])
    connection = http.client.HTTPSConnection(
        server.hostname or "", server.port, context=context, timeout=10
    )
    params = "&".join(("fieldManager=ctrltrace-test", "fieldValidation=Strict", *query))
    try:
        connection.request(
            "PATCH",
            f"{_path(document)}?{params}",
            body=text.encode(),
            headers={"Content-Type": APPLY, "Accept": "application/json"},
        )
        answer = connection.getresponse()
        reply = answer.read().decode()
    finally:
        connection.close()
    assert 200 <= answer.status < 300, reply[:800]


def _within(printed: Any, stored: Any) -> bool:
    """Whether ``stored`` has everything ``printed`` has (the server adds its defaults)."""
    if isinstance(printed, dict):
        return isinstance(stored, dict) and all(
            key in stored and _within(value, stored[key]) for key, value in printed.items()
        )
    if isinstance(printed, list):
        return (
            isinstance(stored, list)
            and len(printed) == len(stored)
            and all(_within(a, b) for a, b in zip(printed, stored, strict=True))
        )
    return bool(printed == stored)


def test_the_manifests_pass_a_dry_run_then_apply_and_grant_what_they_say(
    control_plane: ControlPlane,
    kube_namespace: str,
    widget_crd: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delitem(sys.modules, "examples.widgets", raising=False)  # a fresh Manager
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    namespace, name = kube_namespace, unique_name("widgets")  # ClusterRoles: a unique name
    result = CliRunner().invoke(
        manifests_command,
        [
            APP, "--image", IMAGE, "--kubeconfig", str(control_plane.kubeconfig),
            "--service-account", f"{namespace}/widgets", "--name", name,
            "--otlp-endpoint", "http://jaeger.tracing:4318",
            "--debug-cert-secret", "widgets-debug-tls",
        ],
    )  # fmt: skip
    assert result.exit_code == ExitCode.OK, result.output  # plurals served, writes declared
    documents = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in documents] == [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "Deployment",
    ]

    # Each document as printed, comments and all: what `kubectl apply -f` would send.
    texts = result.stdout.split("\n---\n")[1:]
    assert [yaml.safe_load(text) for text in texts] == documents
    for text in texts:
        _apply_text(control_plane, tmp_path, text, "dryRun=All")
    deployment = documents[-1]
    with pytest.raises(ApiError) as missing:  # a dry run stores nothing
        control_plane.request("GET", _path(deployment))
    assert missing.value.status == 404

    for text in texts:
        _apply_text(control_plane, tmp_path, text)
    stored = control_plane.request("GET", _path(deployment))
    assert stored["spec"]["replicas"] == 2
    [container] = stored["spec"]["template"]["spec"]["containers"]
    [printed] = deployment["spec"]["template"]["spec"]["containers"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [
        ("metrics", 8080),
        ("health", 8081),
        ("debug", 8082),
    ]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for field in ("ports", "livenessProbe", "readinessProbe", "args", "command", "env"):
        assert _within(printed[field], container[field]), (field, container[field])
    assert _within(deployment["spec"], stored["spec"]), json.dumps(stored["spec"], indent=2)

    # The manager's account may check tokens and read its kinds; a person bound to the reader
    # role may read the debug endpoint's paths, and nothing else.
    account = f"system:serviceaccount:{namespace}:widgets"
    for group, resource in (
        ("authentication.k8s.io", "tokenreviews"),
        ("authorization.k8s.io", "subjectaccessreviews"),
    ):
        attributes = {"group": group, "resource": resource, "verb": "create"}
        control_plane.wait_until_allowed(account, resourceAttributes=attributes)
    widgets = {"group": "example.com", "resource": "widgets", "verb": "watch"}
    control_plane.wait_until_allowed(account, resourceAttributes=widgets)
    lease = {"group": "coordination.k8s.io", "resource": "leases", "verb": "update"}
    control_plane.wait_until_allowed(account, resourceAttributes={**lease, "namespace": namespace})

    reader, role = unique_name("reader"), f"{name}-debug-reader"
    explain = {"path": "/debug/ctrltrace/explain", "verb": "get"}
    assert not control_plane.allowed(reader, nonResourceAttributes=explain)
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": reader},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": reader}],
    }
    _apply(control_plane, binding)
    paths = ("explain", "state", "records", "evidence/watches")
    for path in (f"/debug/ctrltrace/{path}" for path in paths):
        control_plane.wait_until_allowed(
            reader, nonResourceAttributes={"path": path, "verb": "get"}
        )
    assert not control_plane.allowed(reader, nonResourceAttributes={**explain, "verb": "post"})
    assert not control_plane.allowed(
        reader, nonResourceAttributes={"path": "/debug/pprof", "verb": "get"}
    )
