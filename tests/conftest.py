"""Shared fixtures: every test must leave no threads or child processes behind."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ctrltrace.envtest.pytest_plugin import CONTROL_PLANE_PIDS
from ctrltrace.records import Record, Recorder
from ctrltrace.vocabulary import OUTCOMES


def child_pids() -> set[int]:
    """Live (non-zombie) children of this process."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            text = (task / "children").read_text().split()
        except FileNotFoundError:  # the thread ended while we looked
            continue
        pids.update(int(pid) for pid in text)
    return {pid for pid in pids if not _zombie(pid)}


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(") ", 1)[1].startswith("Z")


@pytest.fixture(autouse=True)
def no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    threads_before = set(threading.enumerate())
    children_before = child_pids()
    yield
    allowed = request.session.stash.get(CONTROL_PLANE_PIDS, frozenset())
    # Stopping is asynchronous for a moment (a thread joining, a process being reaped).
    deadline = time.monotonic() + 5
    while True:
        threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        children = child_pids() - children_before - allowed
        if not (threads or children) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not threads, f"test left threads running: {threads}"
    assert not children, f"test left child processes running: {sorted(children)}"


@pytest.fixture(autouse=True)
def outcomes_in_the_vocabulary(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every record any test makes a producer emit must carry an outcome the vocabulary
    (``vocabulary.OUTCOMES``) lists for its stage: consumers rely on that closed list."""
    unknown: list[str] = []
    emit = Recorder.emit

    def checked(self: Recorder, record: Record) -> None:
        if record.outcome not in OUTCOMES[record.stage]:
            unknown.append(f"{record.stage}: {record.outcome!r} ({record.reason})")
        emit(self, record)

    monkeypatch.setattr(Recorder, "emit", checked)
    yield
    assert not unknown, f"outcomes not in vocabulary.OUTCOMES: {unknown}"


@pytest.fixture
def traced() -> Iterator[Callable[[object], bool]]:
    """Whether the garbage collector traces an object; gives back what the test froze."""
    yield lambda obj: any(o is obj for o in gc.get_objects())
    gc.unfreeze()
