"""The ``ctrltrace`` command line: argument parsing, exit codes and one-line errors.

Owns the mapping from failures to exit codes (``app``), the options commands share
(``options``), and one module per command (``run``, ``explain``, ``export``, ``envtest``;
``doctor``, ``rbac`` and ``tui`` live beside the code they run). No traceback reaches the user
unless ``-v`` asks for it.
"""

from ctrltrace.cli import envtest, explain, export, run  # noqa: F401  # each adds its command
from ctrltrace.cli.app import CommandError, ExitCode
from ctrltrace.cli.group import main
from ctrltrace.cli.options import EPILOG

__all__ = ["CommandError", "ExitCode", "main"]


def _register() -> None:
    # The commands defined beside the code they run; their modules import this package lazily.
    from ctrltrace.doctor import doctor_command
    from ctrltrace.rbac import rbac_command
    from ctrltrace.tui.command import tui_command  # no Textual until it runs

    for command in (doctor_command, rbac_command, tui_command):
        main.add_command(command)
    for command in main.commands.values():
        command.epilog = EPILOG
    main.epilog = EPILOG


_register()
