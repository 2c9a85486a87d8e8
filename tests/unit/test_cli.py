from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from opentelemetry.sdk.trace import TracerProvider
from structlog.testing import capture_logs

from ctrltrace import Manager, __version__
from ctrltrace.cli import ExitCode, main
from ctrltrace.cli.run import _settle_spans
from ctrltrace.exporters.tracing import DropCounter


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.splitlines()[0] == f"ctrltrace, version {__version__}"


def test_help_lists_commands_and_exit_codes() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "envtest" in result.output
    assert "5 journal" in result.output


def test_unknown_option_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["envtest", "--no-such-flag"])
    assert result.exit_code == ExitCode.USAGE


def test_no_binaries_and_no_go_names_the_three_ways(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["envtest", "--binaries"],
        env={
            **env,
            "TEST_ASSET_KUBE_APISERVER": "",
            "TEST_ASSET_ETCD": "",
            "KUBEBUILDER_ASSETS": "",
        },
    )
    assert result.exit_code == ExitCode.ENVIRONMENT
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    message = lines[0]
    assert message.startswith("ctrltrace: error: no kube-apiserver/etcd binaries")
    for way in ("TEST_ASSET_KUBE_APISERVER", "KUBEBUILDER_ASSETS", "install Go", "--kubeconfig"):
        assert way in message
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["explain", "a/b", "--bogus"], "no such option '--bogus' (ctrltrace explain -h for help)"),
        (["explain", "a/b", "--traces"], "option '--traces' requires an argument (ctrltrace "
         "explain -h for help)"),
        (["nosuch"], "no such command 'nosuch' (ctrltrace -h for help)"),
        (["doctor"], "missing argument 'APP' (ctrltrace doctor -h for help)"),
    ],
)  # fmt: skip
def test_a_usage_error_is_one_line_with_the_usage_exit_code(args: list[str], line: str) -> None:
    result = CliRunner().invoke(main, args, prog_name="ctrltrace")
    assert result.exit_code == ExitCode.USAGE
    assert result.output == f"ctrltrace: error: {line}\n"


def test_no_command_shows_the_help() -> None:
    result = CliRunner().invoke(main, [], prog_name="ctrltrace")
    assert result.output.startswith("Usage: ctrltrace [OPTIONS] COMMAND [ARGS]...")


APP = """
import ctrltrace as ct

mgr = ct.Manager(health_probe_bind_address="0")

async def reconcile(ctx, request):
    return None

mgr.controller().for_("v1", "ConfigMap").complete(reconcile)
"""


@pytest.mark.parametrize(
    ("address", "sinks"),
    [
        ("0", ["Narrator", "JournalWriter"]),
        ("127.0.0.1:0", ["Narrator", "JournalWriter", "PrometheusSink"]),
    ],
)
def test_run_keeps_metrics_only_when_it_serves_them(
    address: str, sinks: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "app.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    attached: list[str] = []

    def run(self: Manager) -> None:
        attached.extend(type(sink).__name__ for sink in self.recorder._sinks)

    monkeypatch.setattr(Manager, "run", run)
    args = ["run", "app.py:mgr", "--journal", "j.sqlite", "--metrics-bind-address", address]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert attached == sinks


def test_spans_lost_in_a_run_are_logged_when_it_ends() -> None:
    losses = DropCounter(TracerProvider())
    losses.queue_full, losses.failed, losses.exported = 3, 2, 10
    with capture_logs() as logs:
        _settle_spans(losses)
    assert logs == [
        {"event": "spans lost", "log_level": "warning", "dropped": 3, "failed": 2, "exported": 10}
    ]


def test_a_run_that_lost_no_spans_says_nothing() -> None:
    losses = DropCounter(TracerProvider())
    losses.exported = 10
    with capture_logs() as logs:
        _settle_spans(losses)
    assert logs == []
