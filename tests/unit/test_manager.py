from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ctrltrace import Manager
from ctrltrace.transport import Transport


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Give back to the collector whatever a run() in this test process set aside."""
    yield
    gc.unfreeze()


def _traced(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())


def test_run_sets_start_up_objects_aside_from_the_collector(
    unfrozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = ["made at start-up"]
    seen: dict[str, bool] = {}

    async def start(self: Manager, transport: Transport | None = None) -> None:
        during = ["made while running"]
        seen["before"], seen["during"] = _traced(before), _traced(during)

    monkeypatch.setattr(Manager, "start", start)
    assert _traced(before)
    Manager().run()
    assert seen == {"before": False, "during": True}
