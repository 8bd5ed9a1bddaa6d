"""gRPC serving for trinit: purerpc servicers on our own trio HTTP/2 server loop.

See :mod:`trinit.rpc._adapter` for the purerpc defects this package works around.
"""

from ._adapter import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MESSAGE_BYTES, serve

__all__ = ["DEFAULT_MAX_CONNECTIONS", "DEFAULT_MAX_MESSAGE_BYTES", "serve"]
