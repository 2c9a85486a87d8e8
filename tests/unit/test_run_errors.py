"""`ctrltrace run` turns every kind of bad input into one line and a distinct exit code."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctrltrace.cli import ExitCode, main
from ctrltrace.journal import APPLICATION_ID, SCHEMA_VERSION

APP = """
import ctrltrace as ct

mgr = ct.Manager(health_probe_bind_address="0")
not_a_manager = 42

async def reconcile(ctx, request):
    return None

mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
broken = ct.Manager()
broken.controller().named("idle").complete(reconcile)
"""


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "demoapp.py").write_text(APP)
    (tmp_path / "explodes.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(config))
    return path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["run", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output.strip()


@pytest.mark.usefixtures("app_dir")
@pytest.mark.parametrize(
    ("app", "code", "message"),
    [
        ("demoapp", ExitCode.USAGE, "expected MODULE:ATTR"),
        ("nosuchmodule:mgr", ExitCode.APP, "no module named 'nosuchmodule'"),
        ("demoapp:missing", ExitCode.APP, "has no attribute 'missing'"),
        ("demoapp:not_a_manager", ExitCode.APP, "is a int, not a ctrltrace.Manager"),
        ("explodes:mgr", ExitCode.APP, "RuntimeError: boom at import"),
        ("./nosuch.py:mgr", ExitCode.APP, "no such file"),
        ("demoapp:broken", ExitCode.APP, "idle: no watches"),
    ],
)
def test_bad_apps_get_one_line_and_their_exit_code(app: str, code: int, message: str) -> None:
    exit_code, output = _run(app, "--kubeconfig", "/nonexistent")
    assert exit_code == code
    assert len(output.splitlines()) == 1 and message in output


def test_missing_kubeconfig(app_dir: Path) -> None:
    exit_code, output = _run("demoapp:mgr", "--kubeconfig", str(app_dir / "missing"))
    assert exit_code == ExitCode.KUBECONFIG
    assert output == f"ctrltrace: error: kubeconfig {app_dir / 'missing'} does not exist"


def test_unreachable_api_server(app_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        kubeconfig = _kubeconfig(app_dir / "kc.json", f"https://127.0.0.1:{port}")
        exit_code, output = _run("demoapp:mgr", "--kubeconfig", str(kubeconfig))
    assert exit_code == ExitCode.UNREACHABLE
    assert output.startswith(
        f"ctrltrace: error: cannot reach the API server at https://127.0.0.1:{port}"
    )


def test_a_file_path_app_loads(app_dir: Path) -> None:
    exit_code, output = _run("./demoapp.py:broken", "--kubeconfig", "/nonexistent")
    assert exit_code == ExitCode.APP and "idle: no watches" in output


def test_a_journal_of_another_schema_says_what_to_do(app_dir: Path) -> None:
    old = app_dir / ".ctrltrace" / "journal.sqlite"
    old.parent.mkdir()
    raw = sqlite3.connect(old)
    raw.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    raw.execute("CREATE TABLE records (seq INTEGER PRIMARY KEY)")
    raw.commit()
    raw.close()
    kubeconfig = _kubeconfig(app_dir / "kc.json", "https://127.0.0.1:1")
    exit_code, output = _run("demoapp:mgr", "--kubeconfig", str(kubeconfig))
    assert exit_code == ExitCode.JOURNAL
    assert len(output.splitlines()) == 1
    assert f"was written by schema version {SCHEMA_VERSION - 1}" in output
    assert output.endswith("move it away, or pass --journal with a new path")
