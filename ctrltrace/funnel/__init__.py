"""The funnel of a controller: how many events reached each stage of its pipeline, where the
others were lost and why, and its rates and latencies second by second.

Owns ``FunnelFold``, which folds records (in the order they were written) into per-controller
counts, and ``Funnel``, the picture of one controller that the TUI draws and
``ctrltrace explain --controller NAME --funnel`` prints. The stages, in order:

1. seen: watch events dispatched to the controller (one per event, however many requests);
2. passed: of those, the ones every predicate let through (the rest: ``dropped_by_predicate``,
   by predicate);
3. mapped: requests the handler made of them (the events that made none: ``not_mapped``, by
   the handler's reason); one event can make several requests, so this may exceed passed;
4. enqueued: requests the queue took (new, merged into one waiting, re-queued behind a
   running one); the queue refuses them only once it is shut down;
5. reconciled: enqueued requests a reconcile ran for. The others still wait (for a worker), or
   are blocked because a watch of the controller failed before it synced (also once the
   process stopped: that is what lost them), or were lost when the process stopped.

Reconcile runs (retries and requeues included) are counted apart, by result, with their
queue wait and duration. Every count is of records: a journal gap makes them low, never high.

Pure: no Textual, no rich, no I/O, no clock (times are the records'). Memory is bounded:
objects kept per drop, pending requests and seconds of history are capped.
"""

from ctrltrace.funnel.fold import FunnelFold
from ctrltrace.funnel.model import (
    LOSS_WORDS,
    MAX_LOST,
    MAX_SECONDS,
    STEP_WORDS,
    Drop,
    Funnel,
    Histogram,
    Latency,
    Loss,
    Lost,
    Second,
    Step,
    Tally,
)
from ctrltrace.funnel.text import enqueued_words, render_funnel, results_words

__all__ = [
    "LOSS_WORDS",
    "MAX_LOST",
    "MAX_SECONDS",
    "STEP_WORDS",
    "Drop",
    "Funnel",
    "FunnelFold",
    "Histogram",
    "Latency",
    "Loss",
    "Lost",
    "Second",
    "Step",
    "Tally",
    "enqueued_words",
    "render_funnel",
    "results_words",
]
