"""The funnel's picture of one controller (``Funnel``: stages, drops with their objects,
results, latencies, seconds) and the bounded pieces it is made of. Pure: no I/O."""

from __future__ import annotations

import bisect
import enum
import math
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ctrltrace.vocabulary import (
    RECONCILE_FAILED,
)

MAX_LOST = 200  # objects kept per drop (the newest)
MAX_SECONDS = 600  # seconds of rates and latencies kept per controller


class Step(enum.StrEnum):
    SEEN = "seen"
    PASSED = "passed"
    MAPPED = "mapped"
    ENQUEUED = "enqueued"
    RECONCILED = "reconciled"


class Loss(enum.StrEnum):
    """Where the events that did not reach the next stage went."""

    PREDICATE = "dropped_by_predicate"  # seen → passed
    NOT_MAPPED = "not_mapped"  # passed → mapped
    SHUT_DOWN = "shut_down"  # mapped → enqueued
    BLOCKED = "blocked"  # enqueued → reconciled: workers wait for a watch that failed
    WAITING = "waiting"  # enqueued → reconciled: not run yet
    STOPPED = "stopped"  # enqueued → reconciled: the process ended first


# The stage each loss is counted after, in the order the funnel shows them.
AFTER: Mapping[Loss, Step] = {
    Loss.PREDICATE: Step.SEEN,
    Loss.NOT_MAPPED: Step.PASSED,
    Loss.SHUT_DOWN: Step.MAPPED,
    Loss.BLOCKED: Step.ENQUEUED,
    Loss.WAITING: Step.ENQUEUED,
    Loss.STOPPED: Step.ENQUEUED,
}
STEP_WORDS = {
    Step.SEEN: "seen by its watches",
    Step.PASSED: "passed its predicates",
    Step.MAPPED: "mapped to a request",
    Step.ENQUEUED: "enqueued",
    Step.RECONCILED: "reconciled",
}
LOSS_WORDS = {
    Loss.PREDICATE: "dropped by predicate",
    Loss.NOT_MAPPED: "not mapped",
    Loss.SHUT_DOWN: "queue shut down",
    Loss.BLOCKED: "blocked",
    Loss.WAITING: "still waiting",
    Loss.STOPPED: "lost at stop",
}
# 0.1 ms to about 19 minutes.
_BOUNDS = tuple(1e-4 * 2 ** (i / 4) for i in range(94))


@dataclass(frozen=True, slots=True)
class Lost:
    """One object whose event was lost at a drop (the newest are kept)."""

    time: float
    kind: str
    api_version: str
    namespace: str
    name: str
    request: str
    reason: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "kind": self.kind,
            "api_version": self.api_version,
            "namespace": self.namespace,
            "name": self.name,
            "request": self.request,
            "reason": self.reason,
        }


@dataclass(slots=True)
class Drop:
    """Events lost between two stages for one reason."""

    loss: Loss
    reason: str
    count: int = 0
    objects: deque[Lost] = field(default_factory=lambda: deque(maxlen=MAX_LOST))

    @property
    def after(self) -> Step:
        return AFTER[self.loss]

    def to_json(self) -> dict[str, Any]:
        return {
            "after": str(self.after),
            "loss": str(self.loss),
            "reason": self.reason,
            "count": self.count,
            "objects": [lost.to_json() for lost in self.objects],
        }


class Histogram:
    """Latencies in log-spaced buckets: cheap to add and to merge, percentiles within 19 %
    (and exact at the ends: a percentile never lies outside the smallest and largest value)."""

    __slots__ = ("counts", "high", "low", "total")

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.total = 0
        self.low = math.inf
        self.high = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(_BOUNDS, seconds)] += 1
        self.total += 1
        self.low = min(self.low, seconds)
        self.high = max(self.high, seconds)

    def merge(self, other: Histogram) -> None:
        self.counts.update(other.counts)
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def percentile(self, fraction: float) -> float | None:
        """The upper bound of the bucket holding that fraction of the values (None if empty)."""
        if not self.total:
            return None
        rank = max(math.ceil(fraction * self.total), 1)
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                bound = _BOUNDS[index] if index < len(_BOUNDS) else math.inf
                return max(min(bound, self.high), self.low)
        return self.high  # unreachable: the counts add up to total


@dataclass(slots=True)
class Tally:
    """What a controller's pipeline did in some time: since the fold began, or in one second."""

    steps: Counter[Step] = field(default_factory=Counter)
    drops: Counter[tuple[Loss, str]] = field(default_factory=Counter)
    enqueued: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)  # reconcile runs by outcome
    queue_wait: Histogram = field(default_factory=Histogram)
    duration: Histogram = field(default_factory=Histogram)

    def merge(self, other: Tally) -> None:
        self.steps.update(other.steps)
        self.drops.update(other.drops)
        self.enqueued.update(other.enqueued)
        self.results.update(other.results)
        self.queue_wait.merge(other.queue_wait)
        self.duration.merge(other.duration)


@dataclass(slots=True)
class Second:
    """One second of a controller's life."""

    at: int  # whole seconds since the epoch
    depth: int = 0  # requests waiting in its queue at the end of the second
    tally: Tally = field(default_factory=Tally)

    @property
    def events(self) -> int:
        """Watch events dispatched to the controller."""
        return self.tally.steps[Step.SEEN]

    @property
    def reconciles(self) -> int:
        """Reconciles that ended."""
        return sum(self.tally.results.values())

    @property
    def errors(self) -> int:
        """Reconciles that failed (error or terminal error)."""
        results = self.tally.results
        return sum(results[outcome] for outcome in RECONCILE_FAILED)


@dataclass(frozen=True, slots=True)
class Latency:
    p50: float | None
    p99: float | None
    count: int

    @classmethod
    def of(cls, histogram: Histogram) -> Latency:
        return cls(histogram.percentile(0.5), histogram.percentile(0.99), histogram.total)

    def to_json(self) -> dict[str, Any]:
        return {"p50_s": _finite(self.p50), "p99_s": _finite(self.p99), "count": self.count}


@dataclass(frozen=True, slots=True)
class Funnel:
    """One controller's funnel over a window of the records folded so far."""

    controller: str
    since: float | None  # the window: from (the first record, or the window's start) …
    until: float | None  # … to the newest record
    steps: tuple[tuple[Step, int], ...]
    drops: tuple[Drop, ...]  # in funnel order, the largest first within a stage
    enqueued: Mapping[str, int]  # queued / deduplicated / requeued_after_processing
    results: Mapping[str, int]  # reconcile runs by outcome
    queue_wait: Latency
    duration: Latency
    seconds: tuple[Second, ...]  # oldest first, no gaps

    def count(self, step: Step) -> int:
        return dict(self.steps)[step]

    def drops_after(self, step: Step) -> list[Drop]:
        return [drop for drop in self.drops if drop.after is step]

    @property
    def runs(self) -> int:
        return sum(self.results.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "controller": self.controller,
            "since": self.since,
            "until": self.until,
            "stages": [{"stage": str(step), "count": count} for step, count in self.steps],
            "enqueued": dict(self.enqueued),
            "drops": [drop.to_json() for drop in self.drops],
            "reconciles": {"runs": self.runs, "results": dict(self.results)},
            "queue_wait": self.queue_wait.to_json(),
            "reconcile_duration": self.duration.to_json(),
            "per_second": [
                {
                    "time": second.at,
                    "events": second.events,
                    "reconciles": second.reconciles,
                    "errors": second.errors,
                    "queue_depth": second.depth,
                }
                for second in self.seconds
            ],
        }


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else value
