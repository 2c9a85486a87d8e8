"""``ctrltrace run``: a manager with its journal, metrics, spans and logs, until a signal.

Owns what a run attaches to the manager (journal, /metrics, spans, the loss watch) and how
it closes them; the manager owns the run itself."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import TYPE_CHECKING

import click
import structlog

from ctrltrace.cli.app import AppArgs, app_parameters, cluster_for, command_errors, load_manager_for
from ctrltrace.cli.errors import CommandError, ExitCode
from ctrltrace.cli.group import main
from ctrltrace.cli.options import journal_max_size_option, journal_option, parse_duration

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from ctrltrace.clock import Clock
    from ctrltrace.exporters.tracing import DropCounter, SpanSink
    from ctrltrace.journal import JournalWriter
    from ctrltrace.manager import Manager


@main.command()
@app_parameters
@click.option("--metrics-bind-address", help="host:port for /metrics; 0 disables.")
@click.option("--health-probe-bind-address", help="host:port for /healthz and /readyz; 0 disables.")
@click.option(
    "--debug-bind-address",
    help="host:port for /debug/ctrltrace/ (explain --from, tui --from); 0 disables. "
    "Default 127.0.0.1:8082: kubectl port-forward reaches it, other pods do not.",
)
@click.option(
    "--debug-auth",
    type=click.Choice(["auto", "required"]),
    help="auto (default): a token reviewed by the API server off loopback only; required: "
    "on loopback too.",
)
@click.option(
    "--debug-cert-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory with tls.crt and tls.key (a cert-manager Secret) for the debug endpoint's "
    "https, which it serves whenever it asks for a token; default: a self-signed certificate "
    "made at start.",
)
@journal_option()
@click.option(
    "--journal-max-age",
    default="24h",
    show_default=True,
    help="Drop journal records older than this (s, m, h, d).",
)
@journal_max_size_option()
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
    debug_bind_address: str | None,
    debug_auth: str | None,
    debug_cert_dir: Path | None,
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
    /metrics unless it is disabled, and to OpenTelemetry when an endpoint is configured. The
    debug endpoint serves the journal to explain --from and tui --from.
    """
    from ctrltrace.exporters.prometheus import MetricsEndpoint, PrometheusSink, serves
    from ctrltrace.exporters.tracing import trace_ids_processor
    from ctrltrace.journal import Journal
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
    if debug_bind_address is not None:
        options.debug_bind_address = debug_bind_address
    if debug_auth is not None:
        options.debug_auth = debug_auth
    if debug_cert_dir is not None:
        options.debug_cert_dir = str(debug_cert_dir)
    journal = _open_journal(journal_path, journal_max_age, journal_max_size)
    manager.add_sink(journal)
    manager.debug_evidence = (functools.partial(Journal, journal_path), f"journal {journal_path}")
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
        return JournalWriter(
            path, max_age_s=parse_duration(max_age), max_bytes=max_size_mib * 2**20
        )
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
