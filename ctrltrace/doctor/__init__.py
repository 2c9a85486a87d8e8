"""``ctrltrace doctor``: the reasons a controller never reconciles, found before it runs.

Owns the checks and their words: start-up validation (the messages start-up prints), the
leader election id and namespace, whether each watched kind is served, whether the running
identity may do what ``rbac.make_plan`` says the manager needs (asked with
SelfSubjectAccessReviews; Events only warn, since a refused Event breaks no reconcile), who
holds the Lease, and warnings for known traps (owning a kind that an intermediate owner
controls, GenerationChanged where status or deletion matter, a namespace filter without the
Lease's namespace), each with a code that ``--accept-trap`` acknowledges. Also owns the
checklist, its JSON and the exit code.

Loads the Manager but never starts it; writes nothing to the cluster.
"""

from ctrltrace.doctor.cluster import access_checks, kind_checks, lease_holder_check, whoami
from ctrltrace.doctor.command import diagnose, doctor_command
from ctrltrace.doctor.offline import leader_election_checks, startup_checks, trap_checks
from ctrltrace.doctor.report import (
    ACCESS,
    KINDS,
    LEADER,
    STARTUP,
    TRAPS,
    WIDTH,
    Check,
    Report,
    Status,
    Trap,
)

__all__ = [
    "ACCESS",
    "KINDS",
    "LEADER",
    "STARTUP",
    "TRAPS",
    "WIDTH",
    "Check",
    "Report",
    "Status",
    "Trap",
    "access_checks",
    "diagnose",
    "doctor_command",
    "kind_checks",
    "leader_election_checks",
    "lease_holder_check",
    "startup_checks",
    "trap_checks",
    "whoami",
]
