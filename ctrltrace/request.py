"""What the work queue holds and Reconcile receives: a request naming one object.

No I/O.
"""

from __future__ import annotations

from typing import NamedTuple

from ctrltrace.records import Obj


class Request(NamedTuple):
    """A tuple, so hashing and comparing happen in C: the queue hashes each request often."""

    namespace: str
    name: str

    @classmethod
    def of(cls, obj: Obj) -> Request:
        meta = obj.get("metadata") or {}
        return cls(meta.get("namespace", ""), meta.get("name", ""))

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def __str__(self) -> str:
        return self.key
