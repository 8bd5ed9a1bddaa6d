"""The SandboxContext servicer: decode, make one call on an owner, encode. Nothing else.

Each handler validates its request, finds the owner (the container registry, the system
module, the proxy table), makes one call and builds the reply. Errors are domain errors from
``trinit.errors``; the process RPCs prefix them with vminitd's operation names (spec 3) so a
host matching on message text (e.g. "failed to find target executable") still matches.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from trinit import errors
from trinit._proto import sandbox_pb2 as pb
from trinit._proto.sandbox_grpc import SandboxContextServicer
from trinit.nursery import ContainerRegistry, StdioPorts

log = logging.getLogger("trinit.server")


@contextlib.contextmanager
def operation(prefix: str) -> Iterator[None]:
    """Prefix every error raised inside with vminitd's operation text (spec 3)."""
    try:
        yield
    except errors.TrinitError as exc:
        raise exc.with_prefix(prefix) from exc
    except Exception as exc:
        raise errors.Internal(f"{prefix}: {errors.describe(exc)}") from exc


def _opt(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


class Servicer(SandboxContextServicer):  # type: ignore[misc]
    def __init__(self, registry: ContainerRegistry, system: Any | None = None) -> None:
        self._registry = registry
        self._system = system

    # ------------------------------------------------------------- processes
    async def CreateProcess(self, request: Any) -> Any:
        with operation("createProcess"):
            ports = StdioPorts(_opt(request, "stdin"), _opt(request, "stdout"), _opt(request, "stderr"))
            await self._registry.create_process(
                request.id, _opt(request, "containerID"), request.configuration, ports
            )
        return pb.CreateProcessResponse()

    async def StartProcess(self, request: Any) -> Any:
        with operation("startProcess: failed to start process"):
            pid = await self._registry.start_process(request.id, _opt(request, "containerID"))
        return pb.StartProcessResponse(pid=pid)

    async def WaitProcess(self, request: Any) -> Any:
        with operation("waitProcess: failed to wait on process"):
            _, proc = self._registry.lookup(request.id, _opt(request, "containerID"))
            code, exited_at = await proc.wait()
        stamp = Timestamp()
        stamp.FromNanoseconds(int(exited_at * 1e9))
        return pb.WaitProcessResponse(exitCode=code, exited_at=stamp)

    async def KillProcess(self, request: Any) -> Any:
        with operation("killProcess"):
            _, proc = self._registry.lookup(request.id, _opt(request, "containerID"))
            proc.kill(request.signal)
        return pb.KillProcessResponse()

    async def DeleteProcess(self, request: Any) -> Any:
        with operation("deleteProcess"):
            await self._registry.delete_process(request.id, _opt(request, "containerID"))
        return pb.DeleteProcessResponse()

    async def ResizeProcess(self, request: Any) -> Any:
        with operation("resizeProcess: failed to resize process"):
            _, proc = self._registry.lookup(request.id, _opt(request, "containerID"))
            proc.resize(request.rows, request.columns)
        return pb.ResizeProcessResponse()

    async def CloseProcessStdin(self, request: Any) -> Any:
        with operation("closeProcessStdin: failed to close process stdin"):
            _, proc = self._registry.lookup(request.id, _opt(request, "containerID"))
            await proc.close_stdin()
        return pb.CloseProcessStdinResponse()

    # ------------------------------------------------------------ the agent
    async def Setenv(self, request: Any) -> Any:
        value = request.value if request.HasField("value") else ""
        if not request.key or "=" in request.key or "\0" in request.key or "\0" in value:
            raise errors.InvalidArgument(f"setenv: invalid variable {request.key!r}")
        os.environ[request.key] = value
        return pb.SetenvResponse()

    async def Getenv(self, request: Any) -> Any:
        value = os.environ.get(request.key)
        return pb.GetenvResponse(value=value) if value is not None else pb.GetenvResponse()

    async def Sync(self, request: Any) -> Any:
        import trio

        await trio.to_thread.run_sync(os.sync)
        return pb.SyncResponse()

    async def Kill(self, request: Any) -> Any:
        if request.pid == -1 and os.getpid() != 1:
            # kill(-1) from a process that is not PID 1 reaches every process the machine
            # lets us signal: on a development host that is the host itself.
            log.warning("refusing kill(-1) when not PID 1 of a VM or PID namespace")
            return pb.KillResponse(result=-1)
        try:
            os.kill(request.pid, request.signal)
        except (OSError, ValueError, OverflowError):
            return pb.KillResponse(result=-1)
        return pb.KillResponse(result=0)

    async def Copy(self, request: Any) -> AsyncIterator[Any]:
        raise errors.Unimplemented("Copy is not implemented")
        yield  # pragma: no cover - makes this an async generator
