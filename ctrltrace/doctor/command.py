"""``ctrltrace doctor``: every check in checklist order, printed as text or JSON, with the exit
code."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import click

from ctrltrace.cli.app import AppArgs, app_parameters, cluster_for, command_errors, connect
from ctrltrace.cli.errors import ExitCode
from ctrltrace.doctor.cluster import access_checks, kind_checks, lease_holder_check, whoami
from ctrltrace.doctor.offline import leader_election_checks, startup_checks, trap_checks
from ctrltrace.doctor.report import (
    ACCESS,
    KINDS,
    LEADER,
    STARTUP,
    TRAPS,
    Report,
    Status,
    Trap,
)
from ctrltrace.kinds import RestMapper
from ctrltrace.rbac import (
    App,
    load_app,
    make_plan,
    resolve,
    watch_uses,
)
from ctrltrace.transport import Transport, kubeconfig_path


async def diagnose(
    app: App,
    transport: Transport,
    version: str,
    in_cluster: bool,
    accepted_traps: Collection[str] = (),
) -> Report:
    """Every check, in checklist order, against the cluster ``transport`` talks to."""
    manager = app.manager
    resolutions = await resolve(list(watch_uses(manager)), RestMapper(transport))
    plan = make_plan(manager, resolutions, app.writes)
    identity = await whoami(transport)
    lease_name = manager.options.leader_election_id
    checks = [
        *startup_checks(manager),
        *leader_election_checks(manager, in_cluster),
        *await kind_checks(transport, resolutions),
        *await access_checks(transport, plan, identity, lease_name),
        *await lease_holder_check(transport, manager),
        *trap_checks(manager, resolutions=resolutions, accepted=accepted_traps),
    ]
    # Sections in checklist order, each check staying with its own section.
    order = [STARTUP, LEADER, KINDS, *ACCESS.values(), TRAPS]
    checks.sort(key=lambda check: order.index(check.section))
    return Report(app.spec, transport.host, version, identity, tuple(checks))


async def _diagnose_app(app: App, accepted_traps: Collection[str]) -> Report:
    in_cluster = kubeconfig_path(app.manager.options.kubeconfig) is None
    transport, version = await connect(app.manager.options)
    try:
        return await diagnose(app, transport, version, in_cluster, accepted_traps)
    finally:
        await transport.close()


@click.command("doctor")
@app_parameters
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option(
    "--accept-trap",
    "accepted_traps",
    multiple=True,
    type=click.Choice([trap.value for trap in Trap]),
    help="A known trap that does not apply to this app: listed as accepted, not warned about.",
)
def doctor_command(args: AppArgs, *, as_json: bool, accepted_traps: tuple[str, ...]) -> None:
    """Check, without starting it, why the Manager APP (MODULE:ATTR) might never reconcile.

    Against the cluster of the kubeconfig (or --envtest): builder problems, the leader
    election id and namespace, that every watched kind is served, that this identity may
    get/list/watch them, make its declared writes, send Events and take the Lease, and known
    traps (each with a code for --accept-trap).
    Exit code 0 all good, 1 warnings only, 3 any failure.
    """

    with command_errors():
        app = load_app(args)
        with cluster_for(args, app.manager.options):
            report = asyncio.run(_diagnose_app(app, accepted_traps))
    if as_json:
        click.echo(report.json_text())
    else:
        click.echo(report.render(), nl=False)
    exit_codes = {Status.OK: ExitCode.OK, Status.WARN: ExitCode.WARNINGS}
    click.get_current_context().exit(exit_codes.get(report.worst, ExitCode.FAILED))
