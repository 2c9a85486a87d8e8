"""TUI benchmark: can the live view keep up with a busy controller, in flat memory?

A writer produces records at a fixed rate, as a busy controller does (watch events, each
followed by its dispatch, reconcile start and end; some dropped by a predicate, some failing and
retried). With ``--feed journal`` (what ``ctrltrace tui`` does) a child process writes them with
a real ``JournalWriter``, as ``ctrltrace run`` would, and the view tails the file; the writer's
memory and CPU are then not the view's. With ``--feed recorder`` (what ``ctrltrace run --tui``
does) a thread of this process hands them to the in-process ``RecorderFeed`` sink. The app runs
headless in this process, with its real render loop, at ``--size``.

It reports the display lag (at each render: wall time minus the time of the newest record
shown) over the run and at its end, how far the view was behind the writer when writing
stopped, and the process's RSS before feeding, once the tables are full, and at the end.
The lag target is met only if the view rendered (there are lag samples), took in every record
the writer made within ``CATCH_UP_S`` of its end, and nothing was dropped on the way (by the
journal writer or the view's feed); otherwise the verdict says which of these failed.

    python -m bench.tui [--rate 5000] [--seconds 60] [--feed journal|recorder] [--json PATH]

(``--write PATH`` is the child's mode: write to the journal at PATH, print how many records.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench._harness import cpu_seconds, rss_mib, verdict
from ctrltrace.evidence import Opener
from ctrltrace.journal import Journal, JournalWriter
from ctrltrace.records import ObjectRef, Record, Sink, Stage
from ctrltrace.tui.app import TraceApp
from ctrltrace.tui.feed import Batch, EvidenceFeed, Feed, Notify, RecorderFeed

TARGET_LAG_S = 1.0
CATCH_UP_S = 30.0  # how long the view may take, once writing stopped, to show every record
FLAT_RSS_MIB = 10.0  # growth from full tables to the end that still counts as flat
WARM_S = 5.0  # feeding until every table is at its cap
NAMESPACES = 20
OBJECTS = 5_000


class Workload:
    """Records as a controller writes them for a stream of watch events, with their links."""

    def __init__(self) -> None:
        self._next = 0
        self._id = 0

    def _record(self, stage: Stage, outcome: str, **fields: Any) -> Record:
        self._id += 1
        return Record(time=time.time(), stage=stage, outcome=outcome, id=self._id, **fields)

    def health(self) -> list[Record]:
        """What a run writes first: the manager, the informers, the controller."""
        kinds = [
            {"kind": "Widget", "api_version": "example.com/v1"},
            {"kind": "ConfigMap", "api_version": "v1"},
        ]
        return [
            self._record(Stage.MANAGER, "started", reason="1 controller(s), 2 kind(s)"),
            *(self._record(Stage.WATCH, "synced", reason="cache synced", attrs=k) for k in kinds),
            self._record(
                Stage.CONTROLLER,
                "started",
                controller="widget",
                reason="4 worker(s)",
                attrs={"max_concurrent_reconciles": 4},
            ),
        ]

    def event(self) -> list[Record]:
        """One watch event and what the controller did with it: 2 to 7 records."""
        n = self._next
        self._next += 1
        kind = "ConfigMap" if n % 3 == 0 else "Widget"
        name = f"obj-{n % OBJECTS}"
        ref = ObjectRef("v1", kind, f"ns-{n % NAMESPACES}", name, f"uid-{name}", str(n), 1)
        event = self._record(Stage.EVENT, "MODIFIED", object=ref, attrs={"self_caused": False})
        common = {
            "controller": "widget",
            "object": ref,
            "request": ref.key,
            "cause_ids": (event.id,),
        }
        if n % 10 == 0:
            return [
                event,
                self._record(
                    Stage.DISPATCH,
                    "dropped_by_predicate",
                    reason="generation unchanged",
                    attrs={"predicate": "GenerationChanged", "event_type": "update"},
                    **common,
                ),
            ]
        dispatch = self._record(Stage.DISPATCH, "queued", attrs={"handler": "for"}, **common)
        records = [event, dispatch]
        rid = f"r{n}"
        run = {"controller": "widget", "request": ref.key, "reconcile_id": rid}
        start = self._record(Stage.RECONCILE_START, "started", cause_ids=(dispatch.id,), **run)
        failing = n % 25 == 0
        end = self._record(
            Stage.RECONCILE,
            "error" if failing else "success",
            reason="RuntimeError: flaky" if failing else "success",
            cause_ids=(start.id,),
            attrs={"duration_s": 0.001, "metric_result": "error" if failing else "success"},
            **run,
        )
        records += [start, end]
        if failing:
            due = time.time() + 0.005
            requeue = self._record(
                Stage.REQUEUE,
                "rate_limited",
                cause_ids=(end.id,),
                attrs={"delay_s": 0.005, "due": due, "attempt": 1},
                **run,
            )
            retry = self._record(Stage.RECONCILE_START, "started", cause_ids=(requeue.id,), **run)
            success = {"duration_s": 0.001, "metric_result": "success"}
            done = self._record(
                Stage.RECONCILE, "success", cause_ids=(retry.id,), attrs=success, **run
            )
            records += [requeue, retry, done]
        return records


@dataclass
class Report:
    feed: str
    rate: float
    seconds: float
    size: str
    written: int = 0
    lost_by_writer: int = 0  # records the journal writer dropped (the journal feed)
    available: int = 0  # records the view can take in: what the journal holds, or all written
    dropped_by_feed: int = 0  # records the view's feed dropped (the recorder feed)
    applied_when_writing_stopped: int = 0
    applied: int = 0
    # From the writer's stop until the view had every record; None: not within CATCH_UP_S.
    catch_up_s: float | None = None
    # None: no sample (the view never rendered a record).
    lag_p50_s: float | None = None
    lag_max_s: float | None = None
    lag_last_5s_max_s: float | None = None
    lag_at_end_s: float | None = None
    rss_before_mib: float = 0.0
    rss_warm_mib: float | None = None  # None: the run ended before the tables were full
    rss_end_mib: float = 0.0
    cpu_share: float = 0.0  # CPU of this process while records came, per second (1.0: a core)
    lags: list[tuple[float, float]] = field(default_factory=list)  # (seconds into the run, lag)

    @property
    def flat(self) -> bool:
        warm = self.rss_warm_mib
        return warm is not None and self.rss_end_mib - warm < FLAT_RSS_MIB


def lag_verdict(report: Report) -> str:
    """The lag target's verdict: "met" only for a run that measured it over every record."""
    shortfalls = []
    if not report.lags:
        shortfalls.append("no lag samples: the view never rendered a record")
    if report.catch_up_s is None:
        shortfalls.append(
            f"did not catch up within {CATCH_UP_S:g} s: "
            f"{report.applied:,} of {report.available:,} records shown"
        )
    if report.lost_by_writer or report.dropped_by_feed:
        shortfalls.append(
            f"{report.lost_by_writer + report.dropped_by_feed:,} records dropped "
            f"({report.lost_by_writer:,} by the journal writer, "
            f"{report.dropped_by_feed:,} by the view's feed)"
        )
    lags = (report.lag_at_end_s, report.lag_last_5s_max_s)
    met = all(lag is not None and lag < TARGET_LAG_S for lag in lags)
    return verdict(met, shortfalls)


