"""The TUI's data side: the feeds that bring records in (``feeds``), and the model of what each
view shows (``view``).

Owns the two feeds (``EvidenceFeed``, a thread tailing a source of evidence such as a journal
file, and ``RecorderFeed``, a recorder sink inside a running manager), the replay of evidence up
to a time cursor, the explanation of one object, and ``ViewState``, which folds records into
what the event stream, controllers, leader election, watches and funnel views show (the funnel
through ``ctrltrace.funnel``), every collection capped.
How those rows are worded and marked is ``cells``' business.

It may not import Textual (as in toolong and harlequin, the data side is tested without a
terminal), may not talk to Kubernetes (records are all it reads), and calls into the UI only
through the ``notify`` callable a feed is started with, once per burst, never per record.
``ViewState`` is not thread-safe: one thread (the UI's) applies records and reads rows.
"""

from ctrltrace.tui.feed.feeds import (
    Batch,
    EvidenceFeed,
    Feed,
    Notify,
    RecorderFeed,
    explain_object,
    replay,
)
from ctrltrace.tui.feed.view import (
    IDLE_AFTER_S,
    MAX_EVENT_ROWS,
    MAX_TRANSITIONS,
    MAX_WORK_ROWS,
    ControllerState,
    EventRow,
    LeaseState,
    Outcome,
    Scheduled,
    Target,
    Transition,
    ViewState,
    WatchFailure,
    WatchState,
)

__all__ = [
    "Batch",
    "ControllerState",
    "EventRow",
    "EvidenceFeed",
    "Feed",
    "IDLE_AFTER_S",
    "LeaseState",
    "MAX_EVENT_ROWS",
    "MAX_TRANSITIONS",
    "MAX_WORK_ROWS",
    "Notify",
    "Outcome",
    "RecorderFeed",
    "Scheduled",
    "Target",
    "Transition",
    "ViewState",
    "WatchFailure",
    "WatchState",
    "explain_object",
    "replay",
]
