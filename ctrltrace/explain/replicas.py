"""Which replica's watches answer when no event for the object was seen (step 6 of the
decision procedure), with evidence from several replicas, and what the other replicas add.

Only the leader reconciles, so the replica that holds the leader lease, or held it last,
answers; a standby whose watch of the kind is unhealthy does not become the verdict but a
warning, for it would be blind to the object once it took the lease over. When no lease record
names a replica, or the leader left no watch records, leadership cannot decide (with leader
election off every replica runs the controllers), so the replica whose watch fares worst
answers. Owns that choice and its words; how one replica's watches are judged is
``decision``'s. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ctrltrace.explain.chains import Health, replica_of
from ctrltrace.explain.model import Code, PipelineWarning, Verdict, WarningCode
from ctrltrace.vocabulary import LeaseOutcome, WatchOutcome


def named_in(health: Health) -> set[str]:
    """The replicas that the informer, lease and lifecycle records name."""
    return {
        replica
        for records in (health.watches, health.leases, health.lifecycle)
        for record in records
        if (replica := replica_of(record)) is not None
    }


@dataclass(frozen=True)
class Answer:
    """The replica whose verdict counts, why it does, and every judged replica's verdict."""

    replica: str
    why: str  # words for the message
    verdicts: Mapping[str, Verdict]
    standing_by: bool  # the others are standbys of a known leader

    def named(self, verdict: Verdict) -> Verdict:
        """``verdict`` (this replica's, as decided further) naming the replica and the others."""
        others = [
            {"replica": replica, "code": str(other.code)}
            for replica, other in sorted(self.verdicts.items())
            if replica != self.replica
        ]
        listed = "; other replicas: " + ", ".join(
            f"{other['replica']}: {other['code']}" for other in others
        )
        return replace(
            verdict,
            message=f"{verdict.message} ({self.why}{listed if others else ''})",
            details={**verdict.details, "replica": self.replica, "other_replicas": others},
        )

    def warnings(self) -> list[PipelineWarning]:
        """A warning for each standby whose watch of the kind failed."""
        if not self.standing_by:
            return []
        return [
            PipelineWarning(
                WarningCode.STANDBY_BLIND,
                f"standby {replica} cannot see this object's kind ({verdict.code}: "
                f"{verdict.message}): it would be blind to the object if it took the lease over",
                verdict.fix,
            )
            for replica, verdict in sorted(self.verdicts.items())
            if replica != self.replica and not _sees(verdict)
        ]


def _sees(verdict: Verdict) -> bool:
    """Whether a replica's watch verdict leaves it able to see the kind, or on its way to it: a
    replica that has just started is still on its first list, which is no sign of blindness."""
    if verdict.code is Code.NO_EVENTS:
        return True
    return verdict.code is Code.CACHE_NOT_SYNCED and verdict.details.get("watch_outcome") in (
        WatchOutcome.STARTED,
        WatchOutcome.LISTED,
    )


def leader_of(health: Health) -> str | None:
    """The replica that took the leader lease last, when a lease record names one."""
    acquired = [
        record
        for record in health.leases
        if record.outcome == LeaseOutcome.ACQUIRED and replica_of(record) is not None
    ]
    return replica_of(acquired[-1]) if acquired else None


def answer(verdicts: Mapping[str, Verdict], health: Health, worst_first: Sequence[Code]) -> Answer:
    """Which of ``verdicts`` (each judged replica's, read from its own watches) counts:
    the leader's, else the first in ``worst_first`` order (ties: by replica name)."""
    leader = leader_of(health)
    if leader is not None and leader in verdicts:
        holds = health.of(leader).not_leader() is None
        why = (
            f"{leader} holds the leader lease" if holds else f"{leader} held the leader lease last"
        )
        return Answer(leader, why, verdicts, standing_by=True)
    worst = min(sorted(verdicts), key=lambda replica: worst_first.index(verdicts[replica].code))
    unknown = (
        f"{leader}, which led, left no watch records"
        if leader is not None
        else "no lease record says which replica leads"
    )
    return Answer(
        worst,
        f"{worst}: {unknown}, so the replica whose watch fares worst answers",
        verdicts,
        standing_by=False,
    )
