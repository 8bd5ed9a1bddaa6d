"""End to end: a terminal's size is right from the program's first byte (issue 13, part 7).

A real agent, a real PTY and busybox ``stty size`` as the very first thing the program runs:
with nothing to wait for, the size it prints is the size the terminal had when it exec'd.
"""

from __future__ import annotations

from typing import Any

import pytest
from agentlib import Container

from trinit.host import LocalAgent, Process


def _terminal(ctr: Container, kind: str, args: list[str], **process: Any) -> Process:
    """A created (not started) terminal process: the container's init (``kind == "init"``)
    or an exec named ``kind`` (the container's init is started first if it is not yet)."""
    spec = ctr.spec(args, process={"terminal": True, **process})
    if kind == "init":
        proc = ctr.host.process(ctr.id, spec)
    else:
        if not hasattr(ctr, "init"):
            ctr.init = ctr.start_init()  # type: ignore[attr-defined]
        proc = ctr.host.process(ctr.id, spec, process_id=f"{ctr.id}-{kind}")
    proc.create()
    return proc


def _finish(proc: Process) -> list[str]:
    """Wait for exit (status 0) and return the program's output lines."""
    assert proc.wait(timeout=60) == 0
    proc.join_output()
    lines = proc.stdout_data.replace(b"\r\n", b"\n").decode().splitlines()
    proc.close()
    return lines


@pytest.mark.parametrize("kind", ["init", "exec"])
def test_console_size_is_seen_from_the_first_byte(agent: LocalAgent, kind: str) -> None:
    ctr = Container(agent.host)
    proc = _terminal(ctr, kind, ["stty", "size"], consoleSize={"height": 40, "width": 120})
    proc.start()
    assert _finish(proc) == ["40 120"]
    proc.delete()


@pytest.mark.parametrize("kind", ["init", "exec"])
def test_resize_before_start_is_applied_at_start_last_one_wins(
    agent: LocalAgent, kind: str
) -> None:
    ctr = Container(agent.host)
    proc = _terminal(ctr, kind, ["stty", "size"], consoleSize={"height": 40, "width": 120})
    proc.resize(20, 60)
    proc.resize(33, 101)  # the later one wins, over consoleSize too
    proc.start()
    assert _finish(proc) == ["33 101"]
    proc.delete()


def test_resize_before_start_without_console_size(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    proc = _terminal(ctr, "init", ["stty", "size"])
    proc.resize(25, 80)
    proc.start()
    assert _finish(proc) == ["25 80"]
    proc.delete()


def test_resize_after_exit_is_ok_and_changes_nothing(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    proc = _terminal(ctr, "exec", ["stty", "size"], consoleSize={"height": 40, "width": 120})
    proc.start()
    assert _finish(proc) == ["40 120"]
    proc.resize(10, 10)  # EXITED: OK, a no-op
    proc.resize(11, 11)
    assert proc.wait(timeout=60) == 0  # the exit is unchanged
    assert proc.stdout_data.replace(b"\r\n", b"\n") == b"40 120\n"  # and so is the output
    # a new terminal in the same container starts from its own consoleSize, not the late one
    again = _terminal(ctr, "exec-again", ["stty", "size"], consoleSize={"height": 7, "width": 9})
    again.start()
    assert _finish(again) == ["7 9"]
    again.delete()
    proc.delete()
