"""Network faults between a client and the API server, for tests of what a controller survives.

Owns ``FaultProxy``: a TCP proxy on loopback in front of a server that can cut every
connection at once (a reset, as a dropped NAT entry or a restarted load balancer does), refuse
new ones for a while (the server unreachable), and stall: hold every connection open, new ones
too, while forwarding no byte either way (a half-dead link: only the client's own timeouts
notice). It forwards bytes and never looks into them, so TLS goes through it end to end.
Threads only; it stops every one of them on close.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Self

_POLL = 0.05  # seconds a connection's thread waits before looking at its flags again


class _Stall:
    """Until when no byte moves; shared by the proxy and its connections."""

    def __init__(self) -> None:
        self.until = 0.0

    def active(self) -> bool:
        return time.monotonic() < self.until


class _Connection:
    def __init__(self, client: socket.socket, upstream: socket.socket, stall: _Stall) -> None:
        self.client = client
        self.upstream = upstream
        self.stall = stall
        self.cut = threading.Event()
        self.ended = threading.Event()

    def pump(self) -> None:
        """Forward both ways until either side closes or the proxy cuts the connection;
        while stalled, read nothing (what is sent waits in the kernel's buffers)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.client, selectors.EVENT_READ, self.upstream)
            selector.register(self.upstream, selectors.EVENT_READ, self.client)
            try:
                while not self.cut.is_set():
                    if self.stall.active():
                        self.cut.wait(_POLL)
                        continue
                    for key, _ in selector.select(_POLL):
                        source: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = source.recv(65536)
                        if not data:
                            return
                        key.data.sendall(data)
            except OSError:
                return
            finally:
                for side in (self.client, self.upstream):
                    if self.cut.is_set():  # a reset (RST), not an orderly close (FIN)
                        side.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    side.close()
                self.ended.set()


class FaultProxy:
    """A loopback TCP proxy to ``host:port`` that a test can break.

    >>> with FaultProxy("127.0.0.1", 6443) as proxy:
    ...     proxy.reset()             # cut every open connection
    ...     with proxy.refusing():    # and refuse new ones meanwhile
    ...         ...
    ...     proxy.stall(10)           # forward nothing for 10 s, keeping connections open
    """

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0
        self.resets = 0
        self._stall = _Stall()
        self._lock = threading.Lock()
        self._open: list[_Connection] = []
        self._threads: list[threading.Thread] = []
        self._refusing = threading.Event()
        self._closed = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def reset(self) -> int:
        """Cut every open connection with a TCP reset; how many were cut."""
        with self._lock:
            cut = [connection for connection in self._open if not connection.ended.is_set()]
            self._open = []
        for connection in cut:
            connection.cut.set()
        self.resets += len(cut)
        return len(cut)

    @contextlib.contextmanager
    def refusing(self) -> Iterator[None]:
        """Cut every connection and reset each new one until the block ends."""
        self._refusing.set()
        self.reset()
        try:
            yield
        finally:
            self._refusing.clear()

    def stall(self, seconds: float) -> None:
        """Forward no byte on any connection, open or new, for ``seconds`` from now; returns
        at once (the caller's event loop goes on). ``stall(0)`` ends a stall early."""
        self._stall.until = time.monotonic() + seconds

    @property
    def stalled(self) -> bool:
        return self._stall.active()

    def close(self) -> None:
        self._closed.set()
        self.reset()
        if self._acceptor.is_alive():
            self._acceptor.join()
        for thread in self._threads:
            thread.join()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            try:
                if self._refusing.is_set():
                    raise ConnectionRefusedError
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            connection = _Connection(client, upstream, self._stall)
            with self._lock:
                self._open.append(connection)
            thread = threading.Thread(target=connection.pump, name="fault-proxy-pump", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()
