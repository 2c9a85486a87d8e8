"""Finding (or building) the kube-apiserver and etcd binaries of the local control plane.

Owns the search order — envtest's variables, then ctrltrace's cache, then a build from the Go
module shipped in ``gomod/`` — and the cache layout. Its "in the cache, or built there with Go
under a file lock" step, ``find_or_build``, is shared by every Go-built test server (Jaeger
too). It starts no servers.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

GOMOD_DIR = Path(__file__).parent / "gomod"
KUBE_APISERVER_TOOL = "k8s.io/kubernetes/cmd/kube-apiserver"
ETCD_TOOL = "go.etcd.io/etcd/server/v3"


class Log(Protocol):
    """Where build progress goes (one line per call): ``print``, or click.echo to stderr."""

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


@dataclass(frozen=True)
class GoTool:
    """One binary to build: the main package's import path and the file name to give it."""

    package: str
    output: str


def pinned_versions(gomod: Path = GOMOD_DIR / "go.mod") -> PinnedVersions:
    """The versions the shipped Go module pins, read from its require lines."""
    return PinnedVersions(
        required_version(gomod, "k8s.io/kubernetes"), required_version(gomod, ETCD_TOOL)
    )


def required_version(gomod: Path, module: str) -> str:
    """The version at which the go.mod file ``gomod`` requires ``module``."""
    text = gomod.read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.M)
    if match is None:
        raise BinariesNotFoundError(f"{gomod} does not require {module}")
    return match.group(1)


def ctrltrace_cache(env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CACHE_HOME/ctrltrace`` (``~/.cache/ctrltrace`` by default): every built binary."""
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ctrltrace"


def cache_root(env: Mapping[str, str] = os.environ) -> Path:
    return ctrltrace_cache(env) / "controlplane"


def find_binaries(
    *, build: bool = True, env: Mapping[str, str] = os.environ, log: Log = print
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
    origin = find_or_build(
        GOMOD_DIR,
        (GoTool(KUBE_APISERVER_TOOL, "kube-apiserver"), GoTool(ETCD_TOOL, "etcd")),
        target,
        ldflags=_version_ldflags(versions),
        remedy=(
            "either set TEST_ASSET_KUBE_APISERVER and TEST_ASSET_ETCD (or KUBEBUILDER_ASSETS) to "
            f"existing envtest binaries, install Go >= 1.25 so ctrltrace can build them into "
            f"{target}, or point --kubeconfig at an existing cluster"
        ),
        build=build,
        env=env,
        log=log,
    )
    return Binaries(target / "kube-apiserver", target / "etcd", origin)


def find_or_build(
    gomod_dir: Path,
    tools: Sequence[GoTool],
    target: Path,
    *,
    ldflags: str,
    remedy: str,
    build: bool,
    env: Mapping[str, str],
    log: Log,
) -> str:
    """Make sure ``target`` holds every tool's binary; where they came from, in words.

    They are reused from ``target`` when all are there, else built with Go from the module
    in ``gomod_dir`` (go.mod + go.sum) under a lock file next to ``target``, so concurrent
    sessions build once. ``remedy`` completes the error raised when Go is missing or
    ``build`` is false.
    """
    if _present(target, tools):
        return f"cache {target}"
    go = shutil.which("go", path=env.get("PATH"))
    if not build or go is None:
        reason = "no Go toolchain on PATH to build them" if go is None else "building is disabled"
        names = "/".join(tool.output for tool in tools)
        noun = "binaries" if len(tools) > 1 else "binary"
        raise BinariesNotFoundError(f"no {names} {noun} ({reason}); {remedy}")
    with _locked(target.parent / f"{target.name}.lock"):
        # Another process may have finished the build while we waited for the lock.
        if not _present(target, tools):
            _build(go, gomod_dir, tools, target, ldflags=ldflags, env=env, log=log)
    assert _present(target, tools), "build finished without every binary"
    return f"built into {target}"


def _checked(apiserver: Path, etcd: Path, origin: str) -> Binaries:
    for path in (apiserver, etcd):
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BinariesNotFoundError(f"{origin}: {path} is not an executable file")
    return Binaries(apiserver, etcd, origin)


def _present(folder: Path, tools: Sequence[GoTool]) -> bool:
    return all((folder / tool.output).is_file() for tool in tools)


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _version_ldflags(versions: PinnedVersions) -> str:
    minor = versions.kubernetes.removeprefix("v").split(".")[1]
    version_pkg = "k8s.io/component-base/version"
    # Without these, /version reports v0.0.0-master.
    return " ".join(
        [
            f"-X {version_pkg}.gitVersion={versions.kubernetes}",
            f"-X {version_pkg}.gitMajor=1",
            f"-X {version_pkg}.gitMinor={minor}",
            "-s -w",
        ]
    )


def _build(
    go: str,
    gomod_dir: Path,
    tools: Sequence[GoTool],
    target: Path,
    *,
    ldflags: str,
    env: Mapping[str, str],
    log: Log,
) -> None:
    # The module directory may be read-only (site-packages): build from a copy of it, then
    # rename the finished folder into place so a half-built one is never taken for a cache.
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
    try:
        for name in ("go.mod", "go.sum"):
            shutil.copy(gomod_dir / name, staging / name)
        for tool in tools:
            log(f"building {tool.output} from {tool.package} ({target.name}); takes minutes once")
            output = staging / tool.output
            result = subprocess.run(
                [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(output), tool.package],
                cwd=staging,
                env={**env, "CGO_ENABLED": "0"},
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                tail = "\n".join(result.stderr.strip().splitlines()[-15:])
                raise BinariesNotFoundError(f"go build {tool.package} failed:\n{tail}")
        (staging / "go.mod").unlink()
        (staging / "go.sum").unlink()
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
