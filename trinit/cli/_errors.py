"""Exit codes and the one error type the CLI reports (docker/runc conventions).

125 is trinit's own failure (bad flags, an unreachable agent, a broken image, a refused
spec), 126 a command that could not be invoked, 127 one that was not found; any other code
is the command's own status (128+N when a signal N ended it). An error becomes one line on
stderr, never a traceback: :class:`CliError` carries the line and the code.
"""

from __future__ import annotations

import grpc

EXIT_TRINIT = 125
EXIT_CANNOT_INVOKE = 126
EXIT_NOT_FOUND = 127

#: the exec helper's text for a missing program (docs/protocol.md §5.5 step 6)
NOT_FOUND_TEXT = "failed to find target executable"


class CliError(Exception):
    """A failure to report as ``trinit: <message>`` with exit ``code``."""

    def __init__(self, message: str, code: int = EXIT_TRINIT) -> None:
        super().__init__(message)
        self.code = code


def rpc_text(exc: grpc.RpcError) -> str:
    """The agent's one-line error text (its status details), or the status name."""
    details = getattr(exc, "details", None)
    text = details() if callable(details) else None
    if text:
        return str(text)
    code = getattr(exc, "code", None)
    return str(code() if callable(code) else exc)


def start_failure(exc: grpc.RpcError) -> CliError:
    """StartProcess failed: 127 for a missing program, 126 for any other failed invocation
    (not executable, bad working directory, user switch): the command never ran."""
    text = rpc_text(exc)
    code = EXIT_NOT_FOUND if NOT_FOUND_TEXT in text else EXIT_CANNOT_INVOKE
    return CliError(text, code)
