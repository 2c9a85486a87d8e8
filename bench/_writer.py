"""The load generator of the control-plane benchmarks, in its own process so it does not share
a core (or its CPU accounting) with the controller it loads.

    python -m bench._writer KUBECONFIG NAMESPACE COUNT create|update PAYLOAD_BYTES
        [--times N] [--rate R --seconds S] [--stamp] [--report PATH]

Creates (or updates) ConfigMaps cm-0 … cm-COUNT-1 with 32 requests in flight. By default an
update is one merge patch per object; ``--times N`` patches each object N times in a row (a
burst per object, 32 objects at a time); ``--rate R --seconds S`` instead paces R patches a
second for S seconds, round-robin over the objects. ``--stamp`` puts ``time.time()``, taken
just before each request is sent, in the ``bench/stamp`` annotation, so a controller can tell
how long after the write it started handling it. ``--report PATH`` writes, as JSON, when the
first and last requests were sent and answered, how many there were, and the resourceVersion
the API server returned last for each object.

Owns the writer's command line: ``command()`` builds it for the benchmarks that spawn it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctrltrace.transport import Transport, load_configuration

_IN_FLIGHT = 32
STAMP_ANNOTATION = "bench/stamp"


def command(
    kubeconfig: str | Path,
    namespace: str,
    count: int,
    verb: str,
    payload_bytes: int = 64,
    *options: str,
) -> list[str]:
    """The argv that runs this writer with the current interpreter."""
    return [
        sys.executable, "-m", "bench._writer", str(kubeconfig), namespace, str(count), verb,
        str(payload_bytes), *options,
    ]  # fmt: skip


@dataclass
class _Report:
    writes: int = 0
    first_sent: float = 0.0
    last_sent: float = 0.0
    last_answered: float = 0.0
    last_resource_version: dict[str, str] = field(default_factory=dict)

    def sent(self) -> float:
        now = time.time()
        self.first_sent = self.first_sent or now
        self.last_sent = now
        return now

    def answered(self, name: str, answer: dict[str, Any]) -> None:
        self.writes += 1
        self.last_answered = time.time()
        version = answer["metadata"]["resourceVersion"]
        # resourceVersions are etcd revisions: integers, growing (see bench/README.md).
        if int(version) > int(self.last_resource_version.get(name, "0")):
            self.last_resource_version[name] = version


class _Writer:
    def __init__(self, transport: Transport, namespace: str, size: int, stamp: bool) -> None:
        self._transport = transport
        self._base = f"/api/v1/namespaces/{namespace}/configmaps"
        self._size = size
        self._stamp = stamp
        self.report = _Report()

    async def create(self, i: int) -> None:
        name = f"cm-{i}"
        metadata: dict[str, Any] = {"name": name}
        body = {"metadata": metadata, "data": {"payload": "x" * self._size}}
        sent = self.report.sent()
        if self._stamp:
            metadata["annotations"] = {STAMP_ANNOTATION: f"{sent:.6f}"}
        self.report.answered(name, await self._transport.request("POST", self._base, body=body))

    async def update(self, i: int, round_: int) -> None:
        name = f"cm-{i}"
        # Each round must change the object: an identical merge patch is a no-op, no event.
        body: dict[str, Any] = {"data": {"updated": "yes" if round_ == 0 else f"yes {round_}"}}
        sent = self.report.sent()
        if self._stamp:
            body["metadata"] = {"annotations": {STAMP_ANNOTATION: f"{sent:.6f}"}}
        answer = await self._transport.request(
            "PATCH", f"{self._base}/{name}", body=body, content_type="application/merge-patch+json"
        )
        self.report.answered(name, answer)


async def _write(args: argparse.Namespace) -> _Report:
    transport = Transport(await load_configuration(args.kubeconfig))
    writer = _Writer(transport, args.namespace, args.payload_bytes, args.stamp)
    try:
        if args.rate:
            await _paced(writer, args.count, args.rate, args.seconds)
        else:
            await _burst(writer, args.count, args.verb, args.times)
    finally:
        await transport.close()
    return writer.report


async def _burst(writer: _Writer, count: int, verb: str, times: int) -> None:
    names: Iterator[int] = iter(range(count))

    async def worker() -> None:
        for i in names:
            if verb == "create":
                await writer.create(i)
            else:
                for round_ in range(times):
                    await writer.update(i, round_)

    await asyncio.gather(*(worker() for _ in range(_IN_FLIGHT)))


async def _paced(writer: _Writer, count: int, rate: float, seconds: float) -> None:
    """``rate`` patches a second, each sent at its slot (late only if 32 are in flight)."""
    in_flight = asyncio.Semaphore(_IN_FLIGHT)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    rounds: dict[int, int] = {}

    async def one(i: int) -> None:
        try:
            await writer.update(i, rounds[i])
        finally:
            in_flight.release()

    start = loop.time()
    for n in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
        await in_flight.acquire()
        i = n % count
        rounds[i] = rounds.get(i, 0) + 1
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kubeconfig")
    parser.add_argument("namespace")
    parser.add_argument("count", type=int)
    parser.add_argument("verb", choices=["create", "update"])
    parser.add_argument("payload_bytes", type=int)
    parser.add_argument("--times", type=int, default=1, help="updates per object, in a row")
    parser.add_argument("--rate", type=float, default=0.0, help="paced updates per second")
    parser.add_argument("--seconds", type=float, default=0.0, help="how long to pace")
    parser.add_argument("--stamp", action="store_true", help=f"set {STAMP_ANNOTATION}")
    parser.add_argument("--report", type=Path, help="write a JSON report here")
    args = parser.parse_args()
    if args.rate and args.verb != "update":
        parser.error("--rate paces updates only")
    report = asyncio.run(_write(args))
    if args.report:
        args.report.write_text(json.dumps(report.__dict__))


if __name__ == "__main__":
    main()
