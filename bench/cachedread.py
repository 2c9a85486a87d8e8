"""Cached-read micro-benchmark: what a safe read from the cache costs.

Owns the measurement behind the client's copy semantics. ``client.get`` and ``client.list``
hand the reconciler its own copy (so a reconciler changing what it read cannot change the
cache); the cache keeps each object frozen (a marshal block) and a read decodes it. This
measures, side by side in one run, per call:

- the informer's read (decoding the frozen object),
- the client's read (the same, plus the client's checks),
- a copy of a decoded object kept as a dict (``copy_object``: a marshal round trip, what a
  cache of shared dicts must do on each read),
- ``copy.deepcopy`` of that dict, the obvious alternative,

for a get of one Deployment-sized object and a list of a namespace of them, with and without
``managedFields`` (the manager's default transform drops them from the cache).

No Kubernetes and no I/O: objects go straight into a real ``Informer``'s cache, read through a
real ``Client``.

    python -m bench.cachedread [--objects N] [--list-size K] [--calls C] [--repeats R]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, cast

from ctrltrace.client import Client
from ctrltrace.clock import SystemClock
from ctrltrace.kinds import Kind, RestMapper
from ctrltrace.records import Obj, Recorder
from ctrltrace.source import Informer, WriteLog, copy_object, drop_managed_fields
from ctrltrace.transport import Transport

KIND = Kind("apps/v1", "Deployment")


class _Offline:
    """Stands in for the transport and REST mapper, which nothing here may reach."""

    def __getattr__(self, name: str) -> NoReturn:
        raise RuntimeError(f"the cached-read benchmark is offline, yet {name!r} was used")


def deployment(namespace: str, name: str) -> dict[str, Any]:
    """A Deployment as the API serves it: three managedFields entries, one container."""
    fields: dict[str, Any] = {
        "f:spec": {"f:replicas": {}, "f:template": {"f:metadata": {"f:labels": {}}}}
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"3f2c1d4e-0000-4000-8000-{len(name):012d}",
            "resourceVersion": "123456",
            "generation": 3,
            "labels": {"app": name, "tier": "frontend"},
            "annotations": {"deployment.kubernetes.io/revision": "3"},
            "ownerReferences": [
                {
                    "apiVersion": "example.com/v1",
                    "kind": "Foo",
                    "name": name,
                    "uid": "owner-uid",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": [
                {
                    "manager": manager,
                    "operation": "Update",
                    "apiVersion": "apps/v1",
                    "time": "2026-01-01T00:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields,
                }
                for manager in ("kube-controller-manager", "samplecontroller", "kubectl")
            ],
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx:1.27",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                        }
                    ]
                },
            },
        },
        "status": {
            "replicas": 3,
            "readyReplicas": 3,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                }
            ],
        },
    }


def cache(objects: int, list_size: int, *, managed_fields: bool) -> tuple[Informer, Client]:
    offline = _Offline()
    informer = Informer(
        cast(Transport, offline),
        cast(RestMapper, offline),
        KIND,
        recorder=Recorder(),
        clock=SystemClock(),
        writes=WriteLog(),
        transform=None if managed_fields else drop_managed_fields,
    )
    for index in range(objects):
        namespace = "listed" if index < list_size else "other"
        informer._apply("ADDED", deployment(namespace, f"web-{index:06d}"))
    informer.synced.set()
    client = Client(
        cast(Transport, offline),
        cast(RestMapper, offline),
        {KIND: informer},
        recorder=Recorder(),
        clock=SystemClock(),
        writes=WriteLog(),
    )
    return informer, client


async def per_call(call: Callable[[], Awaitable[object]], calls: int, repeats: int) -> float:
    """Median over ``repeats`` of the seconds one call takes, averaged over ``calls``."""
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            await call()
        runs.append((time.perf_counter() - started) / calls)
    return statistics.median(runs)


Row = tuple[str, str, float, float, float, float]


async def measure(args: argparse.Namespace) -> list[Row]:
    rows = []
    for managed_fields in (True, False):
        informer, client = cache(args.objects, args.list_size, managed_fields=managed_fields)
        shape = "with managedFields" if managed_fields else "managedFields dropped (default)"
        rows += await _rows(informer, client, shape, args)
    return rows


async def _rows(
    informer: Informer, client: Client, shape: str, args: argparse.Namespace
) -> list[Row]:
    name = "web-000000"
    one = cast(Obj, informer.get("listed", name))
    listed = informer.list("listed")

    async def informer_get() -> Obj | None:
        return informer.get("listed", name)

    async def client_get() -> Obj:
        return await client.get("apps/v1", "Deployment", name, "listed")

    async def copied_get() -> Obj:
        return copy_object(one)

    async def deepcopied_get() -> Obj:
        return copy.deepcopy(one)

    async def informer_list() -> list[Any]:
        return informer.list("listed")

    async def client_list() -> list[Any]:
        return await client.list("apps/v1", "Deployment", "listed")

    async def copied_list() -> list[Any]:
        return [copy_object(item) for item in listed]

    async def deepcopied_list() -> list[Any]:
        return [copy.deepcopy(item) for item in listed]

    rows = []
    for what, calls, *reads in (
        ("get 1", args.calls, informer_get, client_get, copied_get, deepcopied_get),
        (f"list {args.list_size}", args.calls // 50, informer_list, client_list, copied_list,
         deepcopied_list),
    ):  # fmt: skip
        informer_s, client_s, copied_s, deep_s = [
            await per_call(read, calls, args.repeats) for read in reads
        ]
        rows.append((what, shape, informer_s, client_s, copied_s, deep_s))
    return rows


def table(rows: Sequence[Row]) -> str:
    lines = [
        f"{'read':<9} {'cached objects':<32} {'informer':>10} {'client':>10} "
        f"{'dict copy':>10} {'deepcopy':>10}"
    ]
    for what, shape, *seconds in rows:
        lines.append(f"{what:<9} {shape:<32} " + " ".join(f"{s * 1e6:>8.2f}µs" for s in seconds))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=10_000, help="objects in the cache")
    parser.add_argument(
        "--list-size", type=int, default=100, help="objects in the listed namespace"
    )
    parser.add_argument("--calls", type=int, default=20_000, help="gets per timing (lists: /50)")
    parser.add_argument("--repeats", type=int, default=5, help="timings per cell; medians shown")
    args = parser.parse_args(argv)
    print(table(asyncio.run(measure(args))))


if __name__ == "__main__":
    main()
