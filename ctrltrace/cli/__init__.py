"""The ``ctrltrace`` command line: argument parsing, exit codes and one-line errors.

Owns the exit codes (``errors``), the app argument and the mapping from its failures to exit
codes (``app``), the options commands share
(``options``), the group and where each command lives (``group``), and one module per command
(``run``, ``explain``, ``export``, ``envtest``, ``manifests``; ``doctor``, ``rbac`` and ``tui``
live beside the code they run). No traceback reaches the user unless ``-v`` asks for it.
"""

from ctrltrace.cli import envtest, explain, export, run  # noqa: F401  # each adds its command
from ctrltrace.cli.errors import CommandError, ExitCode
from ctrltrace.cli.group import main

__all__ = ["CommandError", "ExitCode", "main"]
