"""Soak: a manager under a steady stream of events for a long time, with the journal and OTLP
tracing on, sampled once a minute to show whether anything grows.

    python -m bench.soak [--minutes 30] [--rate 100] [--objects 1000] [--journal-mib 16]
                         [--sample-seconds 60] [--warmup-minutes 5] [--json PATH]

Starts one kube-apiserver + etcd and one Jaeger (in-memory) on loopback, creates
``--objects`` ConfigMaps of about 1 KiB, and runs a manager in this process with a no-op
reconcile, a journal limited to ``--journal-mib`` and spans sent over OTLP/HTTP to the Jaeger.
A separate writer process patches the ConfigMaps round-robin at ``--rate`` updates a second
for ``--minutes``: that many watch events a second. Each sample is this process's RSS, open
file descriptors, asyncio tasks and threads, the journal's size on disk (file and WAL), and
how many events, reconciles, dropped records and dropped spans there were so far. At the end
it prints, for each measure, the least-squares slope per minute over the samples after the
first ``--warmup-minutes`` (caches, pools and the journal filling up to its limit first), and
whether the journal stayed under its limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench._harness import rss_mib
from bench._writer import command
from ctrltrace import Context, Manager, Record, Request, Stage
from ctrltrace.envtest import ControlPlane
from ctrltrace.envtest.observability import Jaeger
from ctrltrace.exporters.tracing import configure_tracing
from ctrltrace.journal import JournalWriter
from ctrltrace.logs import configure

NAMESPACE = "soak"
MEASURES = ("rss_mib", "open_fds", "asyncio_tasks", "threads", "journal_mib", "wal_mib")


@dataclass
class Sample:
    minute: float
    rss_mib: float
    open_fds: int
    asyncio_tasks: int
    threads: int
    journal_mib: float
    wal_mib: float
    events: int
    reconciles: int
    records_dropped: int
    spans_dropped: int


class Counter:
    """Counts watch events and reconciles from the manager's records."""

    def __init__(self) -> None:
        self.events = 0
        self.reconciles = 0

    def __call__(self, record: Record, /) -> None:
        if record.stage is Stage.EVENT:
            self.events += 1
        elif record.stage is Stage.RECONCILE:
            self.reconciles += 1


def mib(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 2) if path.exists() else 0.0


def slope_per_minute(samples: list[Sample], measure: str, warmup: float) -> float | None:
    """Least-squares slope of ``measure`` against minutes, after the warm-up; None with fewer
    than three samples there."""
    kept = [sample for sample in samples if sample.minute >= warmup]
    if len(kept) < 3:
        return None
    minutes = [sample.minute for sample in kept]
    values = [float(getattr(sample, measure)) for sample in kept]
    return statistics.linear_regression(minutes, values).slope


