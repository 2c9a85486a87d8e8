"""In-process pipeline benchmark: synthetic watch events → predicate → handler → queue → Reconcile.

Owns the measurement of what recording costs on the hot path: the same workload runs through a
real ``Controller`` fed by a real ``Informer`` with (a) a recorder and no sinks, (b) a trivial
counting sink, (c) the ``PrometheusSink``, interleaved and repeated, on one pinned core. It
reports events per second end to end and the enqueue → reconcile-start wait, and the ratio of
each to (a): on a shared, noisy machine the ratios within one run are what count. A target
is met only by a configuration whose journal dropped nothing: records it dropped are work it
did not do.

No Kubernetes and no I/O: events go straight into the informer's cache-and-dispatch step, and
the reconcile makes no calls, so the informer's transport and the client are never used. It
measures the runtime as it is and changes nothing in it.

    python -m bench.pipeline [--events N] [--seconds S] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import cProfile
import gc
import json
import os
import platform
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn, cast

from bench._harness import verdict
from ctrltrace.client import Client
from ctrltrace.clock import Clock, SystemClock
from ctrltrace.context import Context
from ctrltrace.controller import Controller, Watch
from ctrltrace.exporters.prometheus import PrometheusSink
from ctrltrace.exporters.tracing import DropCounter, SpanSink, configure_tracing
from ctrltrace.handlers import for_object
from ctrltrace.journal import JournalWriter
from ctrltrace.kinds import Kind, RestMapper
from ctrltrace.predicates import ResourceVersionChanged
from ctrltrace.queue import WorkQueue
from ctrltrace.reconcile import Result
from ctrltrace.records import Record, Recorder, Sink
from ctrltrace.request import Request
from ctrltrace.source import Informer, WriteLog
from ctrltrace.transport import Transport

KIND = Kind("example.com/v1", "Widget")
NAMESPACE = "bench"
TARGET_EVENTS_PER_S = 50_000
TARGET_WITH_JOURNAL = 30_000
JOURNAL_COST_LIMIT = 0.40


class _Offline:
    """Stands in for the transport and REST mapper, which nothing here may reach."""

    def __getattr__(self, name: str) -> NoReturn:
        raise RuntimeError(f"the pipeline benchmark is offline, yet {name!r} was used")


class _CountingSink:
    """The cheapest possible sink: what "a recorder with sinks attached" costs by itself."""

    def __init__(self) -> None:
        self.records = 0

    def __call__(self, record: Record, /) -> None:
        self.records += 1


class _TimedQueue(WorkQueue[Request]):
    """The controller's queue, keeping how long each key it hands out waited.

    That is the value RECONCILE_START records carry as ``queue_wait_s``. Taking it here rather
    than from the records lets config (a), which has no sink, report it too, at the same cost
    in every configuration.
    """

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.waits: list[float] = []

    async def get(self) -> tuple[Request, float]:
        handed = await super().get()
        self.waits.append(handed[1])
        return handed


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    sinks: Callable[[], Sequence[Sink]]
    target: int = TARGET_EVENTS_PER_S


def _journal() -> tuple[Sink, ...]:
    # A fresh file per run, removed by the run's cleanup. The writer's thread inherits the
    # pinned core, so its whole cost is in the figures.
    folder = Path(tempfile.mkdtemp(prefix="ctrltrace-bench-"))
    return (JournalWriter(folder / "journal.sqlite"),)


def _journal_on_another_core() -> tuple[Sink, ...]:
    # The event loop stays on its core; the writer thread (which does SQLite's work with the
    # GIL released) may use the other CPUs, as it does in a real process.
    pinned = os.sched_getaffinity(0)
    others = set(range(os.cpu_count() or 1)) - pinned
    if not others:
        raise SystemExit("config (e) needs a second CPU")
    os.sched_setaffinity(0, others)
    try:
        return _journal()
    finally:
        os.sched_setaffinity(0, pinned)


_RECEIVER = """
import sys
from aiohttp import web

async def accept(request):
    await request.read()
    return web.Response(status=200, content_type="application/x-protobuf")

