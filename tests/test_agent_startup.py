"""What a real agent imports on its way to the first answer (issue 14, agent start-up).

The agent is started the way hosts and tests start it (:class:`trinit.host.LocalAgent`)
with ``PYTHONPROFILEIMPORTTIME=1`` in its environment: the interpreter then writes one line
per imported module to stderr, which is the agent's log, in order with the agent's own log
lines. No timing is asserted; what is pinned is which modules load, and which load only
after the API serves (docs/benchmarks.md "Agent start", docs/architecture.md).

``-X importtime`` logs imports made by ``import`` statements, not those made through
``importlib.import_module`` (``trinit._lazy``'s package exports): a lazily exported module
is recognised by what it imports itself (``trinit.io._transport`` by ``trinit.io._peer``,
the pumps and the PTY relay by ``trinit.io._fd`` and ``trinit.io._copy``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trinit._proto import sandbox_pb2 as pb
from trinit.host import LocalAgent

_IMPORT = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$")

#: purerpc's package (its client, anyio and anyio's socket/TLS layers): the agent serves
#: with trinit.rpc and never needs it (trinit._proto.sandbox_grpc imports it only for
#: purerpc's own Service object or an UNIMPLEMENTED answer).
NEVER = ("purerpc", "anyio", "async_generator", "typing_extensions")

#: the supervision tree: built after the API serves (trinit._owners)
AFTER_SERVING = (
    "trinit.nursery",
    "trinit.exec",
    "trinit.io._fd",  # the pumps and the PTY relay
    "trinit.io._copy",  # the pumps' splice loop
    "trinit.cgroup",
)


def _is_in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


#: what the agent's libraries import but the agent never runs (trinit._deferred): trio's
#: TLS and DTLS support (libssl, libcrypto), protobuf's pure-Python messages
DEFERRED = ("ssl", "_ssl", "hmac", "_hashlib", "google.protobuf.text_format", "pickle")


class IdleAgent:
    def __init__(self, log: list[str], maps: str) -> None:
        self.log = log
        self.maps = maps  # /proc/PID/maps of the idle agent


#: A ``sitecustomize`` for the agent under test. It writes each socket bind (an audit hook)
#: and the logging call of the "serving on" line to stderr at once, in order with the
#: import lines. The agent's own log lines come from a writer thread (trinit._logwriter) and
#: may land after imports that followed them.
_BIND_MARKER = """\
import logging, os, sys

def _bind(event, args):
    if event == "socket.bind":
        os.write(2, ("audit: socket.bind %r\\n" % (args[1],)).encode())

sys.addaudithook(_bind)

_handle = logging.Logger.handle

def _handle_marking_serving(self, record):
    if str(record.msg).startswith("serving on "):
        os.write(2, b"audit: serving\\n")
    return _handle(self, record)

logging.Logger.handle = _handle_marking_serving
"""


@pytest.fixture(scope="module")
def idle_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdleAgent]:
    """An agent that answered a Getenv and then built its registry (idle)."""
    site = tmp_path_factory.mktemp("bind-marker")
    (site / "sitecustomize.py").write_text(_BIND_MARKER)
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPROFILEIMPORTTIME", "1")
    mp.setenv("PYTHONPATH", str(site))
    try:
        agent = LocalAgent.start(log_level="debug", cgroups=False)
    finally:
        mp.undo()
    try:
        reply = agent.host.stub.Getenv(pb.GetenvRequest(key="PATH"), timeout=10)
        assert reply.HasField("value")
        deadline = time.monotonic() + 20
        while "trinit.nursery._registry" not in _modules(agent.log().splitlines()):
            assert time.monotonic() < deadline, agent.log()[-3000:]
            time.sleep(0.05)
        yield IdleAgent(agent.log().splitlines(), Path(f"/proc/{agent.pid}/maps").read_text())
    finally:
        agent.stop()
        agent.remove()


@pytest.fixture(scope="module")
def agent_log(idle_agent: IdleAgent) -> list[str]:
    return idle_agent.log


def _modules(lines: list[str]) -> list[str]:
    return [m.group(1) for line in lines if (m := _IMPORT.match(line))]


def _serving_line(lines: list[str]) -> int:
    """The logging call of "serving on ..." (marked synchronously, see _BIND_MARKER)."""
    return next(i for i, line in enumerate(lines) if line == "audit: serving")


def _listening_line(lines: list[str]) -> int:
    """The bind of the API's socket (written synchronously); listen() follows it at once."""
    return next(
        i
        for i, line in enumerate(lines)
        if line.startswith("audit: socket.bind") and "guest_1024" in line
    )


def test_purerpc_client_and_anyio_are_never_imported(agent_log: list[str]) -> None:
    modules = _modules(agent_log)
    assert "trio" in modules and "trinit.rpc._adapter" in modules  # the profile is there
    assert [m for m in modules if _is_in(m, NEVER)] == []


def test_the_supervision_tree_loads_after_the_api_serves(agent_log: list[str]) -> None:
    serving = _serving_line(agent_log)
    before = _modules(agent_log[:serving])
    after = _modules(agent_log[serving:])
    assert [m for m in before if _is_in(m, AFTER_SERVING)] == []
    assert "trinit.nursery._registry" in after  # built unasked once the grace is over
    # what serving needs is there before it
    for needed in ("trinit.rpc._adapter", "trinit._proto.sandbox_pb2", "trinit.io._peer"):
        assert needed in before


def test_the_servicer_and_http2_load_while_the_listener_already_accepts(
    agent_log: list[str],
) -> None:
    """protobuf's runtime, the generated messages and the HTTP/2 server are imported after
    listen(): a host that is already dialling connects and sends its request meanwhile
    (trinit._agent)."""
    listening = _listening_line(agent_log)
    serving = _serving_line(agent_log)
    assert listening < serving
    before = _modules(agent_log[:listening])
    between = _modules(agent_log[listening:serving])
    for module in ("trinit._proto.sandbox_pb2", "google.protobuf.descriptor", "trinit.rpc._http2"):
        assert module not in before
        assert module in between


def test_what_the_libraries_import_but_the_agent_never_runs_stays_unloaded(
    idle_agent: IdleAgent,
) -> None:
    """ssl, hmac and protobuf's pure-Python messages are deferred (trinit._deferred): the
    idle agent has neither run them nor mapped libssl and libcrypto (3.5 MiB resident)."""
    modules = _modules(idle_agent.log)
    assert "trio" in modules and "trinit.nursery._registry" in modules
    assert [m for m in modules if m in DEFERRED] == []
    mapped = {line.split()[-1] for line in idle_agent.maps.splitlines() if "/" in line}
    assert [p for p in mapped if "libcrypto" in p or "libssl" in p] == []
