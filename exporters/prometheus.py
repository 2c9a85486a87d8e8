"""Prometheus metrics under controller-runtime's names and labels, as a record sink.

Installed as ``ctrltrace.exporters.prometheus``.

Owns the translation of records into the metrics controller-runtime and client-go expose, so
existing dashboards and alerts work unchanged: the reconcile counters and histogram, the work
queue metrics (``name`` and ``controller`` labels, both the controller's name) and the leader
election gauge. It also owns a collector that reads live queue state at scrape time, and the
``/metrics`` endpoint.

It may only observe: it never adds to, takes from or settles a queue; it does no I/O and no
formatting in the sink (the recorder calls it on the hot path, for every record); and it never
touches prometheus_client's process-global registry, so several managers, or tests, in one
process do not collide.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
from collections.abc import Callable, Iterable, Iterator, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ctrltrace.controller import Controller
from ctrltrace.manager import Manager
from ctrltrace.records import Record, Stage
from ctrltrace.vocabulary import (
    INSERTED,
    METRIC_RESULTS,
    Attr,
    ControllerOutcome,
    LeaseOutcome,
    MetricResult,
    ReconcileOutcome,
    RequeueOutcome,
)

__all__ = [
    "RECONCILE_TIME_BUCKETS",
    "WORKQUEUE_DURATION_BUCKETS",
    "PrometheusSink",
    "serve",
    "serves",
]

# controller-runtime's ReconcileTime buckets (pkg/internal/controller/metrics).
RECONCILE_TIME_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9,
    1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50,
    60,
)  # fmt: skip


def _exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    # Multiplied step by step as Go's prometheus.ExponentialBuckets does, so the bounds carry
    # the same rounding (9.999999999999999e-06, not 1e-05) and the `le` labels match exactly.
    bounds = []
    for _ in range(count):
        bounds.append(start)
        start *= factor
    return tuple(bounds)


# client-go's work queue latency buckets: ExponentialBuckets(10e-9, 10, 12), 10 ns to 1000 s.
WORKQUEUE_DURATION_BUCKETS = _exponential_buckets(10e-9, 10, 12)

_LEADER = {
    LeaseOutcome.ACQUIRED: 1.0,
    LeaseOutcome.LOST: 0.0,
    LeaseOutcome.RELEASED: 0.0,
    LeaseOutcome.STANDBY: 0.0,
}
# The text format generate_latest writes, under the version every Prometheus parses.
_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

ControllerSource = Manager | Callable[[], Iterable[Controller]]
"""Where the live gauges come from: a manager's controllers, or a callable returning some."""


def _le(bound: float) -> str:
    """A bucket bound as Go's client writes ``le`` (strconv 'g', shortest): 1 not 1.0, 1e-08.

    Python's repr agrees with Go for every bound used here (1e-08 to 1000) but for the ".0"
    Go leaves off whole numbers.
    """
    return repr(float(bound)).removesuffix(".0")


class _Histogram:
    """A classic histogram's state: per-bucket (not cumulative) counts, the last is +Inf."""

    __slots__ = ("bounds", "counts", "les", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.les = (*map(_le, bounds), "+Inf")
        self.counts = [0] * len(self.les)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le is inclusive).
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, total = [], 0
        for le, count in zip(self.les, self.counts, strict=True):
            total += count
            cumulative.append((le, float(total)))
        return cumulative


class _ControllerSeries:
    """Everything the records say about one controller, as plain numbers until a scrape."""

    __slots__ = (
        "adds",
        "errors",
        "max_concurrent",
        "queue_duration",
        "reconcile_time",
        "results",
        "retries",
        "terminal_errors",
        "work_duration",
    )

    def __init__(self) -> None:
        # A Counter, so a result label nobody listed is counted rather than raising.
        self.results: collections.Counter[str] = collections.Counter(
            dict.fromkeys(METRIC_RESULTS, 0)
        )
        self.errors = 0
        self.terminal_errors = 0
        self.max_concurrent: int | None = None  # known once the controller has started
        self.reconcile_time = _Histogram(RECONCILE_TIME_BUCKETS)
        self.adds = 0
        self.retries = 0
        self.queue_duration = _Histogram(WORKQUEUE_DURATION_BUCKETS)
        self.work_duration = _Histogram(WORKQUEUE_DURATION_BUCKETS)


