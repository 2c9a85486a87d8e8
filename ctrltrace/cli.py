"""The ``ctrltrace`` command line: argument parsing, exit codes and one-line errors.

Owns the mapping from failures to exit codes; the commands themselves call into the packages
that do the work. No traceback reaches the user unless ``-v`` asks for it.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click
import structlog

from ctrltrace._version import __version__
from ctrltrace.cli_app import (
    AppArgs,
    CommandError,
    ExitCode,
    app_parameters,
    cluster_for,
    command_errors,
    load_manager_for,
)

__all__ = ["CommandError", "ExitCode", "main"]

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from ctrltrace.clock import Clock
    from ctrltrace.exporters.tracing import DropCounter, SpanSink
    from ctrltrace.journal import JournalWriter
    from ctrltrace.manager import Manager


_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
DEFAULT_JOURNAL = Path(".ctrltrace") / "journal.sqlite"
_EPILOG = "Exit codes: " + ", ".join(f"{code.value} {code.name.lower()}" for code in ExitCode)


journal_option = click.option(
    "--journal",
    "journal_path",
    envvar="CTRLTRACE_JOURNAL",
    default=DEFAULT_JOURNAL,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The journal file (SQLite; also $CTRLTRACE_JOURNAL).",
)


@click.group(epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="ctrltrace")
def main() -> None:
    """Run Kubernetes controllers and see why each event did or did not reach Reconcile."""


@contextmanager
def _until_signalled() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM, with the previous handlers restored afterwards."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: list[tuple[int, Callable[[int, FrameType | None], object] | int | None]] = [
        (sig, signal.signal(sig, handler)) for sig in (signal.SIGINT, signal.SIGTERM)
    ]
    try:
        yield stop
    finally:
        for sig, old in previous:
            signal.signal(sig, old)


@main.command(epilog=_EPILOG)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the admin kubeconfig here (default: a file in the temp dir, printed when ready).",
)
@click.option(
    "--binaries",
    "only_binaries",
    is_flag=True,
    help="Only find (or build) kube-apiserver and etcd, print their paths, and exit.",
)
def envtest(kubeconfig: Path | None, only_binaries: bool) -> None:
    """Run a local kube-apiserver and etcd on loopback until SIGINT or SIGTERM.

    Binaries come from TEST_ASSET_KUBE_APISERVER/TEST_ASSET_ETCD, KUBEBUILDER_ASSETS, the
    cache, or a Go build (first run only). RBAC authorization is on.
    """
    from ctrltrace.envtest import BinariesNotFoundError, ControlPlane, ControlPlaneError
    from ctrltrace.envtest.binaries import find_binaries

    try:
        binaries = find_binaries(log=lambda line: click.echo(line, err=True))
    except BinariesNotFoundError as error:
        raise CommandError(str(error), ExitCode.ENVIRONMENT) from error
    if only_binaries:
        click.echo(f"kube-apiserver: {binaries.kube_apiserver}")
        click.echo(f"etcd: {binaries.etcd}")
        click.echo(f"from: {binaries.origin}")
        return
    with _until_signalled() as stop:
        try:
            plane = ControlPlane(binaries, kubeconfig=kubeconfig)
            plane.start()
        except ControlPlaneError as error:
            raise CommandError(
                f"control plane failed to start: {error}", ExitCode.ENVIRONMENT
            ) from error
        try:
            version = plane.request("GET", "/version")["gitVersion"]
            click.echo(
                f"ready in {plane.startup_seconds:.1f}s: kube-apiserver {version} at "
                f"{plane.server}\nkubeconfig: {plane.kubeconfig}\n"
                f"export KUBECONFIG={plane.kubeconfig}\n(Ctrl-C to stop)",
            )
            sys.stdout.flush()
            stop.wait()
        finally:
            plane.stop()
    click.echo("stopped", err=True)


@main.command(epilog=_EPILOG)
@app_parameters
@click.option("--metrics-bind-address", help="host:port for /metrics; 0 disables.")
@click.option("--health-probe-bind-address", help="host:port for /healthz and /readyz; 0 disables.")
@journal_option
@click.option(
    "--journal-max-age",
    default="24h",
    show_default=True,
    help="Drop journal records older than this (s, m, h, d).",
)
@click.option(
    "--journal-max-size",
    default=256,
    show_default=True,
    help="Keep the journal under this many MiB, dropping the oldest records.",
)
@click.option(
    "--otlp-endpoint",
    help="Send spans over OTLP to this base URL (http://host:4318); else OTEL_* variables.",
)
@click.option(
    "--otlp-protocol",
    type=click.Choice(["http/protobuf", "grpc"]),
    help="OTLP protocol (default: $OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf).",
)
@click.option("--tui", is_flag=True, help="Show the live view in this terminal (logs: --log-file).")
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write logs here instead of stderr (with --tui: default beside the journal).",
)
@click.option("--log-format", type=click.Choice(["console", "json"]), default="console")
@click.option("-v", "--verbose", count=True, help="Debug logs; tracebacks on errors.")
def run(  # click passes every parameter by keyword
    args: AppArgs,
    *,
    metrics_bind_address: str | None,
    health_probe_bind_address: str | None,
    journal_path: Path,
    journal_max_age: str,
    journal_max_size: int,
    otlp_endpoint: str | None,
    otlp_protocol: str | None,
    tui: bool,
    log_file: Path | None,
    log_format: str,
    verbose: int,
) -> None:
    """Run the Manager APP (MODULE:ATTR, like uvicorn: app:mgr or ./app.py:mgr).

    Every record goes to the journal (by default kept for 24 hours and under 256 MiB), to
    /metrics unless it is disabled, and to OpenTelemetry when an endpoint is configured.
    """
    from ctrltrace.exporters.prometheus import MetricsEndpoint, PrometheusSink, serves
    from ctrltrace.exporters.tracing import trace_ids_processor
    from ctrltrace.logs import configure

    tracing = _tracing(otlp_endpoint, otlp_protocol, verbose)
    if tui and log_file is None:  # log lines would be drawn over the view
        log_file = journal_path.with_suffix(".log")
    configure(
        log_format,
        verbose,
        [trace_ids_processor(tracing[1])] if tracing else [],
        log_file=log_file,
    )
    with command_errors():
        manager = load_manager_for(args)
    options = manager.options
    if metrics_bind_address is not None:
        options.metrics_bind_address = metrics_bind_address
    if health_probe_bind_address is not None:
        options.health_probe_bind_address = health_probe_bind_address
    journal = _open_journal(journal_path, journal_max_age, journal_max_size)
    manager.add_sink(journal)
    # With /metrics off nobody can read a counter: no metric work on any record.
    metrics = PrometheusSink(manager) if serves(options.metrics_bind_address) else None
    if metrics is not None:
        manager.add_sink(metrics)
        manager.add(MetricsEndpoint(metrics, options.metrics_bind_address))
    losses = tracing[2] if tracing is not None else None
    manager.add(_LossWatch(journal, losses, manager.clock))
    with contextlib.ExitStack() as stack:
        stack.callback(_close_journal, journal, manager)
        if tracing is not None:
            _, spans, losses = tracing
            manager.add_sink(spans)
            if metrics is not None:
                metrics.registry.register(losses)
            stack.callback(_settle_spans, losses)  # runs first: flushes what the run produced
        with command_errors(), cluster_for(args, options):
            if tui:
                from ctrltrace.tui.command import run_with_tui

                run_with_tui(manager, journal_path)
            else:
                manager.run()


class _LossWatch:
    """Says, while the run goes on, when records stop reaching the journal or spans the
    collector: once, then a reminder with the count at the narrator's slow interval."""

    _EVERY = 15.0  # seconds between two looks at the counters

    def __init__(self, journal: JournalWriter, spans: DropCounter | None, clock: Clock) -> None:
        from ctrltrace.narrator import Reminders

        self._journal = journal
        self._spans = spans
        self._clock = clock
        self._reminders = Reminders(clock)
        self._seen: dict[str, int] = {}

    async def __call__(self) -> None:
        while True:
            await self._clock.sleep(self._EVERY)
            journal = self._journal
            self._check(
                "Journal records dropped",
                journal.dropped,
                journal=str(journal.path),
                error=journal.last_error or None,
                fix="Records arrive faster than the disk takes them, or writes fail (see "
                "error); explain says when a verdict's evidence may be incomplete.",
            )
            if (spans := self._spans) is not None:
                self._check(
                    "Spans dropped",
                    spans.dropped + spans.failed,
                    queue_full_or_unsent=spans.dropped,
                    failed=spans.failed,
                    fix="The OTLP collector is slow or unreachable; losses are counted in "
                    "ctrltrace_spans_dropped_total and the journal keeps every record.",
                )

    def _check(self, event: str, lost: int, **fields: object) -> None:
        if lost <= self._seen.get(event, 0):
            return
        self._seen[event] = lost
        if (reminder := self._reminders.report((event,), "lost")) is not None:
            structlog.get_logger("ctrltrace").warning(event, lost=lost, **fields, **reminder)


