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

``guestPath`` must be absolute. Below a container rootfs it is resolved inside that rootfs
(``openat2(RESOLVE_IN_ROOT)``): a link the container planted on the way never makes the
proxy bind, remove or connect to a socket of the VM outside it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat as stat_mod
from collections.abc import Awaitable, Callable

import trio

from trinit import errors
from trinit._connlimit import ConnectionLimit
from trinit._log import fields
from trinit._ratelimit import RateLimitedLog
from trinit.exec import Located, locate, makedirs_in_root, open_in_root, open_root, split_parent
from trinit.io import Transport, relay, socket_is_live

log = logging.getLogger("trinit.proxy")

MAX_PROXY_CONNECTIONS = 128
"""Connections one proxy relays at once; more are closed at accept (``trinit._connlimit``).
An INTO socket lies in a container's reach, and each connection costs two sockets."""
REFUSAL_LOG_INTERVAL = 10.0

INTO = 0
OUT_OF = 1
_BACKLOG = 128


def _prepare_socket_path(path: str) -> None:
    """Create the parents of ``path`` and remove a stale file there (vminitd unlinks too),
    but never a socket something still listens on (another proxy's, the API's):
    ALREADY_EXISTS instead of silently taking it over."""
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    try:
        if os.path.lexists(path):
            if stat_mod.S_ISSOCK(os.lstat(path).st_mode) and socket_is_live(path):
                raise errors.AlreadyExists(f"{path} is in use: another process is listening on it")
            os.unlink(path)
    except IsADirectoryError as exc:
        raise errors.Internal(f"{path} is a directory") from exc


def _plain_listener(path: str, mode: int) -> socket.socket:
    """vminitd's INTO listener for a path outside every rootfs, used as given."""
    _prepare_socket_path(path)
    return _bound_socket(path, mode, lambda: os.chmod(path, mode))


