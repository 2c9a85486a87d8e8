"""Benchmark against a real local control plane: many ConfigMaps through a ctrltrace manager.

    python -m bench.controlplane [--objects 5000] [--cached 10000] [--json PATH]

Starts one kube-apiserver + etcd, runs a manager with a no-op reconcile in this process, and
has a separate writer process create N ConfigMaps as fast as the API server accepts them,
then update each once. Reports, per phase, the time from the first write until every
object's last event has been reconciled, and events/s. Then measures a manager's RSS with
``--cached`` ConfigMaps of about 1 KiB in its cache, once per cache shape, each in a fresh
process (``--probe SHAPE``): whole objects, ``managedFields`` dropped (the default), and
metadata only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bench._harness import peak_rss_mib, rss_mib
from bench._writer import command
from ctrltrace import Context, Manager, Record, Request, Stage
from ctrltrace.envtest import ControlPlane
from ctrltrace.source import drop_managed_fields

# How a probe's manager shapes its cache: Manager keyword arguments.
SHAPES: dict[str, dict[str, object]] = {
    "whole objects": {"cache_transform": None},
    "no managedFields (default)": {"cache_transform": drop_managed_fields},
    "metadata only": {"metadata_only": ["ConfigMap"]},
}


@dataclass
class Phase:
    name: str
    objects: int
    seconds: float
    events: int

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


class Tracker:
    """Counts events and reconcile starts per object from the manager's records."""

    def __init__(self) -> None:
        self.events = 0
        self.latest_event: dict[str, int] = {}  # object key → id of its newest event
        self.reconciled_after: dict[str, int] = {}  # object key → newest event id seen by a start
        self._last_event_seen = 0

    def __call__(self, record: Record, /) -> None:
        if record.stage is Stage.EVENT and record.object is not None:
            self.events += 1
            self.latest_event[record.object.key] = record.id
            self._last_event_seen = record.id
        elif record.stage is Stage.RECONCILE_START:
            # A start covers every event of its object that arrived before it.
            self.reconciled_after[record.request] = self._last_event_seen

    def all_reconciled(self, keys: list[str]) -> bool:
        return all(
            self.reconciled_after.get(key, -1) >= self.latest_event.get(key, 1 << 62)
            for key in keys
        )


async def _phase(
    name: str,
    plane: ControlPlane,
    namespace: str,
    count: int,
    tracker: Tracker,
    verb: str,
    payload_bytes: int = 64,
) -> Phase:
    keys = [f"{namespace}/cm-{i}" for i in range(count)]
    events_before = tracker.events
    started = time.monotonic()
    writer = await asyncio.create_subprocess_exec(
        *command(plane.kubeconfig, namespace, count, verb, payload_bytes)
    )
    if await writer.wait() != 0:
        raise SystemExit(f"writer failed in phase {name}")
    while not tracker.all_reconciled(keys):  # noqa: ASYNC110  # polled: records arrive in bursts
        await asyncio.sleep(0.01)
    return Phase(name, count, time.monotonic() - started, tracker.events - events_before)


async def _run(objects: int, cached: int) -> dict[str, object]:
    async def reconcile(ctx: Context, request: Request) -> None:
        return None

    with ControlPlane() as plane:
        results: dict[str, object] = {"control_plane_startup_s": round(plane.startup_seconds, 2)}
        for namespace in ("bench", "cache"):
            plane.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
        tracker = Tracker()
        manager = Manager(
            kubeconfig=str(plane.kubeconfig), namespaces=["bench"], health_probe_bind_address="0"
        )
        manager.add_sink(tracker)
        manager.controller().for_("v1", "ConfigMap").with_options(
            max_concurrent_reconciles=4
        ).complete(reconcile)
        task = asyncio.create_task(manager.start())
        await _until(lambda: _synced(manager))
        phases = [
            await _phase("create", plane, "bench", objects, tracker, "create"),
            await _phase("update", plane, "bench", objects, tracker, "update"),
        ]
        manager.stop()
        await task
        results["phases"] = [
            {**asdict(p), "events_per_second": round(p.events_per_second)} for p in phases
        ]

        # Memory: a manager caching `cached` ConfigMaps of about 1 KiB each, per cache shape,
        # each in its own process so that one shape's freed memory cannot hide another's.
        await _populate(plane, "cache", cached)
        results["memory"] = {shape: await _probe_in_a_process(plane, shape) for shape in SHAPES}
        return results


async def _probe_in_a_process(plane: ControlPlane, shape: str) -> dict[str, float]:
    probe = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.controlplane",
        "--probe",
        shape,
        "--kubeconfig",
        str(plane.kubeconfig),
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await probe.communicate()
    if probe.returncode != 0:
        raise SystemExit(f"the memory probe for {shape!r} failed")
    measured: dict[str, float] = json.loads(output)
    return measured


async def _probe(kubeconfig: str, shape: str) -> dict[str, float]:
    """RSS of this process before and after a manager's cache of namespace "cache" synced."""

    async def reconcile(ctx: Context, request: Request) -> None:
        return None

    memory = Manager(
        kubeconfig=kubeconfig,
        namespaces=["cache"],
        health_probe_bind_address="0",
        **SHAPES[shape],  # type: ignore[arg-type]
    )
    memory.controller().for_("v1", "ConfigMap").complete(reconcile)
    before = rss_mib()
    task = asyncio.create_task(memory.start())
    await _until(lambda: _synced(memory))
    cached_objects = sum(len(i.store) for i in memory.informers.values())
    after = rss_mib()
    memory.stop()
    await task
    return {
        "cached_objects": cached_objects,
        "rss_before_mib": round(before, 1),
        "rss_after_mib": round(after, 1),
        "cache_mib": round(after - before, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


async def _populate(plane: ControlPlane, namespace: str, count: int) -> None:
    writer = await asyncio.create_subprocess_exec(
        *command(plane.kubeconfig, namespace, count, "create", 1024)
    )
    if await writer.wait() != 0:
        raise SystemExit("writer failed while populating the cache")


def _synced(manager: Manager) -> bool:
    informers = manager.informers.values()
    return bool(informers) and all(informer.synced.is_set() for informer in informers)


async def _until(condition: Callable[[], bool], within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the caches to sync")
        await asyncio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--cached", type=int, default=10000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--probe", choices=SHAPES, help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(asyncio.run(_probe(args.kubeconfig, args.probe))))
        return
    results = asyncio.run(_run(args.objects, args.cached))
    print(f"control plane ready in {results['control_plane_startup_s']} s")
    print(f"{'phase':<8} {'objects':>8} {'seconds':>9} {'events':>8} {'events/s':>9}")
    for phase in results["phases"]:  # type: ignore[attr-defined]
        print(
            f"{phase['name']:<8} {phase['objects']:>8} {phase['seconds']:>9.2f} "
            f"{phase['events']:>8} {phase['events_per_second']:>9}"
        )
    print(f"{'cache shape':<28} {'objects':>8} {'RSS before':>11} {'after':>8} {'cache':>8}")
    for shape, memory in results["memory"].items():  # type: ignore[attr-defined]
        print(
            f"{shape:<28} {memory['cached_objects']:>8} {memory['rss_before_mib']:>7} MiB "
            f"{memory['rss_after_mib']:>4} MiB {memory['cache_mib']:>4} MiB"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
