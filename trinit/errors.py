"""Domain errors and the one table that turns them into gRPC statuses.

Owners (containers, processes, system calls) raise these; they never build gRPC statuses
themselves. The RPC adapter (``trinit.rpc``) calls :func:`to_status` for anything a handler
raises: a :class:`TrinitError` keeps its code and message, any other exception becomes
INTERNAL with a one-line message and never a traceback.

The codes follow vminitd's ContainerizationError table (docs/protocol.md §3).
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """gRPC status codes (the numeric values are the wire values)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class TrinitError(Exception):
    """Base of every error that carries its own gRPC status code."""

    code: Code = Code.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def with_prefix(self, prefix: str) -> TrinitError:
        """The same kind of error with ``"<prefix>: "`` in front (vminitd's operation prefix)."""
        # bypass subclass constructors (ContainerNotFound takes an id, not a message)
        prefixed = type(self).__new__(type(self))
        TrinitError.__init__(prefixed, f"{prefix}: {self.message}")
        return prefixed


class InvalidArgument(TrinitError):
    code = Code.INVALID_ARGUMENT


class NotFound(TrinitError):
    code = Code.NOT_FOUND


class AlreadyExists(TrinitError):
    code = Code.ALREADY_EXISTS


class FailedPrecondition(TrinitError):
    code = Code.FAILED_PRECONDITION


class Unimplemented(TrinitError):
    code = Code.UNIMPLEMENTED


class Internal(TrinitError):
    code = Code.INTERNAL


class Unavailable(TrinitError):
    code = Code.UNAVAILABLE


class DeadlineExceeded(TrinitError):
    code = Code.DEADLINE_EXCEEDED


class Cancelled(TrinitError):
    code = Code.CANCELLED


class ContainerNotFound(NotFound):
    def __init__(self, container_id: str) -> None:
        super().__init__(f"container {container_id} not found")


class ExecNotFound(FailedPrecondition):
    def __init__(self, exec_id: str, container_id: str) -> None:
        super().__init__(f"exec {exec_id} does not exist in container {container_id}")


def describe(exc: BaseException) -> str:
    """One line naming an unexpected exception, safe to send to the host."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def to_status(exc: BaseException) -> tuple[Code, str]:
    """The (code, message) pair the host sees for an exception raised by a handler."""
    if isinstance(exc, TrinitError):
        return exc.code, exc.message
    return Code.INTERNAL, describe(exc)
