"""``ctrltrace tui`` and ``ctrltrace run --tui``: how the live view is started.

Owns the command's options, the exit for records that cannot be read (explain's code for the
same failure), and running a manager
on an event loop in a thread of its own beside the view, in one process. Importing this
module is cheap: Textual is imported when a command runs, so ``ctrltrace --help`` stays fast.

It does not parse ``run``'s options, configure logs or attach the journal writer: the CLI
does, and hands a built manager to ``run_with_tui``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

import click

from ctrltrace.cli.errors import CommandError
from ctrltrace.cli.options import Source, evidence_errors, evidence_options

if TYPE_CHECKING:
    from ctrltrace.manager import Manager


@click.command("tui")
@evidence_options("The journal a `ctrltrace run` writes (live) or wrote (replay).")
def tui_command(source: Source) -> None:
    """Watch a controller run live, or replay a finished one, from its journal (or, with
    --from URL, from a running manager's debug endpoint).

    Views: events (and what each controller did with them), controllers, leader election,
    watches; Enter explains the selected object. Press ? for the keys. It reads the records
    only and never talks to Kubernetes. Records it cannot read exit with explain's code: a
    missing or foreign journal 5, an endpoint that refuses 4, one that does not answer 8.
    """
    # Textual loads only when the view starts: other commands do not pay for it.
    from ctrltrace.tui.app import TraceApp  # noqa: PLC0415
    from ctrltrace.tui.feed import EvidenceFeed  # noqa: PLC0415

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        # No screen to say it on, and no key would ever close the view: say it here.
        with evidence_errors():
            source.open().close()
        raise click.UsageError("ctrltrace tui needs a terminal (stdin and stdout)")
    app = TraceApp(EvidenceFeed(source.open, label=source.label), exit_code=exit_code)
    app.run()
    if app.error is not None:  # shown on screen; repeated here, where it outlives the screen
        with evidence_errors():
            raise app.error


def exit_code(error: Exception) -> int:
    """The code ``explain`` exits with when its source fails with ``error``."""
    try:
        with evidence_errors():
            raise error
    except CommandError as failed:
        return failed.exit_code


def run_with_tui(manager: Manager, journal_path: Path | None, *, headless: bool = False) -> None:
    """Run ``manager`` and show its records live in this process, until q or it stops.

    The manager runs on an event loop in a thread of its own; the view runs in this thread and
    reads the records through a ``RecorderFeed`` sink it adds to the manager. ``journal_path``
    is the journal this run writes (the caller attaches the ``JournalWriter``), which the object
    view and the time cursor read; with None they say there is none. Quitting the view (q,
    SIGTERM) stops the manager gracefully; an exception that ended the manager (``BuildError``,
    ``Unreachable``, ``LeaderLost``, …) closes the view and is raised here. ``headless`` runs
    the view without a terminal (tests).
    """
    from ctrltrace.journal import Journal  # noqa: PLC0415
    from ctrltrace.tui.app import TraceApp  # noqa: PLC0415
    from ctrltrace.tui.feed import RecorderFeed  # noqa: PLC0415

    feed = RecorderFeed(None if journal_path is None else functools.partial(Journal, journal_path))
    manager.add_sink(feed)
    app = TraceApp(feed)
    # This owns the process as Manager.run does, and sets the start-up heap (Textual's too)
    # aside from the collector for the same reason.
    gc.freeze()
    with ManagerThread(manager, on_end=feed.end) as runner:
        app.run(headless=headless)
    runner.raise_error()


class ManagerThread:
    """A manager running on an event loop in a thread of its own.

    Entering starts it; leaving asks it to stop (as SIGTERM would) and waits for its graceful
    shutdown. ``on_end`` is called from the thread when the manager has ended, however it
    ended; ``raise_error`` re-raises what ended it, if anything did.
    """

    def __init__(self, manager: Manager, *, on_end: Callable[[], object] = lambda: None) -> None:
        self._manager = manager
        self._on_end = on_end
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ctrltrace manager", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        with self._lock:
            loop = self._loop
            if loop is None or loop.is_closed():
                # Not started yet (it then stops at once) or already ended.
                self._manager.stop()
            else:
                # The loop may close between the check and the call: then it has ended anyway.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._manager.stop)
        self._thread.join()

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        async def main() -> None:
            with self._lock:
                self._loop = asyncio.get_running_loop()
            await self._manager.start()

        try:
            asyncio.run(main())
        except BaseException as error:  # handed to the caller's thread by raise_error()
            self._error = error
        finally:
            with self._lock:
                self._loop = None
            self._on_end()
