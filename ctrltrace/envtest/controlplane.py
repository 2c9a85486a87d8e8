"""A real kube-apiserver and etcd on loopback, started and stopped like envtest does.

Owns what the two servers are (their flags, ports and key material), the admin kubeconfig, and
minting restricted identities bound to RBAC rules (returned once the authorizer applies them).
Their life as processes (temp dir, logs, retries on a taken port, the ``_reaper`` watchdog that
removes everything if the owner dies) is ``servers``'.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctrltrace.envtest.binaries import Binaries, find_binaries
from ctrltrace.envtest.servers import LoopbackServers, Server, free_port
from ctrltrace.pki import CertificateAuthority, KeyPair, service_account_signing_key

UNCACHED_RESOURCE = "podtemplates"
"""The one built-in kind the API server serves without its watch cache (from etcd)."""

PolicyRule = Mapping[str, Sequence[str]]
"""An RBAC rule as the API takes it: ``{"apiGroups": [""], "resources": [...], "verbs": [...]}``."""

GRANT_WAIT_S = 30.0
"""How long a grant may take to reach the API server's authorizer before that is an error."""


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, or a request to it failed."""


class ApiError(ControlPlaneError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class Identity:
    """A restricted identity: a kubeconfig whose user is bound to the given rules only."""

    name: str
    kubeconfig: Path
    subject: Mapping[str, str]


class ControlPlane(LoopbackServers):
    """etcd + kube-apiserver on loopback with RBAC on; usable as a context manager.

    >>> with ControlPlane() as cp:
    ...     print(cp.kubeconfig, cp.request("GET", "/version")["gitVersion"])
    """

    name = "envtest"
    error = ControlPlaneError

    def __init__(
        self,
        binaries: Binaries | None = None,
        *,
        kubeconfig: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(start_timeout=start_timeout)
        self._binaries = binaries
        self._requested_kubeconfig = kubeconfig
        self._ca: CertificateAuthority | None = None
        self.server = ""
        self.etcd_url = ""
        self.kubeconfig = Path()
        self._apiserver: Server | None = None

    # -- start-up ----------------------------------------------------------------------------

    def _start(self) -> None:
        self._binaries = self._binaries or find_binaries()
        self._write_pki()
        self._start_on_free_ports()
        self._write_kubeconfig()

    def _write_file(self, name: str, data: bytes) -> Path:
        path = self._path(name)
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def _write_pki(self) -> None:
        self._ca = CertificateAuthority()
        serving = self._ca.serving()
        admin = self._ca.client("ctrltrace-admin", ("system:masters",))
        sa = service_account_signing_key()
        self._write_file("ca.crt", self._ca.cert_pem)
        self._write_pair("serving", serving)
        self._write_pair("admin", admin)
        self._write_pair("sa", sa)

    def _write_pair(self, name: str, pair: KeyPair) -> None:
        self._write_file(f"{name}.crt", pair.cert_pem)
        self._write_file(f"{name}.key", pair.key_pem)

    def _launch(self, attempt: int) -> bool:
        """Start etcd then the apiserver; False when a port was taken meanwhile (retry)."""
        binaries = self._binaries
        assert binaries is not None  # found in _start
        client_port, peer_port, secure_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        data_dir = self._path(f"etcd-{attempt}")
        etcd = self._spawn(
            "etcd",
            [
                str(binaries.etcd),
                f"--data-dir={data_dir}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            attempt,
        )
        if not self._wait(etcd, lambda: _http_ok(f"{etcd_url}/health")):
            return False
        self.etcd_url = etcd_url
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={secure_port}",
                f"--cert-dir={self._path('certs')}",
                f"--tls-cert-file={self._path('serving.crt')}",
                f"--tls-private-key-file={self._path('serving.key')}",
                f"--client-ca-file={self._path('ca.crt')}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                # One kind served straight from etcd, as when the watch cache is off: a watch
                # resumed from a compacted version then gets 410 Gone (fault tests need one).
                f"--watch-cache-sizes={UNCACHED_RESOURCE}#0",
                f"--service-account-key-file={self._path('sa.crt')}",
                f"--service-account-signing-key-file={self._path('sa.key')}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--v=0",
            ],
            attempt,
        )
        self.server = f"https://127.0.0.1:{secure_port}"
        self._apiserver = apiserver
        return self._wait(apiserver, self._ready)

    def restart_apiserver(self) -> None:
        """Kill the API server (SIGKILL: no graceful shutdown, every connection dropped) and
        start it again on the same etcd, port and certificates; returns once it is ready.
        Blocks: from a test's event loop, call it through ``asyncio.to_thread``."""
        assert self._apiserver is not None, "control plane not started"
        self._apiserver = self._restart(self._apiserver, self._ready)

    def _ready(self) -> bool:
        try:
            self.request("GET", "/readyz")
        except (OSError, ControlPlaneError):
            return False
        return True

    # -- clients -----------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self._path("ca.crt")))
        context.load_cert_chain(self._path("admin.crt"), self._path("admin.key"))
        return context

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """An admin request to the apiserver; the decoded JSON (or text) of a 2xx answer."""
        host, port = self.server.removeprefix("https://").rsplit(":", 1)
        connection = http.client.HTTPSConnection(
            host, int(port), context=self._ssl_context(), timeout=10
        )
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": content_type, "Accept": "application/json"}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read().decode()
        finally:
            connection.close()
        if not 200 <= response.status < 300:
            raise ApiError(response.status, data.strip()[:500])
        try:
            return json.loads(data)
        except json.JSONDecodeError:
            return data

    def patch(self, path: str, patch: Mapping[str, Any]) -> Any:
        """A JSON merge patch, as the admin."""
        return self.request("PATCH", path, patch, "application/merge-patch+json")

    def compact(self, resource_version: str) -> None:
        """Compact etcd's history up to ``resource_version``, as the API server's periodic
        compaction does: a watch from an older version of an uncached kind gets 410 Gone."""
        body = json.dumps({"revision": resource_version, "physical": True}).encode()
        request = urllib.request.Request(  # noqa: S310  # our own etcd, on loopback
            f"{self.etcd_url}/v3/kv/compaction", data=body, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            answer.read()

    def admin_kubeconfig_via(self, server: str, path: Path) -> Path:
        """The admin's kubeconfig with another address for the API server (a proxy's)."""
        self._write_admin_kubeconfig(path, server)
        return path

    @staticmethod
    def kubeconfig_via(kubeconfig: Path, server: str, path: Path) -> Path:
        """A copy of ``kubeconfig`` (one written here, such as an ``Identity``'s) with another
        address for the API server (a proxy's)."""
        config = json.loads(kubeconfig.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = server
        path.touch(mode=0o600)
        path.write_text(json.dumps(config, indent=2))
        return path

    def _write_kubeconfig(self) -> None:
        self.kubeconfig = self._requested_kubeconfig or self._path("admin.kubeconfig")
        self._write_admin_kubeconfig(self.kubeconfig, self.server)

    def _write_admin_kubeconfig(self, path: Path, server: str) -> None:
        admin = KeyPair(self._path("admin.crt").read_bytes(), self._path("admin.key").read_bytes())
        _write_kubeconfig(
            path,
            server,
            self._path("ca.crt").read_bytes(),
            "ctrltrace-admin",
            {
                "client-certificate-data": _b64(admin.cert_pem),
                "client-key-data": _b64(admin.key_pem),
            },
        )

    # -- restricted identities ---------------------------------------------------------------

    def mint_identity(
        self,
        name: str,
        rules: Sequence[PolicyRule],
        *,
        namespace: str | None = None,
        service_account: bool = False,
    ) -> Identity:
        """A kubeconfig for a user (or service account) allowed exactly ``rules``.

        With ``namespace`` the rules are a Role in that namespace, else a ClusterRole. A
        service account lives in ``namespace`` (``default`` when none is given) and
        authenticates with a token from the TokenRequest API; a user with a client
        certificate signed by the cluster CA.
        """
        assert self._ca is not None, "control plane not started"
        sa_namespace = namespace or "default"
        if service_account:
            self._ensure_namespace(sa_namespace)
            self.request(
                "POST",
                f"/api/v1/namespaces/{sa_namespace}/serviceaccounts",
                {"metadata": {"name": name}},
            )
            token = self.request(
                "POST",
                f"/api/v1/namespaces/{sa_namespace}/serviceaccounts/{name}/token",
                {"spec": {"expirationSeconds": 86400}},
            )["status"]["token"]
            subject = {"kind": "ServiceAccount", "name": name, "namespace": sa_namespace}
            user: dict[str, str] = {"token": token}
        else:
            pair = self._ca.client(name)
            subject = {"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"}
            user = {
                "client-certificate-data": _b64(pair.cert_pem),
                "client-key-data": _b64(pair.key_pem),
            }
        self.grant(subject, rules, namespace=namespace, role_name=f"ctrltrace-{name}")
        path = self._path(f"identity-{name}.kubeconfig")
        _write_kubeconfig(path, self.server, self._path("ca.crt").read_bytes(), name, user)
        return Identity(name, path, subject)

    def grant(
        self,
        subject: Mapping[str, str],
        rules: Sequence[PolicyRule],
        *,
        namespace: str | None,
        role_name: str,
    ) -> None:
        """Bind ``subject`` (a User or a ServiceAccount) to a (Cluster)Role holding ``rules``,
        and return once the authorizer applies them (``wait_until_granted``)."""
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        if namespace is None:
            role_kind, scope = "ClusterRole", rbac
        else:
            self._ensure_namespace(namespace)
            role_kind, scope = "Role", f"{rbac}/namespaces/{namespace}"
        role_path, binding_path = (
            ("clusterroles", "clusterrolebindings")
            if namespace is None
            else ("roles", "rolebindings")
        )
        self.request(
            "POST", f"{scope}/{role_path}", {"metadata": {"name": role_name}, "rules": list(rules)}
        )
        self.request(
            "POST",
            f"{scope}/{binding_path}",
            {
                "metadata": {"name": role_name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": role_kind,
                    "name": role_name,
                },
                "subjects": [dict(subject)],
            },
        )
        self.wait_until_granted(subject, rules, namespace=namespace)

    def wait_until_granted(
        self, subject: Mapping[str, str], rules: Sequence[PolicyRule], *, namespace: str | None
    ) -> None:
        """Return once ``subject`` (a User or a ServiceAccount) may do what each of ``rules``
        allows (its first verb on its first resource or URL), in ``namespace`` or cluster-wide:
        proof that the (Cluster)Role holding them and its binding are in effect."""
        user = (
            f"system:serviceaccount:{subject['namespace']}:{subject['name']}"
            if subject["kind"] == "ServiceAccount"
            else subject["name"]
        )
        for rule in rules:
            self.wait_until_allowed(user, **_first_request(rule, namespace))

    def wait_until_allowed(self, user: str, **attributes: Mapping[str, str]) -> None:
        """Return once ``allowed(user, **attributes)``. The authorizer reads RBAC objects
        through informers, so a grant takes effect a moment after it is stored: a request made
        at once may still be refused. Raises ``ControlPlaneError`` after ``GRANT_WAIT_S``."""
        deadline = time.monotonic() + GRANT_WAIT_S
        while not self.allowed(user, **attributes):
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{user} is still refused {json.dumps(attributes, sort_keys=True)} after "
                    f"{GRANT_WAIT_S:g} s: no RBAC object grants it, or the API server's "
                    "authorizer has not seen the one that does"
                )
            time.sleep(0.1)

    def allowed(self, user: str, **attributes: Mapping[str, str]) -> bool:
        """Whether the authorizer lets ``user`` do what ``attributes`` say: a
        SubjectAccessReview's ``resourceAttributes=`` or ``nonResourceAttributes=``."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": user, **attributes},
        }
        answer = self.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        return bool(answer["status"].get("allowed"))

    def _ensure_namespace(self, namespace: str) -> None:
        try:
            self.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
        except ApiError as error:
            if error.status != 409:
                raise


def _first_request(rule: PolicyRule, namespace: str | None) -> dict[str, dict[str, str]]:
    """A request ``rule`` allows, as a SubjectAccessReview's attributes: its first verb on its
    first URL, or on its first resource (and name) of its first API group."""
    verb = rule["verbs"][0]
    if rule.get("nonResourceURLs"):
        return {"nonResourceAttributes": {"path": rule["nonResourceURLs"][0], "verb": verb}}
    resource, _, subresource = rule["resources"][0].partition("/")
    attributes = {"group": rule["apiGroups"][0], "resource": resource, "verb": verb}
    if subresource:
        attributes["subresource"] = subresource
    if rule.get("resourceNames"):
        attributes["name"] = rule["resourceNames"][0]
    if namespace is not None:
        attributes["namespace"] = namespace
    return {"resourceAttributes": attributes}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _write_kubeconfig(
    path: Path, server: str, ca_pem: bytes, user: str, credentials: Mapping[str, str]
) -> None:
    # JSON is YAML: every kubeconfig reader accepts it, and we need no YAML writer.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "envtest",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": dict(credentials)}],
        "contexts": [{"name": user, "context": {"cluster": "envtest", "user": user}}],
        "current-context": user,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(config, indent=2))


def _http_ok(url: str) -> bool:
    host_port = url.removeprefix("http://").split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        connection.request("GET", "/" + url.split("/", 3)[3])
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()
