from __future__ import annotations

import pickle
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, cast

import pytest

from ctrltrace.journal import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    Journal,
    JournalCorrupt,
    JournalForeign,
    JournalLocked,
    JournalMissing,
    JournalWriter,
)
from ctrltrace.records import AttrValue, ObjectRef, Record, Stage

T0 = 1_700_000_000.0


def ref(name: str, namespace: str = "default", kind: str = "ConfigMap", rv: str = "1") -> ObjectRef:
    api_version = "v1" if kind == "ConfigMap" else "example.com/v1"
    return ObjectRef(api_version, kind, namespace, name, f"uid-{name}", rv, 1)


def event(name: str, at: float, **attrs: str | int | float | bool) -> Record:
    return Record(
        time=at,
        stage=Stage.EVENT,
        outcome="MODIFIED",
        object=ref(name),
        attrs={"writer": "kubectl", "self_caused": False, **attrs},
    )


def write_all(path: Path, records: list[Record], **options: Any) -> JournalWriter:
    with JournalWriter(path, **options) as writer:
        for record in records:
            writer(record)
    return writer


def every_kind_of_record() -> list[Record]:
    """One record of each shape the runtime emits, with every attribute type."""
    start = Record(
        time=T0 + 2,
        stage=Stage.RECONCILE_START,
        outcome="started",
        reason="waited 1.0 ms in the queue",
        controller="configmap",
        request="default/web",
        reconcile_id="3f1c",
        cause_ids=(11, 12),
        attrs={"queue_wait_s": 0.001, "retries": 0},
    )
    return [
        Record(
            time=T0,
            stage=Stage.WATCH,
            outcome="forbidden",
            reason='configmaps is forbidden: User "bob" cannot list',
            attrs={"kind": "ConfigMap", "api_version": "v1", "status": 403},
        ),
        event("web", T0 + 1, self_caused=True),
        Record(
            time=T0 + 1,
            stage=Stage.DISPATCH,
            outcome="queued",
            reason="the object itself",
            controller="configmap",
            object=ObjectRef("v1", "Namespace", "", "cluster-scoped", "", "", 0),
            request="cluster-scoped",
            cause_ids=(7,),
            attrs={"handler": "for the object itself", "event_type": "update"},
        ),
        start,
        Record(
            time=T0 + 3,
            stage=Stage.RECONCILE,
            outcome="error",
            reason='RuntimeError: "quoted" ünïcode',
            controller="configmap",
            request="default/web",
            reconcile_id="3f1c",
            cause_ids=(start.id,),
            attrs={"duration_s": 0.25, "metric_result": "error", "error_type": "RuntimeError"},
        ),
        Record(time=T0 + 4, stage=Stage.LEASE, outcome="standby", attrs={"holder": "pod-b"}),
        Record(time=T0 + 5, stage=Stage.MANAGER, outcome="stopped"),
    ]


def test_records_read_back_equal_to_what_was_written(tmp_path: Path) -> None:
    records = every_kind_of_record()
    write_all(tmp_path / "journal.db", records)
    with Journal(tmp_path / "journal.db") as journal:
        assert journal.count() == len(records)
        assert journal.window(T0, T0 + 5) == records
        tail = journal.tail(0, 100)
    assert [record for _, record in tail] == records
    assert [seq for seq, _ in tail] == sorted(seq for seq, _ in tail)
    assert type(tail[4][1].attrs["duration_s"]) is float
    assert type(tail[0][1].attrs["status"]) is int


def test_the_file_is_private_wal_and_stamped_as_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "dir" / "journal.db"
    with JournalWriter(path) as writer:
        writer(event("web", T0))
        assert writer.flush()
        for name in ("journal.db", "journal.db-wal", "journal.db-shm"):
            assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name
        raw = sqlite3.connect(path)
        try:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
            assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        finally:
            raw.close()


def test_a_writer_reopens_its_own_journal_and_appends(tmp_path: Path) -> None:
    first = write_all(tmp_path / "j.db", [event("a", T0)])
    second = write_all(tmp_path / "j.db", [event("b", T0 + 1)])
    with Journal(tmp_path / "j.db") as journal:
        assert [r.object.name for r in journal.window(T0, T0 + 1) if r.object] == ["a", "b"]
    assert first.run != second.run


