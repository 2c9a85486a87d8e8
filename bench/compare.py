"""ctrltrace and kopf side by side, each controller in its own process, one local control plane.

    python -m bench.compare [--repeats 3] [--json PATH] [--quick] [--w3-seconds S]

Owns the comparison: which controllers run (ctrltrace with (a) no sink, (b) the journal,
(c) the journal and OTLP spans; kopf with an ``on.event`` handler and with ``on.create`` +
``on.update``), the three workloads (W1 creates, W2 bursts of updates, W3 paced updates), how
each run is measured from outside the controller (wall time from the writer's first request
until every object's last write was handled, CPU of the controller process, its peak RSS,
event-to-handler latency) and the table, ratios and targets printed at the end.

Every run starts a fresh controller in a fresh namespace; the writer (``bench._writer``) is
another process, so the controller's CPU is its own. Runs are interleaved (every configuration
of a workload, then the next workload, then the next repeat) so that drift of this shared
2-core machine touches each configuration alike; the table shows medians over the repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from bench._harness import cpu_seconds, median, peak_rss_mib, percentile
from bench._writer import command as writer_command
from ctrltrace.envtest import ControlPlane
from ctrltrace.journal import Journal
from ctrltrace.records import Stage

_ROOT = Path(__file__).resolve().parent.parent
_READY_OBJECT = "bench-ready"  # created before a controller starts; handled = it is watching
_QUIET_WINDOW_S = 1.0
_QUIET_CPU_S = 0.02  # at most two clock ticks of CPU in a window counts as idle
# kopf's per-object workers exit 5 s after their object's last event (queueing.idle_timeout):
# after handling objects at start-up, wait that out before taking the CPU baseline.
_SETTLE_AFTER_STARTUP_S = 6.0
_STOP_GRACE_S = 30.0
# Spans wait in the exporter's batch queue for up to its schedule delay (the OpenTelemetry
# SDK's default is 5 s): a (c) run is settled only after the receiver heard nothing this long.
_OTLP_SILENCE_S = 6.0

# -- what runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    kopf: bool = False
    journal: bool = False
    otlp: bool = False

    def argv(self, kubeconfig: Path, namespace: str, journal: Path, otlp: str) -> list[str]:
        python = sys.executable
        if self.kopf:
            app = "bench.apps.kopf_normal" if self.key == "kopf-normal" else "bench.apps.kopf_event"
            # --quiet: kopf logs two INFO lines per handler call; ctrltrace logs none per reconcile.
            kopf = ["-m", "kopf", "run", "--standalone", "--quiet", "--namespace"]
            return [python, *kopf, namespace, "-m", app]
        target = ["--kubeconfig", str(kubeconfig), "--namespace", namespace]
        if not self.journal:
            return [python, "-m", "bench.apps.ctrltrace_noop", *target]
        run = [python, "-m", "ctrltrace", "run", "bench.apps.ctrltrace_noop:mgr", *target]
        off = ["--metrics-bind-address", "0", "--health-probe-bind-address", "0"]
        argv = [*run, "--journal", str(journal), *off]
        return [*argv, "--otlp-endpoint", otlp] if self.otlp else argv


CONFIGS = (
    Config("a", "ctrltrace (a) no sinks"),
    Config("b", "ctrltrace (b) journal", journal=True),
    Config("c", "ctrltrace (c) journal+OTLP", journal=True, otlp=True),
    Config("kopf-event", "kopf on.event", kopf=True),
    Config("kopf-normal", "kopf on.create/update", kopf=True),
)


@dataclass(frozen=True)
class Params:
    objects: int = 2000
    updates_per_object: int = 5
    w3_rate: float = 200.0
    w3_seconds: float = 60.0
    repeats: int = 3
    timeout_s: float = 600.0  # for one workload to be handled completely


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    prepopulated: bool  # objects exist (and were handled) before the controller's baseline

    def writer_options(self, params: Params) -> tuple[str, list[str]]:
        if self.key == "W1":
            return "create", []
        if self.key == "W2":
            return "update", ["--times", str(params.updates_per_object)]
        return "update", ["--rate", str(params.w3_rate), "--seconds", str(params.w3_seconds)]


WORKLOADS = (
    Workload("W1", "create every object, 32 in flight", prepopulated=False),
    Workload("W2", "update each object N times in a burst, 32 in flight", prepopulated=True),
    Workload("W3", "paced updates spread over the objects", prepopulated=True),
)

# -- the OTLP receiver -------------------------------------------------------------------------


class OtlpReceiver:
    """A local OTLP/HTTP endpoint that accepts every export (200, empty answer) and counts.

    Runs its own event loop in a thread of this (the harness) process, so its work is never
    charged to the controller being measured.
    """

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.port = 0
        self.last_request = time.monotonic()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="otlp receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        if not self._ready.wait(10):
            raise SystemExit("the OTLP receiver did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def counts(self) -> tuple[int, int]:
        return self.requests, self.bytes

    def _serve(self) -> None:
        loop = self._loop
        app = web.Application(client_max_size=256 * 2**20)
        app.router.add_post("/{path:.*}", self._export)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        self.port = int(runner.addresses[0][1])
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.last_request = time.monotonic()
        self.requests += 1
        self.bytes += len(body)
        # An empty ExportTraceServiceResponse: no bytes in protobuf, {} in JSON.
        if request.content_type == "application/json":
            return web.Response(body=b"{}", content_type="application/json")
        return web.Response(body=b"", content_type="application/x-protobuf")


# -- what the controller handled ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handled:
    started: float
    name: str
    resource_version: int
    stamp: float | None  # the writer's bench/stamp on the version handled


class HandledTail:
    """Follows an app's handled log (``bench.apps._handled``) as it grows."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""
        self.lines: list[Handled] = []
        self.newest: dict[str, int] = {}  # name → newest resourceVersion handled

    def poll(self) -> None:
        if not self._path.exists():
            return
        with self._path.open("rb") as file:
            file.seek(self._offset)
            chunk = file.read()
        self._offset += len(chunk)
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        for raw in complete:
            started, name, version, stamp = raw.decode().split()
            line = Handled(
                float(started), name, int(version), None if stamp == "-" else float(stamp)
            )
            self.lines.append(line)
            if line.resource_version > self.newest.get(name, -1):
                self.newest[name] = line.resource_version

    def missing(self, targets: dict[str, int]) -> int:
        """How many objects are not yet handled at (or after) their target version."""
        self.poll()
        newest = self.newest
        return sum(1 for name, version in targets.items() if newest.get(name, -1) < version)

    def done_at(self, targets: dict[str, int], since: int) -> float:
        """When the last object was first handled at (or after) its target version."""
        first: dict[str, float] = {}
        for line in self.lines[since:]:
            target = targets.get(line.name)
            if target is not None and line.resource_version >= target:
                first[line.name] = min(first.get(line.name, math.inf), line.started)
        return max(first.values())


