"""``FaultProxy`` over a loopback echo server: a stall holds connections open and moves no
byte until it ends; a reset cuts them."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from ctrltrace.envtest import FaultProxy


@pytest.fixture
def echo() -> Iterator[int]:
    """A server on loopback that sends back what it gets, one connection at a time."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)  # to see ``done``: closing the socket does not end an accept()
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            with client, contextlib.suppress(ConnectionResetError):  # the proxy's cut
                while data := client.recv(1024):
                    client.sendall(data)

    thread = threading.Thread(target=serve)
    thread.start()
    yield server.getsockname()[1]
    done.set()
    thread.join()
    server.close()


def test_a_stall_forwards_nothing_until_it_ends_and_keeps_the_connection(echo: int) -> None:
    with (
        FaultProxy("127.0.0.1", echo) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client,
    ):
        client.sendall(b"before")
        assert client.recv(64) == b"before"
        proxy.stall(60)
        stalled = [proxy.stalled]
        client.sendall(b"during")
        client.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.recv(64)
        proxy.stall(0)  # over: what waited goes through, on the same connection
        client.settimeout(5)
        stalled.append(proxy.stalled)
        assert stalled == [True, False]
        assert client.recv(64) == b"during"
        assert proxy.reset() == 1
        with pytest.raises(ConnectionResetError):  # cut with a reset, not closed
            client.recv(64)
