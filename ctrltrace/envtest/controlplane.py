"""A real kube-apiserver and etcd on loopback, started and stopped like envtest does.

Owns the two processes, their ports, temp dirs, key material and the admin kubeconfig, plus
minting restricted identities bound to RBAC rules. A watchdog process (``_reaper``) removes
everything if the owner dies without cleaning up.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from ctrltrace.envtest.binaries import Binaries, find_binaries
from ctrltrace.envtest.pki import CertificateAuthority, KeyPair, service_account_signing_key
from ctrltrace.envtest.watchdog import Watchdog

PolicyRule = Mapping[str, Sequence[str]]
"""An RBAC rule as the API takes it: ``{"apiGroups": [""], "resources": [...], "verbs": [...]}``."""

_PORT_RETRIES = 5
_LOG_TAIL_LINES = 20


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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Server:
    """One child process with its output captured in a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        # A session of its own: Ctrl-C in the terminal reaches the owner, which then stops
        # the apiserver before etcd instead of both dying in arbitrary order.
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def exited(self) -> bool:
        return self.process.poll() is not None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def port_taken(self) -> bool:
        return "address already in use" in self.log_path.read_text(errors="replace")

    def stop(self, grace: float = 10.0) -> None:
        if not self.exited():
            self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class ControlPlane:
    """etcd + kube-apiserver on loopback with RBAC on; usable as a context manager.

    >>> with ControlPlane() as cp:
    ...     print(cp.kubeconfig, cp.request("GET", "/version")["gitVersion"])
    """

    def __init__(
        self,
        binaries: Binaries | None = None,
        *,
        kubeconfig: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self._binaries = binaries
        self._requested_kubeconfig = kubeconfig
        self._start_timeout = start_timeout
        self._dir: Path | None = None
        self._servers: list[_Server] = []
        self._watchdog: Watchdog | None = None
        self._ca: CertificateAuthority | None = None
        self.server = ""
        self.kubeconfig = Path()
        self.startup_seconds = 0.0

    @property
    def pids(self) -> list[int]:
        """Process ids of everything this control plane runs (servers and watchdog)."""
        watchdog = [] if self._watchdog is None else [self._watchdog.process.pid]
        return [server.process.pid for server in self._servers] + watchdog

    @property
    def workdir(self) -> Path | None:
        return self._dir

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        started = time.monotonic()
        binaries = self._binaries or find_binaries()
        self._watchdog = Watchdog()
        self._dir = Path(tempfile.mkdtemp(prefix="ctrltrace-envtest-"))
        self._watchdog.watch_dir(self._dir)
        try:
            self._write_pki()
            self._start_on_free_ports(binaries)
            self._write_kubeconfig()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        self._stop_servers()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        if self._watchdog is not None:
            self._watchdog.done()
            self._watchdog = None

    # -- start-up ----------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        assert self._dir is not None
        return self._dir / name

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

    def _start_on_free_ports(self, binaries: Binaries) -> None:
        # A port chosen free can be taken before the server binds it: choose again.
        for attempt in range(_PORT_RETRIES):
            if self._start_servers(binaries, attempt):
                return
        raise ControlPlaneError(f"could not bind free ports after {_PORT_RETRIES} tries")

    def _start_servers(self, binaries: Binaries, attempt: int) -> bool:
        """Start etcd then the apiserver; False when a port was taken meanwhile (retry)."""
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
                f"--service-account-key-file={self._path('sa.crt')}",
                f"--service-account-signing-key-file={self._path('sa.key')}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--v=0",
            ],
            attempt,
        )
        self.server = f"https://127.0.0.1:{secure_port}"
        return self._wait(apiserver, self._ready)

    def _spawn(self, name: str, argv: list[str], attempt: int) -> _Server:
        server = _Server(name, argv, self._path(f"{name}-{attempt}.log"))
        self._servers.append(server)
        assert self._watchdog is not None
        self._watchdog.watch_pid(server.process.pid)
        return server

    def _wait(self, server: _Server, ready: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if server.exited():
                if server.port_taken():
                    self._stop_servers()
                    return False
                raise ControlPlaneError(
                    f"{server.name} exited with code {server.process.returncode} during "
                    f"start-up; last lines of its log:\n{server.log_tail()}"
                )
            if ready():
                return True
            time.sleep(0.1)
        raise ControlPlaneError(
            f"{server.name} not ready after {self._start_timeout:.0f}s; last lines of its log:\n"
            f"{server.log_tail()}"
        )

    def _stop_servers(self) -> None:
        for server in reversed(self._servers):
            server.stop()
        self._servers.clear()

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

    def _write_kubeconfig(self) -> None:
        admin = KeyPair(self._path("admin.crt").read_bytes(), self._path("admin.key").read_bytes())
        self.kubeconfig = self._requested_kubeconfig or self._path("admin.kubeconfig")
        _write_kubeconfig(
            self.kubeconfig,
            self.server,
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
        """Bind ``subject`` to a (Cluster)Role holding ``rules``."""
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

    def _ensure_namespace(self, namespace: str) -> None:
        try:
            self.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
        except ApiError as error:
            if error.status != 409:
                raise


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
