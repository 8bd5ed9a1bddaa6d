"""Which agent a command talks to: one given by ``--connect``, or an embedded one.

The embedded agent is :class:`trinit.host.LocalAgent`: PID 1 of fresh PID, mount, UTS, IPC
and network namespaces with a private /run and its own cgroup directory, so nothing a
container does reaches this machine (README "Hazards"). It lives exactly as long as the
``with`` block: stopping it deletes every container, its namespaces take every mount with
them, and its directory and cgroup are removed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from trinit.host import Host, LocalAgent, VsockConnectError

from ._errors import CliError

READY_TIMEOUT = 10.0


@dataclass
class Session:
    host: Host
    #: the agent belongs to this command (and so do its containers)
    embedded: bool
    #: the agent sees this machine's file system (embedded or unix transport), so local
    #: directories such as an unpacked image can be mounted into it by path
    local: bool


def _host_for(target: str) -> Host:
    if target.startswith("unix:"):
        directory = target[5:]
        if not os.path.exists(os.path.join(directory, "guest_1024")):
            raise CliError(f"no agent at {target}: {directory}/guest_1024 does not exist")
        return Host(target)
    cid, _, port = target[6:].partition(":")
    return Host("vsock", guest_cid=int(cid), port=int(port or 1024))


@contextlib.contextmanager
def connect(target: str) -> Iterator[Session]:
    host = _host_for(target)
    try:
        try:
            host.wait_ready(READY_TIMEOUT)
        except VsockConnectError as exc:  # the kernel's answer: CID, port and errno
            raise CliError(f"cannot reach the agent at {target}: {exc}") from None
        except TimeoutError:
            raise CliError(
                f"cannot reach the agent at {target}: not ready after {READY_TIMEOUT:g} s"
            ) from None
        yield Session(host, embedded=False, local=target.startswith("unix:"))
    finally:
        host.close()


@contextlib.contextmanager
def embedded() -> Iterator[Session]:
    if os.geteuid() != 0:
        raise CliError("the embedded agent needs root; or use --connect AGENT")
    try:
        agent = LocalAgent.start(log_level="warning")
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise CliError(f"cannot start the embedded agent: {lines[-1] if lines else exc}") from None
    try:
        yield Session(agent.host, embedded=True, local=True)
    finally:
        agent.stop()
        agent.remove()


def session(target: str | None) -> contextlib.AbstractContextManager[Session]:
    return connect(target) if target else embedded()


def require_connect(target: str | None, command: str) -> str:
    if not target:
        raise CliError(
            f"{command} needs a running agent: --connect unix:DIR|vsock:CID[:PORT] "
            "(or $TRINIT_CONNECT)"
        )
    return target
