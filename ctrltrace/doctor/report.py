"""The doctor's checklist: a check, its status and section, the known traps' codes, and the
report with its text, JSON and worst status. Pure: no I/O."""

from __future__ import annotations

import enum
import json
import textwrap
from dataclasses import asdict, dataclass
from typing import Any

from ctrltrace.printable import printable
from ctrltrace.rbac import (
    Purpose,
)

WIDTH = 100


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


_MARKS = {Status.OK: "✓", Status.WARN: "!", Status.FAIL: "✗"}
_SEVERITY = [Status.OK, Status.WARN, Status.FAIL]


@dataclass(frozen=True)
class Check:
    """One line of the checklist: what was checked, and for warnings and failures the fix."""

    status: Status
    section: str
    title: str
    detail: str = ""
    fix: str = ""
    code: str = ""  # a known trap's code, which --accept-trap takes


STARTUP = "Start-up validation"
LEADER = "Leader election"
KINDS = "Kinds served"
ACCESS = {
    Purpose.WATCH: "Access: watched kinds",
    Purpose.WRITE: "Access: declared writes",
    Purpose.EVENTS: "Access: Events",
    Purpose.LEASE: "Access: leader election Lease",
}
TRAPS = "Known traps"


class Trap(enum.StrEnum):
    """The known traps, by the code ``--accept-trap`` takes."""

    OWNS_INTERMEDIATE = "owns-intermediate-owner"
    GENERATION_CHANGED = "generation-changed"
    LEASE_OUTSIDE_CACHE = "lease-outside-cache"


@dataclass(frozen=True)
class Report:
    app: str
    server: str
    version: str
    identity: str
    checks: tuple[Check, ...]

    def count(self, status: Status) -> int:
        return sum(check.status is status for check in self.checks)

    @property
    def worst(self) -> Status:
        """FAIL if any check failed, else WARN if any warned, else OK: what the exit code says."""
        return max((check.status for check in self.checks), key=_SEVERITY.index, default=Status.OK)

    def summary(self) -> str:
        failed, warned = self.count(Status.FAIL), self.count(Status.WARN)
        return (
            f"{failed} failed, {warned} warning{'s' if warned != 1 else ''}, "
            f"{self.count(Status.OK)} ok"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "cluster": {"server": self.server, "version": self.version},
            "identity": self.identity,
            "status": self.worst.value,
            "summary": {status.value: self.count(status) for status in Status},
            "checks": [asdict(check) for check in self.checks],
        }

    def json_text(self) -> str:
        """``--json``'s document. Non-ASCII is escaped: details quote the API server and the
        cluster's objects, and a C1 control or a bidi mark must not reach a terminal raw."""
        return json.dumps(self.as_json(), indent=2)

    def render(self, width: int = WIDTH) -> str:
        """The checklist as plain text: a mark per line (✓ ok, ! warning, ✗ failed)."""
        lines = _wrap(f"ctrltrace doctor {self.app}", "", "", width)
        lines += _wrap(
            f"cluster {self.server} ({self.version}), as {self.identity}", "", "  ", width
        )
        section = ""
        for check in self.checks:
            if check.section != section:
                section = check.section
                lines += ["", section]
            lines += _wrap(check.title, f"  {_MARKS[check.status]} ", "    ", width)
            if check.detail:
                lines += _wrap(check.detail, "    ", "    ", width)
            if check.fix:
                lines += _wrap(check.fix, "    fix: ", "         ", width)
        return "\n".join([*lines, "", self.summary()]) + "\n"


def _wrap(text: str, first: str, rest: str, width: int) -> list[str]:
    return textwrap.wrap(
        printable(text), width, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False
    )
