"""The README's demo, end to end: run --envtest, three changes, explain."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_the_demo_explains_a_dropped_update_and_a_retried_failure(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    journal = tmp_path / "demo.sqlite"
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "demo.py"), "--journal", str(journal)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    plain, flaky = result.stdout.split("== ctrltrace explain demo/flaky")
    assert "dropped_by_predicate" in plain and "GenerationChanged" in plain
    assert "(exit code 3)" in plain
    assert "RuntimeError: simulated failure" in flaky and "retry attempt 1" in flaky
    assert "requeue_scheduled" in flaky and "(exit code 0)" in flaky
    assert journal.stat().st_mode & 0o777 == 0o600
