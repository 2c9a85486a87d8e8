"""What the benchmarks share: reading a process's CPU and memory from ``/proc``, the small
statistics their tables print, and the wording of a verdict against a target.

``bench.controlplane`` measures the manager in its own process; ``bench.compare`` measures
each controller in a child process. Both read the same ``/proc`` fields the same way here.
Every benchmark that prints "met" decides it through ``verdict``, so none can say it of a
run whose figure rests on records it lost or samples it never took.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def status_kib(field: str, pid: int | str = "self") -> int:
    """A ``kB`` field of ``/proc/PID/status`` (VmRSS, VmHWM, …); 0 if absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def rss_mib(pid: int | str = "self") -> float:
    return status_kib("VmRSS", pid) / 1024


def peak_rss_mib(pid: int | str = "self") -> float:
    """The high-water mark of the resident set (VmHWM): the peak RSS so far."""
    return status_kib("VmHWM", pid) / 1024


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU of every thread of the process so far (``/proc/PID/stat``)."""
    # The command name (field 2) may hold spaces and parentheses: count from its closing one.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _TICKS_PER_SECOND


def median(values: Sequence[float]) -> float:
    """The median; NaN for no values (a configuration whose every run failed)."""
    return statistics.median(values) if values else math.nan


def verdict(met: bool, shortfalls: Sequence[str] = ()) -> str:
    """ "met", or "MISSED" with every shortfall that voids the figure, in one line.

    ``met``: the figure reached the target. ``shortfalls``: what makes the figure unearned even
    so (records dropped on the way, no samples taken, a view that never caught up), each in a
    few words; any one of them turns "met" into "MISSED".
    """
    if not shortfalls:
        return "met" if met else "MISSED"
    return f"MISSED ({'; '.join(shortfalls)})"


def percentile(values: Sequence[float], percent: int) -> float:
    """The ``percent``-th percentile, interpolated as ``bench.pipeline`` does; NaN for none."""
    if len(values) < 2:
        return values[0] if values else math.nan
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]
