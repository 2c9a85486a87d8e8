"""``ctrltrace manifests``: what runs a controller in a cluster, for ``kubectl apply -f -``.

Owns the ServiceAccount and the Deployment printed around the RBAC of ``ctrltrace rbac``
(planned and rendered there: one mechanism), the flags the Deployment runs ``ctrltrace run``
with, the OpenTelemetry variables it sets, and the check of the image reference. Loads the app
and asks discovery as ``rbac`` does; never starts the manager and never writes to the cluster.
The namespace is not created: it is assumed to exist.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import click

from ctrltrace.cli.app import AppArgs, app_parameters
from ctrltrace.cli.errors import CommandError, ExitCode
from ctrltrace.cli.options import journal_max_size_option
from ctrltrace.rbac import (
    Granted,
    Subject,
    grant_for,
    json_list,
    objects,
    reader_hint,
    render_yaml,
    subject_option,
    yaml_documents,
)

ENTRYPOINT = ("ctrltrace", "run")  # the Deployment's command, and examples/Dockerfile's
RUN_AS = 65532  # a non-root uid, as examples/Dockerfile's USER
REPLICAS = 2  # one leads, one stands by to take the Lease over
JOURNAL_DIR = "/var/lib/ctrltrace"  # an emptyDir: the root filesystem is read-only
# The debug endpoint (bound off loopback: it asks for tokens) serves https with a certificate
# from a Secret mounted here (--debug-cert-secret), or else a self-signed one whose key it keeps
# in memory (it writes none to any filesystem).
DEBUG_CERT_DIR = "/etc/ctrltrace/debug-tls"
TMP_DIR = "/tmp"  # noqa: S108  # the pod's own, in memory: writable under a read-only root
# Each port's name and number, and the ``run`` flag that binds it on every address.
PORTS = (
    ("metrics", 8080, "--metrics-bind-address"),
    ("health", 8081, "--health-probe-bind-address"),
    ("debug", 8082, "--debug-bind-address"),
)
# Each replica names itself in its spans, from the downward API.
POD_FIELDS = (
    ("POD_NAME", "metadata.name"),
    ("POD_NAMESPACE", "metadata.namespace"),
    ("POD_UID", "metadata.uid"),
)
RESOURCE_ATTRIBUTES = (
    "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE),service.instance.id=$(POD_UID)"
)
# Copied from the environment that generates the manifests. Not OTEL_EXPORTER_OTLP_HEADERS:
# headers often carry credentials, which belong in a Secret, not in a printed manifest.
CARRIED_OTEL = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
)
_LABEL = "app.kubernetes.io/name"

# A container image reference, as the distribution/reference grammar has it:
# [host[:port]/]path[:tag][@digest], the path in lower case.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IMAGE = re.compile(
    rf"(?:{_HOST_PART}(?:\.{_HOST_PART})*(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::\w[\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)


def check_image(image: str) -> str:
    """``image`` when it is a valid reference; else a usage error saying what one looks like."""
    if not _IMAGE.fullmatch(image) or len(image.partition("@")[0].rpartition(":")[0]) > 255:
        raise CommandError(
            f"--image {image!r} is not an image reference "
            "(like registry.example.com/widgets:0.1.0, the path in lower case)",
            ExitCode.USAGE,
        )
    return image


def volume_size_mib(journal_max_size: int) -> int:
    """The journal volume's sizeLimit: retention keeps the journal file under its limit, but
    its WAL (up to 4 MiB after each checkpoint, more between two) sits beside it, and the
    kubelet evicts a pod whose emptyDir outgrows the volume's limit; half again leaves room."""
    return journal_max_size + (journal_max_size + 1) // 2


@dataclasses.dataclass(frozen=True)
class Deployed:
    """How the Deployment runs the manager: what the command line gave beside the app."""

    image: str
    replicas: int
    journal_max_size: int  # MiB
    otel: Mapping[str, str]  # OTEL_* variables beyond the service name and resource
    debug_cert_secret: str | None = None  # a kubernetes.io/tls Secret for the debug endpoint


def run_args(args: AppArgs, deployed: Deployed) -> list[str]:
    """``ctrltrace run``'s arguments in the pod: the app, the fixed flags, and the manager
    overrides the command line gave (kubeconfig and context: the pod's own account)."""
    flags = [args.app, "--leader-elect", *(f"{flag}=:{port}" for _, port, flag in PORTS)]
    flags += [
        f"--journal={JOURNAL_DIR}/journal.sqlite",
        f"--journal-max-size={deployed.journal_max_size}",
    ]
    if deployed.debug_cert_secret:
        flags.append(f"--debug-cert-dir={DEBUG_CERT_DIR}")
    flags += [f"--namespace={namespace}" for namespace in args.namespaces]
    if args.leader_election_id:
        flags.append(f"--leader-election-id={args.leader_election_id}")
    if args.leader_election_namespace:
        flags.append(f"--leader-election-namespace={args.leader_election_namespace}")
    return flags


def service_account_object(subject: Subject) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": subject.name, "namespace": subject.namespace},
    }


