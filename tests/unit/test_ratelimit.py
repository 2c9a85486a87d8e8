from __future__ import annotations

import pytest

from ctrltrace.ratelimit import ItemExponentialBackoff, RateLimiter
from ctrltrace.request import Request


def test_delays_double_from_five_milliseconds_and_count_retries() -> None:
    limiter: ItemExponentialBackoff[str] = ItemExponentialBackoff()
    delays = []
    for expected_retries in range(5):
        assert limiter.retries("a") == expected_retries
        delays.append(limiter.when("a"))
    assert delays == pytest.approx([0.005, 0.01, 0.02, 0.04, 0.08])
    assert limiter.retries("a") == 5


def test_delay_is_capped_at_a_thousand_seconds() -> None:
    limiter: ItemExponentialBackoff[str] = ItemExponentialBackoff()
    delays = [limiter.when("a") for _ in range(20)]
    # 0.005 * 2**17 = 655.36 s is the last delay under the cap.
    assert delays[17] == pytest.approx(655.36)
    assert delays[18:] == [1000.0, 1000.0]


def test_huge_failure_counts_do_not_overflow() -> None:
    limiter: ItemExponentialBackoff[str] = ItemExponentialBackoff()
    for _ in range(1100):
        delay = limiter.when("a")
    assert delay == 1000.0
    assert limiter.retries("a") == 1100


def test_forget_starts_over() -> None:
    limiter: ItemExponentialBackoff[str] = ItemExponentialBackoff()
    for _ in range(3):
        limiter.when("a")
    limiter.forget("a")
    assert limiter.retries("a") == 0
    assert limiter.when("a") == pytest.approx(0.005)
    limiter.forget("never-seen")  # forgetting an unknown key is harmless
    assert limiter.retries("never-seen") == 0


def test_items_back_off_independently() -> None:
    limiter: ItemExponentialBackoff[Request] = ItemExponentialBackoff()
    a, b = Request("ns", "a"), Request("ns", "b")
    limiter.when(a)
    limiter.when(a)
    assert limiter.when(b) == pytest.approx(0.005)
    assert limiter.when(a) == pytest.approx(0.02)
    assert (limiter.retries(a), limiter.retries(b)) == (3, 1)


def test_custom_base_and_cap() -> None:
    limiter: RateLimiter[str] = ItemExponentialBackoff(base=1.0, cap=5.0)
    assert [limiter.when("a") for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


@pytest.mark.parametrize(("base", "cap"), [(-0.001, 1000.0), (0.005, -1.0)])
def test_negative_settings_are_rejected(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        ItemExponentialBackoff(base, cap)
