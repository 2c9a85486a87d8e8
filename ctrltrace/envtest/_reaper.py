"""A watchdog that outlives a crashed parent just long enough to clean up after it.

The parent writes ``pid N`` and ``dir PATH`` lines to this process's stdin as it creates
processes and temp dirs, and ``done`` once it has cleaned up itself. End of input without
``done`` means the parent died (SIGKILL, a crash): stop the processes and remove the dirs, so no
etcd, kube-apiserver, port or temp dir outlives it.

``ctrltrace.envtest.watchdog.Watchdog`` is the parent's side of that conversation. This
module is the child program only, so that running it with ``-m`` never finds it imported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time


def _stop(pids: list[int], grace: float = 5.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _alive(pid)]
        time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # Our children are not ours to reap (they belong to the dead parent's init), but a zombie
    # has released its ports already.
    try:
        with open(f"/proc/{pid}/stat") as stat:  # noqa: PTH123
            return stat.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pids: list[int] = []
    dirs: list[str] = []
    for line in sys.stdin:
        what, _, value = line.strip().partition(" ")
        if what == "pid":
            pids.append(int(value))
        elif what == "dir":
            dirs.append(value)
        elif what == "done":
            return
    _stop(pids)
    for folder in dirs:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
