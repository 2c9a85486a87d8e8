"""The journal failing under ``ctrltrace run`` against the real API server: the disk full (a
file size limit set on the running process), the journal made read-only (the immutable
attribute, which root cannot write past either), the journal file removed, the process killed
mid-batch. The controller goes on reconciling; losses are counted, logged and journaled as a
gap; ``explain`` reads what is there."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest
from click.testing import CliRunner

from ctrltrace.cli import main
from ctrltrace.envtest import ControlPlane
from ctrltrace.journal import Journal
from ctrltrace.records import Stage
from ctrltrace.vocabulary import Attr, ManagerOutcome

from . import test_runtime_logs
from .test_runtime_logs import LoggedRun, RunFactory

pytestmark = pytest.mark.integration
logged_run = test_runtime_logs.logged_run

APP = """
import ctrltrace as ct

mgr = ct.Manager()

async def reconcile(ctx, request):
    ctx.log.info("Reconciled", seen=request.name)

mgr.controller().for_("v1", "ConfigMap").with_options(max_concurrent_reconciles=4).complete(
    reconcile
)
"""


class Cluster:
    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        self.plane = plane
        self.namespace = namespace

    def create(self, *names: str) -> None:
        for name in names:
            self.plane.request(
                "POST",
                f"/api/v1/namespaces/{self.namespace}/configmaps",
                {"metadata": {"name": name}},
            )


def start(logged_run: RunFactory, plane: ControlPlane, namespace: str, journal: Path) -> LoggedRun:
    run = logged_run(
        APP,
        "--kubeconfig", str(plane.kubeconfig), "--namespace", namespace,
        "--journal", str(journal),
    )  # fmt: skip
    run.wait_for("Starting workers")
    return run


def begin(
    logged_run: RunFactory, cluster: Cluster, journal: Path, first: str
) -> tuple[Cluster, LoggedRun]:
    """Start a run, and wait until the reconcile of a first object is in its journal."""
    run = start(logged_run, cluster.plane, cluster.namespace, journal)
    cluster.create(first)
    journaled(journal, cluster.namespace, first)
    return cluster, run


def reconciled(run: LoggedRun, *names: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not set(names) <= {line.get("seen") for line in run.events("Reconciled")}:
        assert run.process.poll() is None, "the run stopped:\n" + "\n".join(run.raw)
        assert time.monotonic() < deadline, f"{names} not all reconciled:\n" + "\n".join(run.raw)
        time.sleep(0.05)


def explain(journal: Path, namespace: str, name: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        main, ["explain", f"{namespace}/{name}", "--journal", str(journal), "--json"]
    )
    answer: dict[str, Any] = json.loads(result.output)
    return answer


def journaled(journal: Path, namespace: str, name: str) -> None:
    """Wait until the journal file tells that ``name`` was reconciled."""
    deadline = time.monotonic() + 10
    while explain(journal, namespace, name)["verdict"]["code"] != "reconciled":
        assert time.monotonic() < deadline, f"{name}'s reconcile never reached the journal"
        time.sleep(0.05)


def gaps(journal: Path) -> list[Any]:
    with Journal(journal) as written:
        return [
            record
            for record in written.window(0, time.time() + 60)
            if record.stage == Stage.MANAGER and record.outcome == ManagerOutcome.JOURNAL_GAP
        ]


class Fault(Protocol):
    """Makes the running process's journal writes fail; returns what undoes it."""

    def __call__(self, run: LoggedRun, journal: Path, /) -> Callable[[], None]: ...


def disk_full(run: LoggedRun, journal: Path) -> Callable[[], None]:
    """No file of the process may grow past its first byte (EFBIG, as a full disk's ENOSPC)."""
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.prlimit(run.process.pid, resource.RLIMIT_FSIZE, (1, hard))

    def undo() -> None:
        resource.prlimit(run.process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))

    return undo


