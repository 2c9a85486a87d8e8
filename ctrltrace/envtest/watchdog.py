"""The parent's side of the watchdog (``_reaper``): start it, tell it what to clean up, and
tell it when everything is cleaned up already.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


class Watchdog:
    """The parent's side: starts the watchdog, tells it what to clean up, and when all is done."""

    def __init__(self) -> None:
        # A session of its own, so Ctrl-C in the terminal does not stop it before the parent.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ctrltrace.envtest._reaper"],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )

    def watch_pid(self, pid: int) -> None:
        self._tell(f"pid {pid}")

    def watch_dir(self, path: Path) -> None:
        self._tell(f"dir {path}")

    def done(self) -> None:
        """The parent has cleaned up itself: the watchdog exits without touching anything."""
        self._tell("done")
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()

    def _tell(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{line}\n".encode())
        self.process.stdin.flush()
