"""OwnedFd and make_pipe: ownership, forgetting the number, waking waiters, pipe setup."""

from __future__ import annotations

import fcntl
import os

import pytest
import trio
import trio.testing

from trinit.io import PIPE_SIZE, OwnedFd, make_pipe

pytestmark = pytest.mark.usefixtures("no_fd_leak")


def test_close_forgets_the_number() -> None:
    read_fd, write_fd = os.pipe()
    owned = OwnedFd(read_fd)
    assert owned.fileno() == read_fd
    assert not owned.closed
    owned.close()
    assert owned.closed
    with pytest.raises(trio.ClosedResourceError):
        owned.fileno()
    # The number is free again: the kernel reuses it at once, and a second close must not
    # touch whatever took it.
    reused = os.dup(write_fd)
    assert reused == read_fd
    owned.close()
    os.fstat(reused)  # still open
    os.close(reused)
    os.close(write_fd)


def test_detach_and_context_manager() -> None:
    read_fd, write_fd = os.pipe()
    owned = OwnedFd(write_fd)
    assert owned.detach() == write_fd
    assert owned.closed
    owned.close()  # no-op: ownership was given away
    os.fstat(write_fd)
    os.close(write_fd)
    with OwnedFd(read_fd) as held:
        assert held.fileno() == read_fd
    assert held.closed
    with pytest.raises(OSError):
        os.fstat(read_fd)
    with pytest.raises(ValueError):
        OwnedFd(-1)


def test_lost_owner_closes_its_fd() -> None:
    read_fd, write_fd = os.pipe()
    owned = OwnedFd(read_fd)
    del owned
    with pytest.raises(OSError):
        os.fstat(read_fd)
    os.close(write_fd)


async def test_close_wakes_a_waiting_task() -> None:
    read_end, write_end = make_pipe()
    woke_with: list[type[BaseException]] = []

    async def waiter() -> None:
        try:
            await trio.lowlevel.wait_readable(read_end.fileno())
        except trio.ClosedResourceError as exc:
            woke_with.append(type(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        read_end.close()
    assert woke_with == [trio.ClosedResourceError]
    write_end.close()


def test_make_pipe() -> None:
    read_end, write_end = make_pipe()
    with read_end, write_end:
        for end in (read_end, write_end):
            assert fcntl.fcntl(end.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC
            assert os.get_blocking(end.fileno())
        assert fcntl.fcntl(read_end.fileno(), fcntl.F_GETPIPE_SZ) == PIPE_SIZE
        os.write(write_end.fileno(), b"ping")
        assert os.read(read_end.fileno(), 10) == b"ping"
        # Separate file descriptions: trinit's end going non-blocking leaves the child's alone.
        os.set_blocking(read_end.fileno(), False)
        assert os.get_blocking(write_end.fileno())


def test_enlarge_send_buffer_unix_and_vsock() -> None:
    import socket

    from trinit.io import SEND_BUFFER, enlarge_send_buffer

    a, b = socket.socketpair()
    with a, b:
        before = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        enlarge_send_buffer(a)
        after = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert after > before and after >= SEND_BUFFER  # the kernel reports twice the request
    try:
        vsock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    except OSError as exc:  # no vsock in this kernel at all
        pytest.skip(f"AF_VSOCK unavailable: {exc}")
    with vsock:
        enlarge_send_buffer(vsock)
        size = vsock.getsockopt(socket.AF_VSOCK, socket.SO_VM_SOCKETS_BUFFER_SIZE)
        assert size == SEND_BUFFER