def _close_journal(journal: JournalWriter, manager: Manager) -> None:
    journal.close()
    if not manager.ran:  # nothing to say beside the one-line error that stopped start-up
        return
    log = structlog.get_logger("ctrltrace")
    if journal.dropped:
        log.warning(
            "Journal flushed with losses", journal=str(journal.path), dropped=journal.dropped
        )
    else:
        log.info("Journal flushed", journal=str(journal.path))


def _open_journal(path: Path, max_age: str, max_size_mib: int) -> JournalWriter:
    from ctrltrace.journal import JournalError, JournalForeign, JournalWriter

    try:
        return JournalWriter(path, max_age_s=_seconds(max_age), max_bytes=max_size_mib * 2**20)
    except JournalForeign as error:
        # Most often the journal an older ctrltrace left in the working directory.
        hint = "; move it away, or pass --journal with a new path"
        raise CommandError(f"{error}{hint}", ExitCode.JOURNAL) from error
    except JournalError as error:
        raise CommandError(str(error), ExitCode.JOURNAL) from error


def _tracing(
    endpoint: str | None, protocol: str | None, verbose: int
) -> tuple[TracerProvider, SpanSink, DropCounter] | None:
    """Tracing as the flags or the OTEL_* variables ask, or None (then no span work at all)."""
    import logging

    from ctrltrace.exporters.tracing import TracingConfigError, configure_tracing

    try:
        tracing = configure_tracing(endpoint, protocol=protocol)
    except TracingConfigError as error:
        raise CommandError(str(error), ExitCode.USAGE) from error
    if tracing is not None and not verbose:
        # Losses are counted (ctrltrace_spans_dropped_total); one log line per failed batch
        # while a collector is down would only bury the controller's own logs.
        logging.getLogger("opentelemetry.exporter").setLevel(logging.CRITICAL)
    return tracing


