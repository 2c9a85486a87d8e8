"""``ctrltrace envtest``: a local kube-apiserver and etcd on loopback until a signal."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click

from ctrltrace.cli.errors import CommandError, ExitCode
from ctrltrace.cli.group import main


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


@main.command()
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
