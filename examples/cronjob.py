"""kubebuilder's CronJob tutorial controller, ported to ctrltrace with its public API only.

A ``CronJob`` (``batch.tutorial.kubebuilder.io/v1``, CRD in ``examples/cronjob-crd.json``)
runs its ``spec.jobTemplate`` as a ``batch/v1`` Job at each time of its ``spec.schedule``
(five-field cron). As the tutorial's controller does, each reconcile:

1. lists the Jobs the CronJob controls and sorts them into active, successful and failed;
2. records the active ones and the latest scheduled time in ``status``;
3. deletes the oldest finished Jobs beyond ``successfulJobsHistoryLimit`` (default 3) and
   ``failedJobsHistoryLimit`` (default 1);
4. unless ``spec.suspend``, starts the most recent missed run (not one older than
   ``startingDeadlineSeconds``), obeying ``concurrencyPolicy``: ``Allow`` runs Jobs side by
   side, ``Forbid`` skips a run while one is active, ``Replace`` deletes the active ones first;
5. asks to be reconciled again at the next scheduled time.

Every Job created or deleted, and every run skipped, is an Event on the CronJob. The time
comes from the clock given to ``make_manager`` (tests pass a FakeClock).

    ctrltrace run examples/cronjob.py:mgr
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ctrltrace as ct

GROUP = "batch.tutorial.kubebuilder.io"
API_VERSION = f"{GROUP}/v1"
SCHEDULED_AT = f"{GROUP}/scheduled-at"  # annotation on each Job: the run it was made for
MAX_MISSED = 100  # more missed runs than this means a wrong clock, not a slow controller
_UTC = datetime.UTC


# -- the schedule ----------------------------------------------------------------------------


class ScheduleError(ValueError):
    """``spec.schedule`` is not a five-field cron expression."""


# Field ranges in cron order: minute, hour, day of month, month, day of week (0 and 7: Sunday).
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True)
class Schedule:
    """A five-field cron schedule, in UTC: numbers, ``*``, ranges, lists and steps."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is "*": only the day of week restricts
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> Schedule:
        fields = _MACROS.get(text.strip(), text).split()
        if len(fields) != len(_FIELDS):
            raise ScheduleError(f"schedule {text!r} needs 5 fields, has {len(fields)}")
        minutes, hours, days, months, weekdays = (
            _values(field, *limits) for field, limits in zip(fields, _FIELDS, strict=True)
        )
        return cls(
            minutes,
            hours,
            days,
            months,
            frozenset(day % 7 for day in weekdays),
            fields[2] == "*",
            fields[4] == "*",
        )

    def _day_matches(self, moment: datetime.datetime) -> bool:
        in_month = moment.day in self.days
        in_week = (moment.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:  # cron: both restricted means either matches
            return in_month and in_week
        return in_month or in_week

    def next_after(self, moment: datetime.datetime) -> datetime.datetime:
        """The first scheduled time strictly after ``moment``."""
        candidate = moment.astimezone(_UTC).replace(second=0, microsecond=0)
        candidate += datetime.timedelta(minutes=1)
        limit = candidate + datetime.timedelta(days=366 * 5)
        while candidate < limit:
            if candidate.month not in self.months:
                month = candidate.month % 12 + 1
                year = candidate.year + (candidate.month == 12)
                candidate = candidate.replace(year=year, month=month, day=1, hour=0, minute=0)
            elif not self._day_matches(candidate):
                candidate = candidate.replace(hour=0, minute=0) + datetime.timedelta(days=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) + datetime.timedelta(hours=1)
            elif candidate.minute not in self.minutes:
                candidate += datetime.timedelta(minutes=1)
            else:
                return candidate
        raise ScheduleError("the schedule never fires")

    def times(
        self, after: datetime.datetime, until: datetime.datetime
    ) -> Iterator[datetime.datetime]:
        """Every scheduled time in (after, until]."""
        moment = self.next_after(after)
        while moment <= until:
            yield moment
            moment = self.next_after(moment)


def _values(field: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if span == "*":
                first, last = low, high
            elif "-" in span:
                start, end = span.split("-", 1)
                first, last = int(start), int(end)
            else:
                first = int(span)
                last = high if step_text else first
        except ValueError:
            raise ScheduleError(f"{name} {part!r} is not a number, range or step") from None
        if step < 1 or not low <= first <= last <= high:
            raise ScheduleError(f"{name} {part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


# -- the controller --------------------------------------------------------------------------


def _time(text: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(text) if text else None


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _finished(job: Mapping[str, Any]) -> str:
    """ "Complete" or "Failed" when the Job has finished so, else "" (it is active)."""
    for condition in (job.get("status") or {}).get("conditions") or ():
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return ""


def _scheduled_at(job: Mapping[str, Any]) -> datetime.datetime | None:
    return _time(((job.get("metadata") or {}).get("annotations") or {}).get(SCHEDULED_AT))


def _oldest_first(jobs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    epoch = datetime.datetime.min.replace(tzinfo=_UTC)
    return sorted(jobs, key=lambda job: _scheduled_at(job) or epoch)


class CronJobReconciler:
    """The tutorial's ``CronJobReconciler.Reconcile``; ``clock.wall()`` is "now"."""

    def __init__(self, clock: ct.Clock) -> None:
        self._clock = clock

    async def reconcile(self, ctx: ct.Context, req: ct.Request) -> ct.Result | None:
        try:
            cronjob = await ctx.client.get(API_VERSION, "CronJob", req.name, req.namespace)
        except ct.NotFound:
            return None  # deleted: its Jobs go with it (owner references)
        cronjob = dict(cronjob)
        spec = cronjob.get("spec") or {}
        now = datetime.datetime.fromtimestamp(self._clock.wall(), _UTC)
        jobs = [
            dict(job)
            for job in await ctx.client.list("batch/v1", "Job", req.namespace)
            # A Job being deleted is neither running nor history any more.
            if ct.is_controlled_by(job, cronjob) and not job["metadata"].get("deletionTimestamp")
        ]
        by_state: dict[str, list[dict[str, Any]]] = {"": [], "Complete": [], "Failed": []}
        for job in jobs:
            by_state[_finished(job)].append(job)
        active = by_state[""]
        await self._update_status(ctx, cronjob, active, jobs)
        limits = {"Complete": "successfulJobsHistoryLimit", "Failed": "failedJobsHistoryLimit"}
        defaults = {"Complete": 3, "Failed": 1}
        for state, field in limits.items():
            finished = _oldest_first(by_state[state])
            keep = int(spec.get(field, defaults[state]))
            for old in finished[: max(len(finished) - keep, 0)]:
                await self._delete(ctx, cronjob, old, "history limit")
        if spec.get("suspend"):
            return None
        try:
            schedule = Schedule.parse(str(spec.get("schedule", "")))
            missed, upcoming = self._runs(schedule, cronjob, now)
        except ScheduleError as error:
            ctx.events.warning(cronjob, "InvalidSchedule", str(error))
            raise ct.TerminalError(str(error)) from error
        next_run = ct.Result(requeue_after=max((upcoming - now).total_seconds(), 0.001))
        if missed is None:
            return next_run
        policy = spec.get("concurrencyPolicy", "Allow")
        if policy == "Forbid" and active:
            ctx.events.normal(
                cronjob,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy "
                "is Forbid",
            )
            return next_run
        if policy == "Replace":
            for running in active:
                await self._delete(ctx, cronjob, running, "concurrency policy Replace")
        await self._create(ctx, cronjob, missed)
        return next_run

    def _runs(
        self, schedule: Schedule, cronjob: Mapping[str, Any], now: datetime.datetime
    ) -> tuple[datetime.datetime | None, datetime.datetime]:
        """The latest missed run (None if none or too late) and the next one."""
        meta, spec = cronjob["metadata"], cronjob.get("spec") or {}
        status = cronjob.get("status") or {}
        earliest = _time(status.get("lastScheduleTime")) or _time(meta["creationTimestamp"])
        assert earliest is not None
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None:
            earliest = max(earliest, now - datetime.timedelta(seconds=int(deadline)))
        missed = None
        for count, moment in enumerate(schedule.times(earliest, now), start=1):
            if count > MAX_MISSED:
                raise ScheduleError(
                    f"more than {MAX_MISSED} missed start times: check the clock and the "
                    "schedule, or set startingDeadlineSeconds"
                )
            missed = moment
        return missed, schedule.next_after(now)

    async def _update_status(
        self,
        ctx: ct.Context,
        cronjob: dict[str, Any],
        active: Sequence[Mapping[str, Any]],
        jobs: Sequence[Mapping[str, Any]],
    ) -> None:
        status = dict(cronjob.get("status") or {})
        status["active"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job["metadata"]["name"],
                "namespace": job["metadata"]["namespace"],
                "uid": job["metadata"]["uid"],
            }
            for job in sorted(active, key=lambda job: str(job["metadata"]["name"]))
        ]
        latest = max(filter(None, map(_scheduled_at, jobs)), default=None)
        if latest is not None:
            status["lastScheduleTime"] = _rfc3339(latest)
        if status != (cronjob.get("status") or {}):  # an unchanged status is not written
            cronjob["status"] = status
            cronjob.update(await ctx.client.update_status(cronjob))

    async def _create(
        self, ctx: ct.Context, cronjob: Mapping[str, Any], scheduled: datetime.datetime
    ) -> None:
        template = cronjob["spec"]["jobTemplate"]
        template_meta = template.get("metadata") or {}
        name = f"{cronjob['metadata']['name']}-{int(scheduled.timestamp())}"
        job: dict[str, Any] = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": cronjob["metadata"]["namespace"],
                "labels": dict(template_meta.get("labels") or {}),
                "annotations": {
                    **(template_meta.get("annotations") or {}),
                    SCHEDULED_AT: _rfc3339(scheduled),
                },
            },
            "spec": template.get("spec") or {},
        }
        ct.set_controller_reference(cronjob, job)
        try:
            await ctx.client.create(job)
        except ct.ApiError as error:
            if error.status != 409:  # 409: this run's Job exists already (a lost answer)
                raise
            return
        ctx.events.normal(cronjob, "SuccessfulCreate", f"Created job {name}")

    async def _delete(
        self, ctx: ct.Context, cronjob: Mapping[str, Any], job: Mapping[str, Any], why: str
    ) -> None:
        name = job["metadata"]["name"]
        try:
            await ctx.client.delete("batch/v1", "Job", name, job["metadata"]["namespace"])
        except ct.NotFound:
            return
        ctx.events.normal(cronjob, "SuccessfulDelete", f"Deleted job {name} ({why})")


def make_manager(clock: ct.Clock | None = None, **options: Any) -> ct.Manager:
    """The manager with the CronJob controller; ``options`` go to ``ct.Manager``."""
    clock = clock or ct.SystemClock()
    manager = ct.Manager(name="cronjob", **options)
    (
        manager.controller()
        .for_(API_VERSION, "CronJob")
        .owns("batch/v1", "Job")
        .writes(GROUP, "cronjobs/status", ["update"])
        .writes("batch", "jobs", ["create", "delete"])
        .complete(CronJobReconciler(clock))
    )
    return manager


mgr = make_manager()
