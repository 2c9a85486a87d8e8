"""The C accelerators are used when built and allowed; CTRLTRACE_NO_ACCELERATORS refuses them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ctrltrace import accelerators, picklerecords
from ctrltrace.exporters import otlpwire


def report(**environ: str) -> list[str]:
    """What ``ctrltrace --version`` says of the accelerators, in a fresh interpreter, with these
    variables."""
    env = {k: v for k, v in os.environ.items() if k != accelerators.DISABLE} | environ
    return subprocess.run(
        [sys.executable, "-m", "ctrltrace", "--version"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()[1:]


def test_the_built_accelerators_are_used_unless_refused() -> None:
    assert report() == [
        "journal record pickler: C (ctrltrace._picklerecords)",
        "OTLP span encoder: C (ctrltrace.exporters._otlpwire)",
    ]


def test_the_variable_forces_the_pure_python_paths() -> None:
    assert report(CTRLTRACE_NO_ACCELERATORS="1") == [
        "journal record pickler: pure Python (CTRLTRACE_NO_ACCELERATORS is set)",
        "OTLP span encoder: pure Python (CTRLTRACE_NO_ACCELERATORS is set)",
    ]


@pytest.mark.parametrize(
    ("value", "enabled"), [("", True), ("0", True), ("1", False), ("true", False)]
)
def test_enabled_reads_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, enabled: bool
) -> None:
    monkeypatch.setenv(accelerators.DISABLE, value)
    assert accelerators.enabled() is enabled
    assert (accelerators.load("ctrltrace._picklerecords") is not None) is enabled


def test_a_missing_extension_is_no_error() -> None:
    assert accelerators.load("ctrltrace._no_such_accelerator") is None


def test_this_process_uses_what_its_environment_asks_for() -> None:
    """The suite runs twice in CI: once accelerated, once with the variable set."""
    wanted = accelerators.enabled()
    assert picklerecords.ACCELERATED is wanted
    assert otlpwire.ACCELERATED is wanted
