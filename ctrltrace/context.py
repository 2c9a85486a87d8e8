"""What a reconcile receives besides its request: a client, an Event recorder, a bound logger,
its identity.

No I/O of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

from ctrltrace.client import Client
from ctrltrace.kubeevents import EventRecorder
from ctrltrace.request import Request

T = TypeVar("T")


class Context:
    """Given to every reconcile. ``client``, ``events`` and ``log`` are made on first use: a
    reconcile that never logs or writes pays nothing for them."""

    __slots__ = (
        "_client",
        "_events",
        "_log",
        "_logger",
        "_shared_client",
        "_shared_events",
        "controller",
        "loop",
        "reconcile_id",
        "request",
    )

    def __init__(
        self,
        client: Client,
        logger: structlog.typing.FilteringBoundLogger,
        *,
        controller: str,
        reconcile_id: str,
        request: Request,
        loop: asyncio.AbstractEventLoop,
        events: EventRecorder | None = None,
    ) -> None:
        self._shared_client = client
        self._shared_events = events
        self._events: EventRecorder | None = None
        self._logger = logger
        self._client: Client | None = None
        self._log: structlog.typing.FilteringBoundLogger | None = None
        self.controller = controller
        self.reconcile_id = reconcile_id
        self.request = request
        self.loop = loop

    @property
    def client(self) -> Client:
        """Reads from the cache, writes through the API, writes attributed to this reconcile."""
        if self._client is None:
            self._client = self._shared_client.scoped(self.controller, self.reconcile_id)
        return self._client

    @property
    def events(self) -> EventRecorder:
        """Emits Kubernetes Events about objects (``ctx.events.normal(obj, reason, message)``),
        sent in the background, attributed to this reconcile in the records."""
        if self._events is None:
            if self._shared_events is None:
                raise RuntimeError("no Event recorder: this controller does not run in a Manager")
            self._events = self._shared_events.scoped(
                self.controller, self.reconcile_id, self.request.key
            )
        return self._events

    @property
    def log(self) -> structlog.typing.FilteringBoundLogger:
        """A logger bound to controller, namespace, name and reconcile_id."""
        if self._log is None:
            self._log = self._logger.bind(
                namespace=self.request.namespace,
                name=self.request.name,
                reconcile_id=self.reconcile_id,
            )
        return self._log

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a client call from a plain-``def`` reconciler (which runs in a worker thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()
