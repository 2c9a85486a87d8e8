"""pytest fixtures for a real local control plane (registered as the ``ctrltrace`` plugin).

``control_plane`` is one kube-apiserver + etcd per test session; ``kube_namespace`` a fresh
namespace per test (the control plane has no namespace controller, so namespaces are never
deleted, only abandoned); ``mint_identity`` a kubeconfig restricted to given RBAC rules.
``fault_proxy`` a proxy in front of the API server that cuts, refuses and stalls connections,
and ``control_plane.compact(rv)`` compacts etcd (a watch resumed from before then gets 410).
``private_control_plane`` is one of the test's own, for faults that would disturb every other
test (``restart_apiserver()``).
``jaeger`` and ``prometheus_server`` are one Jaeger and one Prometheus per session, on loopback.
A server that cannot start fails the tests that need it; it never skips them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from typing import Protocol

import pytest

from ctrltrace.envtest.controlplane import ControlPlane, Identity, PolicyRule
from ctrltrace.envtest.faults import FaultProxy
from ctrltrace.envtest.observability import Jaeger, Prometheus

CONTROL_PLANE_PIDS = pytest.StashKey[frozenset[int]]()
_counter = itertools.count()


def unique_name(prefix: str) -> str:
    """A DNS-label name unique within this test session."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


class MintIdentity(Protocol):
    def __call__(
        self,
        rules: Sequence[PolicyRule],
        *,
        namespace: str | None = None,
        service_account: bool = False,
    ) -> Identity: ...


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    with ControlPlane() as plane:
        _allow_for_the_session(request, plane.pids)
        yield plane


@pytest.fixture
def private_control_plane() -> Iterator[ControlPlane]:
    """A control plane for this test alone (a few seconds to start): kill and restart its API
    server with ``restart_apiserver()`` without disturbing the session's."""
    with ControlPlane() as plane:
        yield plane


@pytest.fixture
def fault_proxy(control_plane: ControlPlane) -> Iterator[FaultProxy]:
    """A TCP proxy in front of the API server that can cut, refuse and stall connections;
    point a client at it with
    ``control_plane.admin_kubeconfig_via(f"https://{proxy.address}", path)``."""
    host, port = control_plane.server.removeprefix("https://").rsplit(":", 1)
    with FaultProxy(host, int(port)) as proxy:
        yield proxy


@pytest.fixture
def kube_namespace(control_plane: ControlPlane) -> str:
    name = unique_name("t")
    control_plane.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    return name


@pytest.fixture
def mint_identity(control_plane: ControlPlane) -> MintIdentity:
    def mint(
        rules: Sequence[PolicyRule],
        *,
        namespace: str | None = None,
        service_account: bool = False,
    ) -> Identity:
        return control_plane.mint_identity(
            unique_name("restricted"),
            rules,
            namespace=namespace,
            service_account=service_account,
        )

    return mint


def _allow_for_the_session(request: pytest.FixtureRequest, pids: Sequence[int]) -> None:
    # Added to, not replaced: the same set lists every process meant to outlive a test.
    stash = request.session.stash
    stash[CONTROL_PLANE_PIDS] = stash.get(CONTROL_PLANE_PIDS, frozenset()) | frozenset(pids)


@pytest.fixture(scope="session")
def jaeger(request: pytest.FixtureRequest) -> Iterator[Jaeger]:
    """Jaeger v2 with in-memory storage: OTLP in at ``otlp_http_endpoint``, ``find_traces`` out."""
    with Jaeger() as server:
        _allow_for_the_session(request, server.pids)
        yield server


@pytest.fixture(scope="session")
def prometheus_server(request: pytest.FixtureRequest) -> Iterator[Prometheus]:
    """Prometheus scraping nothing until told to with ``scrape([...])``, every second."""
    with Prometheus() as server:
        _allow_for_the_session(request, server.pids)
        yield server
