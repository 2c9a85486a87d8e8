"""Text the user's cluster and code control — an annotation, an exception's message — carrying
terminal escape sequences, through a real object, a real reconcile and ``ctrltrace run``: the
console log, ``explain`` and the TUI print them escaped, never raw."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctrltrace.cli import main
from ctrltrace.envtest import ControlPlane
from ctrltrace.journal import Journal

from ..unit.test_tui import app_on, screen_text, settled

pytestmark = pytest.mark.integration

# Set the terminal's title, clear the screen, then reverse what follows (a bidi override).
CRAFTED = "\x1b]0;pwned\x07\x1b[2J\u202eevil"
ESCAPED = "\\x1b]0;pwned\\x07\\x1b[2J\\u202eevil"
RAW = ("\x1b", "\x07", "\u202e")

APP = """
import ctrltrace as ct

mgr = ct.Manager()

async def reconcile(ctx, request):
    obj = await ctx.client.get("v1", "ConfigMap", request.name, request.namespace)
    note = obj["metadata"]["annotations"]["note"]
    ctx.log.info("Read the note", note=note)
    raise RuntimeError(f"cannot use note {note}")

mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
"""


def assert_escaped(text: str, where: str) -> None:
    assert ESCAPED in text, f"{where} does not show the escaped text:\n{text}"
    raw = [char for char in RAW if char in text]
    assert not raw, f"{where} printed {raw} raw:\n{text!r}"


def test_escape_sequences_from_an_annotation_and_an_exception_are_printed_escaped(
    control_plane: ControlPlane, kube_namespace: str, tmp_path: Path
) -> None:
    control_plane.request(
        "POST",
        f"/api/v1/namespaces/{kube_namespace}/configmaps",
        {"metadata": {"name": "crafted", "annotations": {"note": CRAFTED}}},
    )
    (tmp_path / "crafted_app.py").write_text(APP)
    journal = tmp_path / "journal.sqlite"
    command = [
        sys.executable, "-m", "ctrltrace", "run", "crafted_app:mgr", "--log-format", "console",
        "--kubeconfig", str(control_plane.kubeconfig), "--namespace", kube_namespace,
        "--journal", str(journal), "--metrics-bind-address", "0",
        "--health-probe-bind-address", "0",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not any("Reconciler error" in line for line in lines):
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        reader.join()
    log = "".join(lines)
    assert_escaped(log, "the console log")
    assert "Read the note" in log and "cannot use note" in log

    target = f"{kube_namespace}/crafted"
    answer = CliRunner().invoke(main, ["explain", target, "--journal", str(journal)])
    assert "reconcile_failed" in answer.output and "cannot use note" in answer.output
    assert_escaped(answer.output, "explain")

    with Journal(journal) as written:
        records = [record for _, record in written.tail(0, 100_000)]

    async def tui() -> str:
        app = app_on(journal, records[-1].time + 1)
        async with app.run_test(size=(240, 30)) as pilot:
            await settled(pilot, len(records))
            return screen_text(app)

    screen = asyncio.run(tui())
    assert "cannot use note" in screen
    assert_escaped(screen, "the TUI")
