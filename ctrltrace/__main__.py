"""``python -m ctrltrace`` is the ``ctrltrace`` command."""

from ctrltrace.cli import main

main()