def read_only(run: LoggedRun, journal: Path) -> Callable[[], None]:
    """The journal and its write-ahead log made immutable: root ignores file modes, not this,
    and writes through the files the process holds open fail with EPERM. (A read-only
    remount cannot be used: the kernel refuses it while a file is open for writing.)"""
    files = [str(journal), f"{journal}-wal"]
    chattr("+i", files)
    try:
        with pytest.raises(PermissionError):  # even for root: the files are truly read-only
            journal.open("r+b").close()
    except BaseException:
        chattr("-i", files)
        raise
    return lambda: chattr("-i", files)


def chattr(flag: str, files: list[str]) -> None:
    try:
        done = subprocess.run(["chattr", flag, *files], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        pytest.fail("chattr (e2fsprogs) is needed to make the journal read-only")
    if done.returncode != 0:
        pytest.fail(
            f"cannot make the journal read-only with chattr {flag}: {done.stderr.strip()} "
            "(needs root and a filesystem with the immutable attribute, such as ext4)"
        )


@pytest.mark.parametrize("fault", [disk_full, read_only], ids=["disk full", "read-only"])
def test_a_failing_journal_loses_records_not_reconciles_and_the_gap_is_journaled(
    control_plane: ControlPlane,
    kube_namespace: str,
    logged_run: RunFactory,
    tmp_path: Path,
    fault: Fault,
) -> None:
    journal = tmp_path / "journal.sqlite"
    cluster, run = begin(logged_run, Cluster(control_plane, kube_namespace), journal, "before")

    undo = fault(run, journal)
    try:
        during = [f"during-{i}" for i in range(10)]
        cluster.create(*during)
        reconciled(run, *during)  # the controller goes on
        (dropped,) = run.wait_for("Journal records dropped", within=30)
    finally:
        undo()
    assert dropped["lost"] >= 1 and dropped["error"] and dropped["level"] == "warning"

    cluster.create("after")
    reconciled(run, "after")
    assert run.finish(signal.SIGTERM) == 0
    (flushed,) = run.events("Journal flushed with losses")

    (gap,) = gaps(journal)  # every loss told by one record, once the disk took writes again
    assert gap.attrs[Attr.COUNT] == flushed["dropped"] >= dropped["lost"]
    assert "write failed" in gap.reason
    before = explain(journal, kube_namespace, "before")["verdict"]
    assert before["code"] == "reconciled"
    assert [warning["code"] for warning in before["warnings"]] == ["journal_gap"]
    assert explain(journal, kube_namespace, "after")["verdict"]["code"] == "reconciled"


def test_a_removed_journal_file_is_started_again_and_the_loss_journaled(
    control_plane: ControlPlane, kube_namespace: str, logged_run: RunFactory, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite"
    cluster, run = begin(logged_run, Cluster(control_plane, kube_namespace), journal, "before")

    journal.unlink()
    cluster.create("lost")
    reconciled(run, "lost")
    deadline = time.monotonic() + 10
    while not journal.exists():
        assert time.monotonic() < deadline, "no new journal file"
        time.sleep(0.05)
    cluster.create("after")
    reconciled(run, "after")
    (dropped,) = run.wait_for("Journal records dropped", within=30)
    assert "removed" in dropped["error"]
    assert run.finish(signal.SIGTERM) == 0

    (gap,) = gaps(journal)
    assert "the journal file was removed or replaced" in gap.reason
    assert explain(journal, kube_namespace, "after")["verdict"]["code"] == "reconciled"


def test_a_run_killed_mid_batch_leaves_a_journal_explain_reads(
    control_plane: ControlPlane, kube_namespace: str, logged_run: RunFactory, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite"
    cluster, run = begin(logged_run, Cluster(control_plane, kube_namespace), journal, "first")
    for i in range(100):  # and a stream of events in flight when the process dies
        cluster.create(f"busy-{i}")
    assert run.finish(signal.SIGKILL) == -signal.SIGKILL

    with Journal(journal) as written:
        assert written.count() > 0
    assert explain(journal, kube_namespace, "first")["verdict"]["code"] == "reconciled"
    # The next run appends to the same file.
    again = start(logged_run, control_plane, kube_namespace, journal)
    cluster.create("next")
    reconciled(again, "next")
    assert again.finish(signal.SIGTERM) == 0
    assert explain(journal, kube_namespace, "next")["verdict"]["code"] == "reconciled"
