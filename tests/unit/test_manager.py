from __future__ import annotations

from collections.abc import Callable

import pytest

from ctrltrace import Manager
from ctrltrace.transport import Transport


def test_run_sets_start_up_objects_aside_from_the_collector(
    traced: Callable[[object], bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = ["made at start-up"]
    seen: dict[str, bool] = {}

    async def start(self: Manager, transport: Transport | None = None) -> None:
        during = ["made while running"]
        seen["before"], seen["during"] = traced(before), traced(during)

    monkeypatch.setattr(Manager, "start", start)
    assert traced(before)
    Manager().run()
    assert seen == {"before": False, "during": True}
