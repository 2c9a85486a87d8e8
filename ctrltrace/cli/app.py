"""What every command that loads a Manager shares: the ``MODULE:ATTR`` argument and ``run``'s
options, applying them to the Manager, ``--envtest``, and turning failures into one line and
an exit code.

The exit codes live here because these are the failures they name.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import click

from ctrltrace.builder import BuildError
from ctrltrace.cli.errors import CommandError, ExitCode
from ctrltrace.controller import CacheSyncTimeout, ControllerFailed
from ctrltrace.leaderelection import LeaderLost
from ctrltrace.loader import AppError, AppSpecError, load_manager
from ctrltrace.manager import Manager, ManagerOptions, Unreachable
from ctrltrace.transport import ApiError, ConfigError, Transport, load_configuration

if TYPE_CHECKING:
    from ctrltrace.envtest import ControlPlane


@contextlib.contextmanager
def local_control_plane() -> Iterator[ControlPlane]:
    """A local kube-apiserver + etcd for one command, stopped when it ends."""
    # envtest is imported only with --envtest: most runs never need it.
    from ctrltrace.envtest import (
        BinariesNotFoundError,
        ControlPlane,
        ControlPlaneError,
    )

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


def load_manager_for(args: AppArgs) -> Manager:
    """The app's Manager with the command line's overrides applied."""
    manager = load_manager(args.app)
    overrides: dict[str, object] = {
        "namespaces": args.namespaces or None,
        "leader_election": args.leader_elect,
        "leader_election_id": args.leader_election_id,
        "leader_election_namespace": args.leader_election_namespace,
        "kubeconfig": args.kubeconfig,
        "context": args.context,
    }
    for field_name, value in overrides.items():
        if value is not None:
            setattr(manager.options, field_name, value)
    return manager


@dataclass(frozen=True)
class AppArgs:
    """MODULE:ATTR and the options that ``run`` also takes, as the command line gave them."""

    app: str
    kubeconfig: str | None = None
    context: str | None = None
    namespaces: tuple[str, ...] = ()
    leader_elect: bool | None = None
    leader_election_id: str | None = None
    leader_election_namespace: str | None = None
    envtest: bool = False


async def connect(options: ManagerOptions) -> tuple[Transport, str]:
    """A transport to the manager's cluster and the server's version; the caller closes it.

    ConfigError for a missing or rejected credential, Unreachable when nothing answers.
    """
    transport = Transport(await load_configuration(options.kubeconfig, options.context))
    try:
        version = await transport.request("GET", "/version")
    except ApiError as error:
        await transport.close()
        if error.status == 401:
            raise ConfigError(
                f"the API server at {transport.host} rejected the credentials: {error}"
            ) from error
        raise Unreachable(f"the API server at {transport.host} answered {error}") from error
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        await transport.close()
        detail = str(error) or type(error).__name__
        raise Unreachable(f"cannot reach the API server at {transport.host}: {detail}") from error
    return transport, str(version.get("gitVersion", "unknown version"))


@contextlib.contextmanager
def command_errors() -> Iterator[None]:
    """Turn what loading and connecting raise into one-line errors with their exit codes."""
    try:
        yield
    except AppSpecError as error:
        raise CommandError(str(error), ExitCode.USAGE) from error
    except AppError as error:
        raise CommandError(str(error), ExitCode.APP) from error
    except ConfigError as error:
        raise CommandError(str(error), ExitCode.KUBECONFIG) from error
    except Unreachable as error:
        raise CommandError(str(error), ExitCode.UNREACHABLE) from error
    except BuildError as error:
        raise CommandError(f"cannot start: {error}", ExitCode.APP) from error
    except LeaderLost as error:
        raise CommandError(str(error), ExitCode.LEADERSHIP_LOST) from error
    except CacheSyncTimeout as error:
        raise CommandError(str(error), ExitCode.CACHE_SYNC_TIMEOUT) from error
    except ControllerFailed as error:
        raise CommandError(str(error), ExitCode.CONTROLLER_FAILED) from error


@contextlib.contextmanager
def cluster_for(args: AppArgs, options: ManagerOptions) -> Iterator[None]:
    """With ``--envtest``, a local control plane that ``options`` point at while it runs."""
    if not args.envtest:
        yield
        return
    with local_control_plane() as plane:
        options.kubeconfig = str(plane.kubeconfig)
        yield


_APP_PARAMETERS: tuple[Callable[[Callable[..., None]], Callable[..., None]], ...] = (
    click.argument("app"),
    click.option(
        "--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)."
    ),
    click.option("--context", "kube_context", help="Kubeconfig context to use."),
    click.option(
        "--namespace",
        "namespaces",
        multiple=True,
        help="Namespace the manager caches (repeatable; default: the app's, else all).",
    ),
    click.option(
        "--leader-elect/--no-leader-elect",
        default=None,
        help="Leader election (default: the app's).",
    ),
    click.option("--leader-election-id", help="Lease name (a DNS subdomain)."),
    click.option("--leader-election-namespace", help="Namespace of the Lease."),
    click.option(
        "--envtest", is_flag=True, help="Start a local control plane for this run and use it."
    ),
)


def app_parameters(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command ``run``'s app argument and options, passed to it as one ``AppArgs``."""

    @functools.wraps(command)
    def with_app(
        *,
        app: str,
        kubeconfig: str | None,
        kube_context: str | None,
        namespaces: tuple[str, ...],
        leader_elect: bool | None,
        leader_election_id: str | None,
        leader_election_namespace: str | None,
        envtest: bool,
        **rest: Any,
    ) -> None:
        args = AppArgs(
            app,
            kubeconfig,
            kube_context,
            namespaces,
            leader_elect,
            leader_election_id,
            leader_election_namespace,
            envtest,
        )
        command(args, **rest)

    decorated: Callable[..., None] = with_app
    for parameter in reversed(_APP_PARAMETERS):
        decorated = parameter(decorated)
    return decorated
