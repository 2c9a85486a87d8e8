"""Per-item retry back-off: how long a key waits before its next attempt after failures.

Owns the failure count of each key and the delay it implies. It schedules nothing (the work
queue does) and does not decide what counts as a failure (the controller does). No I/O.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

T = TypeVar("T", bound=Hashable)
T_contra = TypeVar("T_contra", bound=Hashable, contravariant=True)


class RateLimiter(Protocol[T_contra]):
    """What the work queue asks of a back-off policy (client-go's ``RateLimiter``)."""

    def when(self, item: T_contra) -> float:
        """Seconds ``item`` waits before its next attempt; counts one more failure."""
        ...

    def forget(self, item: T_contra) -> None:
        """Drop what is known about ``item`` (it succeeded); its next delay starts afresh."""
        ...

    def retries(self, item: T_contra) -> int:
        """Failures counted for ``item`` since it was last forgotten."""
        ...


class ItemExponentialBackoff(Generic[T]):
    """client-go's ``ItemExponentialFailureRateLimiter``: ``base * 2**n``, at most ``cap``.

    ``n`` is the number of failures counted for the item before the current one, so the
    defaults give 5 ms, 10 ms, 20 ms, … up to 1000 s.
    """

    def __init__(self, base: float = 0.005, cap: float = 1000.0) -> None:
        if base < 0 or cap < 0:
            raise ValueError(f"back-off base and cap must not be negative, got {base} and {cap}")
        self._base = base
        self._cap = cap
        self._failures: dict[T, int] = {}

    def when(self, item: T) -> float:
        failures = self._failures.get(item, 0)
        self._failures[item] = failures + 1
        try:
            delay = math.ldexp(self._base, failures)
        except OverflowError:  # after ~1000 failures 2**n exceeds a float; the cap applies anyway
            return self._cap
        return min(delay, self._cap)

    def forget(self, item: T) -> None:
        self._failures.pop(item, None)

    def retries(self, item: T) -> int:
        return self._failures.get(item, 0)
