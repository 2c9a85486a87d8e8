"""Time as ctrltrace's texts show it: a wall-clock time, an ISO timestamp, a duration.

One formatter for each, shared by ``explain`` and the live view. Pure: no I/O.
"""

from __future__ import annotations

import datetime


def clock(seconds: float) -> str:
    """A wall time as HH:MM:SS.mmm, local time."""
    moment = datetime.datetime.fromtimestamp(seconds).astimezone()
    return moment.strftime("%H:%M:%S.%f")[:-3]


def iso_time(seconds: float) -> str:
    """An instant as UTC ISO 8601 with milliseconds: 2026-12-07T03:04:05.678Z."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def span(seconds: float) -> str:
    """A duration in a few characters: 12.3 ms, 3.4s, 5m07s, 2h03m (never negative: a clock
    that stepped back shows 0.0 ms)."""
    seconds = max(seconds, 0.0)
    if seconds < 1.0:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120.0:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 120:
        return f"{minutes}m{rest:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"
