"""The ``ctrltrace`` command line: argument parsing, exit codes and one-line errors.

Owns the mapping from failures to exit codes; the commands themselves call into the packages
that do the work. No traceback reaches the user unless ``-v`` asks for it.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
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

from ctrltrace._version import __version__

if TYPE_CHECKING:
    from ctrltrace.envtest import ControlPlane


class ExitCode(enum.IntEnum):
    """Exit codes scripts can rely on (also listed in ``ctrltrace --help``)."""

    OK = 0
    WARNINGS = 1
    USAGE = 2
    FAILED = 3
    ENVIRONMENT = 4  # no binaries, or the local control plane failed to start
    JOURNAL = 5
    APP = 6  # MODULE:ATTR cannot be imported, is not a Manager, or the manager is mis-built
    KUBECONFIG = 7
    UNREACHABLE = 8  # the API server does not answer
    LEADERSHIP_LOST = 9


class CommandError(click.ClickException):
    """A failure the user can act on: printed as one line, exits with ``code``."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = int(code)  # type: ignore[misc]  # click declares it per class

    def show(self, file: object = None) -> None:
        click.echo(f"ctrltrace: error: {self.format_message()}", err=True)


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
@click.argument("app")
@click.option(
    "--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)."
)
@click.option("--context", "kube_context", help="Kubeconfig context to use.")
@click.option(
    "--namespace", "namespaces", multiple=True, help="Namespace to cache (repeatable; default all)."
)
@click.option("--metrics-bind-address", help="host:port for /metrics; 0 disables.")
@click.option("--health-probe-bind-address", help="host:port for /healthz and /readyz; 0 disables.")
@click.option("--leader-elect/--no-leader-elect", default=None, help="Hold a Lease to reconcile.")
@click.option("--leader-election-id", help="Lease name (a DNS subdomain).")
@click.option("--leader-election-namespace", help="Namespace of the Lease.")
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
    "--envtest", is_flag=True, help="Start a local control plane for this run and use it."
)
@click.option("--log-format", type=click.Choice(["console", "json"]), default="console")
@click.option("-v", "--verbose", count=True, help="Debug logs; tracebacks on errors.")
def run(  # click passes every parameter by keyword
    *,
    app: str,
    kubeconfig: str | None,
    kube_context: str | None,
    namespaces: tuple[str, ...],
    metrics_bind_address: str | None,
    health_probe_bind_address: str | None,
    leader_elect: bool | None,
    leader_election_id: str | None,
    leader_election_namespace: str | None,
    journal_path: Path,
    journal_max_age: str,
    journal_max_size: int,
    envtest: bool,
    log_format: str,
    verbose: int,
) -> None:
    """Run the Manager APP (MODULE:ATTR, like uvicorn: app:mgr or ./app.py:mgr).

    Every record goes to the journal (by default kept for 24 hours and under 256 MiB), to
    /metrics, and to OpenTelemetry when an endpoint is configured.
    """
    from ctrltrace.builder import BuildError
    from ctrltrace.exporters.prometheus import MetricsEndpoint, PrometheusSink
    from ctrltrace.journal import JournalError, JournalWriter
    from ctrltrace.leaderelection import LeaderLost
    from ctrltrace.loader import AppError, AppSpecError, load_manager
    from ctrltrace.logs import configure
    from ctrltrace.manager import Unreachable
    from ctrltrace.transport import ConfigError

    configure(log_format, verbose)
    try:
        manager = load_manager(app)
    except AppSpecError as error:
        raise CommandError(str(error), ExitCode.USAGE) from error
    except AppError as error:
        raise CommandError(str(error), ExitCode.APP) from error
    options = manager.options
    overrides = {
        "namespaces": namespaces or None,
        "metrics_bind_address": metrics_bind_address,
        "health_probe_bind_address": health_probe_bind_address,
        "leader_election": leader_elect,
        "leader_election_id": leader_election_id,
        "leader_election_namespace": leader_election_namespace,
        "kubeconfig": kubeconfig,
        "context": kube_context,
    }
    for field_name, value in overrides.items():
        if value is not None:
            setattr(options, field_name, value)
    try:
        journal = JournalWriter(
            journal_path,
            max_age_s=_seconds(journal_max_age),
            max_bytes=journal_max_size * 2**20,
        )
    except JournalError as error:
        raise CommandError(str(error), ExitCode.JOURNAL) from error
    manager.add_sink(journal)
    metrics = PrometheusSink(manager)
    manager.add_sink(metrics)
    manager.add(MetricsEndpoint(metrics, options.metrics_bind_address))
    with contextlib.ExitStack() as stack:
        if envtest:
            options.kubeconfig = str(stack.enter_context(_local_control_plane()).kubeconfig)
        try:
            manager.run()
        except BuildError as error:
            raise CommandError(f"cannot start: {error}", ExitCode.APP) from error
        except ConfigError as error:
            raise CommandError(str(error), ExitCode.KUBECONFIG) from error
        except Unreachable as error:
            raise CommandError(str(error), ExitCode.UNREACHABLE) from error
        except LeaderLost as error:
            raise CommandError(str(error), ExitCode.LEADERSHIP_LOST) from error
        finally:
            journal.close()


