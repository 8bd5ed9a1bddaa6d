"""``Process.attach()`` from Python: pipes instead of a terminal, and nothing left behind
(handlers restored, relay thread gone, stdin not read after the exit)."""

from __future__ import annotations

import os
import signal
import threading

from agentlib import Container

from trinit.host import LocalAgent


def test_attach_relays_pipes_and_restores_everything(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGWINCH)}
    try:
        os.write(in_w, b"abc")
        os.close(in_w)  # end of input: the program reads EOF (a pipe stdin is closed)
        proc = agent.host.process(ctr.id, ctr.spec(["sh", "-c", "cat; echo oops >&2; exit 4"]))
        code = proc.attach(stdin_fd=in_r, stdout_fd=out_w, stderr_fd=err_w)
        assert code == 4
        os.close(out_w)
        os.close(err_w)
        assert os.read(out_r, 100) == b"abc"
        assert os.read(err_r, 100) == b"oops\n"
        assert {s: signal.getsignal(s) for s in before} == before
        assert not [t for t in threading.enumerate() if t.name == "attach-relay"]
        proc.delete()
    finally:
        for fd in (in_r, out_r, err_r):
            os.close(fd)


def test_attach_leaves_unread_input_to_the_caller(agent: LocalAgent) -> None:
    """The program exits without reading: the relay stops and the caller's input stays."""
    ctr = Container(agent.host)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        proc = agent.host.process(ctr.id, ctr.spec(["true"]))
        assert proc.attach(stdin_fd=in_r, stdout_fd=out_w, stderr_fd=out_w) == 0
        os.write(in_w, b"typed later")
        assert os.read(in_r, 100) == b"typed later"
        proc.delete()
    finally:
        for fd in (in_r, in_w, out_r, out_w):
            os.close(fd)