# -- one run -----------------------------------------------------------------------------------


@dataclass
class Run:
    config: str
    workload: str
    repeat: int
    ok: bool = False
    error: str = ""
    events: int = 0  # the writer's requests in the workload
    wall_s: float = math.nan
    events_per_s: float = math.nan
    cpu_s: float = math.nan
    cpu_ms_per_event: float = math.nan
    peak_rss_mib: float = math.nan
    handled: int = 0  # handler calls (reconciles) during the workload
    p50_ms: float = math.nan  # writer's stamp → handler start
    p99_ms: float = math.nan
    records_p50_ms: float = math.nan  # ctrltrace's EVENT record → RECONCILE_START record
    records_p99_ms: float = math.nan
    latency_samples: int = 0
    writer_rate: float = math.nan  # requests/s the writer achieved
    shutdown_cpu_s: float = math.nan  # from SIGTERM to exit: not in cpu_s
    otlp_requests: int = 0
    otlp_bytes: int = 0
    exit_code: int | None = None


class RunFailed(Exception):
    pass


class Controller:
    """One controller process: started, watched for an early exit, stopped with SIGTERM."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, env=env, cwd=_ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        self.pid = self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RunFailed(f"the controller exited with {self.process.returncode}:\n{tail}")

    def wait_quiet(self, timeout: float = 60.0) -> bool:
        """Wait until the process spends (almost) no CPU for a while; False on timeout."""
        deadline = time.monotonic() + timeout
        last = cpu_seconds(self.pid)
        while time.monotonic() < deadline:
            time.sleep(_QUIET_WINDOW_S)
            self.check_alive()
            now = cpu_seconds(self.pid)
            if now - last <= _QUIET_CPU_S:
                return True
            last = now
        return False

    def stop(self) -> tuple[float, int]:
        """SIGTERM, wait for a graceful exit (SIGKILL after a grace period): the process's total
        CPU seconds, from its own rusage, and its exit code."""
        if self.process.returncode is not None:
            raise RunFailed(f"the controller had exited with {self.process.returncode}")
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        while True:
            # wait4 rather than Popen.wait: it returns the child's rusage, shutdown included.
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.process.kill()
                pid, status, usage = os.wait4(self.pid, 0)
                break
            time.sleep(0.05)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        return usage.ru_utime + usage.ru_stime, self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class Bench:
    plane: ControlPlane
    params: Params
    workdir: Path
    receiver: OtlpReceiver
    profile: str = ""  # "", "pyinstrument" or "py-spy"
    runs: list[Run] = field(default_factory=list)

    def run(self, config: Config, workload: Workload, repeat: int) -> Run:
        run = Run(config.key, workload.key, repeat)
        namespace = f"cmp-{repeat}-{workload.key.lower()}-{config.key}"
        folder = self.workdir / namespace
        folder.mkdir(parents=True)
        started: list[Controller] = []
        try:
            self._measure(run, config, workload, namespace, folder, started)
            run.ok = True
        except (RunFailed, subprocess.CalledProcessError, OSError) as error:
            run.error = str(error)
            print(f"  {config.key} {workload.key} #{repeat}: FAILED: {error}", file=sys.stderr)
        finally:
            for controller in started:
                controller.kill()
            self._clean(namespace)
        self.runs.append(run)
        return run

    def _measure(
        self,
        run: Run,
        config: Config,
        workload: Workload,
        namespace: str,
        folder: Path,
        started: list[Controller],
    ) -> None:
        params, plane = self.params, self.plane
        plane.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
        ready = plane.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/configmaps",
            {"metadata": {"name": _READY_OBJECT}},
        )
        targets = {_READY_OBJECT: int(ready["metadata"]["resourceVersion"])}
        if workload.prepopulated:
            report = self._write(folder / "populate.json", namespace, "create", [])
            targets.update(_versions(report))
        handled_path = folder / "handled.txt"
        journal = folder / "journal.sqlite"
        env = {
            # OTEL_* variables would switch tracing on in (a) and (b) too.
            **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            "BENCH_HANDLED": str(handled_path),
            "KUBECONFIG": str(plane.kubeconfig),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])),
        }
        argv = config.argv(plane.kubeconfig, namespace, journal, self.receiver.endpoint)
        if self.profile == "pyinstrument":
            argv = _under_pyinstrument(argv, folder / "profile.txt")
        controller = Controller(argv, env, folder / "controller.log")
        started.append(controller)
        tail = HandledTail(handled_path)
        self._until(
            lambda: tail.missing(targets) == 0,
            controller,
            180.0,
            "not every object handled at start-up",
        )
        if workload.prepopulated:
            time.sleep(_SETTLE_AFTER_STARTUP_S)
        self._settle(controller, config)
        baseline = cpu_seconds(controller.pid)
        otlp_before = self.receiver.counts()
        since = len(tail.lines)
        spy = PySpy(controller.pid, folder / "profile") if self.profile == "py-spy" else None

        verb, options = workload.writer_options(params)
        report = self._write(folder / "workload.json", namespace, verb, options)
        targets = _versions(report)
        self._until(
            lambda: tail.missing(targets) == 0,
            controller,
            params.timeout_s,
            "not every object's last write handled",
        )
        self._settle(controller, config)
        quiet = cpu_seconds(controller.pid)
        if spy is not None:
            spy.stop()
        run.peak_rss_mib = peak_rss_mib(controller.pid)
        total, run.exit_code = controller.stop()
        tail.poll()
        otlp_after = self.receiver.counts()

        first_sent = float(report["first_sent"])
        run.events = int(report["writes"])
        run.wall_s = tail.done_at(targets, since) - first_sent
        run.events_per_s = run.events / run.wall_s
        # Up to quiet, not up to exit: interpreter shutdown costs ~0.2 s whatever was handled.
        run.cpu_s = quiet - baseline
        run.cpu_ms_per_event = run.cpu_s * 1000 / run.events
        run.shutdown_cpu_s = total - quiet
        run.handled = len(tail.lines) - since
        run.writer_rate = run.events / max(1e-9, float(report["last_sent"]) - first_sent)
        run.otlp_requests = otlp_after[0] - otlp_before[0]
        run.otlp_bytes = otlp_after[1] - otlp_before[1]
        if workload.key == "W3":
            self._latencies(run, tail.lines[since:], first_sent, config, journal)

    def _latencies(
        self, run: Run, lines: Sequence[Handled], first_sent: float, config: Config, journal: Path
    ) -> None:
        seen: set[tuple[str, float]] = set()
        waits: list[float] = []
        for line in lines:
            # Each write counts once, at its first handling.
            if line.stamp is None or line.stamp < first_sent or (line.name, line.stamp) in seen:
                continue
            seen.add((line.name, line.stamp))
            waits.append(line.started - line.stamp)
        run.latency_samples = len(waits)
        run.p50_ms = percentile(waits, 50) * 1000
        run.p99_ms = percentile(waits, 99) * 1000
        if config.journal and journal.exists():
            from_records = _journal_waits(journal, first_sent)
            run.records_p50_ms = percentile(from_records, 50) * 1000
            run.records_p99_ms = percentile(from_records, 99) * 1000

    def _settle(self, controller: Controller, config: Config) -> None:
        """Wait until the controller has finished what it was given, spans exported included."""
        if config.otlp:
            receiver = self.receiver
            self._until(
                lambda: time.monotonic() - receiver.last_request >= _OTLP_SILENCE_S,
                controller,
                120.0,
                "span exports did not pause",
            )
        if not controller.wait_quiet():
            print("  warning: the controller kept using CPU for 60 s", file=sys.stderr)

    def _write(self, report: Path, namespace: str, verb: str, options: list[str]) -> dict[str, Any]:
        argv = writer_command(
            self.plane.kubeconfig,
            namespace,
            self.params.objects,
            verb,
            64,
            *options,
            "--stamp",
            "--report",
            str(report),
        )
        subprocess.run(argv, cwd=_ROOT, check=True)
        loaded: dict[str, Any] = json.loads(report.read_text())
        return loaded

    def _until(
        self, condition: Callable[[], bool], controller: Controller, timeout: float, what: str
    ) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            controller.check_alive()
            if time.monotonic() > deadline:
                raise RunFailed(f"{what} within {timeout:.0f}s")
            time.sleep(0.05)

    def _clean(self, namespace: str) -> None:
        """Delete the run's objects, so the API server's cache and etcd stay the same size."""
        with contextlib.suppress(OSError, RuntimeError):
            self.plane.request("DELETE", f"/api/v1/namespaces/{namespace}/configmaps")
            self.plane.request("DELETE", f"/api/v1/namespaces/{namespace}")


def _versions(report: dict[str, Any]) -> dict[str, int]:
    return {name: int(version) for name, version in report["last_resource_version"].items()}


def _journal_waits(path: Path, since: float) -> list[float]:
    """EVENT → RECONCILE_START waits from the journal: each start's dispatch causes lead to the
    events it covers."""
    with Journal(path) as journal:
        records = journal.window(since, math.inf)
    events = {r.id: r.time for r in records if r.stage is Stage.EVENT}
    dispatched = {
        r.id: r.cause_ids[0] for r in records if r.stage is Stage.DISPATCH and r.cause_ids
    }
    waits = []
    for record in records:
        if record.stage is Stage.RECONCILE_START:
            for cause in record.cause_ids:
                event_time = events.get(dispatched.get(cause, -1))
                if event_time is not None:
                    waits.append(record.time - event_time)
    return waits


class PySpy:
    """py-spy sampling every thread of a running controller, from outside it, for one window.

    Only the workload is profiled (not start-up), the journal's writer thread included, and
    samples of idle threads are left out, so the counts follow CPU. ``stop()`` writes the
    collapsed stacks to ``PATH.raw`` and a summary to ``PATH.txt``.
    """

    def __init__(self, pid: int, path: Path) -> None:
        binary = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
        self._raw = path.with_suffix(".raw")
        self._summary = path.with_suffix(".txt")
        self._process = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
             "--threads", "--nonblocking", "--output", str(self._raw)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        self._process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        self._process.wait(30)
        if self._raw.exists():
            self._summary.write_text(summarise_stacks(self._raw.read_text()))


_LINE = re.compile(r":\d+\)$")
# py-spy cannot always tell a thread blocked in these from one running: they are waits.
_WAITS = frozenset(
    {
        "EpollSelector.select (selectors.py)",
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
        "Thread._wait_for_tstate_lock (threading.py)",
    }
)


def summarise_stacks(collapsed: str, top: int = 25) -> str:
    """Samples per thread, then the functions with most samples on top of the stack (self) and
    anywhere in it (total), from py-spy's collapsed stacks (``frame;frame;… COUNT``); samples
    blocked in a known wait are counted apart."""
    threads: dict[str, int] = {}
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = waiting = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        # "function (file:line)" → "function (file)": a function's lines add up.
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        if frames[-1] in _WAITS:
            waiting += count
            continue
        samples += count
        thread = next((f for f in frames if f.startswith("thread ")), "?")
        threads[thread] = threads.get(thread, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            if not frame.startswith(("thread ", "process ")):
                total[frame] = total.get(frame, 0) + count

    def table(title: str, counts: dict[str, int]) -> list[str]:
        ranked = sorted(counts.items(), key=lambda item: -item[1])[:top]
        return [title, *(f"  {100 * n / samples:5.1f}%  {name}" for name, n in ranked), ""]

    if not samples:
        return "no samples\n"
    return "\n".join(
        [
            f"{samples} samples; left out: idle threads, and {waiting} samples blocked in a wait",
            "",
            *table("per thread", threads),
            *table(f"top {top}, self", own),
            *table(f"top {top}, total", total),
        ]
    )


def _under_pyinstrument(argv: list[str], output: Path) -> list[str]:
    python, dash_m, *rest = argv
    assert dash_m == "-m"
    return [
        python,
        "-m",
        "pyinstrument",
        "--renderer",
        "text",
        "--outfile",
        str(output),
        "-m",
        *rest,
    ]


# -- the report --------------------------------------------------------------------------------

_METRICS = (
    "wall_s",
    "events_per_s",
    "cpu_s",
    "cpu_ms_per_event",
    "peak_rss_mib",
    "handled",
    "p50_ms",
    "p99_ms",
    "records_p50_ms",
    "records_p99_ms",
    "events",
    "writer_rate",
    "shutdown_cpu_s",
    "otlp_requests",
    "otlp_bytes",
)


@dataclass
class Row:
    config: str
    workload: str
    runs_ok: int
    medians: dict[str, float]


def summarise(
    runs: Sequence[Run], configs: Sequence[Config], workloads: Sequence[Workload]
) -> list[Row]:
    rows = []
    for workload in workloads:
        for config in configs:
            ok = [r for r in runs if r.ok and r.config == config.key and r.workload == workload.key]
            medians = {m: median([float(getattr(r, m)) for r in ok]) for m in _METRICS}
            rows.append(Row(config.key, workload.key, len(ok), medians))
    return rows


@dataclass(frozen=True)
class Ratio:
    name: str
    value: float  # the ratio of the medians (for an absolute figure: the median itself)
    # The median of the per-repeat ratios: configurations of one workload and repeat run one
    # after another, so pairing them cancels the drift of a shared host between repeats.
    paired: float = math.nan
    target: str = ""
    met: bool | None = None  # judged on ``paired`` where there is one; None: no target or data


def ratios(rows: Sequence[Row], runs: Sequence[Run], traced: str) -> list[Ratio]:
    """The comparisons the issue asks for; ``traced`` is (c), or (b) when (c) could not run."""
    cell = {(row.config, row.workload): row.medians for row in rows}
    measured = {(run.config, run.workload, run.repeat): run for run in runs if run.ok}
    repeats = sorted({run.repeat for run in runs})

    def of(config: str, workload: str, metric: str) -> float:
        return cell.get((config, workload), {}).get(metric, math.nan)

    def divide(a: float, b: float) -> float:
        return a / b if b and not math.isnan(b) else math.nan

    def compare(
        a: str, b: str, workload: str, metric: str, target: str = "", limit: float = math.nan
    ) -> Ratio:
        pairs = [
            divide(
                getattr(measured[a, workload, k], metric), getattr(measured[b, workload, k], metric)
            )
            for k in repeats
            if (a, workload, k) in measured and (b, workload, k) in measured
        ]
        paired = median([p for p in pairs if not math.isnan(p)])
        name = f"{workload} {_RATIO_METRICS[metric]}  {_SHORT[a]} / {_SHORT[b]}"
        value = divide(of(a, workload, metric), of(b, workload, metric))
        met = None if math.isnan(limit) or math.isnan(paired) else paired <= limit
        return Ratio(name, value, paired, target, met)

    found = [compare(traced, "kopf-normal", w, "wall_s", "<= 0.50", 0.5) for w in ("W1", "W2")]
    found += [
        compare(traced, "kopf-event", w, "cpu_ms_per_event", "< 1.00", 1 - 1e-9)
        for w in ("W1", "W2", "W3")
    ]
    found += [compare(traced, "kopf-normal", w, "cpu_ms_per_event") for w in ("W1", "W2", "W3")]
    for w in ("W1", "W2", "W3"):
        found.append(compare("b", "a", w, "cpu_ms_per_event", "<= 1.15", 1.15))
        if traced == "c":
            found.append(compare("c", "a", w, "cpu_ms_per_event", "<= 1.60", 1.6))
    # The target is ctrltrace's own event → reconcile-start wait, from its records; the stamp
    # adds the API server's write and watch delivery, the only latency kopf can be measured by.
    p99 = of(traced, "W3", "records_p99_ms")
    found.append(
        Ratio(
            f"W3 p99 ms, from records  {_SHORT[traced]}",
            p99,
            target="<= 20 ms",
            met=None if math.isnan(p99) else p99 <= 20,
        )
    )
    found.append(Ratio(f"W3 p99 ms, from the stamp  {_SHORT[traced]}", of(traced, "W3", "p99_ms")))
    found += [compare(traced, kopf, "W3", "p99_ms") for kopf in ("kopf-event", "kopf-normal")]
    return found


_SHORT = {
    "a": "(a)",
    "b": "(b)",
    "c": "(c)",
    "kopf-event": "kopf on.event",
    "kopf-normal": "kopf normal",
}
_RATIO_METRICS = {"wall_s": "wall", "cpu_ms_per_event": "CPU/event", "p99_ms": "p99 (stamp)"}


def render(rows: Sequence[Row], found: Sequence[Ratio], labels: dict[str, str]) -> str:
    def number(value: float, digits: int) -> str:
        return "-" if math.isnan(value) else f"{value:.{digits}f}"

    head = (
        f"{'config':<27} {'wl':<3} {'ok':>2} {'wall s':>7} {'events/s':>8} {'CPU s':>7} "
        f"{'CPU ms/ev':>9} {'RSS MiB':>7} {'handled':>7} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'rec p50':>7} {'rec p99':>7}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        m = row.medians
        lines.append(
            f"{labels[row.config]:<27} {row.workload:<3} {row.runs_ok:>2} "
            f"{number(m['wall_s'], 2):>7} {number(m['events_per_s'], 0):>8} "
            f"{number(m['cpu_s'], 2):>7} {number(m['cpu_ms_per_event'], 3):>9} "
            f"{number(m['peak_rss_mib'], 1):>7} {number(m['handled'], 0):>7} "
            f"{number(m['p50_ms'], 1):>7} {number(m['p99_ms'], 1):>7} "
            f"{number(m['records_p50_ms'], 2):>7} {number(m['records_p99_ms'], 2):>7}"
        )
    lines += ["", f"{'':<48} {'of medians':>10} {'paired':>7}   {'target':<10}"]
    for r in found:
        verdict = {True: "met", False: "MISSED", None: "n/a" if r.target else ""}[r.met]
        lines.append(
            f"  {r.name:<46} {number(r.value, 2):>10} {number(r.paired, 2):>7}   "
            f"{r.target:<10}  {verdict}"
        )
    return "\n".join(lines)


# -- set-up ------------------------------------------------------------------------------------


def ensure_kopf() -> str:
    """kopf's version, installed from PyPI into this interpreter's environment if missing."""
    if importlib.util.find_spec("kopf") is None:
        print("kopf is not installed: pip install kopf", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "kopf"], check=True)
    return importlib.metadata.version("kopf")


def otlp_flag_available() -> bool:
    """Whether ``ctrltrace run`` takes ``--otlp-endpoint`` (configuration (c) needs it)."""
    answer = subprocess.run(
        [sys.executable, "-m", "ctrltrace", "run", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    return "--otlp-endpoint" in answer.stdout


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _rotated(items: Sequence[Config], by: int) -> list[Config]:
    """Each repeat starts the configurations at a different one: no position is always first."""
    shift = by % len(items) if items else 0
    return [*items[shift:], *items[:shift]]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per configuration and workload"
    )
    parser.add_argument("--objects", type=int, default=2000, help="ConfigMaps per run")
    parser.add_argument("--updates", type=int, default=5, help="W2: updates per object")
    parser.add_argument("--w3-rate", type=float, default=200.0, help="W3: updates per second")
    parser.add_argument("--w3-seconds", type=float, default=60.0, help="W3: how long")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 200 objects, 1 repeat, W3 10 s"
    )
    parser.add_argument(
        "--configs",
        default=",".join(c.key for c in CONFIGS),
        help="comma-separated subset of: " + ", ".join(c.key for c in CONFIGS),
    )
    parser.add_argument("--workloads", default="W1,W2,W3", help="comma-separated subset")
    parser.add_argument("--json", type=Path, help="also write parameters, medians, ratios, runs")
    parser.add_argument("--workdir", type=Path, help="keep logs, handled logs and journals here")
    parser.add_argument(
        "--profile",
        choices=["py-spy", "pyinstrument"],
        help="profile each controller: py-spy samples every thread over the workload only "
        "(needs `pip install py-spy`); pyinstrument runs the whole process under it (main "
        "thread, start-up included). profile.txt per run in the workdir; CPU figures are then "
        "inflated",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        help="run nothing: print the table of the runs in a JSON file an earlier run wrote",
    )
    args = parser.parse_args()
    if args.from_json is not None and not args.from_json.is_file():
        parser.error(f"--from-json {args.from_json}: no such file")
    # Each run makes its own folder in it, named after the run: one left there is in the way.
    if args.workdir is not None and args.workdir.exists() and any(args.workdir.iterdir()):
        parser.error(f"--workdir {args.workdir} is not empty; give a new or an empty folder")
    return args


def main() -> None:
    args = _arguments()
    if args.from_json:
        document = json.loads(args.from_json.read_text())
        runs = [Run(**_null_as_nan(run)) for run in document["runs"]]
        keys = set(document["configs"])
        _report([c for c in CONFIGS if c.key in keys], WORKLOADS, runs)
        return
    params = Params(args.objects, args.updates, args.w3_rate, args.w3_seconds, args.repeats)
    if args.quick:
        params = replace(params, objects=min(params.objects, 200), repeats=1, w3_seconds=10.0)
    wanted = set(args.configs.split(","))
    configs = [c for c in CONFIGS if c.key in wanted]
    workloads = [w for w in WORKLOADS if w.key in set(args.workloads.upper().split(","))]
    environment: dict[str, Any] = {
        "kopf": ensure_kopf(),
        "otlp_endpoint_flag": otlp_flag_available(),
    }
    if not environment["otlp_endpoint_flag"] and any(c.otlp for c in configs):
        print(
            "ctrltrace run has no --otlp-endpoint yet: configuration (c) is skipped, and (b) "
            "stands in for it in the ratios",
            file=sys.stderr,
        )
        configs = [c for c in configs if not c.otlp]

    with _workdir(args.workdir) as workdir, OtlpReceiver() as receiver, ControlPlane() as plane:
        environment["kube_apiserver"] = plane.request("GET", "/version")["gitVersion"]
        print(
            f"control plane {environment['kube_apiserver']} ready in "
            f"{plane.startup_seconds:.1f}s; kopf {environment['kopf']}; {params.objects} "
            f"objects, {params.repeats} repeat(s), W3 {params.w3_rate:g}/s for "
            f"{params.w3_seconds:g}s; work in {workdir}",
            file=sys.stderr,
        )
        bench = Bench(plane, params, workdir, receiver, profile=args.profile or "")
        for repeat in range(1, params.repeats + 1):
            for workload in workloads:
                for config in _rotated(configs, repeat - 1):
                    _progress(bench.run(config, workload, repeat))
        environment["otlp_receiver"] = {"requests": receiver.requests, "bytes": receiver.bytes}

    rows, found = _report(configs, workloads, bench.runs)
    if args.json:
        environment.update(
            ctrltrace=importlib.metadata.version("ctrltrace"),
            python=platform.python_version(),
            cpus=os.cpu_count(),
        )
        document = {
            "parameters": asdict(params),
            "environment": environment,
            "configs": {c.key: c.label for c in configs},
            "rows": [asdict(row) for row in rows],
            "ratios": [asdict(r) for r in found],
            "runs": [asdict(run) for run in bench.runs],
        }
        args.json.write_text(json.dumps(_nan_as_null(document), indent=2, allow_nan=False))


def _progress(run: Run) -> None:
    if run.ok:
        print(
            f"  #{run.repeat} {run.workload} {run.config:<11} wall {run.wall_s:6.2f}s  "
            f"cpu {run.cpu_s:6.2f}s  handled {run.handled:>6}"
            + (f"  p99 {run.p99_ms:.1f}ms" if run.workload == "W3" else ""),
            file=sys.stderr,
        )


def _report(
    configs: Sequence[Config], workloads: Sequence[Workload], runs: Sequence[Run]
) -> tuple[list[Row], list[Ratio]]:
    traced = "c" if any(c.key == "c" for c in configs) else "b"
    rows = summarise(runs, configs, workloads)
    found = ratios(rows, runs, traced)
    print(render(rows, found, {c.key: c.label for c in CONFIGS}))
    if traced != "c":
        print("\n(c) did not run: ctrltrace run has no --otlp-endpoint; (b) stands in for it.")
    return rows, found


def _null_as_nan(run: dict[str, Any]) -> dict[str, Any]:
    return {key: math.nan if value is None else value for key, value in run.items()}


def _nan_as_null(value: Any) -> Any:
    """JSON has no NaN: a metric nobody measured (a failed run, no latency in W1) is null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_as_null(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_as_null(item) for item in value]
    return value


if __name__ == "__main__":
    main()
