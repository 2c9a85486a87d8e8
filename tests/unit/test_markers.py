"""``-m "not integration"`` leaves out every test that needs the real control plane."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_not_integration_selects_no_test_under_tests_integration() -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", "tests/integration", "--collect-only", "-q",
            "-m", "not integration", "-p", "no:randomly", "-p", "no:cacheprovider",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 5, done.stdout + done.stderr  # pytest's "no tests collected"
    deselected = re.search(r"no tests collected \((\d+) deselected\)", done.stdout)
    assert deselected is not None, done.stdout
    assert int(deselected.group(1)) > 0  # the directory's tests were found, then left out
