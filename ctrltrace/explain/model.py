"""What explain answers: the closed vocabularies of verdict and warning codes with their exit
statuses, and the shapes of an answer (target, verdict, warnings, timeline) with their JSON.

Pure data; no I/O, no rendering.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ctrltrace.records import AttrValue, Record, Stage
from ctrltrace.timetext import iso_time


class Code(enum.StrEnum):
    """The closed vocabulary of verdicts; the values are what ``--json`` prints."""

    RECONCILED = "reconciled"
    RECONCILE_FAILED = "reconcile_failed"
    TERMINAL_ERROR = "terminal_error"
    REQUEUE_SCHEDULED = "requeue_scheduled"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    DROPPED_BY_PREDICATE = "dropped_by_predicate"
    NOT_MAPPED = "not_mapped"
    NOT_WATCHED = "not_watched"
    WATCH_FORBIDDEN = "watch_forbidden"
    KIND_NOT_FOUND = "kind_not_found"
    NOT_LEADER = "not_leader"
    CACHE_NOT_SYNCED = "cache_not_synced"
    SELF_TRIGGERED = "self_triggered"
    DELETION_BLOCKED = "deletion_blocked"
    NO_EVENTS = "no_events"
    EVIDENCE_MISSING = "evidence_missing"  # no event seen, but evidence may be missing


class WarningCode(enum.StrEnum):
    """Conditions around the object that bear on any verdict; closed like ``Code``."""

    WATCH_FORBIDDEN = "watch_forbidden"  # changes reach the cache only by re-listing
    WATCH_DISCONNECTED = "watch_disconnected"  # the informer cannot reach the API server
    LEASE_LOST = "lease_lost"  # this replica lost the leader lease: the manager stopped
    JOURNAL_GAP = "journal_gap"  # records were lost on their way to the journal
    EVIDENCE_MISSING = "evidence_missing"  # the source could not give all it saw (sampling)
    STANDBY_BLIND = "standby_blind"  # a standby cannot watch the kind: blind once it leads


_SUCCESS = frozenset({Code.RECONCILED, Code.REQUEUE_SCHEDULED})


def exit_code(verdict_code: str) -> int:
    """0 when the event was handled as asked (reconciled, or a requeue it asked for), else 3."""
    return 0 if Code(verdict_code) in _SUCCESS else 3


TIMELINE_LIMIT = 16  # records shown, the latest (and the object's own events): one screen


@dataclass(frozen=True)
class Target:
    namespace: str
    name: str
    kind: str | None = None
    controller: str | None = None

    @property
    def key(self) -> str:
        """The request key, as the work queue and records spell it."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def is_object_of(self, record: Record) -> bool:
        ref = record.object
        return (
            ref is not None
            and ref.namespace == self.namespace
            and ref.name == self.name
            and (self.kind is None or ref.kind == self.kind)
        )


@dataclass(frozen=True)
class TimelineEntry:
    time: float
    stage: Stage
    outcome: str
    what: str  # what happened, in words
    controller: str = ""
    details: Mapping[str, AttrValue] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "at": iso_time(self.time),
            "stage": str(self.stage),
            "outcome": self.outcome,
            "what": self.what,
            "controller": self.controller,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class PipelineWarning:
    code: WarningCode
    message: str
    fix: str

    def to_json(self) -> dict[str, str]:
        return {"code": str(self.code), "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class Verdict:
    code: Code
    message: str  # one line, with the specifics
    fix: str  # what the user can do about it
    details: Mapping[str, Any] = field(default_factory=dict)  # JSON values
    warnings: tuple[PipelineWarning, ...] = ()


@dataclass(frozen=True)
class Explanation:
    target: Target
    timeline: list[TimelineEntry]
    verdict: Verdict
    now: float
    omitted: int = 0  # older timeline entries left out

    def to_json(self) -> dict[str, Any]:
        target = self.target
        return {
            "object": {
                "namespace": target.namespace,
                "name": target.name,
                "kind": target.kind,
                "controller": target.controller,
                "key": target.key,
            },
            "now": self.now,
            "timeline": [entry.to_json() for entry in self.timeline],
            "timeline_omitted": self.omitted,
            "verdict": {
                "code": str(self.verdict.code),
                "message": self.verdict.message,
                "fix": self.verdict.fix,
                "details": dict(self.verdict.details),
                "warnings": [warning.to_json() for warning in self.verdict.warnings],
            },
        }
