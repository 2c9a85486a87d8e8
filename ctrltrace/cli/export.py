"""``ctrltrace export``: a journal as OpenTelemetry spans, replayed over OTLP or written as
OTLP-JSON."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ctrltrace.cli.errors import CommandError, ExitCode
from ctrltrace.cli.group import main
from ctrltrace.cli.options import journal_option, parse_since


@main.command()
@journal_option()
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
            records = journal.window(parse_since(since, now) or 0.0, now)
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
