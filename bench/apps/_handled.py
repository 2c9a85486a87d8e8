"""The "handled" log every benchmark app writes: one line per handler call, read by the harness.

Owns the line format and its cost, which must be the same for every framework: a handler call
appends ``START_TIME NAME RESOURCE_VERSION STAMP`` to a 1 MiB buffer (no system call), and
the event loop flushes that buffer to the file 50 ms after the first unflushed line. The
harness tails the file to see which version of which object was handled when.

The file is ``$BENCH_HANDLED``; its directory must exist.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_FLUSH_AFTER_S = 0.05
NO_STAMP = "-"


class HandledLog:
    def __init__(self, path: str) -> None:
        # Binary and buffered: a line costs one encode and a memcpy until the flush.
        self._file = Path(path).open("ab", buffering=1 << 20)  # noqa: SIM115  # process-long
        self._flush_due = False

    @classmethod
    def from_env(cls) -> HandledLog:
        return cls(os.environ["BENCH_HANDLED"])

    def __call__(self, started: float, obj: Mapping[str, Any]) -> None:
        """Record that a handler that started at ``started`` saw ``obj``."""
        meta = obj["metadata"]
        stamp = (meta.get("annotations") or {}).get("bench/stamp", NO_STAMP)
        line = f"{started:.6f} {meta['name']} {meta['resourceVersion']} {stamp}\n"
        self._file.write(line.encode())
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_later(_FLUSH_AFTER_S, self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        self._file.flush()