@contextlib.contextmanager
def _local_control_plane() -> Iterator[ControlPlane]:
    from ctrltrace.envtest import BinariesNotFoundError, ControlPlane, ControlPlaneError

    try:
        plane = ControlPlane()
        plane.start()
    except (BinariesNotFoundError, ControlPlaneError) as error:
        raise CommandError(f"--envtest: {error}", ExitCode.ENVIRONMENT) from error
    click.echo(
        f"local control plane ready in {plane.startup_seconds:.1f}s at {plane.server}\n"
        f"kubeconfig: {plane.kubeconfig}",
        err=True,
    )
    try:
        yield plane
    finally:
        plane.stop()


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
@click.argument("target", metavar="NAMESPACE/NAME")
@click.option("--kind", help="KIND[.GROUP], kubectl style: case-insensitive, plural accepted.")
@click.option("--controller", help="Only this controller's view of the object.")
@journal_option
@click.option("--since", help="Only records newer than this: 10m, 2h, or an ISO time.")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
def explain(
    *,
    target: str,
    kind: str | None,
    controller: str | None,
    journal_path: Path,
    since: str | None,
    as_json: bool,
) -> None:
    """Say why the latest event for NAMESPACE/NAME (NAME if cluster-scoped) did or did not
    reach Reconcile. Reads the journal only: works offline and on a CI artifact.

    Exits 0 when the verdict is reconciled or requeue_scheduled, 3 for any other verdict.
    """
    import json
    import time

    from ctrltrace import explain as explaining
    from ctrltrace.journal import Journal, JournalError

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
            kind_name = explaining.resolve_kind(kind, watches) if kind else None
            explanation = explaining.explain(
                journal.about(namespace, name, kind=kind_name, since=since_time),
                namespace=namespace,
                name=name,
                kind=kind_name,
                controller=controller,
                watch_records=watches,
                lease_records=journal.lease_records(since=since_time),
                controller_records=journal.controller_records(since=since_time),
                now=now,
            )
    except JournalError as error:
        raise CommandError(str(error), ExitCode.JOURNAL) from error
    if as_json:
        click.echo(json.dumps(explanation.to_json(), indent=2))
    else:
        # A terminal narrower than 100 columns gets its width; a pipe or file gets 100.
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else 100
        click.echo(explanation.render(width=min(100, width)))
    sys.exit(explaining.exit_code(explanation.verdict.code))


def _register_commands() -> None:
    # Defined beside the code they run; their modules import this one lazily.
    from ctrltrace.doctor import doctor_command
    from ctrltrace.rbac import rbac_command

    for command in (doctor_command, rbac_command):
        command.epilog = _EPILOG
        main.add_command(command)


_register_commands()
