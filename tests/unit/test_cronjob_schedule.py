"""The CronJob example's cron schedule: parsing and the next time it fires."""

from __future__ import annotations

import datetime

import pytest

from examples.cronjob import Schedule, ScheduleError


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("schedule", "after", "fires"),
    [
        ("* * * * *", "2026-03-01T10:00:30", "2026-03-01T10:01:00"),
        ("*/15 * * * *", "2026-03-01T10:15:00", "2026-03-01T10:30:00"),
        ("5,35 9-17/4 * * *", "2026-03-01T13:40:00", "2026-03-01T17:05:00"),
        ("0 0 1 1 *", "2026-06-01T00:00:00", "2027-01-01T00:00:00"),
        ("@hourly", "2026-12-31T23:30:00", "2027-01-01T00:00:00"),
        ("0 12 * * 7", "2026-03-02T00:00:00", "2026-03-08T12:00:00"),  # 7 is Sunday
        # Day of month and day of week both restricted: either one matches, as in cron.
        ("0 0 13 * 5", "2026-03-01T00:00:00", "2026-03-06T00:00:00"),
        ("0 0 31 2 *", "2026-01-01T00:00:00", None),
    ],
)
def test_the_next_time_a_schedule_fires(schedule: str, after: str, fires: str | None) -> None:
    parsed = Schedule.parse(schedule)
    if fires is None:
        with pytest.raises(ScheduleError, match="never fires"):
            parsed.next_after(at(after))
    else:
        assert parsed.next_after(at(after)) == at(fires)


def test_times_lists_every_run_in_a_window() -> None:
    runs = list(
        Schedule.parse("*/20 * * * *").times(at("2026-03-01T10:00:00"), at("2026-03-01T11:00:00"))
    )
    assert runs == [at(t) for t in ("2026-03-01T10:20", "2026-03-01T10:40", "2026-03-01T11:00")]


@pytest.mark.parametrize(
    ("schedule", "error"),
    [
        ("* * * *", "needs 5 fields"),
        ("61 * * * *", "minute '61' is outside 0-59"),
        ("* * * * mon", "day of week 'mon' is not a number"),
        ("*/0 * * * *", "outside"),
    ],
)
def test_a_bad_schedule_says_what_is_wrong(schedule: str, error: str) -> None:
    with pytest.raises(ScheduleError, match=error):
        Schedule.parse(schedule)
