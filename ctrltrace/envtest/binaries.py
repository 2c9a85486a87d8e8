"""Finding (or building) the kube-apiserver and etcd binaries of the local control plane.

Owns the search order — envtest's variables, then ctrltrace's cache, then a build from the Go
module shipped in ``gomod/`` — and the cache layout. It starts no servers.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

GOMOD_DIR = Path(__file__).parent / "gomod"
KUBE_APISERVER_TOOL = "k8s.io/kubernetes/cmd/kube-apiserver"
ETCD_TOOL = "go.etcd.io/etcd/server/v3"


class _Log(Protocol):
    def __call__(self, message: str, /) -> None: ...


class BinariesNotFoundError(RuntimeError):
    """No control-plane binaries could be found, and none could be built."""


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    etcd: Path
    origin: str  # where they came from, in words ("TEST_ASSET_*", "cache", "built", ...)


@dataclass(frozen=True)
class PinnedVersions:
    kubernetes: str
    etcd: str

    @property
    def cache_key(self) -> str:
        return f"kubernetes-{self.kubernetes}-etcd-{self.etcd}"


def pinned_versions(gomod: Path = GOMOD_DIR / "go.mod") -> PinnedVersions:
    """The versions the shipped Go module pins, read from its require lines."""
    text = gomod.read_text()

    def required(module: str) -> str:
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.M)
        if match is None:
            raise BinariesNotFoundError(f"{gomod} does not require {module}")
        return match.group(1)

    return PinnedVersions(required("k8s.io/kubernetes"), required(ETCD_TOOL))


def cache_root(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ctrltrace" / "controlplane"


def find_binaries(
    *, build: bool = True, env: Mapping[str, str] = os.environ, log: _Log = print
) -> Binaries:
    """Locate kube-apiserver and etcd, building them with Go as a last resort.

    Order: ``TEST_ASSET_KUBE_APISERVER`` + ``TEST_ASSET_ETCD``; ``KUBEBUILDER_ASSETS``; the
    cache (``$XDG_CACHE_HOME/ctrltrace/controlplane/<versions>``); a Go build into that cache.
    """
    apiserver, etcd = env.get("TEST_ASSET_KUBE_APISERVER"), env.get("TEST_ASSET_ETCD")
    if apiserver and etcd:
        return _checked(Path(apiserver), Path(etcd), "TEST_ASSET_KUBE_APISERVER/TEST_ASSET_ETCD")
    if assets := env.get("KUBEBUILDER_ASSETS"):
        folder = Path(assets)
        return _checked(folder / "kube-apiserver", folder / "etcd", f"KUBEBUILDER_ASSETS={folder}")

    versions = pinned_versions()
    target = cache_root(env) / versions.cache_key
    cached = _present(target)
    if cached is not None:
        return cached
    go = shutil.which("go", path=env.get("PATH"))
    if not build or go is None:
        raise BinariesNotFoundError(_how_to_get_binaries(target, go_missing=go is None))
    with _locked(target.parent / f"{versions.cache_key}.lock"):
        # Another process may have finished the build while we waited for the lock.
        cached = _present(target)
        if cached is not None:
            return cached
        _build(go, versions, target, env, log)
    built = _present(target)
    assert built is not None, "build finished without both binaries"
    return Binaries(built.kube_apiserver, built.etcd, f"built into {target}")


def _checked(apiserver: Path, etcd: Path, origin: str) -> Binaries:
    for path in (apiserver, etcd):
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BinariesNotFoundError(f"{origin}: {path} is not an executable file")
    return Binaries(apiserver, etcd, origin)


def _present(folder: Path) -> Binaries | None:
    apiserver, etcd = folder / "kube-apiserver", folder / "etcd"
    if apiserver.is_file() and etcd.is_file():
        return Binaries(apiserver, etcd, f"cache {folder}")
    return None


def _how_to_get_binaries(target: Path, *, go_missing: bool) -> str:
    reason = "no Go toolchain on PATH to build them" if go_missing else "building is disabled"
    return (
        f"no kube-apiserver/etcd binaries ({reason}); either set TEST_ASSET_KUBE_APISERVER and "
        "TEST_ASSET_ETCD (or KUBEBUILDER_ASSETS) to existing envtest binaries, install Go >= "
        f"1.25 so ctrltrace can build them into {target}, or point --kubeconfig at an existing "
        "cluster"
    )


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(
    go: str, versions: PinnedVersions, target: Path, env: Mapping[str, str], log: _Log
) -> None:
    minor = versions.kubernetes.removeprefix("v").split(".")[1]
    version_pkg = "k8s.io/component-base/version"
    # Without these, /version reports v0.0.0-master.
    ldflags = " ".join(
        [
            f"-X {version_pkg}.gitVersion={versions.kubernetes}",
            f"-X {version_pkg}.gitMajor=1",
            f"-X {version_pkg}.gitMinor={minor}",
            "-s -w",
        ]
    )
    # The module directory may be read-only (site-packages): build from a copy of it.
    staging = Path(tempfile.mkdtemp(prefix=f"{versions.cache_key}.", dir=target.parent))
    try:
        for name in ("go.mod", "go.sum"):
            shutil.copy(GOMOD_DIR / name, staging / name)
        for tool, output in ((KUBE_APISERVER_TOOL, "kube-apiserver"), (ETCD_TOOL, "etcd")):
            log(f"building {output} from {tool} ({versions.cache_key}); this takes minutes once")
            result = subprocess.run(
                [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(staging / output), tool],
                cwd=staging,
                env={**env, "CGO_ENABLED": "0"},
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                tail = "\n".join(result.stderr.strip().splitlines()[-15:])
                raise BinariesNotFoundError(f"go build {tool} failed:\n{tail}")
        (staging / "go.mod").unlink()
        (staging / "go.sum").unlink()
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
