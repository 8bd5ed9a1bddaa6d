"""Byte movement between trinit's children and the host.

Owns: raw fd ownership (:class:`OwnedFd`, :func:`make_pipe`), the host transports (vsock or
unix sockets, :class:`Transport`), stdio pumps for pipes (:class:`OutputPump`,
:class:`InputPump`), the PTY relay (:class:`PtyRelay`) and the socket relay of ProxyVsock
(:func:`relay`). Everything here closes what it owns when it ends or is cancelled.

The names load their module on first use (``trinit._lazy``): the agent needs only the
transport to start serving; the pumps, the PTY relay (termios) and the splice copy loop
come with the container registry, after the first RPC (``trinit._owners``).
"""

from typing import TYPE_CHECKING

from trinit._lazy import lazy_exports

if TYPE_CHECKING:
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

__getattr__ = lazy_exports(
    __name__,
    {
        "PIPE_SIZE": "._fd",
        "SEND_BUFFER": "._fd",
        "OwnedFd": "._fd",
        "enlarge_send_buffer": "._fd",
        "make_pipe": "._fd",
        "PtyRelay": "._pty",
        "InputPump": "._pump",
        "OutputPump": "._pump",
        "relay": "._relay",
        "DIAL_RETRY_SECONDS": "._transport",
        "Transport": "._transport",
        "UnixTransport": "._transport",
        "VsockTransport": "._transport",
        "dial_with_retry": "._transport",
        "parse_transport": "._transport",
        "socket_is_live": "._transport",
    },
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
