"""Journal benchmark: ingest rate, bytes per record, and explain on a large journal.

    python -m bench.journal [--records 1000000] [--objects 10000] [--json PATH]

Writes realistic record chains (event → dispatch → reconcile start → reconcile end, with a
requeue now and then) for ``--objects`` objects through ``JournalWriter`` and reports records
per second until everything is on disk, and the file's bytes per record. Then, on that file,
times what ``ctrltrace explain`` does for one object (``Journal.about`` plus the health
queries plus ``explain``) for 25 objects and prints the median and the worst (target:
≤ 150 ms on 1,000,000 records). Records the writer dropped are not counted as written, and a
run that dropped any does not meet the target: its journal is not the one asked for.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench._harness import verdict
from ctrltrace.explain import explain
from ctrltrace.journal import Journal, JournalWriter
from ctrltrace.records import AttrValue, ObjectRef, Record, Stage

EXPLAIN_TARGET_MS = 150.0


def record_chains(records: int, objects: int, start: float) -> Iterator[Record]:
    """Record chains as a controller emits them, one event at a time, round-robin objects."""
    emitted = 0
    event_number = 0
    attrs_event: dict[str, AttrValue] = {
        "writer": "kubectl-client-side-apply",
        "self_caused": False,
    }
    while emitted < records:
        index = event_number % objects
        now = start + event_number * 0.001
        ref = ObjectRef(
            "v1", "ConfigMap", "bench", f"cm-{index:06d}", f"uid-{index}", str(event_number), 0
        )
        request = f"bench/cm-{index:06d}"
        reconcile_id = f"bench-{event_number:x}"
        event = Record(now, Stage.EVENT, "MODIFIED", object=ref, attrs=attrs_event)
        dispatch = Record(
            now, Stage.DISPATCH, "queued", reason="the object itself", controller="configmap",
            object=ref, request=request, cause_ids=(event.id,),
            attrs={"handler": "for the object itself", "event_type": "update"},
        )  # fmt: skip
        begin = Record(
            now + 0.0002, Stage.RECONCILE_START, "started", controller="configmap",
            request=request, reconcile_id=reconcile_id, cause_ids=(dispatch.id,),
            attrs={"queue_wait_s": 0.0002, "retries": 0},
        )  # fmt: skip
        end = Record(
            now + 0.0009, Stage.RECONCILE, "success", reason="success", controller="configmap",
            request=request, reconcile_id=reconcile_id, cause_ids=(begin.id,),
            attrs={"duration_s": 0.0007, "metric_result": "success"},
        )  # fmt: skip
        chain = [event, dispatch, begin, end]
        if event_number % 10 == 0:
            chain.append(
                Record(
                    now + 0.0009,
                    Stage.REQUEUE,
                    "after",
                    reason="next run in 300.000s",
                    controller="configmap",
                    request=request,
                    reconcile_id=reconcile_id,
                    cause_ids=(end.id,),
                    attrs={"delay_s": 300.0, "due": now + 300},
                )
            )
        yield from chain[: records - emitted]
        emitted += len(chain)
        event_number += 1


def ingest(path: Path, records: int, objects: int) -> dict[str, float]:
    """Write ``records`` records; the rate and size count only those that reached the file."""
    start = time.time() - 3600
    began = time.perf_counter()
    with JournalWriter(path) as writer:
        for n, record in enumerate(record_chains(records, objects, start), 1):
            writer(record)
            if n % 50_000 == 0:  # the writer would drop what does not fit its buffer: keep up
                writer.flush()
        produced = time.perf_counter() - began
    elapsed = time.perf_counter() - began
    size = path.stat().st_size + sum(
        p.stat().st_size for p in path.parent.glob(f"{path.name}-*") if p.is_file()
    )
    with Journal(path) as journal:
        held = journal.count()  # what was written, and a gap record per loss
    written = records - writer.dropped
    return {
        "records": records,
        "written": written,
        "dropped": writer.dropped,
        "produce_s": round(produced, 2),
        "seconds_until_on_disk": round(elapsed, 2),
        "records_per_s": round(written / elapsed),
        "bytes_per_record": round(size / held, 1) if held else math.nan,
    }


def time_explain(path: Path, objects: int, samples: int = 25) -> dict[str, float]:
    timings = []
    with Journal(path) as journal:
        for n in range(samples):
            name = f"cm-{(n * 397) % objects:06d}"
            began = time.perf_counter()
            answer = explain(
                journal.about("bench", name, kind="ConfigMap"),
                namespace="bench",
                name=name,
                kind="ConfigMap",
                watch_records=journal.watch_records(),
                lease_records=journal.lease_records(),
                controller_records=journal.controller_records(),
                now=time.time(),
            )
            timings.append((time.perf_counter() - began) * 1000)
            assert answer.verdict.code in ("requeue_scheduled", "reconciled"), answer.verdict
    return {
        "median_ms": round(statistics.median(timings), 1),
        "worst_ms": round(max(timings), 1),
        "samples": samples,
    }


def report(written: dict[str, float], timed: dict[str, float]) -> list[str]:
    """The lines printed for an ingest and the explain timings on its journal."""
    dropped = int(written["dropped"])
    lost = (
        [f"the journal dropped {dropped:,} of {written['records']:,.0f} records"] if dropped else []
    )
    met = verdict(timed["worst_ms"] <= EXPLAIN_TARGET_MS, lost)
    return [
        f"ingest: {written['written']:,.0f} records written in "
        f"{written['seconds_until_on_disk']} s = {written['records_per_s']:,.0f} records/s; "
        f"{written['bytes_per_record']} bytes/record; dropped {dropped:,}",
        f"explain one object on {written['written']:,.0f} records: median {timed['median_ms']} "
        f"ms, worst {timed['worst_ms']} ms of {timed['samples']:.0f} "
        f"(target <= {EXPLAIN_TARGET_MS:.0f} ms): {met}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ctrltrace-journal-bench-") as folder:
        path = Path(folder) / "journal.sqlite"
        written = ingest(path, args.records, args.objects)
        timed = time_explain(path, args.objects)
        for line in report(written, timed):
            print(line)
        if args.json:
            args.json.write_text(json.dumps({"ingest": written, "explain": timed}, indent=2))


if __name__ == "__main__":
    main()