app = web.Application(client_max_size=64 * 2**20)
app.router.add_post("/v1/traces", accept)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""
_receiver: list[tuple[subprocess.Popen[bytes], str]] = []
_span_losses: dict[int, DropCounter] = {}


def _local_receiver() -> str:
    """An OTLP/HTTP receiver in its own process that accepts and discards every export."""
    if not _receiver:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        process = subprocess.Popen([sys.executable, "-c", _RECEIVER, str(port)])
        atexit.register(process.terminate)
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        _receiver.append((process, f"http://127.0.0.1:{port}"))
    return _receiver[0][1]


def _spans() -> tuple[Sink, ...]:
    tracing = configure_tracing(_local_receiver(), service_name="bench")
    assert tracing is not None
    _, sink, losses = tracing
    _span_losses[id(sink)] = losses
    return (sink,)


CONFIGS = (
    Config("a", "(a) recorder, no sinks", lambda: ()),
    Config("b", "(b) recorder + counting sink", lambda: (_CountingSink(),)),
    Config("c", "(c) recorder + PrometheusSink", lambda: (PrometheusSink(),)),
    Config("d", "(d) recorder + journal, all on 1 core", _journal, TARGET_WITH_JOURNAL),
    Config("e", "(e) journal writer on a 2nd core", _journal_on_another_core, TARGET_WITH_JOURNAL),
    Config("f", "(f) spans over OTLP, local receiver", _spans, 0),
)


@dataclass(frozen=True)
class Run:
    events: int  # fed; fewer than asked when --seconds ended feeding first
    reconciles: int
    seconds: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    dropped: int = 0  # records the journal dropped (its buffer full, a write failed)


async def run_once(config: Config, events: int, objects: int, batch: int, seconds: float) -> Run:
    """Feed ``events`` over ``objects`` and wait until each object's last event is reconciled."""
    clock = SystemClock()
    sinks = config.sinks()
    recorder = Recorder(*sinks)
    offline = _Offline()
    informer = Informer(
        cast(Transport, offline),
        cast(RestMapper, offline),
        KIND,
        recorder=recorder,
        clock=clock,
        writes=WriteLog(),
    )
    reconciled: dict[str, object] = {}  # key -> the cached object its last reconcile saw

    async def reconcile(ctx: Context, request: Request) -> Result | None:
        key = request.key
        reconciled[key] = informer.store[key]
        return None

    controller = Controller("bench", reconcile, recorder=recorder, clock=clock)
    queue = controller.queue = _TimedQueue(clock)
    controller.watch(Watch(informer, for_object(), [ResourceVersionChanged()], "for"))
    client = Client(
        cast(Transport, offline),
        cast(RestMapper, offline),
        {KIND: informer},
        recorder=recorder,
        clock=clock,
        writes=WriteLog(),
    )
    informer.synced.set()  # as if the initial list had completed: the workers start at once
    running = asyncio.create_task(controller.run(client))
    # Polled a loop turn at a time: the controller offers no event for this, and the wait is
    # over in a turn or two.
    while not controller.started:  # noqa: ASYNC110
        await asyncio.sleep(0)
    await asyncio.sleep(0)  # let the workers reach the queue

    names = [f"widget-{i:06d}" for i in range(objects)]
    api_version, kind = KIND.api_version, KIND.kind
    fed = 0
    started = time.perf_counter()
    deadline = started + seconds if seconds > 0 else float("inf")
    while fed < events and time.perf_counter() < deadline:
        end = min(fed + batch, events)
        for n in range(fed, end):
            index = n % objects
            # A fresh object per event with a new resourceVersion, as a watch decodes one, so
            # ResourceVersionChanged lets every update through.
            obj = {
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {
                    "namespace": NAMESPACE,
                    "name": names[index],
                    "uid": f"uid-{index}",
                    "resourceVersion": str(n + 1),
                    "generation": 1,
                },
            }
            informer._apply("ADDED" if n < objects else "MODIFIED", obj)
        fed = end
        await asyncio.sleep(0)  # the workers run between batches
    # Every key still pending is waiting or being processed (one added meanwhile is queued
    # again when its worker is done), so an idle queue means every last event was reconciled.
    # Polled between loop turns rather than signalled from the reconcile, which would add a
    # check to every measured reconcile.
    while len(queue) or queue.processing_count:  # noqa: ASYNC110
        await asyncio.sleep(0)
    for sink in sinks:  # the run is over when its records are on disk, not merely queued
        if isinstance(sink, JournalWriter) and not sink.flush():
            raise RuntimeError(f"{config.label}: the journal did not flush")
    elapsed = time.perf_counter() - started

    queue.shutdown()
    dropped = 0
    await running
    for sink in sinks:
        if isinstance(sink, SpanSink):
            sink.close()
            losses = _span_losses.pop(id(sink))
            losses.shutdown(timeout_s=30)
            print(
                f"  {config.label}: {losses.exported:,} spans exported, {losses.dropped:,} "
                f"dropped, {losses.failed:,} failed"
            )
        if isinstance(sink, JournalWriter):
            sink.close()
            dropped += sink.dropped
            if sink.dropped:
                why = f" ({sink.last_error})" if sink.last_error else " (its buffer was full)"
                print(f"  {config.label}: the journal dropped {sink.dropped} records{why}")
            shutil.rmtree(sink.path.parent)
    missed = [key for key, obj in informer.store.items() if reconciled.get(key) is not obj]
    if missed:
        raise RuntimeError(f"{len(missed)} objects' last events never reached Reconcile")
    if recorder.sink_errors:
        raise RuntimeError(f"{config.label}: {recorder.sink_errors} records made a sink raise")
    p50, p99 = _percentiles(queue.waits)
    return Run(fed, len(queue.waits), elapsed, fed / elapsed, p50 * 1000, p99 * 1000, dropped)


