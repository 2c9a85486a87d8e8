"""The ``ctrltrace`` command group: its version, its help, the exit codes every command's help
lists, and where each command lives.

Command modules of this package add themselves to ``main``. ``doctor``, ``rbac`` and ``tui``
are defined beside the code they run and are imported when first asked for, so they may use
this package's shared options without an import cycle, and a ``run`` pays for none of them;
so is ``manifests``, which builds on ``rbac``.
"""

from __future__ import annotations

import importlib

import click

from ctrltrace._version import __version__
from ctrltrace.cli.options import EPILOG

_ELSEWHERE = {
    "doctor": ("ctrltrace.doctor", "doctor_command"),
    "manifests": ("ctrltrace.cli.manifests", "manifests_command"),
    "rbac": ("ctrltrace.rbac", "rbac_command"),
    "tui": ("ctrltrace.tui.command", "tui_command"),  # no Textual until it runs
}


class _Commands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_ELSEWHERE})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _ELSEWHERE and cmd_name not in self.commands:
            module, name = _ELSEWHERE[cmd_name]
            self.add_command(getattr(importlib.import_module(module), name))
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            command.epilog = EPILOG
        return command


@click.group(cls=_Commands, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="ctrltrace")
def main() -> None:
    """Run Kubernetes controllers and see why each event did or did not reach Reconcile."""
