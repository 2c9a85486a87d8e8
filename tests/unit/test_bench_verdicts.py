"""The benchmarks' verdicts say "met" only of a run that measured what the target is about.

A run with no lag samples, a view that never caught up, or records dropped on the way (by the
journal writer or the view's feed) must not meet a target, and must say why in the same line.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bench import journal as journal_bench
from bench import pipeline
from bench import tui as tui_bench
from ctrltrace.journal import Journal, JournalWriter
from ctrltrace.records import Record, Sink
from ctrltrace.tui.feed import RecorderFeed
from ctrltrace.vocabulary import ManagerOutcome

# -- bench.tui -----------------------------------------------------------------------------------

MEASURED = tui_bench.Report(
    feed="journal",
    rate=5000,
    seconds=60,
    size="120x40",
    written=1000,
    available=1000,
    applied=1000,
    catch_up_s=0.1,
    lag_last_5s_max_s=0.3,
    lag_at_end_s=0.2,
    lags=[(59.75, 0.2)],
)


def test_a_run_that_measured_every_record_under_the_target_meets_it() -> None:
    assert tui_bench.lag_verdict(MEASURED) == "met"
    assert tui_bench.lag_verdict(replace(MEASURED, lag_at_end_s=1.5)) == "MISSED"


@pytest.mark.parametrize(
    ("run", "said"),
    [
        (
            replace(MEASURED, lags=[], lag_last_5s_max_s=None, lag_at_end_s=None),
            "no lag samples: the view never rendered a record",
        ),
        (
            replace(MEASURED, applied=400, catch_up_s=None),
            "did not catch up within 30 s: 400 of 1,000 records shown",
        ),
        (
            replace(MEASURED, lost_by_writer=128, available=873, applied=873),
            "128 records dropped (128 by the journal writer, 0 by the view's feed)",
        ),
        (
            replace(MEASURED, feed="recorder", dropped_by_feed=90, applied=910),
            "90 records dropped (0 by the journal writer, 90 by the view's feed)",
        ),
    ],
)
def test_a_run_without_samples_caught_up_or_with_drops_is_not_met(
    run: tui_bench.Report, said: str
) -> None:
    verdict = tui_bench.lag_verdict(run)
    assert verdict.startswith("MISSED (") and said in verdict


class Burst:
    """A writer that hands ``records`` to ``sink`` at once and stops."""

    lost = 0

    def __init__(self, sink: Sink, records: list[Record]) -> None:
        self.sink = sink
        self.records = records
        self.written = 0
        self.stopped_at = 0.0

    @property
    def available(self) -> int:
        return self.written

    def start(self) -> None:
        for record in self.records:
            self.sink(record)
            self.written += 1
        self.stopped_at = time.monotonic()

    def is_alive(self) -> bool:
        return False


def workload(events: int) -> list[Record]:
    made = tui_bench.Workload()
    return [*made.health(), *(record for _ in range(events) for record in made.event())]


def test_a_view_that_never_gets_the_records_did_not_catch_up_and_has_no_samples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tui_bench, "CATCH_UP_S", 0.3)
    records = workload(10)
    nowhere = Burst(lambda record: None, records)  # written, but not to the view's feed
    report = tui_bench.Report("recorder", 1000, 1, "80x24")
    asyncio.run(tui_bench.measure(RecorderFeed(), nowhere, report, (80, 24)))
    assert (report.written, report.available, report.applied) == (len(records), len(records), 0)
    assert report.catch_up_s is None and report.lags == [] and report.lag_at_end_s is None
    verdict = tui_bench.lag_verdict(report)
    assert "no lag samples" in verdict
    assert f"did not catch up within 0.3 s: 0 of {len(records)} records shown" in verdict
    lines: list[str] = []
    tui_bench.show(report, lines.append)
    assert "  caught up                       no: not within 0.3 s" in lines
    assert any(line.startswith("  display lag at the end          - ") for line in lines)


def test_records_the_views_feed_dropped_are_counted_beside_the_verdict() -> None:
    records = workload(30)
    feed = RecorderFeed(max_pending=10)
    report = tui_bench.Report("recorder", 1000, 1, "80x24")
    asyncio.run(tui_bench.measure(feed, Burst(feed, records), report, (80, 24)))
    # All at once, before the view took any: only the newest 10 reached it.
    assert (report.applied, report.dropped_by_feed) == (10, len(records) - 10)
    assert report.catch_up_s is not None  # every record is accounted for: shown or dropped
    assert f"{len(records) - 10} records dropped" in tui_bench.lag_verdict(report)


# -- bench.pipeline ------------------------------------------------------------------------------


def summary(config: str, events_per_s: float, *dropped: int) -> pipeline.Summary:
    runs = [pipeline.Run(1000, 1000, 0.1, events_per_s, 1.0, 2.0, lost) for lost in dropped]
    label = next(c.label for c in pipeline.CONFIGS if c.key == config)
    return pipeline.Summary(
        config, label, events_per_s, 1.0, 2.0, events_per_s / 50_000, 1, 1, runs
    )


def test_a_journal_configuration_that_dropped_records_does_not_meet_its_targets() -> None:
    configs = [c for c in pipeline.CONFIGS if c.key in "ad"]
    clean = [summary("a", 50_000, 0, 0, 0), summary("d", 45_000, 0, 0, 0)]
    assert [line.rsplit(": ", 1)[1] for line in pipeline.verdicts(clean, configs)] == ["met"] * 3
    lossy = [clean[0], summary("d", 45_000, 0, 128, 256)]
    journal_lines = pipeline.verdicts(lossy, configs)[1:]
    assert len(journal_lines) == 2
    for line in journal_lines:
        assert line.endswith(": MISSED (the journal dropped 384 records in 2 of 3 runs)")


# -- bench.journal -------------------------------------------------------------------------------


def test_the_journal_bench_counts_dropped_records_as_not_written_and_not_met() -> None:
    timed = {"median_ms": 10.0, "worst_ms": 20.0, "samples": 25}
    clean = {"records": 1000, "written": 1000, "dropped": 0, "seconds_until_on_disk": 1.0,
             "records_per_s": 1000, "bytes_per_record": 70.0}  # fmt: skip
    assert journal_bench.report(clean, timed)[1].endswith("(target <= 150 ms): met")
    lossy = clean | {"written": 872, "dropped": 128, "records_per_s": 872}
    ingest, explained = journal_bench.report(lossy, timed)
    assert ingest.startswith("ingest: 872 records written") and ingest.endswith("dropped 128")
    assert explained.startswith("explain one object on 872 records")
    assert explained.endswith(": MISSED (the journal dropped 128 of 1,000 records)")


def test_the_journal_bench_ingest_counts_what_reached_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A writer whose thread sleeps while the bench feeds it: the oldest records overflow.
    sleepy = functools.partial(
        JournalWriter, max_pending=1_000, batch_size=100_000, flush_interval_s=60.0
    )
    monkeypatch.setattr(journal_bench, "JournalWriter", sleepy)
    written = journal_bench.ingest(tmp_path / "journal.sqlite", 5_000, 100)
    assert 0 < written["dropped"] < 5_000
    assert written["written"] == 5_000 - written["dropped"]
    with Journal(tmp_path / "journal.sqlite") as journal:
        kept = [record for _, record in journal.tail(0, 10_000)]
    gaps = [record for record in kept if record.outcome == ManagerOutcome.JOURNAL_GAP]
    assert len(kept) - len(gaps) == written["written"]
