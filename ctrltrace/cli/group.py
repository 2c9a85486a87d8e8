"""The ``ctrltrace`` command group: its version (and which paths run in C), its help, the exit
codes every command's help lists, usage errors in one line, and where each command lives.

Command modules of this package add themselves to ``main``. ``doctor``, ``rbac`` and ``tui``
are defined beside the code they run and are imported when first asked for, so they may use
this package's shared options without an import cycle, and a ``run`` pays for none of them;
so is ``manifests``, which builds on ``rbac``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

import click

from ctrltrace import accelerators
from ctrltrace._version import __version__
from ctrltrace.cli.errors import CommandError, ExitCode
from ctrltrace.cli.options import EPILOG

_ELSEWHERE = {
    "doctor": ("ctrltrace.doctor", "doctor_command"),
    "manifests": ("ctrltrace.cli.manifests", "manifests_command"),
    "rbac": ("ctrltrace.rbac", "rbac_command"),
    "tui": ("ctrltrace.tui.command", "tui_command"),  # no Textual until it runs
}


@contextlib.contextmanager
def _one_line_usage(group: click.Context | None = None) -> Iterator[None]:
    """click prints a usage error as the usage, a hint and the error on three lines; every
    other error of ctrltrace is one line, so this one is too. An error that does not carry its
    command's context is pointed at the subcommand ``group`` was invoking."""
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # no command given: the help is the answer
    except click.UsageError as error:
        message = error.format_message().rstrip(".").replace(". (", " (")
        message = message[:1].lower() + message[1:]
        if error.ctx is not None:
            where = error.ctx.command_path
        elif group is not None:
            where = " ".join(filter(None, (group.command_path, group.invoked_subcommand)))
        else:
            where = "ctrltrace"
        raise CommandError(f"{message} ({where} -h for help)", ExitCode.USAGE) from error


class _Commands(click.Group):
    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _one_line_usage():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_usage(ctx):
            return super().invoke(ctx)

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


def _print_version(ctx: click.Context, _: click.Parameter, asked: bool) -> None:
    # The accelerators are reported here, not at import, so a command pays for loading them
    # only when it uses them.
    if asked and not ctx.resilient_parsing:
        click.echo("\n".join([f"ctrltrace, version {__version__}", *accelerators.report()]))
        ctx.exit()


@click.group(cls=_Commands, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    "-V",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and which paths run in C, then exit.",
)
def main() -> None:
    """Run Kubernetes controllers and see why each event did or did not reach Reconcile."""
