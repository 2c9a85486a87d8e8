"""Server processes on free loopback ports: what every local component shares.

Owns the life of a group of child servers (the control plane's etcd and kube-apiserver,
Jaeger, Prometheus): a temp dir watched by the ``_reaper`` watchdog, one log file per process,
start-up on freshly chosen ports with a retry when one was taken meanwhile, waiting for
readiness with the log's last lines in every failure, and stopping in reverse order. What the
servers are, their configs and their clients belong to the components.
"""

from __future__ import annotations

import abc
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from ctrltrace.envtest.watchdog import Watchdog

_PORT_RETRIES = 5
_LOG_TAIL_LINES = 20


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """One child process with its output captured in a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        # A session of its own: Ctrl-C in the terminal reaches the owner, which then stops
        # the apiserver before etcd instead of both dying in arbitrary order.
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def exited(self) -> bool:
        return self.process.poll() is not None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def port_taken(self) -> bool:
        return "address already in use" in self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a lost node does: no graceful shutdown."""
        if not self.exited():
            self.process.kill()
            self.process.wait()
        self._log.close()

    def stop(self, grace: float = 10.0) -> None:
        if not self.exited():
            self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class LoopbackServers(abc.ABC):
    """A group of servers started together; usable as a context manager.

    A subclass names itself (``name``, also its temp dir's prefix), says which error it raises
    (``error``), and starts its servers in ``_launch`` with ``_spawn`` and ``_wait``.
    """

    name = ""
    error: type[RuntimeError] = RuntimeError

    def __init__(self, *, start_timeout: float) -> None:
        self._start_timeout = start_timeout
        self._dir: Path | None = None
        self._servers: list[Server] = []
        self._watchdog: Watchdog | None = None
        self.startup_seconds = 0.0

    @property
    def pids(self) -> list[int]:
        """Process ids of everything this runs (the servers and their watchdog)."""
        watchdog = [] if self._watchdog is None else [self._watchdog.process.pid]
        return [server.process.pid for server in self._servers] + watchdog

    @property
    def workdir(self) -> Path | None:
        return self._dir

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        started = time.monotonic()
        self._watchdog = Watchdog()
        self._dir = Path(tempfile.mkdtemp(prefix=f"ctrltrace-{self.name}-"))
        self._watchdog.watch_dir(self._dir)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        self._stop_servers()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        if self._watchdog is not None:
            self._watchdog.done()
            self._watchdog = None

    def _start(self) -> None:
        """Everything start-up does in the temp dir; by default, start on free ports."""
        self._start_on_free_ports()

    def _start_on_free_ports(self) -> None:
        # A port chosen free can be taken before the server binds it: choose again.
        for attempt in range(_PORT_RETRIES):
            if self._launch(attempt):
                return
        raise self.error(f"{self.name}: could not bind free ports in {_PORT_RETRIES} tries")

    @abc.abstractmethod
    def _launch(self, attempt: int) -> bool:
        """Start the servers on fresh ports; False when a port was taken meanwhile (retry)."""

    def _path(self, name: str) -> Path:
        assert self._dir is not None, f"{self.name} not started"
        return self._dir / name

    def _spawn(self, name: str, argv: list[str], attempt: int | str) -> Server:
        assert self._watchdog is not None, f"{self.name} not started"
        server = Server(name, argv, self._path(f"{name}-{attempt}.log"))
        self._servers.append(server)
        self._watchdog.watch_pid(server.process.pid)
        return server

    def _restart(self, server: Server, ready: Callable[[], bool]) -> Server:
        """Kill ``server`` and start it again with the same command line (so the same ports
        and files); the new one once ``ready()``."""
        server.kill()
        self._servers.remove(server)
        restarts = sum(1 for path in self._path("").glob(f"{server.name}-restart-*.log"))
        again = self._spawn(server.name, server.argv, f"restart-{restarts}")
        if not self._wait(again, ready):
            raise self.error(f"{server.name}: its port was taken while it was down")
        return again

    def _wait(self, server: Server, ready: Callable[[], bool]) -> bool:
        """Wait until ``ready()``; False (every server stopped) when a port was taken."""
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if server.exited():
                if server.port_taken():
                    self._stop_servers()
                    return False
                code = server.process.returncode
                raise self._failed(server, f"exited with code {code} during start-up")
            if ready():
                return True
            time.sleep(0.1)
        raise self._failed(server, f"not ready after {self._start_timeout:.0f}s")

    def _failed(self, server: Server, what: str) -> RuntimeError:
        tail = server.log_tail()
        log = f"last lines of its log:\n{tail}" if tail else "its log is empty"
        return self.error(f"{server.name} {what}; {log}")

    def _stop_servers(self) -> None:
        for server in reversed(self._servers):
            server.stop()
        self._servers.clear()
