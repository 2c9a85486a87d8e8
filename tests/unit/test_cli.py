from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from ctrltrace import __version__
from ctrltrace.cli import ExitCode, main


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"ctrltrace, version {__version__}"


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
