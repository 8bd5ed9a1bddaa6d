"""Socket proxies between the guest's unix sockets and the host's vsock ports (ProxyVsock).

Ownership: the ProxyTable runs in the agent's root nursery; each proxy id is one task with
its own nursery holding the listener's accept loop and one relay task per connection.
StopVsockProxy cancels that nursery: the listener closes, the INTO socket file is removed,
and (unlike vminitd, which lets them run to EOF) relayed connections are closed too, so
nothing outlives its owner.

- INTO (a host service inside the guest): listen on a unix socket at ``guestPath``; each
  accepted connection dials the host's ``vsock_port`` through the transport.
- OUT_OF (a guest service for the host): listen on the transport's guest port
  ``vsock_port``; each accepted connection connects to the unix socket at ``guestPath``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable

import trio

from trinit import errors
from trinit._log import fields
from trinit.io import Transport, relay

log = logging.getLogger("trinit.proxy")

INTO = 0
OUT_OF = 1
_BACKLOG = 128


def _prepare_socket_path(path: str) -> None:
    """Create the parents of ``path`` and remove a stale file there (vminitd unlinks too)."""
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    try:
        if os.path.lexists(path):
            os.unlink(path)
    except IsADirectoryError as exc:
        raise errors.Internal(f"{path} is a directory") from exc


async def _unix_listener(path: str, permissions: int | None) -> trio.SocketListener:
    """Listen at ``path`` (parents created, stale file replaced), mode ``permissions`` or
    0777 as vminitd leaves it. The mode is set on the socket inode before bind so no wider
    mode is ever visible, then fixed up after bind (the umask may have removed bits)."""
    await trio.to_thread.run_sync(_prepare_socket_path, path)
    mode = 0o777 if permissions is None else permissions & 0o7777
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), mode)
        await sock.bind(path)
        os.chmod(path, mode)
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


class VsockProxy:
    def __init__(
        self,
        proxy_id: str,
        action: int,
        listener: trio.abc.Listener[trio.SocketStream],
        dial: Callable[[], Awaitable[trio.SocketStream]],
        socket_file: str | None,
    ) -> None:
        self.proxy_id = proxy_id
        self.action = action
        self._listener = listener
        self._dial = dial
        self._socket_file = socket_file
        self._cancel = trio.CancelScope()
        self._done = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self._cancel:
                async with trio.open_nursery() as connections:
                    task_status.started()
                    while True:
                        try:
                            inbound = await self._listener.accept()
                        except (trio.BrokenResourceError, OSError) as exc:
                            log.warning(
                                f"proxy accept failed: {exc}", extra=fields(proxy=self.proxy_id)
                            )
                            await trio.sleep(0.1)
                            continue
                        connections.start_soon(self._connect, inbound)
        finally:
            with trio.CancelScope(shield=True):
                await self._listener.aclose()
            if self._socket_file is not None:
                try:
                    os.unlink(self._socket_file)
                except OSError:
                    pass
            self._done.set()

    async def _connect(self, inbound: trio.SocketStream) -> None:
        try:
            outbound = await self._dial()
        except OSError as exc:
            log.warning(f"proxy dial failed: {exc}", extra=fields(proxy=self.proxy_id))
            await inbound.aclose()
            return
        await relay(inbound, outbound)

    async def stop(self) -> None:
        self._cancel.cancel()
        with trio.CancelScope(shield=True):
            await self._done.wait()


class ProxyTable:
    def __init__(self, nursery: trio.Nursery, transport: Transport) -> None:
        self._nursery = nursery
        self._transport = transport
        self._proxies: dict[str, VsockProxy] = {}

    async def start(
        self, proxy_id: str, action: int, port: int, guest_path: str, permissions: int | None
    ) -> None:
        if not proxy_id:
            raise errors.InvalidArgument("proxy id is empty")
        if proxy_id in self._proxies:
            raise errors.AlreadyExists(f"proxy {proxy_id} already exists")
        if not guest_path or "\0" in guest_path:
            raise errors.InvalidArgument(f"invalid guestPath {guest_path!r}")
        listener: trio.abc.Listener[trio.SocketStream]
        if action == INTO:
            listener = await _unix_listener(guest_path, permissions)

            async def dial_host() -> trio.SocketStream:
                return await self._transport.dial(port)

            proxy = VsockProxy(proxy_id, action, listener, dial_host, guest_path)
        elif action == OUT_OF:
            listener = await self._transport.listen(port)

            async def dial_guest() -> trio.SocketStream:
                return await trio.open_unix_socket(guest_path)

            proxy = VsockProxy(proxy_id, action, listener, dial_guest, None)
        else:
            raise errors.InvalidArgument(f"unknown proxy action {action}")
        if proxy_id in self._proxies:  # another call won the race while we listened
            await listener.aclose()
            raise errors.AlreadyExists(f"proxy {proxy_id} already exists")
        self._proxies[proxy_id] = proxy
        await self._nursery.start(proxy.run)
        log.info("proxy started", extra=fields(proxy=proxy_id, port=port, path=guest_path))

    async def stop(self, proxy_id: str) -> None:
        proxy = self._proxies.pop(proxy_id, None)
        if proxy is None:
            raise errors.NotFound(f"proxy {proxy_id} not found")
        await proxy.stop()
        log.info("proxy stopped", extra=fields(proxy=proxy_id))

    async def stop_all(self) -> None:
        for proxy_id in list(self._proxies):
            await self.stop(proxy_id)
