"""The record vocabulary: the closed outcome lists agree with what the stages' own types say,
and every derived set is drawn from its stage's outcomes."""

from __future__ import annotations

import pytest

from ctrltrace.queue import AddOutcome
from ctrltrace.reconcile import Action, Result, TerminalError, settle
from ctrltrace.records import Stage
from ctrltrace.vocabulary import (
    ENQUEUED,
    INSERTED,
    LEASE_TRANSITIONS,
    METRIC_RESULTS,
    OUTCOMES,
    RECONCILE_FAILED,
    SETTLED,
    WATCH_FAILURES,
    journal_gap_record,
)


def test_every_stage_has_its_closed_list() -> None:
    assert set(OUTCOMES) == set(Stage)
    assert all(OUTCOMES[stage] for stage in Stage)


def test_the_queue_answers_in_dispatch_outcomes() -> None:
    assert {str(outcome) for outcome in AddOutcome} == OUTCOMES[Stage.DISPATCH] - {
        "dropped_by_predicate",
        "not_mapped",
    }


@pytest.mark.parametrize(
    ("result", "error"),
    [
        (None, None),
        (Result(requeue=True), None),
        (Result(requeue_after=3), None),
        (None, RuntimeError("boom")),
        (None, TerminalError("gone for good")),
    ],
)
def test_settle_records_listed_outcomes(result: Result | None, error: Exception | None) -> None:
    settlement = settle(result, error)
    assert settlement.outcome in OUTCOMES[Stage.RECONCILE]
    assert settlement.metric_label in METRIC_RESULTS
    if settlement.action in (Action.AFTER, Action.RATE_LIMITED):
        assert settlement.action.value in OUTCOMES[Stage.REQUEUE]


@pytest.mark.parametrize(
    ("derived", "stage"),
    [
        (ENQUEUED, Stage.DISPATCH),
        (INSERTED, Stage.DISPATCH),
        (RECONCILE_FAILED, Stage.RECONCILE),
        (SETTLED, Stage.RECONCILE),
        (WATCH_FAILURES, Stage.WATCH),
        (LEASE_TRANSITIONS, Stage.LEASE),
    ],
)
def test_derived_sets_draw_on_their_stage(derived: object, stage: Stage) -> None:
    assert isinstance(derived, tuple | frozenset)
    assert set(derived) <= OUTCOMES[stage]
    assert set(ENQUEUED) >= INSERTED


def test_a_journal_gap_says_how_many_and_when() -> None:
    gap = journal_gap_record(3, 10.0, 12.5, "buffer full")
    assert (gap.stage, gap.outcome, gap.time) == (Stage.MANAGER, "journal_gap", 12.5)
    assert dict(gap.attrs) == {"count": 3, "first_time": 10.0, "last_time": 12.5}
    assert gap.reason == "3 records lost on their way to the journal: buffer full"