async def _soak(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    async def reconcile(ctx: Context, request: Request) -> None:
        return None

    configure("json", log_file=workdir / "soak.log")
    with ControlPlane() as plane, Jaeger() as jaeger:
        plane.request("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
        create = await asyncio.create_subprocess_exec(
            *command(plane.kubeconfig, NAMESPACE, args.objects, "create", 1024)
        )
        if await create.wait() != 0:
            raise SystemExit("the writer failed to create the ConfigMaps")

        tracing = configure_tracing(jaeger.otlp_http_endpoint, service_name="ctrltrace-soak")
        assert tracing is not None  # an endpoint was given
        _, spans, losses = tracing
        journal_path = workdir / "journal.sqlite"
        journal = JournalWriter(journal_path, max_bytes=args.journal_mib * 2**20)
        counter = Counter()
        manager = Manager(
            kubeconfig=str(plane.kubeconfig),
            namespaces=[NAMESPACE],
            health_probe_bind_address="0",
            metrics_bind_address="0",
        )
        for sink in (journal, spans, counter):
            manager.add_sink(sink)
        manager.controller().for_("v1", "ConfigMap").with_options(
            max_concurrent_reconciles=4
        ).complete(reconcile)
        running = asyncio.create_task(manager.start())
        seconds = args.minutes * 60
        pace = ("--rate", str(args.rate), "--seconds", str(seconds))
        writer = await asyncio.create_subprocess_exec(
            *command(plane.kubeconfig, NAMESPACE, args.objects, "update", 1024, *pace)
        )
        started = time.monotonic()
        samples: list[Sample] = []

        def sample() -> Sample:
            taken = Sample(
                minute=round((time.monotonic() - started) / 60, 2),
                rss_mib=round(rss_mib(), 1),
                open_fds=sum(1 for _ in Path("/proc/self/fd").iterdir()),
                asyncio_tasks=len(asyncio.all_tasks()),
                threads=threading.active_count(),
                journal_mib=mib(journal_path),
                wal_mib=mib(journal_path.with_name(journal_path.name + "-wal")),
                events=counter.events,
                reconciles=counter.reconciles,
                records_dropped=journal.dropped,
                spans_dropped=losses.dropped + losses.failed,
            )
            print(_row(taken), flush=True)
            return taken

        print(_header(), flush=True)
        samples.append(sample())
        while writer.returncode is None:
            try:
                await asyncio.wait_for(writer.wait(), args.sample_seconds)
            except TimeoutError:
                samples.append(sample())
        if running.done():
            running.result()  # the manager stopped early: say why
            raise SystemExit("the manager stopped before the soak ended")
        samples.append(sample())
        manager.stop()
        await running
        journal.close()
        losses.shutdown()
        if writer.returncode != 0:
            raise SystemExit("the writer failed during the soak")

    limit = float(args.journal_mib)
    slopes = {
        measure: slope_per_minute(samples, measure, args.warmup_minutes) for measure in MEASURES
    }
    return {
        "parameters": vars(args) | {"json": str(args.json) if args.json else None},
        "samples": [asdict(sample) for sample in samples],
        "slopes_per_minute": slopes,
        "journal_limit_mib": limit,
        "journal_max_mib": max(sample.journal_mib for sample in samples),
        "wal_max_mib": max(sample.wal_mib for sample in samples),
        "events_per_second": _rate(samples, args.warmup_minutes),
    }


def _rate(samples: list[Sample], warmup: float) -> float:
    """Watch events a second after the warm-up (the initial list's ADDED events before it)."""
    kept = [sample for sample in samples if sample.minute >= warmup] or samples
    seconds = (kept[-1].minute - kept[0].minute) * 60
    return round((kept[-1].events - kept[0].events) / seconds, 1) if seconds else 0.0


def _header() -> str:
    return (
        f"{'minute':>7} {'RSS MiB':>8} {'fds':>5} {'tasks':>6} {'threads':>8} "
        f"{'journal MiB':>12} {'WAL MiB':>8} {'events':>9} {'reconciles':>11} {'rec lost':>9} "
        f"{'spans lost':>11}"
    )


def _row(sample: Sample) -> str:
    return (
        f"{sample.minute:>7.2f} {sample.rss_mib:>8.1f} {sample.open_fds:>5} "
        f"{sample.asyncio_tasks:>6} {sample.threads:>8} {sample.journal_mib:>12.2f} "
        f"{sample.wal_mib:>8.2f} "
        f"{sample.events:>9} {sample.reconciles:>11} {sample.records_dropped:>9} "
        f"{sample.spans_dropped:>11}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=100.0, help="watch events a second")
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--journal-mib", type=int, default=16, help="the journal's size limit")
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    parser.add_argument("--warmup-minutes", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ctrltrace-soak-") as workdir:
        results = asyncio.run(_soak(args, Path(workdir)))
    print(f"\nwatch events/s after the warm-up: {results['events_per_second']}")
    print(f"slopes per minute after the first {args.warmup_minutes:g} minutes:")
    for measure, slope in results["slopes_per_minute"].items():  # type: ignore[attr-defined]
        words = "too few samples" if slope is None else f"{slope:+.4f}/min ({slope * 60:+.2f}/h)"
        print(f"  {measure:<14} {words}")
    over = results["journal_max_mib"] - results["journal_limit_mib"]  # type: ignore[operator]
    print(
        f"journal file: at most {results['journal_max_mib']} MiB against a limit of "
        f"{results['journal_limit_mib']} MiB: "
        + ("held" if over <= 0 else f"over by {over:.2f} MiB (written between retention passes)")
        + f"; its WAL at most {results['wal_max_mib']} MiB beside it"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