def _settle_spans(losses: DropCounter) -> None:
    """Send what the run's spans left queued, and say so when some never reached the collector
    (/metrics counts them too, when it is on)."""
    losses.shutdown()
    if losses.dropped or losses.failed:
        structlog.get_logger("ctrltrace").warning(
            "spans lost",
            dropped=losses.dropped,
            failed=losses.failed,
            exported=losses.exported,
        )


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(text: str) -> float:
    """``90``, ``30s``, ``10m``, ``2h`` or ``1d`` as seconds."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        return float(number) * _UNITS[unit]
    except ValueError:
        raise CommandError(
            f"{text!r} is not a duration (like 30s, 10m, 2h, 1d)", ExitCode.USAGE
        ) from None


def _since(text: str | None, now: float) -> float | None:
    """A ``--since`` value: a duration back from now, or an ISO 8601 time."""
    if text is None:
        return None
    if text[-1:] in _UNITS or text.replace(".", "", 1).isdigit():
        return now - _seconds(text)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(
            f"--since {text!r}: expected a duration (10m) or a time (2026-01-02T15:04:05)",
            ExitCode.USAGE,
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.timestamp()


@main.command(epilog=_EPILOG)
@click.argument("target", metavar="NAMESPACE/NAME", required=False)
@click.option("--kind", help="KIND[.GROUP], kubectl style: case-insensitive, plural accepted.")
@click.option("--controller", help="Only this controller's view of the object.")
@journal_option
@click.option("--since", help="Only records newer than this: 10m, 2h, or an ISO time.")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
@click.option(
    "--funnel",
    is_flag=True,
    help="With --controller and no object: how many events reached each stage of the "
    "controller's pipeline, and where and why the others were lost.",
)
def explain(
    *,
    target: str | None,
    kind: str | None,
    controller: str | None,
    journal_path: Path,
    since: str | None,
    as_json: bool,
    funnel: bool,
) -> None:
    """Say why the latest event for NAMESPACE/NAME (NAME if cluster-scoped) did or did not
    reach Reconcile. Reads the journal only: works offline and on a CI artifact.

    Exits 0 when the verdict is reconciled or requeue_scheduled, 3 for any other verdict.
    With --funnel: exits 0, and 2 when the journal has no record of the controller.
    """
    import json
    import time

    from ctrltrace import explain as explaining
    from ctrltrace.evidence import explain_from_journal
    from ctrltrace.explain_text import render_text
    from ctrltrace.journal import Journal, JournalError

    if funnel:
        _explain_funnel(target, controller, journal_path, since, as_json)
        return
    if target is None:
        raise CommandError("give NAMESPACE/NAME, or --controller NAME --funnel", ExitCode.USAGE)
    namespace, _, name = target.rpartition("/")
    if not name or "/" in namespace or not _OBJECT_NAME.match(name):
        raise CommandError(
            f"{target!r} is not NAMESPACE/NAME (or NAME for a cluster-scoped object)",
            ExitCode.USAGE,
        )
    now = time.time()
    since_time = _since(since, now)
    try:
        with Journal(journal_path) as journal:
            watches = journal.watch_records(since=since_time)
            explanation = explain_from_journal(
                journal,
                namespace=namespace,
                name=name,
                kind=explaining.resolve_kind(kind, watches) if kind else None,
                controller=controller,
                since=since_time,
                now=now,
            )
    except JournalError as error:
        raise CommandError(str(error), ExitCode.JOURNAL) from error
    if as_json:
        click.echo(json.dumps(explanation.to_json(), indent=2))
    else:
        # A terminal narrower than 100 columns gets its width; a pipe or file gets 100.
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 100
        click.echo(render_text(explanation, width=min(100, width)))
    sys.exit(explaining.exit_code(explanation.verdict.code))


def _explain_funnel(
    target: str | None, controller: str | None, journal_path: Path, since: str | None, as_json: bool
) -> None:
    import json
    import time

    from ctrltrace.funnel import FunnelFold, render_funnel
    from ctrltrace.journal import Journal, JournalError

    if target is not None or controller is None:
        raise CommandError("--funnel takes --controller NAME and no NAMESPACE/NAME", ExitCode.USAGE)
    now = time.time()
    fold = FunnelFold()
    try:
        with Journal(journal_path) as journal:
            fold.apply(journal.window(_since(since, now) or 0.0, now))
    except JournalError as error:
        raise CommandError(str(error), ExitCode.JOURNAL) from error
    found = fold.funnel(controller)
    if found is None:
        known = ", ".join(fold.controllers) or "none"
        raise CommandError(
            f"no record of controller {controller!r} in {journal_path} (controllers: {known})",
            ExitCode.USAGE,
        )
    click.echo(json.dumps(found.to_json(), indent=2) if as_json else render_funnel(found))


def _register_commands() -> None:
    # Defined beside the code they run; their modules import this one lazily.
    from ctrltrace.doctor import doctor_command
    from ctrltrace.rbac import rbac_command
    from ctrltrace.tui.command import tui_command  # no Textual until it runs

    for command in (doctor_command, rbac_command, tui_command):
        command.epilog = _EPILOG
        main.add_command(command)


_register_commands()


@main.command(epilog=_EPILOG)
@journal_option
@click.option("--otlp-endpoint", help="Replay the spans over OTLP to this base URL.")
@click.option(
    "--otlp-json",
    "otlp_json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the spans to this file as OTLP-JSON (a CI artifact).",
)
@click.option("--since", help="Only records newer than this: 10m, 2h, or an ISO time.")
def export(
    *, journal_path: Path, otlp_endpoint: str | None, otlp_json: Path | None, since: str | None
) -> None:
    """Turn a journal into OpenTelemetry spans: replayed to an OTLP endpoint, or written as an
    OTLP-JSON file. Exits 3 when spans could not all be delivered."""
    import time

    from ctrltrace.exporters.otlp_json import write_otlp_json
    from ctrltrace.exporters.tracing import configure_tracing, replay
    from ctrltrace.journal import Journal, JournalError

    if (otlp_endpoint is None) == (otlp_json is None):
        raise CommandError("give exactly one of --otlp-endpoint and --otlp-json", ExitCode.USAGE)
    now = time.time()
    try:
        with Journal(journal_path) as journal:
            records = journal.window(_since(since, now) or 0.0, now)
    except JournalError as error:
        raise CommandError(str(error), ExitCode.JOURNAL) from error
    if otlp_json is not None:
        spans = write_otlp_json(records, otlp_json)
        click.echo(f"{spans} spans from {len(records)} records written to {otlp_json}")
        return
    tracing = configure_tracing(otlp_endpoint)
    assert tracing is not None  # an endpoint was given
    provider, _, losses = tracing
    replay(records, provider)
    losses.shutdown()
    click.echo(
        f"{losses.exported} spans from {len(records)} records sent to {otlp_endpoint}; "
        f"{losses.dropped} dropped, {losses.failed} failed"
    )
    if losses.dropped or losses.failed:
        sys.exit(ExitCode.FAILED)
