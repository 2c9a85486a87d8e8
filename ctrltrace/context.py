"""What a reconcile receives besides its request: a client, a bound logger, its identity.

No I/O of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from ctrltrace.client import Client
from ctrltrace.request import Request

T = TypeVar("T")


@dataclass(slots=True)
class Context:
    client: Client
    log: structlog.typing.FilteringBoundLogger
    controller: str
    reconcile_id: str
    request: Request
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a client call from a plain-``def`` reconciler (which runs in a worker thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()