def test_reading_while_the_writer_is_open(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with JournalWriter(path, flush_interval_s=0.01) as writer:
        writer(event("web", T0))
        assert writer.flush()
        with Journal(path) as journal:
            seq, _ = journal.tail(0, 10)[0]
            writer(event("web", T0 + 1))
            assert writer.flush()
            assert [record.time for _, record in journal.tail(seq, 10)] == [T0 + 1]
            assert journal.count() == 2


def test_close_writes_everything_still_pending(tmp_path: Path) -> None:
    records = [event(f"cm-{i % 40}", T0 + i * 0.001) for i in range(5_000)]
    # A long flush interval: only close() can have written them.
    writer = write_all(tmp_path / "j.db", records, flush_interval_s=60.0, batch_size=10_000)
    assert writer.dropped == 0
    with Journal(tmp_path / "j.db") as journal:
        assert journal.count() == 5_000


def test_an_overflowing_buffer_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    records = [event("web", T0 + i) for i in range(1_000)]
    writer = write_all(
        tmp_path / "j.db", records, max_pending=10, flush_interval_s=60.0, batch_size=10_000
    )
    with Journal(tmp_path / "j.db") as journal:
        kept = [r for r in journal.window(T0, T0 + 1_000) if r.stage is Stage.EVENT]
        (gap,) = [r for r in journal.controller_records() if r.outcome == "journal_gap"]
    assert writer.dropped > 0
    assert writer.dropped + len(kept) == 1_000
    assert kept[-1] == records[-1]
    # The loss is journaled: how many, and the time span they covered (the oldest first).
    assert gap.stage is Stage.MANAGER
    assert gap.attrs["count"] == writer.dropped
    assert gap.attrs["first_time"] == T0
    assert gap.attrs["last_time"] == T0 + writer.dropped - 1
    assert "buffer full" in gap.reason


def test_records_appended_after_close_are_counted_as_dropped(tmp_path: Path) -> None:
    writer = write_all(tmp_path / "j.db", [])
    writer(event("web", T0))
    assert writer.dropped == 1


def test_retention_deletes_batches_older_than_max_age_before_the_newest(tmp_path: Path) -> None:
    with JournalWriter(tmp_path / "j.db", max_age_s=350.0) as writer:
        for i in range(1_000):
            writer(event("web", T0 + i))
            if i % 100 == 99:  # ten batches of a hundred records, each spanning 99 s
                assert writer.flush()
    with Journal(tmp_path / "j.db") as journal:
        times = [record.time for record in journal.window(0, T0 + 10_000)]
    # Measured against the newest record, not the wall clock: these are from 2023. A batch
    # goes when its newest record is too old: 600-699 still has records younger than 350 s.
    assert times == [T0 + i for i in range(600, 1_000)]


def test_retention_keeps_the_file_near_max_bytes_and_the_newest_rows(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    limit = 2**20
    total = 0
    sizes = []
    # Batches of a thousand records, a fraction of the limit: retention deletes whole batches.
    with JournalWriter(path, max_bytes=limit, retention_interval_s=0.0, batch_size=1_000) as writer:
        for _ in range(12):
            for _ in range(3_000):
                writer(event(f"cm-{total % 97}", T0 + total * 0.001))
                total += 1
            assert writer.flush()
            sizes.append(path.stat().st_size)
    with Journal(path) as journal:
        count = journal.count()
        newest = journal.tail(0, 1)[0][1]
        window = journal.window(T0, T0 + total)
    raw = sqlite3.connect(path)
    try:
        pages, free, page_size = (
            raw.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "freelist_count", "page_size")
        )
    finally:
        raw.close()
    assert (pages - free) * page_size <= limit
    assert max(sizes) < 3 * limit  # freed pages are reused: the file stops growing
    assert 0 < count < total
    assert window[-1].time == T0 + (total - 1) * 0.001  # the newest survive
    assert newest.time > T0  # the oldest were deleted


def test_the_file_stays_under_max_bytes_between_timed_passes(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    limit = 2**20
    sizes = []
    # No timed pass after the first: what is written must set off the passes that hold it.
    with JournalWriter(
        path, max_bytes=limit, retention_interval_s=3600.0, batch_size=1_000
    ) as writer:
        for round_ in range(15):
            for i in range(3_000):
                writer(event(f"cm-{i % 97}", T0 + round_ * 3 + i * 0.001))
            assert writer.flush()
            sizes.append(path.stat().st_size)
    assert max(sizes) <= limit, sizes
    assert path.stat().st_size <= limit
    with Journal(path) as journal:
        assert 0 < journal.count() < 45_000


def test_a_journal_over_its_size_keeps_its_newest_batch(tmp_path: Path) -> None:
    records = [event(f"cm-{i}", T0 + i * 0.001, writer="w" * 50) for i in range(5_000)]
    # Written at close, in one batch, however long the caller takes (the pure-Python pickler
    # on a busy machine can outlast a flush interval, and two batches would be trimmed).
    write_all(
        tmp_path / "j.db",
        records,
        max_bytes=64 * 2**10,
        retention_interval_s=0.0,
        flush_interval_s=3600.0,
    )
    with Journal(tmp_path / "j.db") as journal:
        assert journal.count() == 5_000  # one batch, alone bigger than max_bytes


def test_about_returns_the_object_its_chain_and_children_mapped_to_it(tmp_path: Path) -> None:
    parent = ObjectRef("example.com/v1", "Widget", "default", "parent", "uid-p", "5", 2)
    child = ref("child")
    child_event = Record(time=T0, stage=Stage.EVENT, outcome="ADDED", object=child)
    child_dispatch = Record(
        time=T0,
        stage=Stage.DISPATCH,
        outcome="queued",
        controller="widget",
        object=child,
        request="default/parent",
        cause_ids=(child_event.id,),
    )
    own_event = Record(time=T0 + 1, stage=Stage.EVENT, outcome="MODIFIED", object=parent)
    own_dispatch = Record(
        time=T0 + 1,
        stage=Stage.DISPATCH,
        outcome="deduplicated",
        controller="widget",
        object=parent,
        request="default/parent",
        cause_ids=(own_event.id,),
    )
    start = Record(
        time=T0 + 2,
        stage=Stage.RECONCILE_START,
        outcome="started",
        controller="widget",
        request="default/parent",
        reconcile_id="r1",
        cause_ids=(child_dispatch.id, own_dispatch.id),
    )
    end = Record(
        time=T0 + 3,
        stage=Stage.RECONCILE,
        outcome="success",
        controller="widget",
        request="default/parent",
        reconcile_id="r1",
        cause_ids=(start.id,),
    )
    unrelated = [
        event("other", T0 + 1),
        Record(time=T0 + 1, stage=Stage.EVENT, outcome="ADDED", object=ref("parent", "elsewhere")),
        Record(
            time=T0 + 2,
            stage=Stage.RECONCILE_START,
            outcome="started",
            controller="widget",
            request="default/other",
            reconcile_id="r2",
        ),
    ]
    chain = [child_event, child_dispatch, own_event, own_dispatch, start, end]
    write_all(tmp_path / "j.db", chain + unrelated)
    with Journal(tmp_path / "j.db") as journal:
        assert journal.about("default", "parent") == chain
        # The child's view: its event, its dispatch, and the owner's reconcile it led to.
        assert journal.about("default", "child") == [child_event, child_dispatch, start, end]
        assert journal.about("default", "parent", kind="ConfigMap") == [
            child_event,
            child_dispatch,
            start,
            end,
        ]
        assert journal.about("default", "parent", since=T0 + 1.5) == [start, end]


def test_chains_are_followed_within_one_run_only(tmp_path: Path) -> None:
    child = ref("child")
    child_event = Record(time=T0, stage=Stage.EVENT, outcome="ADDED", object=child, id=1)
    dispatch = Record(
        time=T0,
        stage=Stage.DISPATCH,
        outcome="queued",
        controller="widget",
        object=child,
        request="default/parent",
        cause_ids=(1,),
        id=2,
    )
    write_all(tmp_path / "j.db", [child_event, dispatch])
    # A later run reconciles the parent for its own dispatch 2, not the first run's.
    later = [
        Record(
            time=T0 + 50,
            stage=Stage.RECONCILE_START,
            outcome="started",
            controller="widget",
            request="default/parent",
            reconcile_id="r9",
            cause_ids=(2,),
            id=3,
        )
    ]
    write_all(tmp_path / "j.db", later)
    with Journal(tmp_path / "j.db") as journal:
        assert journal.about("default", "child") == [child_event, dispatch]


def test_health_queries_select_by_stage_kind_and_time(tmp_path: Path) -> None:
    def watch(kind: str, outcome: str, at: float) -> Record:
        return Record(time=at, stage=Stage.WATCH, outcome=outcome, attrs={"kind": kind})

    records = [
        watch("ConfigMap", "listed", T0),
        watch("Widget", "kind_not_found", T0 + 1),
        Record(time=T0 + 2, stage=Stage.LEASE, outcome="acquired"),
        Record(time=T0 + 3, stage=Stage.CONTROLLER, outcome="started", controller="c"),
        Record(time=T0 + 4, stage=Stage.MANAGER, outcome="stopped"),
        watch("ConfigMap", "synced", T0 + 5),
        event("web", T0 + 6),
    ]
    write_all(tmp_path / "j.db", records)
    with Journal(tmp_path / "j.db") as journal:
        assert journal.watch_records() == [records[0], records[1], records[5]]
        assert journal.watch_records(kind="ConfigMap", since=T0 + 1) == [records[5]]
        assert journal.lease_records() == [records[2]]
        assert journal.controller_records() == [records[3], records[4]]
        assert journal.controller_records(since=T0 + 4) == [records[4]]


def test_a_missing_journal_says_so(tmp_path: Path) -> None:
    with pytest.raises(JournalMissing, match="no journal at"):
        Journal(tmp_path / "nothing.db")
    with pytest.raises(JournalMissing):
        Journal(tmp_path)


def test_a_file_that_is_not_a_database_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    path.write_bytes(b"certainly not SQLite" * 300)
    with pytest.raises(JournalCorrupt, match="not a database"):
        Journal(path)
    with pytest.raises(JournalCorrupt):
        JournalWriter(path)


def test_a_damaged_journal_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    write_all(path, [event(f"cm-{i}", T0 + i) for i in range(3_000)])
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65_536  # SQLite writes 65,536 as 1
    data[page : 4 * page] = b"\xff" * (3 * page)  # smash the pages after the first
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="is damaged"), Journal(path) as journal:
        journal.window(0, T0 * 2)


def test_another_sqlite_file_is_foreign(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE users (name TEXT)")
    raw.commit()
    raw.close()
    with pytest.raises(JournalForeign, match=r"app\.db is not a ctrltrace journal$"):
        Journal(path)
    with pytest.raises(JournalForeign):
        JournalWriter(path)


@pytest.mark.parametrize("version", [SCHEMA_VERSION - 1, SCHEMA_VERSION + 1])
def test_a_journal_of_another_schema_version_is_foreign(tmp_path: Path, version: int) -> None:
    path = tmp_path / "j.db"
    write_all(path, [event("web", T0)])
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {version}")
    raw.commit()
    raw.close()
    message = (
        f"was written by schema version {version}; this ctrltrace reads version {SCHEMA_VERSION}"
    )
    with pytest.raises(JournalForeign, match=message):
        Journal(path)
    with pytest.raises(JournalForeign, match=message):
        JournalWriter(path)


def test_a_journal_locked_beyond_the_timeout_says_so(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    write_all(path, [event("web", T0)])
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(JournalLocked, match=r"locked by another process.*0\.05s"):
            Journal(path, timeout_s=0.05)
        holder.execute("COMMIT")
    finally:
        holder.close()


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from ctrltrace.journal import JournalWriter
    from ctrltrace.records import AttrValue, ObjectRef, Record, Stage

    writer = JournalWriter(sys.argv[1], flush_interval_s=0.01)
    count = 0
    while True:
        for _ in range(500):
            obj = ObjectRef("v1", "ConfigMap", "default", f"cm-{count % 50}", "", str(count), 1)
            writer(Record(time=time.time(), stage=Stage.EVENT, outcome="MODIFIED", object=obj))
            count += 1
        writer.flush()
        print(count, flush=True)
    """
)


def test_a_sigkilled_writer_leaves_a_readable_journal_with_every_flushed_record(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    with subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            flushed = 0
            while flushed < 10_000:
                line = child.stdout.readline()
                assert line, "the writer process ended early"
                flushed = int(line)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    assert child.returncode == -signal.SIGKILL
    with Journal(path) as journal:
        assert journal.count() >= flushed
        assert journal.tail(0, 1)[0][1].object == ObjectRef(
            "v1", "ConfigMap", "default", "cm-0", "", "0", 1
        )
    raw = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        raw.close()
    write_all(path, [event("after", time.time())])  # and a new run carries on
    with Journal(path) as journal:
        assert journal.about("default", "after")


def test_a_record_takes_about_a_hundred_bytes(tmp_path: Path) -> None:
    records = [event(f"cm-{i % 500}", T0 + i * 0.001, writer=f"w{i % 7}") for i in range(20_000)]
    write_all(tmp_path / "j.db", records)
    # Names, versions and attributes only: the 20,000 records fit in 2.5 MB.
    assert (tmp_path / "j.db").stat().st_size / len(records) < 128


def test_a_doctored_batch_is_refused_and_never_run(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    write_all(path, [event("web", T0)])
    marker = tmp_path / "ran"
    payload = pickle.dumps(_Touch(str(marker)))
    raw = sqlite3.connect(path)
    raw.execute("UPDATE batches SET body = ?, chunks = ?", (payload, f"{len(payload)}:1"))
    raw.commit()
    raw.close()
    with Journal(path) as journal, pytest.raises(JournalCorrupt, match="damaged batch"):
        journal.window(0, T0 * 2)
    assert not marker.exists()


class _Touch:
    """Unpickling this would create a file: what a doctored journal might try."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return Path.touch, (Path(self.path),)


def test_tail_pages_through_batches_in_written_order(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with JournalWriter(path) as writer:
        for i in range(30):
            writer(event("web", T0 + i))
            if i % 7 == 6:
                assert writer.flush()
    seen: list[float] = []
    after = 0
    with Journal(path) as journal:
        while page := journal.tail(after, 4):
            assert len(page) <= 4
            seen += [record.time for _, record in page]
            after = page[-1][0]
    assert seen == [T0 + i for i in range(30)]


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for this value")


def test_a_batch_that_cannot_be_written_is_counted_and_journaling_goes_on(tmp_path: Path) -> None:
    with JournalWriter(tmp_path / "j.db") as writer:
        bad = cast(AttrValue, _Unprintable())
        writer(Record(time=T0, stage=Stage.MANAGER, outcome="started", attrs={"value": bad}))
        assert writer.flush()
        writer(event("web", T0 + 1))
    assert writer.dropped == 1
    assert writer.last_error == "RuntimeError: no text for this value"
    with Journal(tmp_path / "j.db") as journal:
        records = journal.window(0, T0 * 2)
    assert [(r.time, r.outcome) for r in records] == [(T0, "journal_gap"), (T0 + 1, "MODIFIED")]
    assert records[0].attrs == {"count": 1, "first_time": T0, "last_time": T0}
    assert "no text for this value" in records[0].reason


def test_a_journal_file_removed_while_written_is_started_again_and_the_loss_journaled(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    with JournalWriter(path) as writer:
        writer(event("before", T0))
        assert writer.flush()
        path.unlink()
        writer(event("into-the-removed-file", T0 + 1))
        assert writer.flush()
        writer(event("after", T0 + 2))
    assert writer.dropped == 1
    with Journal(path) as journal:
        records = journal.window(0, T0 * 2)
    assert [(r.time, r.outcome) for r in records] == [(T0 + 1, "journal_gap"), (T0 + 2, "MODIFIED")]
    assert records[0].attrs == {"count": 1, "first_time": T0 + 1, "last_time": T0 + 1}
    assert "the journal file was removed or replaced; a new one was started" in records[0].reason


def test_reconciles_are_the_latest_starts_and_ends_in_time_order(tmp_path: Path) -> None:
    records = []
    for i in range(300):
        request, rid = f"shop/cm-{i}", f"r{i}"
        records += [
            event(f"cm-{i}", T0 + i),
            Record(
                T0 + i + 0.1, Stage.RECONCILE_START, "started", request=request, reconcile_id=rid
            ),
            Record(T0 + i + 0.2, Stage.RECONCILE, "success", request=request, reconcile_id=rid),
        ]
    write_all(tmp_path / "j.db", records, batch_size=128)  # several batches
    with Journal(tmp_path / "j.db") as journal:
        everything = journal.reconciles()
        latest = journal.reconciles(limit=100)
        recent = journal.reconciles(since=T0 + 250)
        scanned = journal.reconciles(scan=200)
    assert len(everything) == 600
    assert [r.stage for r in everything[:2]] == [Stage.RECONCILE_START, Stage.RECONCILE]
    assert [r.time for r in everything] == sorted(r.time for r in everything)
    assert len(latest) == 100 and latest[-1].reconcile_id == "r299"
    assert {r.reconcile_id for r in recent} == {f"r{i}" for i in range(250, 300)}
    assert 0 < len(scanned) < 600 and scanned[-1].reconcile_id == "r299"
