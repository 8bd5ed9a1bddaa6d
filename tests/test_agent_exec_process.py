"""How an exec's process reaches its helper: inline (``exec --process-json``) when it is
small, which writes nothing to the bundle, and through ``execs/<id>/process.json`` when it
is too large for one argument, a file DeleteProcess removes. Either way the exec runs the
process it was given, byte for byte."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from agentlib import Container

from trinit.host import LocalAgent
from trinit.nursery._registry import INLINE_PROCESS_LIMIT

PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _execs_dir(agent: LocalAgent, ctr: Container) -> Path:
    """The container's ``execs`` directory as the agent sees it (its own /run)."""
    return Path(f"/proc/{agent.pid}/root/run/container/{ctr.id}/execs")


def _exec(agent: LocalAgent, ctr: Container, exec_id: str, value: str) -> None:
    """Create, check the bundle, start, wait, check the output, delete, check again."""
    spec = ctr.spec(["sh", "-c", 'printf %s "$BIG" | wc -c; printf %s "$BIG" | md5sum'])
    spec["process"]["env"] = [PATH, f"BIG={value}"]
    proc = agent.host.process(ctr.id, spec, process_id=exec_id)
    proc.create()
    try:
        big = len(value) > INLINE_PROCESS_LIMIT
        file = _execs_dir(agent, ctr) / exec_id / "process.json"
        assert file.exists() is big, f"{len(value)} bytes: file {file.exists()}"
        proc.start()
        assert proc.wait(timeout=60) == 0
        proc.join_output()
        data = value.encode()
        expected = f"{len(data)}\n{hashlib.md5(data).hexdigest()}  -\n"
        assert proc.stdout_data.decode() == expected, proc.stderr_data
    finally:
        proc.close()
        proc.delete()
    assert not (_execs_dir(agent, ctr) / exec_id).exists()


def test_small_process_goes_inline_and_large_through_a_removed_file(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    init = ctr.start_init()
    try:
        _exec(agent, ctr, "small", "x" * 1000)
        # quotes, backslashes, non-ASCII and what the shell would expand: all as given
        _exec(agent, ctr, "odd", "a\"b\\c 'd' $HOME `id` é\u2603\n\ttail")
        _exec(agent, ctr, "large", "y" * (INLINE_PROCESS_LIMIT + 4096))
        assert not _execs_dir(agent, ctr).exists() or os.listdir(_execs_dir(agent, ctr)) == []
    finally:
        init.kill(9)
        init.wait(timeout=30)
        init.close()
        init.delete()
