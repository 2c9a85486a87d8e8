"""The ``ctrltrace`` command line: argument parsing, exit codes and one-line errors.

Owns the mapping from failures to exit codes; the commands themselves call into the packages
that do the work. No traceback reaches the user unless ``-v`` asks for it.
"""

from __future__ import annotations

import contextlib
import enum
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


_EPILOG = "Exit codes: " + ", ".join(f"{code.value} {code.name.lower()}" for code in ExitCode)


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
    envtest: bool,
    log_format: str,
    verbose: int,
) -> None:
    """Run the Manager APP (MODULE:ATTR, like uvicorn: app:mgr or ./app.py:mgr)."""
    from ctrltrace.builder import BuildError
    from ctrltrace.exporters.prometheus import MetricsEndpoint, PrometheusSink
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


@contextlib.contextmanager
def _local_control_plane() -> Iterator[ControlPlane]:
    from ctrltrace.envtest import BinariesNotFoundError, ControlPlane, ControlPlaneError

    try:
        plane = ControlPlane()
        plane.start()
    except (BinariesNotFoundError, ControlPlaneError) as error:
        raise CommandError(f"--envtest: {error}", ExitCode.ENVIRONMENT) from error
    click.echo(
        f"local control plane ready in {plane.startup_seconds:.1f}s at {plane.server}", err=True
    )
    try:
        yield plane
    finally:
        plane.stop()
