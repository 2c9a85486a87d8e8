"""``ctrltrace explain``: why the latest event for an object did or did not reach Reconcile,
from the journal."""

from __future__ import annotations

import re
import shutil
import sys

import click

from ctrltrace.cli.errors import CommandError, ExitCode
from ctrltrace.cli.group import main
from ctrltrace.cli.options import Source, evidence_errors, evidence_options, parse_since

_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@main.command()
@click.argument("target", metavar="NAMESPACE/NAME", required=False)
@click.option("--kind", help="KIND[.GROUP], kubectl style: case-insensitive, plural accepted.")
@click.option("--controller", help="Only this controller's view of the object.")
@evidence_options()
@click.option("--since", help="Only records newer than this: 10m, 2h, or an ISO time.")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
@click.option(
    "--limit",
    default=16,
    show_default=True,
    type=click.IntRange(min=0),
    help="Timeline records shown: the latest, and as many of the object's own events; 0: all.",
)
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
    source: Source,
    since: str | None,
    as_json: bool,
    limit: int,
    funnel: bool,
) -> None:
    """Say why the latest event for NAMESPACE/NAME (NAME if cluster-scoped) did or did not
    reach Reconcile. Reads the records only (a journal: works offline and on a CI artifact).

    Exits 0 when the verdict is reconciled or requeue_scheduled, 3 for any other verdict.
    With --funnel: exits 0, and 2 when the journal has no record of the controller.
    """
    import json
    import time

    from ctrltrace import explain as explaining
    from ctrltrace.evidence import explain_from
    from ctrltrace.explain_text import render_text

    if funnel:
        _explain_funnel(target, controller, source, since, as_json)
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
    since_time = parse_since(since, now)
    with evidence_errors(), source.open() as evidence:
        watches = evidence.watch_records(since=since_time)
        explanation = explain_from(
            evidence,
            namespace=namespace,
            name=name,
            kind=explaining.resolve_kind(kind, watches) if kind else None,
            controller=controller,
            since=since_time,
            now=now,
            timeline_limit=limit,
        )
    if as_json:
        click.echo(json.dumps(explanation.to_json(), indent=2))
    else:
        # A terminal narrower than 100 columns gets its width; a pipe or file gets 100.
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 100
        click.echo(render_text(explanation, width=min(100, width)))
    sys.exit(explaining.exit_code(explanation.verdict.code))


def _explain_funnel(
    target: str | None, controller: str | None, source: Source, since: str | None, as_json: bool
) -> None:
    import json
    import time

    from ctrltrace.funnel import FunnelFold, render_funnel

    if target is not None or controller is None:
        raise CommandError("--funnel takes --controller NAME and no NAMESPACE/NAME", ExitCode.USAGE)
    now = time.time()
    fold = FunnelFold()
    with evidence_errors(), source.open() as evidence:
        fold.apply(evidence.window(parse_since(since, now) or 0.0, now))
    found = fold.funnel(controller)
    if found is None:
        known = ", ".join(fold.controllers) or "none"
        raise CommandError(
            f"no record of controller {controller!r} in the {source.label} (controllers: {known})",
            ExitCode.USAGE,
        )
    click.echo(json.dumps(found.to_json(), indent=2) if as_json else render_funnel(found))
