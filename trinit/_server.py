"""The SandboxContext servicer: decode, make one call on an owner, encode. Nothing else.

Each handler validates its request, finds the owner (the container registry, the system
module, the proxy table), makes one call and builds the reply. Errors are domain errors from
``trinit.errors``; the process RPCs prefix them with vminitd's operation names
(docs/protocol.md §3) so a host matching on message text (e.g. "failed to find target
executable") still matches.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from google.protobuf.timestamp_pb2 import Timestamp

from trinit import errors, system
from trinit._proto import sandbox_pb2 as pb
from trinit._proto.sandbox_grpc import SandboxContextServicer

if TYPE_CHECKING:
    from trinit._owners import GetOwners
    from trinit.nursery import ContainerRegistry, Dial, ProxyTable

log = logging.getLogger("trinit.server")


@contextlib.contextmanager
def operation(prefix: str, unexpected: str | None = None) -> Iterator[None]:
    """Prefix every error raised inside with vminitd's operation text (docs/protocol.md §3).

    trinit's own errors (vminitd's ContainerizationErrors) get ``prefix``; anything else
    becomes INTERNAL with ``unexpected`` (default: ``prefix``), as vminitd words the two
    cases differently in CreateProcess and DeleteProcess.
    """
    try:
        yield
    except errors.TrinitError as exc:
        raise exc.with_prefix(prefix) from exc
    except Exception as exc:
        raise errors.Internal(f"{unexpected or prefix}: {errors.describe(exc)}") from exc


def _opt(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


class Servicer(SandboxContextServicer):
    def __init__(
        self,
        owners: GetOwners,
        dial: Dial,
        *,
        mount_binfmt_misc: bool = False,
    ) -> None:
        """``owners`` gives the registry and the proxy table, waiting for them if the agent
        has not built them yet (``trinit._owners``: the API serves before they exist).
        ``mount_binfmt_misc``: SetupEmulator may mount binfmt_misc on demand (only the
        VM's init: elsewhere binfmt_misc is the machine's single instance)."""
        self._owners = owners
        self._dial = dial
        self._emulator_mount = system.mount_binfmt_misc if mount_binfmt_misc else None

    async def _registry(self) -> ContainerRegistry:
        return (await self._owners()).registry

    async def _proxies(self) -> ProxyTable:
        return (await self._owners()).proxies

    # ------------------------------------------------------------- processes
    async def CreateProcess(self, request: Any) -> Any:
        with operation("createProcess: failed to create process", "createProcess"):
            registry = await self._registry()
            from trinit.nursery import StdioPorts  # imported by the registry's build

            ports = StdioPorts(
                _opt(request, "stdin"), _opt(request, "stdout"), _opt(request, "stderr")
            )
            await registry.create_process(
                request.id,
                _opt(request, "containerID"),
                request.configuration,
                ports,
                _opt(request, "ociRuntimePath"),
            )
        return pb.CreateProcessResponse()

    async def StartProcess(self, request: Any) -> Any:
        with operation("startProcess: failed to start process"):
            registry = await self._registry()
            pid = await registry.start_process(request.id, _opt(request, "containerID"))
        return pb.StartProcessResponse(pid=pid)

    async def WaitProcess(self, request: Any) -> Any:
        with operation("waitProcess: failed to wait on process"):
            registry = await self._registry()
            _, proc = registry.lookup(request.id, _opt(request, "containerID"))
            code, exited_at = await proc.wait()
        stamp = Timestamp()
        stamp.FromNanoseconds(int(exited_at * 1e9))
        return pb.WaitProcessResponse(exitCode=code, exited_at=stamp)

    async def KillProcess(self, request: Any) -> Any:
        with operation("killProcess: failed to kill process"):
            registry = await self._registry()
            _, proc = registry.lookup(request.id, _opt(request, "containerID"))
            proc.kill(request.signal)
        return pb.KillProcessResponse()

    async def DeleteProcess(self, request: Any) -> Any:
        with operation("deleteProcess: failed to delete process", "deleteProcess"):
            registry = await self._registry()
            await registry.delete_process(request.id, _opt(request, "containerID"))
        return pb.DeleteProcessResponse()

    async def ResizeProcess(self, request: Any) -> Any:
        with operation("resizeProcess: failed to resize process"):
            registry = await self._registry()
            _, proc = registry.lookup(request.id, _opt(request, "containerID"))
            proc.resize(request.rows, request.columns)
        return pb.ResizeProcessResponse()

    async def CloseProcessStdin(self, request: Any) -> Any:
        with operation("closeProcessStdin: failed to close process stdin"):
            registry = await self._registry()
            _, proc = registry.lookup(request.id, _opt(request, "containerID"))
            await proc.close_stdin()
        return pb.CloseProcessStdinResponse()

    async def ContainerStatistics(self, request: Any) -> Any:
        from trinit.cgroup import ALL_STAT_CATEGORIES

        # empty means all; vminitd's quirk kept: [UNSPECIFIED] alone selects nothing
        categories = set(request.categories) if request.categories else set(ALL_STAT_CATEGORIES)
        with operation("containerStatistics"):
            registry = await self._registry()
            stats = await registry.statistics(list(request.container_ids), categories)
        return pb.ContainerStatisticsResponse(containers=stats)

    # ------------------------------------------------------------ the system
    async def Setenv(self, request: Any) -> Any:
        return await system.setenv(request)

    async def Getenv(self, request: Any) -> Any:
        return await system.getenv(request)

    async def Sync(self, request: Any) -> Any:
        return await system.sync(request)

    async def Kill(self, request: Any) -> Any:
        return await system.kill(request)

    async def Mount(self, request: Any) -> Any:
        return await system.mount(request)

    async def Umount(self, request: Any) -> Any:
        return await system.umount(request)

    async def Mkdir(self, request: Any) -> Any:
        return await system.mkdir(request)

    async def WriteFile(self, request: Any) -> Any:
        return await system.write_file(request)

    async def Stat(self, request: Any) -> Any:
        return await system.stat(request)

    async def FilesystemOperation(self, request: Any) -> Any:
        return await system.filesystem_operation(request)

    async def Sysctl(self, request: Any) -> Any:
        return await system.sysctl(request)

    async def SetTime(self, request: Any) -> Any:
        return await system.set_time(request)

    async def SetupEmulator(self, request: Any) -> Any:
        return await system.setup_emulator(request, mount=self._emulator_mount)

    async def ConfigureDns(self, request: Any) -> Any:
        return await system.configure_dns(request)

    async def ConfigureHosts(self, request: Any) -> Any:
        return await system.configure_hosts(request)

    async def IpLinkSet(self, request: Any) -> Any:
        return await system.ip_link_set(request)

    async def IpAddrAdd(self, request: Any) -> Any:
        return await system.ip_addr_add(request)

    async def IpRouteAddLink(self, request: Any) -> Any:
        return await system.ip_route_add_link(request)

    async def IpRouteAddDefault(self, request: Any) -> Any:
        return await system.ip_route_add_default(request)

    async def ProxyVsock(self, request: Any) -> Any:
        with operation("proxyVsock: failed to setup vsock proxy"):
            proxies = await self._proxies()
            await proxies.start(
                request.id,
                request.action,
                request.vsock_port,
                request.guestPath,
                _opt(request, "guestSocketPermissions"),
            )
        return pb.ProxyVsockResponse()

    async def StopVsockProxy(self, request: Any) -> Any:
        with operation("stopVsockProxy: failed to stop vsock proxy"):
            proxies = await self._proxies()
            await proxies.stop(request.id)
        return pb.StopVsockProxyResponse()

    async def Copy(self, request: Any) -> AsyncIterator[Any]:
        async with contextlib.aclosing(system.copy(request, self._dial)) as replies:
            async for reply in replies:
                yield reply
