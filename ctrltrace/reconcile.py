"""What a reconciler is given and may return, and what each outcome does to the queue.

Owns ``Result``, ``TerminalError``, the ``Reconciler`` protocols and ``settle``: the one
function that maps a reconcile outcome to a queue action and to the metric label
controller-runtime uses. No I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ctrltrace.request import Request

if TYPE_CHECKING:
    from ctrltrace.context import Context


@dataclass(frozen=True, slots=True)
class Result:
    """``requeue_after`` > 0 runs the request again after that many seconds (back-off
    forgotten); ``requeue`` runs it again after the per-item back-off."""

    requeue_after: float = 0.0
    requeue: bool = False


class TerminalError(Exception):
    """Raise it from Reconcile to fail without retrying (controller-runtime's TerminalError)."""


class AsyncReconcileFunc(Protocol):
    def __call__(self, ctx: Context, request: Request, /) -> Awaitable[Result | None]: ...


class SyncReconcileFunc(Protocol):
    """A plain function; it runs in a worker thread, off the event loop."""

    def __call__(self, ctx: Context, request: Request, /) -> Result | None: ...


class ReconcilerObject(Protocol):
    def reconcile(self, ctx: Context, request: Request, /) -> Any: ...


Reconciler = AsyncReconcileFunc | SyncReconcileFunc | ReconcilerObject


class Action(enum.Enum):
    FORGET = "forget"  # success: the back-off for this request starts over
    RATE_LIMITED = "rate_limited"  # retry after the per-item back-off
    AFTER = "after"  # back-off forgotten, run again after the delay
    NONE = "none"  # terminal error: no retry, back-off kept


@dataclass(frozen=True, slots=True)
class Settlement:
    outcome: str  # the record's outcome
    metric_label: str  # controller_runtime_reconcile_total's "result" label
    action: Action
    delay: float = 0.0


def settle(result: Result | None, error: BaseException | None) -> Settlement:
    """controller-runtime's reconcileHandler, as data: an error wins over any Result."""
    if isinstance(error, TerminalError):
        return Settlement("terminal_error", "error", Action.NONE)
    if error is not None:
        return Settlement("error", "error", Action.RATE_LIMITED)
    if result is not None and result.requeue_after > 0:
        return Settlement("requeue_after", "requeue_after", Action.AFTER, result.requeue_after)
    if result is not None and result.requeue:
        return Settlement("requeue", "requeue", Action.RATE_LIMITED)
    return Settlement("success", "success", Action.FORGET)
