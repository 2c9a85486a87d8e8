"""`ctrltrace explain` on bad input: one line, the documented exit code, nothing lost."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ctrltrace import ObjectRef, Record, Stage
from ctrltrace.cli import ExitCode, main
from ctrltrace.cli.options import evidence_errors
from ctrltrace.evidence import Evidence, EvidenceRefused, EvidenceUnreachable, EvidenceUnreadable
from ctrltrace.journal import JournalMissing, JournalWriter


def _explain(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["explain", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output.strip()


def test_a_missing_journal_exits_5(tmp_path: Path) -> None:
    code, output = _explain("ns/name", "--journal", str(tmp_path / "none.sqlite"))
    assert code == ExitCode.JOURNAL
    assert len(output.splitlines()) == 1 and "none.sqlite" in output


def test_a_foreign_file_exits_5(tmp_path: Path) -> None:
    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as connection:
        connection.execute("create table t (x)")
    connection.close()
    code, output = _explain("ns/name", "--journal", str(foreign))
    assert code == ExitCode.JOURNAL and "not a ctrltrace journal" in output


def test_a_name_in_the_wrong_form_is_a_usage_error(tmp_path: Path) -> None:
    for target in ("a/b/c", "ns/", "ns/Bad_Name"):
        code, output = _explain(target, "--journal", str(tmp_path / "j.sqlite"))
        assert code == ExitCode.USAGE, target
        assert "is not NAMESPACE/NAME" in output


def test_a_bad_since_is_a_usage_error(tmp_path: Path) -> None:
    code, output = _explain("ns/n", "--since", "yesterday", "--journal", str(tmp_path / "j"))
    assert code == ExitCode.USAGE and "--since 'yesterday'" in output


def test_verdicts_set_the_exit_code_and_kind_is_kubectl_style(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    ref = ObjectRef("example.com/v1", "Widget", "ns", "w", "uid-1", "7", 1)
    watch_attrs = {
        "kind": "Widget",
        "api_version": "example.com/v1",
        "resource": "widgets.example.com",
    }
    event = Record(100.0, Stage.EVENT, "ADDED", object=ref, attrs={"writer": "kubectl"})
    dispatch = Record(
        100.1,
        Stage.DISPATCH,
        "dropped_by_predicate",
        reason="generation unchanged (1 → 1)",
        controller="widget",
        object=ref,
        request="ns/w",
        cause_ids=(event.id,),
        attrs={"predicate": "GenerationChanged", "event_type": "create"},
    )
    with JournalWriter(path) as writer:
        writer(Record(99.0, Stage.WATCH, "synced", attrs=watch_attrs))
        writer(event)
        writer(dispatch)
    for kind in ("widget", "Widgets", "widgets.example.com", "WIDGET.example.com"):
        code, output = _explain("ns/w", "--kind", kind, "--journal", str(path), "--json")
        assert code == 3, kind
        answer = json.loads(output)
        assert answer["verdict"]["code"] == "dropped_by_predicate"
        assert "GenerationChanged" in answer["verdict"]["message"]
    code, output = _explain("ns/w", "--journal", str(path))
    assert code == 3
    assert "dropped_by_predicate" in output
    assert max(len(line) for line in output.splitlines()) <= 100


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (JournalMissing("no journal at x"), ExitCode.JOURNAL),
        (EvidenceUnreachable("nothing answers at http://127.0.0.1:1"), ExitCode.UNREACHABLE),
        (EvidenceRefused("the token was rejected"), ExitCode.ENVIRONMENT),
        (EvidenceUnreadable("not a debug endpoint's answer"), ExitCode.JOURNAL),
    ],
)
def test_each_source_failure_is_one_line_with_its_exit_code(error: Exception, code: int) -> None:
    def failing() -> Evidence:
        raise error

    @click.command()
    def command() -> None:
        with evidence_errors(), failing():
            raise AssertionError("the source opened")

    result = CliRunner().invoke(command, [], standalone_mode=True)
    assert result.exit_code == code
    assert result.output == f"ctrltrace: error: {error}\n"
