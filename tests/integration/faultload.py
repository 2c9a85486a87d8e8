"""A workload for fault tests: objects written on and on while a fault is injected, and a
reconciler that notes what it saw.

``Workload`` writes (creates, then merge-patches) a counter into each of its objects, as the
admin and straight to the API server, in worker threads so a slow or failing write never
holds up the event loop the manager runs on. ``Tally`` is the reconciler: per object, the
highest counter it read from the cache, and every time two workers held the same key at once.
The test ends with a final round of writes once the fault is over; every object's last
counter must then reach Reconcile.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from ctrltrace import Context, Manager, Request
from ctrltrace.cli import main
from ctrltrace.envtest import ApiError, ControlPlane
from ctrltrace.journal import JournalWriter
from ctrltrace.transport import NotFound, Transport

from .conftest import Running, start, stop

COUNTER = "faults.ctrltrace.io/n"


def counted(name: str, n: int) -> dict[str, Any]:
    """The patch that writes counter ``n`` into the object called ``name``."""
    return {"metadata": {"name": name, "annotations": {COUNTER: str(n)}}}


def counter_of(obj: Mapping[str, Any]) -> int:
    return int((obj.get("metadata", {}).get("annotations") or {}).get(COUNTER, -1))


@dataclass
class Tally:
    """The reconciler: what it read, and overlaps of one key in two workers."""

    api_version: str
    kind: str
    seen: dict[str, int] = field(default_factory=dict)
    overlaps: list[str] = field(default_factory=list)
    _running: set[str] = field(default_factory=set)

    async def reconcile(self, ctx: Context, request: Request) -> None:
        if request.key in self._running:
            self.overlaps.append(request.key)
        self._running.add(request.key)
        try:
            try:
                obj = await ctx.client.get(
                    self.api_version, self.kind, request.name, request.namespace
                )
            except NotFound:
                return
            self.seen[request.name] = max(self.seen.get(request.name, -1), counter_of(obj))
            await asyncio.sleep(0.005)  # long enough for a second worker to collide
        finally:
            self._running.discard(request.key)


@dataclass
class Workload:
    plane: ControlPlane
    collection: str  # the API path of the objects' collection
    names: Sequence[str]
    shape: Mapping[str, Any] = field(default_factory=dict)  # the rest of a new object
    written: dict[str, int] = field(default_factory=dict)  # last counter the server accepted
    failures: int = 0  # writes refused or lost while the fault lasted

    async def round(self) -> None:
        """Write the next counter into every object (creating it the first time)."""
        n = max(self.written.values(), default=0) + 1
        for name in self.names:
            try:
                await asyncio.to_thread(self._write, name, n)
            except (ApiError, OSError):
                self.failures += 1
            else:
                self.written[name] = n

    def _write(self, name: str, n: int) -> None:
        if name in self.written:
            try:
                self.plane.patch(f"{self.collection}/{name}", counted(name, n))
            except ApiError as error:
                if error.status != 404:  # gone with its CRD: create it again
                    raise
            else:
                return
        try:
            self.plane.request("POST", self.collection, {**self.shape, **counted(name, n)})
        except ApiError as error:
            if error.status != 409:  # a create that went through but whose answer was lost
                raise
            self.plane.patch(f"{self.collection}/{name}", counted(name, n))

    async def keep_writing(self, until: asyncio.Event, pause: float = 0.1) -> None:
        while not until.is_set():
            await self.round()
            await asyncio.sleep(pause)

    async def during(self, fault: Callable[[], Any]) -> None:
        """Run ``fault()`` (awaited when it returns an awaitable) while writes go on."""
        done = asyncio.Event()
        writer = asyncio.create_task(self.keep_writing(done))
        try:
            result = fault()
            if asyncio.iscoroutine(result):
                await result
        finally:
            done.set()
            await writer

    async def settle(self, running: Running, tally: Tally, within: float = 60.0) -> None:
        """A last round of writes with the fault over; then every object's last counter must
        reach Reconcile."""
        before = self.written.copy()
        deadline = time.monotonic() + within
        while self.written == before or set(self.written) != set(self.names):
            assert time.monotonic() < deadline, "the API server never took the last writes"
            await self.round()
        final = dict(self.written)
        await running.until(lambda: all(tally.seen.get(n) == final[n] for n in final), within)


async def start_counting(
    mgr: Manager,
    tally: Tally,
    load: Workload,
    journal: JournalWriter,
    transport: Transport | None = None,
) -> Running:
    """Run ``tally`` on four workers under ``mgr``, recording to ``journal``; write the first
    round and wait until every object was reconciled once."""
    mgr.controller().for_(tally.api_version, tally.kind).with_options(
        max_concurrent_reconciles=4
    ).complete(tally.reconcile)
    mgr.add_sink(journal)
    running = await start(mgr, transport)
    await load.round()
    await running.until(lambda: len(tally.seen) == len(load.names))
    return running


async def survive(
    running: Running, tally: Tally, load: Workload, fault: Callable[[], Any]
) -> Running:
    """Inject ``fault`` while writes go on, settle, check what must hold, and stop."""
    await load.during(fault)
    await load.settle(running, tally)
    assert running.task is not None and not running.task.done()  # the manager is still up
    assert tally.overlaps == []
    assert set(tally.seen) == set(load.names)
    await stop(running)
    return running


def explain_json(journal: JournalWriter, target: str, *extra: str) -> dict[str, Any]:
    assert journal.flush()
    result = CliRunner().invoke(
        main, ["explain", target, "--journal", str(journal.path), "--json", *extra]
    )
    answer: dict[str, Any] = json.loads(result.output)
    return answer


def manager_via(kubeconfig: Path, namespace: str, **options: Any) -> Manager:
    return Manager(
        namespaces=[namespace],
        kubeconfig=str(kubeconfig),
        health_probe_bind_address="127.0.0.1:0",
        metrics_bind_address="0",
        **options,
    )
