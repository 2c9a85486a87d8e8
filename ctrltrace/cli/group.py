"""The ``ctrltrace`` command group: its version, its help, and the exit codes its epilog lists.

Every command module adds itself to ``main``; nothing else lives here.
"""

from __future__ import annotations

import click

from ctrltrace._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="ctrltrace")
def main() -> None:
    """Run Kubernetes controllers and see why each event did or did not reach Reconcile."""