class PrometheusSink:
    """A record sink keeping controller-runtime's metrics, with its own registry.

    Counters and histograms come from records; ``workqueue_depth``,
    ``workqueue_unfinished_work_seconds``, ``workqueue_longest_running_processor_seconds`` and
    ``controller_runtime_active_workers`` are read from the live controllers at scrape time,
    when ``controllers`` is given (a Manager, or a callable returning controllers).

    Scrape (``render``, or ``registry`` through any prometheus_client exporter) on the event
    loop that runs the controllers: reading a queue's depth moves its due delayed keys in.

    The sink keeps plain numbers per controller and turns them into metric families only when
    scraped, rather than updating prometheus_client's Counter and Histogram children: those
    take a lock per update, several times the cost of an integer increment on a path that sees
    every record, and they add ``_created`` series that Go's client, and so controller-runtime's
    dashboards, do not have.
    """

    def __init__(self, controllers: ControllerSource | None = None) -> None:
        self.registry = CollectorRegistry()
        # Keyed by controller name; a controller's series all appear, at 0, the first time a
        # record names it, as controller-runtime's initMetrics does when a controller starts.
        self._series: collections.defaultdict[str, _ControllerSeries] = collections.defaultdict(
            _ControllerSeries
        )
        self._leader: dict[str, float] = {}  # lease name -> 1 leader, 0 not
        # One dict lookup instead of a chain of comparisons: most records (watch events) match
        # nothing here and must cost as little as possible.
        self._handlers: dict[Stage, Callable[[Record], None]] = {
            Stage.DISPATCH: self._on_dispatch,
            Stage.RECONCILE_START: self._on_reconcile_start,
            Stage.RECONCILE: self._on_reconcile,
            Stage.REQUEUE: self._on_requeue,
            Stage.CONTROLLER: self._on_controller,
            Stage.LEASE: self._on_lease,
        }
        self.registry.register(self)
        if controllers is not None:
            self.registry.register(_LiveState(_controllers_of(controllers)))

    # -- the sink: on the hot path ------------------------------------------------------------

    def __call__(self, record: Record, /) -> None:
        handler = self._handlers.get(record.stage)
        if handler is not None:
            handler(record)

    def _on_dispatch(self, record: Record) -> None:
        if record.outcome in INSERTED:
            self._series[record.controller].adds += 1

    def _on_reconcile_start(self, record: Record) -> None:
        wait = float(record.attrs[Attr.QUEUE_WAIT_S])
        self._series[record.controller].queue_duration.observe(wait)

    def _on_reconcile(self, record: Record) -> None:
        series = self._series[record.controller]
        attrs = record.attrs
        result = str(attrs[Attr.METRIC_RESULT])
        series.results[result] += 1
        if (
            result == MetricResult.ERROR
        ):  # a terminal error is labelled error too, as in controller-runtime
            series.errors += 1
            if record.outcome == ReconcileOutcome.TERMINAL_ERROR:
                series.terminal_errors += 1
        duration = float(attrs[Attr.DURATION_S])
        series.reconcile_time.observe(duration)
        # client-go times work from get to done; the reconcile is all a worker does between.
        series.work_duration.observe(duration)

    def _on_requeue(self, record: Record) -> None:
        series = self._series[record.controller]
        # Counted when scheduled rather than when the delay ends and the key lands (it may then
        # be de-duplicated): the records say nothing at landing time.
        series.adds += 1
        if record.outcome == RequeueOutcome.RATE_LIMITED:
            series.retries += 1

    def _on_controller(self, record: Record) -> None:
        if record.outcome == ControllerOutcome.STARTED:
            limit = int(record.attrs[Attr.MAX_CONCURRENT_RECONCILES])
            self._series[record.controller].max_concurrent = limit

    def _on_lease(self, record: Record) -> None:
        status = _LEADER.get(record.outcome)
        if status is not None:  # renewed and error leave leadership as it was
            # client-go labels it with the lease's name (the leader election id), no namespace.
            lease = str(record.attrs.get(Attr.LEASE, ""))
            self._leader[lease.rpartition("/")[2]] = status

    # -- scraping -----------------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """The record-fed families (prometheus_client's Collector protocol)."""
        by_controller = ["controller"]
        by_queue = ["name", "controller"]
        reconciles = CounterMetricFamily(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller",
            labels=["controller", "result"],
        )
        errors = CounterMetricFamily(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller",
            labels=by_controller,
        )
        terminal = CounterMetricFamily(
            "controller_runtime_terminal_reconcile_errors_total",
            "Total number of terminal reconciliation errors per controller",
            labels=by_controller,
        )
        panics = CounterMetricFamily(
            "controller_runtime_reconcile_panics_total",
            "Total number of reconciliation panics per controller",
            labels=by_controller,
        )
        reconcile_time = HistogramMetricFamily(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            labels=by_controller,
        )
        max_concurrent = GaugeMetricFamily(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            labels=by_controller,
        )
        adds = CounterMetricFamily(
            "workqueue_adds_total", "Total number of adds handled by workqueue", labels=by_queue
        )
        queue_duration = HistogramMetricFamily(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            labels=by_queue,
        )
        work_duration = HistogramMetricFamily(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes.",
            labels=by_queue,
        )
        retries = CounterMetricFamily(
            "workqueue_retries_total",
            "Total number of retries handled by workqueue",
            labels=by_queue,
        )
        for name, series in sorted(self._series.items()):
            for result, count in sorted(series.results.items()):
                reconciles.add_metric([name, result], count)
            errors.add_metric([name], series.errors)
            terminal.add_metric([name], series.terminal_errors)
            # Python exceptions in Reconcile are errors (design §3); nothing here panics.
            panics.add_metric([name], 0)
            _add_histogram(reconcile_time, [name], series.reconcile_time)
            if series.max_concurrent is not None:
                max_concurrent.add_metric([name], series.max_concurrent)
            adds.add_metric([name, name], series.adds)
            _add_histogram(queue_duration, [name, name], series.queue_duration)
            _add_histogram(work_duration, [name, name], series.work_duration)
            retries.add_metric([name, name], series.retries)
        leader = GaugeMetricFamily(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates "
            "backup, 1 indicates master. 'name' is the string used to identify the lease. "
            "Please make sure to group by name.",
            labels=["name"],
        )
        for lease, status in sorted(self._leader.items()):
            leader.add_metric([lease], status)
        families = (
            reconciles, errors, terminal, panics, reconcile_time, max_concurrent,
            adds, queue_duration, work_duration, retries, leader,
        )  # fmt: skip
        # Like Go's client, leave out a family with no series rather than print bare HELP/TYPE.
        return (family for family in families if family.samples)


