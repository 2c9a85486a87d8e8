from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ctrltrace.envtest.binaries import (
    BinariesNotFoundError,
    cache_root,
    find_binaries,
    pinned_versions,
)


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_pinned_versions_come_from_the_shipped_go_module() -> None:
    versions = pinned_versions()
    assert versions.kubernetes == "v1.36.3"
    assert versions.etcd.startswith("v3.6.")
    assert versions.cache_key == f"kubernetes-v1.36.3-etcd-{versions.etcd}"


def test_every_staging_module_is_replaced_with_the_matching_release() -> None:
    gomod = (Path(__file__).parents[2] / "ctrltrace/envtest/gomod/go.mod").read_text()
    replaces = [line for line in gomod.splitlines() if line.startswith("replace k8s.io/")]
    assert len(replaces) >= 30
    assert all(line.endswith(" v0.36.3") for line in replaces)


def test_test_asset_variables_come_first(tmp_path: Path) -> None:
    apiserver = _executable(tmp_path / "a" / "kube-apiserver")
    etcd = _executable(tmp_path / "a" / "etcd")
    _executable(tmp_path / "assets" / "kube-apiserver")
    _executable(tmp_path / "assets" / "etcd")
    env = {
        "TEST_ASSET_KUBE_APISERVER": str(apiserver),
        "TEST_ASSET_ETCD": str(etcd),
        "KUBEBUILDER_ASSETS": str(tmp_path / "assets"),
        "PATH": "",
    }
    found = find_binaries(env=env)
    assert (found.kube_apiserver, found.etcd) == (apiserver, etcd)


def test_kubebuilder_assets_before_cache(tmp_path: Path) -> None:
    _executable(tmp_path / "assets" / "kube-apiserver")
    _executable(tmp_path / "assets" / "etcd")
    env = {"KUBEBUILDER_ASSETS": str(tmp_path / "assets"), "XDG_CACHE_HOME": str(tmp_path)}
    assert find_binaries(env=env).etcd == tmp_path / "assets" / "etcd"


def test_cache_is_keyed_by_version_and_reused(tmp_path: Path) -> None:
    env = {"XDG_CACHE_HOME": str(tmp_path), "PATH": ""}
    folder = cache_root(env) / pinned_versions().cache_key
    _executable(folder / "kube-apiserver")
    _executable(folder / "etcd")
    found = find_binaries(env=env)
    assert found.kube_apiserver == folder / "kube-apiserver"
    assert "cache" in found.origin


def test_envtest_variable_pointing_at_nothing_is_an_error(tmp_path: Path) -> None:
    env = {"KUBEBUILDER_ASSETS": str(tmp_path / "missing")}
    with pytest.raises(BinariesNotFoundError, match="not an executable file"):
        find_binaries(env=env)
