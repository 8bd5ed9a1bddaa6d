"""The agent: trinit's main job, serving SandboxContext to the host.

Start-up order: listen; import the servicer and the HTTP/2 server (protobuf's runtime and
the generated messages, ``trinit.rpc``) while a host that is already dialling connects and
sends its first request into the listen backlog; serve the gRPC API in the root nursery;
then (``trinit._owners``) the reaper (the only waitpid caller), the container registry and
the proxy table are built in the root nursery when the first RPC needs them or shortly
after serving began, and the exec fork server is started. The host's first calls are
answered before any of the supervision tree is imported. SIGTERM/SIGINT from a trusted
sender (``trinit._stopsignals``: not a container sharing our PID namespace) delete every
container (killing and reaping their processes), sync, and exit 0.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import trio

from trinit import _memtrace as memtrace
from trinit._linux import set_child_subreaper
from trinit._owners import DeferredOwners, OwnersConfig, build_owners
from trinit._stopsignals import StopSignals, block_stop_signals
from trinit.errors import TrinitError, describe
from trinit.io import Transport, UnixTransport, parse_transport

log = logging.getLogger("trinit.agent")


@dataclass(frozen=True)
class AgentConfig:
    transport: str = "vsock"
    port: int = 1024
    host_cid: int = 2
    drain_grace: float = 2.0
    cgroup_root: str = "/sys/fs/cgroup"
    stop_grace: float = 2.0
    allow_local_vsock: bool = False
    """Accept API and proxy connections from this guest (vsock CID 1, own CID); tests only."""
    dial_retry: float = 2.0
    """Seconds to keep retrying a host port that is not accepting connections yet."""
    entry_point: str = "/sbin/vminitd"
    """trinit's entry point file as the host bind-mounts it into containers (``/.cz-init``,
    the pause container's ``/sbin/vminitd``): recognised by inode and run in-process."""
    vm_init: bool = False
    """trinit is the VM's PID 1: SetupEmulator may mount binfmt_misc on demand."""


class StartupError(Exception):
    """The agent cannot start; its message is one line for the operator."""


SUN_PATH_MAX = 108
"""sizeof(sockaddr_un.sun_path), the terminating NUL included."""


def check_startup(
    config: AgentConfig,
    *,
    socket_factory: Callable[[int, int], socket.socket] = socket.socket,
) -> None:
    """Refuse to start, with one line that says what to do, for the mistakes a new user
    makes first: not root, a unix directory that does not exist, a socket path the kernel
    cannot bind, a kernel without AF_VSOCK. Each of these would otherwise surface later as
    a bare errno (or, for not-root, as an agent that starts and then fails every RPC).

    ``socket_factory`` is ``socket.socket``; tests pass one that fails like a kernel without
    vsock, which cannot be provoked on a machine that has it (AF_VSOCK is not per-netns).
    """
    if os.geteuid() != 0:
        raise StartupError(
            "the agent must run as root: it creates namespaces, mounts and cgroups "
            "(run it with sudo, or as PID 1 of a VM)"
        )
    if config.transport.startswith("unix:"):
        directory = config.transport[len("unix:") :]
        if not os.path.isdir(directory):
            what = "is not a directory" if os.path.exists(directory) else "does not exist"
            raise StartupError(
                f"--transport unix:{directory}: {directory} {what} (create it: mkdir -p "
                f"{directory})"
            )
        path = UnixTransport(directory).guest_path(config.port)
        size = len(os.fsencode(path)) + 1
        if size > SUN_PATH_MAX:
            raise StartupError(
                f"--transport unix:{directory}: the socket path {path} needs {size} bytes, "
                f"the kernel's limit is {SUN_PATH_MAX} bytes: use a shorter directory"
            )
    elif config.transport == "vsock":
        try:
            socket_factory(socket.AF_VSOCK, socket.SOCK_STREAM).close()
        except OSError as exc:
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.ENODEV):
                raise StartupError(f"cannot create an AF_VSOCK socket: {describe(exc)}") from exc
            raise StartupError(
                "this kernel has no AF_VSOCK (load it: modprobe vmw_vsock_virtio_transport; "
                "outside a VM use --transport unix:DIR)"
            ) from exc


class _SocketFile:
    """The unix transport's API socket file, removed when the agent exits, but only if it
    is still the one this agent bound (same inode): never another agent's socket."""

    def __init__(self, transport: Transport, port: int) -> None:
        self.path: str | None = None
        self.inode = 0
        if isinstance(transport, UnixTransport):
            self.path = transport.guest_path(port)
            try:
                self.inode = os.lstat(self.path).st_ino
            except OSError:
                self.path = None

    def remove(self) -> None:
        if self.path is None:
            return
        try:
            if os.lstat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass


async def _listen(transport: Transport, port: int) -> trio.abc.Listener[trio.SocketStream]:
    """The API listener, before anything else starts: a failure is a one-line StartupError
    (a live socket of another agent is never taken over, see trinit.io)."""
    try:
        return await transport.listen(port)
    except (TrinitError, OSError, ValueError) as exc:
        reason = exc.message if isinstance(exc, TrinitError) else describe(exc)
        raise StartupError(
            f"cannot listen on {transport.describe()} port {port}: {reason}"
        ) from exc


async def run_agent(
    config: AgentConfig, on_serving: Callable[[trio.Nursery], None] | None = None
) -> None:
    """Serve until SIGTERM/SIGINT. ``on_serving(root)`` runs once the API listens (the PID-1
    boot uses it to start its late stage in the root nursery, see ``trinit._pid1``)."""
    check_startup(config)
    transport = parse_transport(
        config.transport, config.host_cid, config.allow_local_vsock, config.dial_retry
    )
    pid1 = os.getpid() == 1
    if not pid1:  # orphans of our children come back to us, so the reaper sees them all
        set_child_subreaper()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    block_stop_signals()  # before any worker thread starts: threads inherit the mask
    listener = await _listen(transport, config.port)
    log.debug(f"listening on {transport.describe()} port {config.port}")
    socket_file = _SocketFile(transport, config.port)
    try:
        await _serve(config, transport, listener, on_serving)
    finally:
        socket_file.remove()
    log.info("stopped")


async def _serve(
    config: AgentConfig,
    transport: Transport,
    listener: trio.abc.Listener[trio.SocketStream],
    on_serving: Callable[[trio.Nursery], None] | None,
) -> None:
    # Imported once the listener exists (see the module doc): the host's connection and
    # first request wait in the backlog meanwhile instead of after these imports.
    from trinit._server import Servicer
    from trinit.rpc import serve

    owners = DeferredOwners(
        partial(
            build_owners,
            OwnersConfig(transport, config.cgroup_root, config.drain_grace, config.entry_point),
        )
    )
    with StopSignals() as stop_signals:  # only trusted senders (see trinit._stopsignals)
        async with trio.open_nursery() as root:
            servicer = Servicer(owners.get, transport.dial, mount_binfmt_misc=config.vm_init)
            await root.start(serve, listener, servicer)
            log.info(f"serving on {transport.describe()} port {config.port}")
            if on_serving is not None:
                on_serving(root)
            # the reaper, registry, proxies and the fork server: after serving, never
            # delaying the first RPC (trinit._owners)
            root.start_soon(owners.run, root)
            if frames := memtrace.frames_wanted():  # developer switch, off by default
                root.start_soon(memtrace.run, frames)
            stop = await stop_signals.wait()
            log.info(f"received {stop.name}, shutting down")
            await owners.shutdown(config.stop_grace)
            await trio.to_thread.run_sync(os.sync)
            root.cancel_scope.cancel()
