"""Where the Lease lives when leader election gives no namespace: as controller-runtime does."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctrltrace import leaderelection
from ctrltrace.leaderelection import lease_namespace, pod_namespace


@pytest.fixture
def pod_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "serviceaccount" / "namespace"
    monkeypatch.setattr(leaderelection, "POD_NAMESPACE_FILE", path)
    return path


def test_in_a_pod_the_lease_goes_to_the_pods_namespace(pod_file: Path) -> None:
    pod_file.parent.mkdir()
    pod_file.write_text("widgets-system\n")
    assert pod_namespace() == "widgets-system"
    assert lease_namespace("") == "widgets-system"


def test_a_namespace_asked_for_wins_over_the_pods(pod_file: Path) -> None:
    pod_file.parent.mkdir()
    pod_file.write_text("widgets-system")
    assert lease_namespace("ops") == "ops"


def test_outside_a_pod_the_lease_goes_to_default(pod_file: Path) -> None:
    assert pod_namespace() == ""
    assert lease_namespace("") == "default"
