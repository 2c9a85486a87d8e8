"""Scale: tens of thousands of ConfigMaps of about 1 KiB through a real API server into one
manager's cache, in one namespace and spread over many.

    python -m bench.scale [--objects 50000] [--namespaces 50] [--json PATH]

Starts one kube-apiserver + etcd on loopback and has writer processes create ``--objects``
ConfigMaps of about 1 KiB in namespace ``scale``, and as many again spread evenly over
``--namespaces`` namespaces. Then, for each layout, a manager with a counting reconcile and the
default cache (``managedFields`` dropped) starts in a fresh process: one watching namespace
``scale``, one restricted to the spread namespaces (a list and watch each). Each reports the time
from start until its caches synced (list and sync), until every object had been reconciled
once, and its RSS before and after, against the size of the objects' JSON as the API server
serves them (compact, ``managedFields`` included). The target is a cache that costs at most
twice that JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench._harness import peak_rss_mib, rss_mib
from bench._writer import command
from ctrltrace import Context, Manager, Request
from ctrltrace.envtest import ControlPlane
from ctrltrace.logs import configure

_PARALLEL_WRITERS = 4


async def _create(plane: ControlPlane, namespaces: list[str], per_namespace: int) -> float:
    """Create the ConfigMaps, a few writer processes at a time; the seconds it took."""
    started = time.monotonic()
    pending = list(namespaces)

    async def writer() -> None:
        while pending:
            namespace = pending.pop()
            plane.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
            process = await asyncio.create_subprocess_exec(
                *command(plane.kubeconfig, namespace, per_namespace, "create", 1024)
            )
            if await process.wait() != 0:
                raise SystemExit(f"the writer failed in namespace {namespace}")

    await asyncio.gather(*(writer() for _ in range(_PARALLEL_WRITERS)))
    return time.monotonic() - started


def _json_bytes(plane: ControlPlane, namespace: str) -> tuple[int, int]:
    """How many ConfigMaps the namespace holds, and their compact JSON's size in bytes."""
    count = size = 0
    token = ""
    while True:
        page = plane.request(
            "GET", f"/api/v1/namespaces/{namespace}/configmaps?limit=500&continue={token}"
        )
        for item in page["items"]:
            count += 1
            size += len(json.dumps(item, separators=(",", ":")))
        token = page["metadata"].get("continue", "")
        if not token:
            return count, size


async def _probe_in_a_process(plane: ControlPlane, namespaces: list[str]) -> dict[str, Any]:
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.scale", "--probe", ",".join(namespaces),
        "--kubeconfig", str(plane.kubeconfig),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    output, errors = await probe.communicate()
    if probe.returncode != 0:
        sys.stderr.write(errors.decode(errors="replace"))
        raise SystemExit(f"the probe for {len(namespaces)} namespace(s) failed")
    measured: dict[str, Any] = json.loads(output)
    return measured


async def _probe(kubeconfig: str, namespaces: list[str]) -> dict[str, Any]:
    """A manager over ``namespaces`` in this process: when it synced, when every object was
    reconciled once, and what it costs in RSS."""
    reconciles = 0

    async def reconcile(ctx: Context, request: Request) -> None:
        nonlocal reconciles
        reconciles += 1

    manager = Manager(
        kubeconfig=kubeconfig,
        namespaces=namespaces,
        health_probe_bind_address="0",
        metrics_bind_address="0",
    )
    manager.controller().for_("v1", "ConfigMap").with_options(max_concurrent_reconciles=4).complete(
        reconcile
    )
    before = rss_mib()
    started = time.monotonic()
    task = asyncio.create_task(manager.start())
    informers = manager.informers.values()
    while not (informers and all(informer.synced.is_set() for informer in informers)):
        await _poll(task)
    synced = time.monotonic() - started
    cached = sum(len(informer.store) for informer in informers)
    while reconciles < cached:
        await _poll(task)
    reconciled = time.monotonic() - started
    after = rss_mib()
    manager.stop()
    await task
    return {
        "cached_objects": cached,
        "informers": len(informers),
        "list_and_sync_s": round(synced, 2),
        "all_reconciled_s": round(reconciled, 2),
        "rss_before_mib": round(before, 1),
        "rss_after_mib": round(after, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


async def _poll(task: asyncio.Task[None]) -> None:
    if task.done():
        task.result()  # the manager stopped: say why
        raise SystemExit("the manager stopped before every object was reconciled")
    await asyncio.sleep(0.05)


async def _run(objects: int, spread: int) -> dict[str, Any]:
    with ControlPlane() as plane:
        layouts = {
            "1 namespace": ["scale"],
            f"{spread} namespaces": [f"scale-{i:02d}" for i in range(spread)],
        }
        results: dict[str, Any] = {"objects": objects, "layouts": {}}
        for layout, namespaces in layouts.items():
            created_s = await _create(plane, namespaces, objects // len(namespaces))
            sizes = [_json_bytes(plane, namespace) for namespace in namespaces]
            raw = sum(size for _, size in sizes)
            measured = await _probe_in_a_process(plane, namespaces)
            cache = measured["rss_after_mib"] - measured["rss_before_mib"]
            results["layouts"][layout] = {
                "created_s": round(created_s, 1),
                "objects": sum(count for count, _ in sizes),
                "raw_json_mib": round(raw / 2**20, 1),
                **measured,
                "cache_mib": round(cache, 1),
                "cache_to_json": round(cache / (raw / 2**20), 2),
                "rss_to_json": round(measured["rss_after_mib"] / (raw / 2**20), 2),
            }
        return results


def _print(results: dict[str, Any]) -> None:
    print(
        f"{'layout':<14} {'objects':>8} {'JSON MiB':>9} {'created s':>10} {'sync s':>7} "
        f"{'all rec. s':>10} {'RSS MiB':>8} {'cache MiB':>10} {'cache/JSON':>11} {'RSS/JSON':>9}"
    )
    for layout, row in results["layouts"].items():
        print(
            f"{layout:<14} {row['cached_objects']:>8} {row['raw_json_mib']:>9} "
            f"{row['created_s']:>10} {row['list_and_sync_s']:>7} {row['all_reconciled_s']:>10} "
            f"{row['rss_after_mib']:>8} {row['cache_mib']:>10} {row['cache_to_json']:>10}x "
            f"{row['rss_to_json']:>8}x"
        )
    print("target: the cache at most 2x the objects' JSON")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=50_000)
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # namespaces, comma-separated
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        configure()  # the manager's log lines on stderr: stdout carries the figures
        print(json.dumps(asyncio.run(_probe(args.kubeconfig, args.probe.split(",")))))
        return
    results = asyncio.run(_run(args.objects, args.namespaces))
    _print(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