class Writer(threading.Thread):
    """Hands ``rate`` records a second to ``sink`` for ``seconds``, in 10 ms slices."""

    lost = 0  # a sink called in this process receives every record

    @property
    def available(self) -> int:
        return self.written

    def __init__(self, sink: Sink, rate: float, seconds: float) -> None:
        super().__init__(name="bench writer", daemon=True)
        self.sink = sink
        self.rate = rate
        self.seconds = seconds
        self.written = 0
        self.stopped_at = 0.0
        self.newest = 0.0

    def run(self) -> None:
        workload = Workload()
        for record in workload.health():
            self.sink(record)
            self.written += 1
        paced = self.written  # the health records come before the clock starts
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < self.seconds:
            while self.written - paced < self.rate * elapsed:
                for record in workload.event():
                    self.sink(record)
                    self.written += 1
            time.sleep(0.01)
        self.stopped_at = time.monotonic()


class WriterProcess:
    """The writer in a child process, writing a journal as ``ctrltrace run`` would."""

    def __init__(self, path: Path, rate: float, seconds: float) -> None:
        self.command = [
            sys.executable, "-m", "bench.tui", "--write", str(path),
            "--rate", str(rate), "--seconds", str(seconds),
        ]  # fmt: skip
        self.process: subprocess.Popen[str] | None = None
        self.written = 0
        self.lost = 0
        self.available = 0
        self.stopped_at = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, text=True)

    def is_alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is None:
            return True
        if not self.stopped_at:
            self.stopped_at = time.monotonic()
            output, _ = self.process.communicate()
            self.written, self.lost, self.available = map(int, output.split())
        return False


