"""A real agent caps its concurrent API connections (real unix sockets to its listener).

Beyond the cap a connection is closed at accept, before a byte is read; a slot frees when a
connection closes. The cap's own unit tests (and the proxy listeners') are in
``tests/test_connection_limit.py``.
"""

from __future__ import annotations

import socket
import time
from contextlib import ExitStack

from agentlib import log_shows

from trinit._proto import sandbox_pb2 as pb
from trinit.host import Host, LocalAgent
from trinit.rpc import DEFAULT_MAX_CONNECTIONS

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def open_connection(path: str) -> tuple[socket.socket, bool]:
    """Connect and send the client preface; True if the agent answered (its SETTINGS),
    False if it closed the connection without a byte."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    try:
        sock.sendall(PREFACE + EMPTY_SETTINGS)
    except (BrokenPipeError, ConnectionResetError):
        return sock, False
    try:
        first = sock.recv(9)
    except ConnectionResetError:
        first = b""
    return sock, bool(first)


def test_connections_beyond_the_cap_are_closed_and_a_slot_frees(agent: LocalAgent) -> None:
    path = str(agent.directory / "guest_1024")
    assert DEFAULT_MAX_CONNECTIONS == 128
    agent.host.close()  # its grpc channel holds a slot until the agent has seen the EOF
    with ExitStack() as stack:
        held: list[socket.socket] = []
        deadline = time.monotonic() + 10
        while len(held) < DEFAULT_MAX_CONNECTIONS:
            sock, answered = open_connection(path)
            stack.callback(sock.close)
            if answered:
                held.append(sock)
            else:
                assert time.monotonic() < deadline, f"connection {len(held) + 1} was refused"
                time.sleep(0.05)
        extra, answered = open_connection(path)
        stack.callback(extra.close)
        assert not answered, "a connection beyond the cap was served"
        assert extra.recv(1) == b"", "the refused connection was not closed"
        # one closes: its slot frees once the agent has seen the EOF
        held.pop().close()
        deadline = time.monotonic() + 10
        while True:
            sock, answered = open_connection(path)
            stack.callback(sock.close)
            if answered:
                break
            assert time.monotonic() < deadline, "the closed connection's slot never freed"
            time.sleep(0.05)
    # every connection closed: the API serves as before
    with Host(agent.transport) as host:
        host.wait_ready(10)
        host.stub.Setenv(pb.SetenvRequest(key="AFTER", value="cap"), timeout=10)
    assert log_shows(agent, "refused an API connection"), agent.log()[-3000:]
