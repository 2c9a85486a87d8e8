"""The comparison benchmark refuses bad arguments before it starts anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("--workdir", "is not empty; give a new or an empty folder"),
        ("--from-json", "no such file"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(argument: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "cmp-1-w1-a").mkdir()  # a folder an earlier run left
    target = tmp_path if argument == "--workdir" else tmp_path / "missing.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.compare", argument, str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].endswith(message)
    assert "Traceback" not in done.stderr