class Source(Protocol):
    """The writer as ``measure`` sees it; its counts are final once it is no longer alive."""

    @property
    def written(self) -> int: ...

    @property
    def lost(self) -> int:
        """Records lost before the view's feed could see them."""

    @property
    def available(self) -> int:
        """Records the view's feed can take in."""

    @property
    def stopped_at(self) -> float: ...

    def start(self) -> None: ...

    def is_alive(self) -> bool: ...


class CountedFeed:
    """The view's feed, keeping the count of records it dropped (``Batch.dropped``)."""

    def __init__(self, feed: Feed) -> None:
        self._feed = feed
        self.dropped = 0

    @property
    def evidence(self) -> Opener | None:
        return self._feed.evidence

    @property
    def label(self) -> str:
        return self._feed.label

    def start(self, notify: Notify) -> None:
        self._feed.start(notify)

    def take(self) -> Batch:
        batch = self._feed.take()
        self.dropped = batch.dropped  # since the feed started
        return batch

    def stop(self) -> None:
        self._feed.stop()


async def measure(feed: Feed, writer: Source, report: Report, size: tuple[int, int]) -> None:
    counted = CountedFeed(feed)
    app = TraceApp(counted)
    async with app.run_test(headless=True, size=size) as pilot:
        await pilot.press("5")  # the funnel and time views on screen: the costliest to draw
        await pilot.pause(0.5)
        report.rss_before_mib = rss_mib()
        began = time.monotonic()
        cpu_began = cpu_seconds()
        writer.start()
        while writer.is_alive():
            await asyncio.sleep(0.25)
            now = time.monotonic() - began
            if app.lag is not None:
                report.lags.append((now, app.lag))
            if report.rss_warm_mib is None and now >= WARM_S:
                report.rss_warm_mib = rss_mib()
        report.cpu_share = (cpu_seconds() - cpu_began) / (time.monotonic() - began)
        report.written, report.lost_by_writer = writer.written, writer.lost
        report.available = writer.available
        report.applied_when_writing_stopped = app.live.applied
        give_up = writer.stopped_at + CATCH_UP_S
        while app.live.applied + counted.dropped < writer.available:
            if time.monotonic() >= give_up:
                break
            await asyncio.sleep(0.05)
        else:
            report.catch_up_s = time.monotonic() - writer.stopped_at
        report.applied, report.dropped_by_feed = app.live.applied, counted.dropped
        await pilot.pause(0.3)  # one more render at most RENDER_EVERY_S later
        report.rss_end_mib = rss_mib()
    end = report.lags[-1][0] if report.lags else 0.0
    lags = [lag for _, lag in report.lags]
    if lags:
        report.lag_p50_s = statistics.median(lags)
        report.lag_max_s = max(lags)
        report.lag_last_5s_max_s = max(lag for at, lag in report.lags if at >= end - 5.0)
        report.lag_at_end_s = lags[-1]