def _bound_socket(address: str, mode: int, fix_mode: Callable[[], None]) -> socket.socket:
    """A listening unix socket bound at ``address``. The mode is set on the socket inode
    before bind so no wider mode is ever visible, then fixed up after bind (the umask may
    have removed bits). It listens straight after bind: a client that sees the file must not
    find it refusing."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        os.fchmod(sock.fileno(), mode)
        sock.bind(address)
        sock.listen(_BACKLOG)
        fix_mode()
    except BaseException:
        sock.close()
        raise
    return sock


def _in_root_parent(where: Located, *, create: bool = False) -> tuple[int, int, str]:
    """(root fd, fd of the parent directory resolved inside the rootfs, final name); with
    ``create`` the parent is made first (mkdir -p inside the rootfs)."""
    assert where.root is not None
    parent, name = split_parent(where.rel)
    if name in ("", ".", ".."):
        raise errors.InvalidArgument(f"invalid guestPath {where.path!r}: no file name")
    root = open_root(where.root)
    try:
        if create:
            makedirs_in_root(root, parent, 0o755)
        return root, open_in_root(root, parent, os.O_PATH | os.O_DIRECTORY), name
    except BaseException:
        os.close(root)
        raise


def _in_root_listener(where: Located, mode: int) -> socket.socket:
    """The INTO listener for a path in a container rootfs (the container may have planted
    links anywhere on it).

    The parent is created and opened inside the rootfs (``openat2(RESOLVE_IN_ROOT)``), the
    stale entry removed with ``unlinkat`` in that fd, and the socket bound at
    ``/proc/self/fd/<parent fd>/<name>``. Why this is safe: the walk through the magic link
    lands on exactly the directory inode already resolved inside the rootfs (nothing the
    container controls is looked up again), and bind(2) never follows a link at its final
    component (anything there, raced in or not, fails it with EADDRINUSE). The mode is then
    set through an ``O_PATH | O_NOFOLLOW`` fd of what was bound, after checking it is a
    socket, so a raced-in link is never chmod'ed through.
    """
    root, parent_fd, name = _in_root_parent(where, create=True)
    try:
        try:
            os.unlink(name, dir_fd=parent_fd)
        except FileNotFoundError:
            pass
        except IsADirectoryError as exc:
            raise errors.Internal(f"{where.path} is a directory") from exc

        def fix_mode() -> None:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
            try:
                if not stat_mod.S_ISSOCK(os.fstat(fd).st_mode):
                    raise errors.Internal(f"{where.path} was replaced while binding")
                os.chmod(f"/proc/self/fd/{fd}", mode)
            finally:
                os.close(fd)

        return _bound_socket(f"/proc/self/fd/{parent_fd}/{name}", mode, fix_mode)
    finally:
        os.close(parent_fd)
        os.close(root)


def _remove_socket_file(where: Located) -> None:
    """Remove the INTO socket file; in a rootfs, ``unlinkat`` in the parent resolved there."""
    if where.root is None:
        os.unlink(where.path)
        return
    root, parent_fd, name = _in_root_parent(where)
    try:
        os.unlink(name, dir_fd=parent_fd)
    finally:
        os.close(parent_fd)
        os.close(root)


async def _unix_listener(where: Located, permissions: int | None) -> trio.SocketListener:
    """Listen at ``where`` (parents created, stale file replaced), mode ``permissions`` or
    0777 as vminitd leaves it."""
    mode = 0o777 if permissions is None else permissions & 0o7777
    if where.root is None:
        sock = await trio.to_thread.run_sync(_plain_listener, where.path, mode)
    else:
        sock = await trio.to_thread.run_sync(_in_root_listener, where, mode)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


def _open_socket_inode(where: Located) -> int:
    """An ``O_PATH`` fd of the socket at ``where``, resolved inside its rootfs. connect(2)
    follows a link at its final component, so the OUT_OF dial connects to
    ``/proc/self/fd/<this fd>``: exactly the inode resolved here. Raises OSError."""
    assert where.root is not None
    root = open_root(where.root)
    try:
        fd = open_in_root(root, where.rel, os.O_PATH)
    finally:
        os.close(root)
    if not stat_mod.S_ISSOCK(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.ECONNREFUSED, f"{where.path} is not a socket")
    return fd


async def _connect_unix(where: Located) -> trio.SocketStream:
    if where.root is None:
        return await trio.open_unix_socket(where.path)
    fd = await trio.to_thread.run_sync(_open_socket_inode, where)
    try:
        return await trio.open_unix_socket(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


class VsockProxy:
    def __init__(
        self,
        proxy_id: str,
        action: int,
        listener: trio.abc.Listener[trio.SocketStream],
        dial: Callable[[], Awaitable[trio.SocketStream]],
        socket_file: Located | None,
        max_connections: int = MAX_PROXY_CONNECTIONS,
    ) -> None:
        self.proxy_id = proxy_id
        self.action = action
        self._listener = listener
        self._dial = dial
        self._socket_file = socket_file
        self._cancel = trio.CancelScope()
        self._done = trio.Event()
        refusals = RateLimitedLog(log, interval=REFUSAL_LOG_INTERVAL, clock=trio.current_time)
        self._limit = ConnectionLimit(
            max_connections, refusals, f"a connection to proxy {proxy_id}"
        )

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
                        if not self._limit.admit():
                            await trio.aclose_forcefully(inbound)
                            continue
                        connections.start_soon(self._connect, inbound)
        finally:
            with trio.CancelScope(shield=True):
                await self._listener.aclose()
            if self._socket_file is not None:
                try:
                    await trio.to_thread.run_sync(_remove_socket_file, self._socket_file)
                except (OSError, errors.TrinitError):
                    pass
            self._done.set()

    async def _connect(self, inbound: trio.SocketStream) -> None:
        try:
            try:
                outbound = await self._dial()
            except (OSError, errors.TrinitError) as exc:
                # the far end is missing (a transport dial that gave up is UNAVAILABLE): this
                # connection ends, never the proxy or the agent
                log.warning(f"proxy dial failed: {exc}", extra=fields(proxy=self.proxy_id))
                await inbound.aclose()
                return
            await relay(inbound, outbound)
        finally:
            self._limit.release()

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
        if not guest_path.startswith("/"):
            # vminitd would use trinit's working directory; a host never means that
            raise errors.InvalidArgument(f"guestPath must be absolute: {guest_path!r}")
        where = locate(guest_path)
        listener: trio.abc.Listener[trio.SocketStream]
        if action == INTO:
            listener = await _unix_listener(where, permissions)

            async def dial_host() -> trio.SocketStream:
                return await self._transport.dial(port)

            proxy = VsockProxy(proxy_id, action, listener, dial_host, where)
        elif action == OUT_OF:
            listener = await self._transport.listen(port)

            async def dial_guest() -> trio.SocketStream:
                return await _connect_unix(where)

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
