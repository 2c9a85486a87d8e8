"""The event that predicates and handlers see: controller-runtime's Create/Update/Delete/Generic.

Owns the translation from a watch event type to that view. No I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ctrltrace.records import Obj


class EventType(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    GENERIC = "generic"

    @classmethod
    def from_watch(cls, watch_type: str) -> EventType:
        return _FROM_WATCH[watch_type]


_FROM_WATCH = {
    "ADDED": EventType.CREATE,
    "MODIFIED": EventType.UPDATE,
    "DELETED": EventType.DELETE,
}


@dataclass(frozen=True, slots=True)
class Event:
    """One event as a controller sees it.

    ``old`` is the cached object before an update (None for other types). An informer resync
    is an update whose ``old`` and ``object`` have the same resourceVersion.
    """

    type: EventType
    object: Obj
    old: Obj | None = None
    api_version: str = ""
    kind: str = ""
