"""The ``ctrltrace`` command line: argument parsing, exit codes and one-line errors.

Owns the mapping from failures to exit codes; the commands themselves call into the packages
that do the work. No traceback reaches the user unless ``-v`` asks for it.
"""

from __future__ import annotations

import enum
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from ctrltrace._version import __version__


class ExitCode(enum.IntEnum):
    """Exit codes scripts can rely on (also listed in ``ctrltrace --help``)."""

    OK = 0
    WARNINGS = 1
    USAGE = 2
    FAILED = 3
    ENVIRONMENT = 4  # no binaries, control plane or cluster unavailable
    JOURNAL = 5


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
