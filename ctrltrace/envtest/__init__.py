"""A local Kubernetes control plane (kube-apiserver + etcd) for tests, demos and ``--envtest``.

Test infrastructure and a developer tool: the controller runtime never imports it.
"""

from ctrltrace.envtest.binaries import Binaries, BinariesNotFoundError, find_binaries
from ctrltrace.envtest.controlplane import (
    ApiError,
    ControlPlane,
    ControlPlaneError,
    Identity,
    PolicyRule,
)
from ctrltrace.envtest.faults import FaultProxy

__all__ = [
    "ApiError",
    "Binaries",
    "BinariesNotFoundError",
    "ControlPlane",
    "ControlPlaneError",
    "FaultProxy",
    "Identity",
    "PolicyRule",
    "find_binaries",
]
