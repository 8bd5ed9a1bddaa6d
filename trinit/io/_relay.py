"""Bidirectional byte relay between two sockets (ProxyVsock connections).

:func:`relay` owns both sockets for its whole life and closes both when it returns, however it
returns. Each direction is a :class:`~trinit.io._copy.Copier` splicing through its own private
pipe (no copy through Python), falling back to a bounded buffer.

Half-close is preserved, as vminitd does: when one side reaches EOF the relay shuts down
writing on the other side (``SHUT_WR``) and the opposite direction keeps flowing. The relay
ends when both directions reached EOF, when a side's EOF comes with a hang-up (its peer closed
the connection entirely rather than half-closing it: nothing can flow back to it), or at the
first I/O error in either direction (a reset tears the whole connection down).
"""

from __future__ import annotations

import logging
import os
import select
import socket

import trio

from ._copy import Copier, Ending, SpliceMode

__all__ = ["relay"]

log = logging.getLogger(__name__)


def _hung_up(sock: trio.socket.SocketType) -> bool:
    """Both directions of ``sock`` are shut (its peer closed, or reset), per poll(2) now."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


async def relay(
    a: trio.SocketStream,
    b: trio.SocketStream,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Copy a -> b and b -> a until both directions hit EOF or one fails; close both.

    Reports started at once (for ``nursery.start``). Cancellation stops both directions at
    once and closes both sockets; bytes in flight inside the relay's pipes are dropped.
    """
    try:
        for stream in (a, b):
            os.set_blocking(stream.socket.fileno(), False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_one_way, a, b, nursery.cancel_scope)
            nursery.start_soon(_one_way, b, a, nursery.cancel_scope)
            task_status.started()
    finally:
        a.socket.close()
        b.socket.close()


async def _one_way(src: trio.SocketStream, dst: trio.SocketStream, both: trio.CancelScope) -> None:
    copier = Copier(src.socket, dst.socket, SpliceMode.THROUGH_PIPE)
    outcome = await copier.run()
    if outcome.ending is Ending.EOF:
        try:
            dst.socket.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer is already gone; the other direction will notice
        if _hung_up(src.socket):
            # Not a half-close: src's peer closed its end entirely, so nothing the other
            # direction moves can reach it. The connection is over (vminitd: EPOLLHUP).
            log.debug("relay: peer closed, tearing down")
            both.cancel()
        return
    log.debug("relay: tearing down after %s", outcome.error)
    both.cancel()
