"""Who may stop the agent with a signal: a real agent (PID 1 of fresh namespaces) and a root
container that shares its PID namespace, so it can name PID 1 and signal it.

The container's SIGTERM/SIGINT must be refused (logged, the agent keeps serving); the
parent's SIGTERM from outside the namespace (``LocalAgent.stop``) must still stop it
cleanly. The sender rule itself is unit-tested in ``tests/test_stop_signals.py``.
"""

from __future__ import annotations

import time

from agentlib import Container, log_shows

from trinit._proto import sandbox_pb2 as pb
from trinit.host import LocalAgent

SHARED_PID_NS = [{"type": kind, "path": ""} for kind in ("cgroup", "ipc", "mount", "uts")]


def test_container_sharing_the_pid_namespace_cannot_stop_the_agent(agent: LocalAgent) -> None:
    box = Container(agent.host)
    linux = dict(box.spec(["true"])["linux"], namespaces=SHARED_PID_NS)
    result = box.run(
        ["sh", "-c", "kill -TERM 1 && kill -INT 1 && kill -TERM 1 && echo sent"], linux=linux
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == b"sent\n"
    # a refused signal is logged; give the agent time to act on it, had it accepted it
    assert log_shows(agent, "refused SIGTERM"), agent.log()[-3000:]
    time.sleep(0.5)
    assert agent.alive(), agent.log()[-3000:]
    assert "shutting down" not in agent.log()
    agent.host.stub.Setenv(pb.SetenvRequest(key="STILL", value="serving"), timeout=10)
    again = Container(agent.host).run(["echo", "still serving"])
    assert again.stdout == b"still serving\n"
    log = agent.log()
    assert "refused SIGINT" in log
    # rate-limited: the second SIGTERM within the minute is not a line of its own
    assert log.count("refused SIGTERM") == 1, log[-3000:]


def test_the_parents_sigterm_still_stops_the_agent_cleanly() -> None:
    agent = LocalAgent.start()
    try:
        box = Container(agent.host)
        box.start_init(["sleep", "100000"])
        code = agent.stop()
        log = agent.log()
        assert code == 0, log[-3000:]
        assert "received SIGTERM, shutting down" in log
        assert "refused" not in log
        assert log.rstrip().endswith("stopped"), log[-3000:]
    finally:
        agent.stop()
        agent.remove()
