"""What a reconciler is given and may return, and what each outcome does to the queue.

Owns ``Result``, ``TerminalError``, the ``Reconciler`` protocols, ``as_result`` (what a
reconciler may return) and ``settle``: the one function that maps a reconcile outcome to a
queue action and to the metric label controller-runtime uses. No I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from ctrltrace.request import Request
from ctrltrace.vocabulary import MetricResult, RequeueOutcome
from ctrltrace.vocabulary import ReconcileOutcome as Outcome

if TYPE_CHECKING:
    from ctrltrace.context import Context


@dataclass(frozen=True, slots=True, init=False)
class Result:
    """``requeue_after`` > 0 (seconds, or a ``timedelta``) runs the request again after that
    long (back-off forgotten); ``requeue`` runs it again after the per-item back-off."""

    requeue_after: float
    requeue: bool

    def __init__(self, requeue_after: float | timedelta = 0.0, requeue: bool = False) -> None:
        if isinstance(requeue_after, timedelta):
            requeue_after = requeue_after.total_seconds()
        elif isinstance(requeue_after, bool) or not isinstance(requeue_after, int | float):
            raise TypeError(f"requeue_after must be seconds or a timedelta, not {requeue_after!r}")
        object.__setattr__(self, "requeue_after", float(requeue_after))
        object.__setattr__(self, "requeue", bool(requeue))


class InvalidResult(TypeError):
    """Reconcile returned something that is neither a Result nor None: a reconcile error."""


def as_result(returned: object) -> Result | None:
    """What Reconcile returned, checked: a Result or None, else InvalidResult saying what."""
    if returned is None or isinstance(returned, Result):
        return returned
    raise InvalidResult(
        f"Reconcile returned {returned!r} ({type(returned).__name__}), not a Result or None"
    )


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
    # The requeue record's outcome, for the two actions that requeue.
    RATE_LIMITED = RequeueOutcome.RATE_LIMITED  # retry after the per-item back-off
    AFTER = RequeueOutcome.AFTER  # back-off forgotten, run again after the delay
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
        return Settlement(Outcome.TERMINAL_ERROR, MetricResult.ERROR, Action.NONE)
    if error is not None:
        return Settlement(Outcome.ERROR, MetricResult.ERROR, Action.RATE_LIMITED)
    if result is not None and result.requeue_after > 0:
        return Settlement(
            Outcome.REQUEUE_AFTER, MetricResult.REQUEUE_AFTER, Action.AFTER, result.requeue_after
        )
    if result is not None and result.requeue:
        return Settlement(Outcome.REQUEUE, MetricResult.REQUEUE, Action.RATE_LIMITED)
    return Settlement(Outcome.SUCCESS, MetricResult.SUCCESS, Action.FORGET)