def _percentiles(waits: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(waits, n=100, method="inclusive")
    return cuts[49], cuts[98]


@dataclass(frozen=True)
class Summary:
    config: str
    label: str
    events_per_s: float  # medians over the repeats
    p50_ms: float
    p99_ms: float
    events_per_s_ratio: float  # to config (a): below 1 is slower
    p50_ratio: float  # to config (a): above 1 is slower
    p99_ratio: float
    runs: list[Run]


def _medians(runs: list[Run]) -> tuple[float, float, float]:
    return (
        statistics.median(run.events_per_s for run in runs),
        statistics.median(run.p50_ms for run in runs),
        statistics.median(run.p99_ms for run in runs),
    )


def summarise(runs: dict[str, list[Run]], configs: Sequence[Config]) -> list[Summary]:
    base_rate, base_p50, base_p99 = _medians(runs["a"])
    summaries = []
    for config in configs:
        rate, p50, p99 = _medians(runs[config.key])
        summaries.append(
            Summary(
                config.key,
                config.label,
                rate,
                p50,
                p99,
                rate / base_rate,
                p50 / base_p50,
                p99 / base_p99,
                runs[config.key],
            )
        )
    return summaries


def table(summaries: list[Summary]) -> str:
    header = (
        f"{'configuration':<32}{'events/s':>10}{'ratio':>7}"
        f"{'p50 ms':>9}{'ratio':>7}{'p99 ms':>9}{'ratio':>7}"
    )
    rows = [header, "-" * len(header)]
    for s in summaries:
        rows.append(
            f"{s.label:<32}{s.events_per_s:>10,.0f}{s.events_per_s_ratio:>7.2f}"
            f"{s.p50_ms:>9.2f}{s.p50_ratio:>7.2f}{s.p99_ms:>9.2f}{s.p99_ratio:>7.2f}"
        )
    return "\n".join(rows)


def _dropped(summary: Summary) -> list[str]:
    """What voids a configuration's figures: the records its journal dropped."""
    lossy = [run.dropped for run in summary.runs if run.dropped]
    if not lossy:
        return []
    return [
        f"the journal dropped {sum(lossy):,} records in {len(lossy)} of {len(summary.runs)} runs"
    ]


def verdicts(summaries: Sequence[Summary], configs: Sequence[Config]) -> list[str]:
    """One line per target: each configuration's events/s, then the journal's cost per event."""
    lines = []
    for s, config in zip(summaries, configs, strict=True):
        if config.target:
            met = verdict(s.events_per_s >= config.target, _dropped(s))
            lines.append(f"target {config.target:,} events/s on one core, {s.label}: {met}")
    for journal in (s for s in summaries if s.config == "d"):
        cost = 1 / journal.events_per_s_ratio - 1  # extra time per event, relative to (a)
        met = verdict(cost <= JOURNAL_COST_LIMIT, _dropped(journal))
        limit = f"{JOURNAL_COST_LIMIT:.0%}"
        lines.append(f"journal cost per event vs (a): {cost:+.0%} (target <= {limit}): {met}")
    return lines


def pin_to_one_core() -> int:
    """Run on the first CPU this process may use, as a one-core controller would."""
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def profile(config: Config, args: argparse.Namespace) -> None:
    """One run of ``config`` under cProfile: the functions that take the most time."""
    profiler = cProfile.Profile()
    profiler.enable()
    run = asyncio.run(run_once(config, args.events, args.objects, args.batch, args.seconds))
    profiler.disable()
    print(f"{config.label}: {run.events_per_s:,.0f} events/s under cProfile (inflated costs)")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline",
        description="Events/s and queue wait through a real controller, with no sinks, a "
        "counting sink and the PrometheusSink. See bench/README.md.",
    )
    parser.add_argument("--events", type=int, default=200_000, help="events per run")
    parser.add_argument(
        "--seconds",
        type=float,
        default=0.0,
        help="stop feeding a run after this many seconds even if --events are not all fed "
        "(0: no limit)",
    )
    parser.add_argument("--objects", type=int, default=20_000, help="distinct objects")
    parser.add_argument("--batch", type=int, default=100, help="events fed per loop turn")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    parser.add_argument(
        "--only",
        metavar="KEYS",
        help="run only these configurations, e.g. 'd,e' ((a), the baseline, always runs)",
    )
    parser.add_argument(
        "--profile",
        choices=[config.key for config in CONFIGS],
        help="instead of the table, profile one run of this configuration",
    )
    args = parser.parse_args(argv)
    if min(args.events, args.objects, args.batch, args.repeats) < 1:
        parser.error("--events, --objects, --batch and --repeats must be at least 1")
    keys = {config.key for config in CONFIGS}
    wanted = {"a", *(args.only or ",".join(keys)).split(",")}
    if wanted - keys:
        parser.error(f"--only: no configuration {', '.join(sorted(wanted - keys))}")
    args.configs = [config for config in CONFIGS if config.key in wanted]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    cpu = pin_to_one_core()
    if args.profile:
        profile(next(c for c in CONFIGS if c.key == args.profile), args)
        return
    print(
        f"{args.events:,} events over {args.objects:,} objects, batches of {args.batch}, "
        f"medians of {args.repeats} run(s) per configuration, pinned to CPU {cpu}, "
        f"Python {platform.python_version()}"
    )
    configs: list[Config] = args.configs
    runs: dict[str, list[Run]] = {config.key: [] for config in configs}
    # Interleaved, so a noisy neighbour or a slowly warming machine touches every configuration.
    for _ in range(args.repeats):
        for config in configs:
            gc.collect()  # garbage from the previous run is not this run's cost
            run = asyncio.run(run_once(config, args.events, args.objects, args.batch, args.seconds))
            runs[config.key].append(run)
    summaries = summarise(runs, configs)
    print(table(summaries))
    reconciles = statistics.median(run.reconciles for run in runs["a"])
    print(f"reconciles per run (a): {reconciles:,.0f}")
    for line in verdicts(summaries, configs):
        print(line)
    if args.json:
        report = {
            "parameters": {
                "events": args.events,
                "objects": args.objects,
                "batch": args.batch,
                "repeats": args.repeats,
                "seconds": args.seconds,
                "cpu": cpu,
                "python": platform.python_version(),
            },
            "target_events_per_s": TARGET_EVENTS_PER_S,
            "results": [asdict(s) for s in summaries],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
