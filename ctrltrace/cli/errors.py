"""Exit codes scripts can rely on, and the one-line error every command fails with.

No imports beyond click: the TUI's command shares the CLI's options through this, and must
not pull in the runtime, envtest or the exporters with it.
"""

from __future__ import annotations

import enum

import click


class ExitCode(enum.IntEnum):
    """Exit codes scripts can rely on (also listed in ``ctrltrace --help``)."""

    OK = 0
    WARNINGS = 1
    USAGE = 2
    FAILED = 3
    ENVIRONMENT = 4  # no binaries, or the local control plane failed to start
    JOURNAL = 5  # the journal, or the evidence explain reads, cannot be read
    APP = 6  # MODULE:ATTR cannot be imported, is not a Manager, or the manager is mis-built
    KUBECONFIG = 7
    UNREACHABLE = 8  # the API server does not answer
    LEADERSHIP_LOST = 9
    CACHE_SYNC_TIMEOUT = 10  # a controller's watches did not sync within cache_sync_timeout
    CONTROLLER_FAILED = 11  # a controller's workers stopped outside shutdown


class CommandError(click.ClickException):
    """A failure the user can act on: printed as one line, exits with ``code``."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = int(code)  # type: ignore[misc]  # click declares it per class

    def show(self, file: object = None) -> None:
        click.echo(f"ctrltrace: error: {self.format_message()}", err=True)