def _add_histogram(family: HistogramMetricFamily, labels: list[str], hist: _Histogram) -> None:
    family.add_metric(labels, hist.buckets(), hist.sum)


def _controllers_of(source: ControllerSource) -> Callable[[], Iterable[Controller]]:
    if isinstance(source, Manager):
        # Read at each scrape: the manager rebuilds its controllers when it starts.
        return lambda: source.controllers
    return source


class _LiveState:
    """The gauges client-go and controller-runtime keep current, read from the queues."""

    def __init__(self, controllers: Callable[[], Iterable[Controller]]) -> None:
        self._controllers = controllers

    def collect(self) -> Iterator[Metric]:
        by_queue = ["name", "controller"]
        active = GaugeMetricFamily(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            labels=["controller"],
        )
        depth = GaugeMetricFamily("workqueue_depth", "Current depth of workqueue", labels=by_queue)
        unfinished = GaugeMetricFamily(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been "
            "observed by work_duration. Large values indicate stuck threads. One can deduce the "
            "number of stuck threads by observing the rate at which this increases.",
            labels=by_queue,
        )
        longest = GaugeMetricFamily(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running.",
            labels=by_queue,
        )
        for controller in sorted(self._controllers(), key=lambda c: c.name):
            name, queue = controller.name, controller.queue
            active.add_metric([name], controller.stats.active_workers)
            depth.add_metric([name, name], len(queue))
            unfinished.add_metric([name, name], queue.unfinished_work_seconds())
            longest.add_metric([name, name], queue.longest_running_seconds())
        return (family for family in (active, depth, unfinished, longest) if family.samples)


def serves(address: str) -> bool:
    """Whether a bind address asks for /metrics at all: "0" (or "") disables it."""
    return address not in ("0", "")


async def serve(sink: PrometheusSink, address: str) -> web.AppRunner | None:
    """Serve ``GET /metrics`` on ``address`` ("host:port"); "0" (or "") disables it.

    Port 0 picks a free port: read it from ``runner.addresses[0][1]``. A bare ":port" listens
    on every interface, as controller-runtime's ``--metrics-bind-address`` does. The caller
    owns the runner and must ``await runner.cleanup()``.
    """
    if not serves(address):
        return None
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit():
        raise ValueError(f"metrics bind address {address!r} is not host:port")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=sink.render(), headers={"Content-Type": _CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        # "[::1]:8080" names an IPv6 host in brackets; the socket wants it bare.
        site = web.TCPSite(runner, host.strip("[]") or "0.0.0.0", int(port))  # noqa: S104
        await site.start()
    except BaseException:
        await runner.cleanup()  # a port in use must not leave a half-started runner behind
        raise
    return runner


class MetricsEndpoint:
    """A manager runnable serving ``sink`` on ``address`` from start-up to shutdown."""

    def __init__(self, sink: PrometheusSink, address: str) -> None:
        self.sink = sink
        self.address = address
        self.port: int | None = None

    async def __call__(self) -> None:
        runner = await serve(self.sink, self.address)
        if runner is None:
            return
        self.port = int(runner.addresses[0][1])
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
