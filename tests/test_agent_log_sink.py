"""A real agent whose stderr (its console) is a pipe: a slow or stuck console must never
block PID 1's event loop, and a console that is read loses nothing.

The agent logs at debug (a line per RPC); the pipe is shrunk to one page, so a few dozen
RPCs fill it. The queue's bound and its drop count are unit-tested in
``tests/test_log_writer.py``.
"""

from __future__ import annotations

import fcntl
import os
import threading

from trinit._proto import sandbox_pb2 as pb
from trinit.host import LocalAgent

CALLS = 300


class Reader:
    """Reads a pipe to EOF in a thread, once started."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while chunk := os.read(self.fd, 65536):
            self.data += chunk

    def start(self) -> Reader:
        self.thread.start()
        return self

    def finish(self) -> str:
        self.thread.join(30)
        assert not self.thread.is_alive(), "the agent's stderr never reached EOF"
        os.close(self.fd)
        return self.data.decode(errors="replace")


def _small_pipe() -> tuple[int, int]:
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    return read_end, write_end


def _calls(agent: LocalAgent) -> None:
    for n in range(CALLS):
        agent.host.stub.Setenv(pb.SetenvRequest(key=f"K{n}", value="v"), timeout=10)


def test_an_unread_console_does_not_block_the_agent() -> None:
    read_end, write_end = _small_pipe()
    reader = Reader(read_end)
    try:
        agent = LocalAgent.start(log_level="debug", output=write_end)
    except BaseException:
        os.close(write_end)
        reader.start().finish()
        raise
    os.close(write_end)
    try:
        _calls(agent)  # nobody reads: before the fix the loop blocked in write(2) here
        reply = agent.host.stub.Getenv(pb.GetenvRequest(key=f"K{CALLS - 1}"), timeout=10)
        assert reply.value == "v"
    finally:
        reader.start()
        code = agent.stop()
        agent.remove()
    output = reader.finish()
    assert code == 0, output[-3000:]
    assert output.count("Setenv OK") == CALLS  # nothing dropped: the queue held it all
    assert output.rstrip().endswith("stopped"), output[-2000:]


def test_a_read_console_gets_every_line_in_order() -> None:
    read_end, write_end = _small_pipe()
    reader = Reader(read_end).start()
    try:
        agent = LocalAgent.start(log_level="debug", output=write_end)
    finally:
        os.close(write_end)
    try:
        _calls(agent)
    finally:
        code = agent.stop()
        agent.remove()
    output = reader.finish()
    assert code == 0, output[-3000:]
    assert output.count("Setenv OK") == CALLS
    assert "dropped" not in output
    lines = output.splitlines()
    assert lines[0].split()[1] in ("info", "debug", "notice")  # whole lines, in order
    stamps = [line.split()[0] for line in lines if line[:2] == "20"]
    assert stamps == sorted(stamps)
    assert lines[-1].endswith("stopped")