def run(rate: float, seconds: float, feed_kind: str, size: tuple[int, int]) -> Report:
    report = Report(feed_kind, rate, seconds, f"{size[0]}x{size[1]}")
    with tempfile.TemporaryDirectory(prefix="ctrltrace-bench-tui-") as scratch:
        if feed_kind == "recorder":
            feed = RecorderFeed()
            asyncio.run(measure(feed, Writer(feed, rate, seconds), report, size))
            return report
        path = Path(scratch) / "journal.sqlite"
        JournalWriter(path).close()  # the view opens it before the child writes
        asyncio.run(
            measure(EvidenceFeed.of_journal(path), WriterProcess(path, rate, seconds), report, size)
        )
    return report


def write(path: Path, rate: float, seconds: float) -> None:
    """The child: write the workload to the journal at ``path``; print the records written,
    those the journal writer dropped, and those the journal holds (its gap records too)."""
    with JournalWriter(path) as journal:
        writer = Writer(journal, rate, seconds)
        writer.start()
        writer.join()
    with Journal(path) as written:
        held = written.count()
    print(writer.written, journal.dropped, held)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def show(report: Report, say: Callable[[str], None] = print) -> None:
    say(
        f"ctrltrace tui benchmark: {report.rate:,.0f} records/s for {report.seconds:g} s, "
        f"feed {report.feed}, headless {report.size}"
    )
    say(f"  records written                 {report.written:,}")
    if report.feed == "journal":
        say(
            f"  records in the journal          {report.available:,} "
            f"(the writer dropped {report.lost_by_writer:,})"
        )
    say(f"  shown when writing stopped      {report.applied_when_writing_stopped:,}")
    say(
        f"  shown at the end                {report.applied:,} of {report.available:,} "
        f"(the view's feed dropped {report.dropped_by_feed:,})"
    )
    if report.catch_up_s is None:
        say(f"  caught up                       no: not within {CATCH_UP_S:g} s")
    else:
        say(f"  caught up                       {report.catch_up_s:.2f} s after the writer stopped")
    say(
        f"  display lag p50 / max           {_seconds(report.lag_p50_s)} / "
        f"{_seconds(report.lag_max_s)} ({len(report.lags)} samples)"
    )
    say(f"  display lag, last 5 s (max)     {_seconds(report.lag_last_5s_max_s)}")
    say(
        f"  display lag at the end          {_seconds(report.lag_at_end_s)} "
        f"(target < {TARGET_LAG_S:g} s): {lag_verdict(report)}"
    )
    say(f"  RSS before feeding              {report.rss_before_mib:.1f} MiB")
    warm = report.rss_warm_mib
    if warm is None:
        say(f"  RSS after {WARM_S:g} s (tables full)    - (the run was shorter)")
        growth = "not measured"
    else:
        say(f"  RSS after {WARM_S:g} s (tables full)    {warm:.1f} MiB")
        growth = f"{report.rss_end_mib - warm:+.1f} MiB"
    say(
        f"  RSS at the end                  {report.rss_end_mib:.1f} MiB "
        f"({growth}; flat if < +{FLAT_RSS_MIB:g}): {'flat' if report.flat else 'NOT flat'}"
    )
    say(f"  CPU of the view while fed       {report.cpu_share:.0%} of a core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="records per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to feed")
    parser.add_argument("--feed", choices=["journal", "recorder"], default="journal")
    parser.add_argument("--size", default="120x40", help="the headless terminal, WxH")
    parser.add_argument("--json", type=Path, help="also write the figures (and every lag sample)")
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write is not None:
        write(args.write, args.rate, args.seconds)
        return
    width, _, height = args.size.partition("x")
    report = run(args.rate, args.seconds, args.feed, (int(width), int(height)))
    show(report)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    raise SystemExit(0 if lag_verdict(report) == "met" and report.flat else 1)


if __name__ == "__main__":
    main()
