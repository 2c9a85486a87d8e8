"""Span delivery benchmark against a real Jaeger: the sustained rate with zero drops, and
the drop rate at twice that.

    python -m bench.spans [--seconds 10] [--start 1000] [--json PATH]

Starts Jaeger (built from its Go module, as the tests do), configures tracing exactly as
``ctrltrace run --otlp-endpoint`` does, and feeds realistic record chains (3 spans per event)
through the ``SpanSink`` at a paced rate for ``--seconds``. The rate doubles from ``--start``
spans/s until spans are dropped; the last rate without drops is the sustained figure, and the
run at twice it gives the drop rate. Every figure counts spans the exporter confirmed.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.journal import record_chains
from ctrltrace.envtest.observability import Jaeger
from ctrltrace.exporters.tracing import configure_tracing
from ctrltrace.records import Stage

SPAN_STAGES = {Stage.EVENT, Stage.DISPATCH, Stage.RECONCILE}  # a span ends at each of these


@dataclass
class Step:
    offered_spans_per_s: float
    seconds: float
    spans: int
    exported: int
    dropped: int
    failed: int

    @property
    def drop_rate(self) -> float:
        return (self.dropped + self.failed) / self.spans if self.spans else 0.0


def run_at(endpoint: str, spans_per_s: float, seconds: float) -> Step:
    tracing = configure_tracing(endpoint, service_name=f"bench-{int(spans_per_s)}")
    assert tracing is not None
    _, sink, losses = tracing
    records = record_chains(10**9, 1000, time.time())
    spans = 0
    began = time.perf_counter()
    deadline = began + seconds
    while (now := time.perf_counter()) < deadline:
        # Paced in small steps: at most the spans due by now.
        due = int((now - began) * spans_per_s)
        while spans < due:
            record = next(records)
            sink(record)
            if record.stage in SPAN_STAGES:
                spans += 1
        time.sleep(0.001)
    elapsed = time.perf_counter() - began
    sink.close()
    losses.shutdown(timeout_s=30)
    return Step(spans_per_s, elapsed, spans, losses.exported, losses.dropped, losses.failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--start", type=float, default=1000.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    steps: list[Step] = []
    with Jaeger() as jaeger:
        rate = args.start
        sustained: Step | None = None
        while True:
            step = run_at(jaeger.otlp_http_endpoint, rate, args.seconds)
            steps.append(step)
            print(
                f"offered {rate:>8,.0f} spans/s: sent {step.spans:>7,}, exported "
                f"{step.exported:>7,}, dropped {step.dropped:>6,}, failed {step.failed:>6,} "
                f"({step.drop_rate:.1%} lost, {step.spans / step.seconds:,.0f} spans/s achieved)"
            )
            achieved = step.spans / step.seconds
            if step.drop_rate > 0 or achieved < 0.9 * rate:
                break  # losing spans, or the feeder itself cannot keep this pace
            sustained = step
            rate *= 2
        if sustained is None:
            raise SystemExit("spans were dropped even at the starting rate")
        double = run_at(jaeger.otlp_http_endpoint, 2 * sustained.offered_spans_per_s, args.seconds)
        steps.append(double)
    print(
        f"sustained with zero drops: {sustained.offered_spans_per_s:,.0f} spans/s; at 2x "
        f"({double.offered_spans_per_s:,.0f} offered, {double.spans / double.seconds:,.0f} "
        f"achieved): {double.drop_rate:.1%} dropped"
    )
    if args.json:
        args.json.write_text(json.dumps([asdict(step) for step in steps], indent=2))


if __name__ == "__main__":
    main()
