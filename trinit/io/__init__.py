"""Byte movement between trinit's children and the host.

Owns: raw fd ownership (:class:`OwnedFd`, :func:`make_pipe`), the host transports (vsock or
unix sockets, :class:`Transport`), stdio pumps for pipes (:class:`OutputPump`,
:class:`InputPump`), the PTY relay (:class:`PtyRelay`) and the socket relay of ProxyVsock
(:func:`relay`). Everything here closes what it owns when it ends or is cancelled.
"""

from ._fd import PIPE_SIZE, SEND_BUFFER, OwnedFd, enlarge_send_buffer, make_pipe
from ._pty import PtyRelay
from ._pump import InputPump, OutputPump
from ._relay import relay
from ._transport import (
    DIAL_RETRY_SECONDS,
    Transport,
    UnixTransport,
    VsockTransport,
    dial_with_retry,
    parse_transport,
    socket_is_live,
)

__all__ = [
    "DIAL_RETRY_SECONDS",
    "PIPE_SIZE",
    "SEND_BUFFER",
    "InputPump",
    "OutputPump",
    "OwnedFd",
    "PtyRelay",
    "Transport",
    "UnixTransport",
    "VsockTransport",
    "dial_with_retry",
    "enlarge_send_buffer",
    "make_pipe",
    "parse_transport",
    "relay",
    "socket_is_live",
]