def deployment(granted: Granted, args: AppArgs, deployed: Deployed) -> dict[str, Any]:
    """The Deployment running ``ctrltrace run`` as ``granted``'s service account."""
    subject, labels = granted.subject, {_LABEL: granted.name}
    env: list[dict[str, Any]] = [
        {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}} for name, path in POD_FIELDS
    ]
    otel = {
        "OTEL_SERVICE_NAME": granted.app.manager.name,
        "OTEL_RESOURCE_ATTRIBUTES": RESOURCE_ATTRIBUTES,  # after POD_*: $(VAR) sees earlier ones
        **deployed.otel,
    }
    env += [{"name": name, "value": value} for name, value in otel.items()]
    mounts: list[dict[str, Any]] = [
        {"name": "journal", "mountPath": JOURNAL_DIR},
        {"name": "tmp", "mountPath": TMP_DIR},
    ]
    container = {
        "name": "manager",
        "image": deployed.image,
        "command": list(ENTRYPOINT),
        "args": run_args(args, deployed),
        "env": env,
        "ports": [{"name": name, "containerPort": port} for name, port, _ in PORTS],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "health"}},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "health"}},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    size = f"{volume_size_mib(deployed.journal_max_size)}Mi"
    volumes: list[dict[str, Any]] = [
        {"name": "journal", "emptyDir": {"sizeLimit": size}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]
    if deployed.debug_cert_secret:
        mounts.append({"name": "debug-tls", "mountPath": DEBUG_CERT_DIR, "readOnly": True})
        volumes.append({"name": "debug-tls", "secret": {"secretName": deployed.debug_cert_secret}})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": granted.name, "namespace": subject.namespace, "labels": labels},
        "spec": {
            "replicas": deployed.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": subject.name,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def debug_tls_hint(secret: str | None) -> list[str]:
    """The header's lines on the debug endpoint's certificate."""
    if secret:
        return [
            f"The debug endpoint serves https with the Secret {secret} (tls.crt, tls.key), "
            f"mounted at {DEBUG_CERT_DIR}; verify it with --certificate-authority (its ca.crt)."
        ]
    return [
        "The debug endpoint serves https with a self-signed certificate made at start (its "
        "SHA-256 fingerprint is in the log): read it with --insecure-skip-tls-verify. For a "
        "cert-manager Certificate's Secret instead, mount it (tls.crt, tls.key) at "
        f"{DEBUG_CERT_DIR} and add --debug-cert-dir={DEBUG_CERT_DIR}: --debug-cert-secret NAME "
        "prints that."
    ]


def carried_otel(endpoint: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The OTEL_* variables the pod gets from this environment, and ``--otlp-endpoint``."""
    carried = {name: environ[name] for name in CARRIED_OTEL if environ.get(name)}
    if endpoint:
        carried["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    return carried


@click.command("manifests")
@app_parameters
@click.option("--image", required=True, help="The image with the app and ctrltrace installed.")
@subject_option("Run as, and bind to, this service account (default: named after the manager).")
@click.option(
    "--name",
    "role_name",
    help="Name of the Deployment, roles and bindings (default: the manager's).",
)
@click.option(
    "--replicas",
    default=REPLICAS,
    show_default=True,
    type=click.IntRange(min=1),
    help="Replicas; one leads.",
)
@journal_max_size_option()
@click.option(
    "--otlp-endpoint",
    help="The pod's OTEL_EXPORTER_OTLP_ENDPOINT (default: this environment's, if set).",
)
@click.option(
    "--debug-cert-secret",
    metavar="SECRET",
    help="A kubernetes.io/tls Secret (as cert-manager writes) for the debug endpoint's https, "
    f"mounted at {DEBUG_CERT_DIR} (default: a self-signed certificate made at start).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a v1 List as JSON instead of YAML.")
def manifests_command(
    args: AppArgs,
    *,
    image: str,
    service_account: Subject | None,
    role_name: str | None,
    replicas: int,
    journal_max_size: int,
    otlp_endpoint: str | None,
    debug_cert_secret: str | None,
    as_json: bool,
) -> None:
    """Print what runs the Manager APP (MODULE:ATTR) in a cluster, for `kubectl apply -f -`.

    A ServiceAccount, the RBAC `ctrltrace rbac` prints bound to it, and a Deployment running
    `ctrltrace run APP` in IMAGE with leader election, probes on the health port, the metrics
    and debug ports named, the journal on an emptyDir sized to --journal-max-size, and OTEL_*
    variables. The namespace (the service account's) must exist already. APP is imported in
    the image, so give it as the image has it (a module path, like examples.widgets:mgr).
    """
    check_image(image)
    if args.leader_elect is False:
        raise CommandError(
            "manifests runs its replicas with leader election: --no-leader-elect would let "
            "each of them reconcile",
            ExitCode.USAGE,
        )
    args = dataclasses.replace(args, leader_elect=True)
    granted = grant_for(args, service_account, role_name, in_pod=True)
    otel = carried_otel(otlp_endpoint, os.environ)
    deployed = Deployed(image, replicas, journal_max_size, otel, debug_cert_secret)
    subject, plan = granted.subject, granted.plan
    account, running = service_account_object(subject), deployment(granted, args, deployed)
    if as_json:
        click.echo(json_list([account, *objects(plan, granted.name, subject), running]))
    else:
        header = [
            f"Manifests for the ctrltrace manager {granted.app.manager.name!r} ({args.app}), "
            "from `ctrltrace manifests`.",
            f"Into the namespace {subject.namespace}, which must exist (it is not created here).",
            f"The Deployment {granted.name} runs `ctrltrace run` in {image} as "
            f"{subject.namespace}/{subject.name}, replicas: {replicas}, one leading at a time.",
            reader_hint(granted.name),
            *debug_tls_hint(debug_cert_secret),
            *(
                f"{name} comes from the environment that printed this"
                for name in otel
                if name != "OTEL_EXPORTER_OTLP_ENDPOINT" or not otlp_endpoint
            ),
            *(f"WARNING: {warning}" for warning in plan.warnings()),
        ]
        click.echo(
            yaml_documents([account], header)
            + render_yaml(plan, granted.name, subject)
            + yaml_documents([running]),
            nl=False,
        )
    granted.exit_with_warnings()
