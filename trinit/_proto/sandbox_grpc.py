"""purerpc stubs generated from proto/sandbox.proto by scripts/gen_proto.py.

purerpc is imported only when ``service`` or an UNIMPLEMENTED answer is used (its
package imports its client and anyio); a server reads the plain ``METHODS`` table.
"""

from collections.abc import AsyncIterator
from typing import Any, NamedTuple

from . import sandbox_pb2 as sandbox__pb2


class MethodSpec(NamedTuple):
    """One RPC: ``cardinality`` names a member of ``purerpc.Cardinality``."""

    name: str
    cardinality: str
    request_type: Any
    response_type: Any


def _unimplemented(name: str) -> Exception:
    from purerpc.grpclib.exceptions import UnimplementedError

    return UnimplementedError(f"{name} is not implemented")


class SandboxContextServicer:
    SERVICE_NAME = "com.apple.containerization.sandbox.v3.SandboxContext"
    METHODS = (
        MethodSpec(
            "Mount",
            "UNARY_UNARY",
            sandbox__pb2.MountRequest,
            sandbox__pb2.MountResponse,
        ),
        MethodSpec(
            "Umount",
            "UNARY_UNARY",
            sandbox__pb2.UmountRequest,
            sandbox__pb2.UmountResponse,
        ),
        MethodSpec(
            "Setenv",
            "UNARY_UNARY",
            sandbox__pb2.SetenvRequest,
            sandbox__pb2.SetenvResponse,
        ),
        MethodSpec(
            "Getenv",
            "UNARY_UNARY",
            sandbox__pb2.GetenvRequest,
            sandbox__pb2.GetenvResponse,
        ),
        MethodSpec(
            "Mkdir",
            "UNARY_UNARY",
            sandbox__pb2.MkdirRequest,
            sandbox__pb2.MkdirResponse,
        ),
        MethodSpec(
            "Sysctl",
            "UNARY_UNARY",
            sandbox__pb2.SysctlRequest,
            sandbox__pb2.SysctlResponse,
        ),
        MethodSpec(
            "SetTime",
            "UNARY_UNARY",
            sandbox__pb2.SetTimeRequest,
            sandbox__pb2.SetTimeResponse,
        ),
        MethodSpec(
            "SetupEmulator",
            "UNARY_UNARY",
            sandbox__pb2.SetupEmulatorRequest,
            sandbox__pb2.SetupEmulatorResponse,
        ),
        MethodSpec(
            "WriteFile",
            "UNARY_UNARY",
            sandbox__pb2.WriteFileRequest,
            sandbox__pb2.WriteFileResponse,
        ),
        MethodSpec(
            "Copy",
            "UNARY_STREAM",
            sandbox__pb2.CopyRequest,
            sandbox__pb2.CopyResponse,
        ),
        MethodSpec(
            "Stat",
            "UNARY_UNARY",
            sandbox__pb2.StatRequest,
            sandbox__pb2.StatResponse,
        ),
        MethodSpec(
            "FilesystemOperation",
            "UNARY_UNARY",
            sandbox__pb2.FilesystemOperationRequest,
            sandbox__pb2.FilesystemOperationResponse,
        ),
        MethodSpec(
            "CreateProcess",
            "UNARY_UNARY",
            sandbox__pb2.CreateProcessRequest,
            sandbox__pb2.CreateProcessResponse,
        ),
        MethodSpec(
            "DeleteProcess",
            "UNARY_UNARY",
            sandbox__pb2.DeleteProcessRequest,
            sandbox__pb2.DeleteProcessResponse,
        ),
        MethodSpec(
            "StartProcess",
            "UNARY_UNARY",
            sandbox__pb2.StartProcessRequest,
            sandbox__pb2.StartProcessResponse,
        ),
        MethodSpec(
            "KillProcess",
            "UNARY_UNARY",
            sandbox__pb2.KillProcessRequest,
            sandbox__pb2.KillProcessResponse,
        ),
        MethodSpec(
            "WaitProcess",
            "UNARY_UNARY",
            sandbox__pb2.WaitProcessRequest,
            sandbox__pb2.WaitProcessResponse,
        ),
        MethodSpec(
            "ResizeProcess",
            "UNARY_UNARY",
            sandbox__pb2.ResizeProcessRequest,
            sandbox__pb2.ResizeProcessResponse,
        ),
        MethodSpec(
            "CloseProcessStdin",
            "UNARY_UNARY",
            sandbox__pb2.CloseProcessStdinRequest,
            sandbox__pb2.CloseProcessStdinResponse,
        ),
        MethodSpec(
            "ContainerStatistics",
            "UNARY_UNARY",
            sandbox__pb2.ContainerStatisticsRequest,
            sandbox__pb2.ContainerStatisticsResponse,
        ),
        MethodSpec(
            "ProxyVsock",
            "UNARY_UNARY",
            sandbox__pb2.ProxyVsockRequest,
            sandbox__pb2.ProxyVsockResponse,
        ),
        MethodSpec(
            "StopVsockProxy",
            "UNARY_UNARY",
            sandbox__pb2.StopVsockProxyRequest,
            sandbox__pb2.StopVsockProxyResponse,
        ),
        MethodSpec(
            "IpLinkSet",
            "UNARY_UNARY",
            sandbox__pb2.IpLinkSetRequest,
            sandbox__pb2.IpLinkSetResponse,
        ),
        MethodSpec(
            "IpAddrAdd",
            "UNARY_UNARY",
            sandbox__pb2.IpAddrAddRequest,
            sandbox__pb2.IpAddrAddResponse,
        ),
        MethodSpec(
            "IpRouteAddLink",
            "UNARY_UNARY",
            sandbox__pb2.IpRouteAddLinkRequest,
            sandbox__pb2.IpRouteAddLinkResponse,
        ),
        MethodSpec(
            "IpRouteAddDefault",
            "UNARY_UNARY",
            sandbox__pb2.IpRouteAddDefaultRequest,
            sandbox__pb2.IpRouteAddDefaultResponse,
        ),
        MethodSpec(
            "ConfigureDns",
            "UNARY_UNARY",
            sandbox__pb2.ConfigureDnsRequest,
            sandbox__pb2.ConfigureDnsResponse,
        ),
        MethodSpec(
            "ConfigureHosts",
            "UNARY_UNARY",
            sandbox__pb2.ConfigureHostsRequest,
            sandbox__pb2.ConfigureHostsResponse,
        ),
        MethodSpec(
            "Sync",
            "UNARY_UNARY",
            sandbox__pb2.SyncRequest,
            sandbox__pb2.SyncResponse,
        ),
        MethodSpec(
            "Kill",
            "UNARY_UNARY",
            sandbox__pb2.KillRequest,
            sandbox__pb2.KillResponse,
        ),
    )

    async def Mount(self, input_message: Any) -> Any:
        raise _unimplemented("Mount")

    async def Umount(self, input_message: Any) -> Any:
        raise _unimplemented("Umount")

    async def Setenv(self, input_message: Any) -> Any:
        raise _unimplemented("Setenv")

    async def Getenv(self, input_message: Any) -> Any:
        raise _unimplemented("Getenv")

    async def Mkdir(self, input_message: Any) -> Any:
        raise _unimplemented("Mkdir")

    async def Sysctl(self, input_message: Any) -> Any:
        raise _unimplemented("Sysctl")

    async def SetTime(self, input_message: Any) -> Any:
        raise _unimplemented("SetTime")

    async def SetupEmulator(self, input_message: Any) -> Any:
        raise _unimplemented("SetupEmulator")

    async def WriteFile(self, input_message: Any) -> Any:
        raise _unimplemented("WriteFile")

    async def Copy(self, input_message: Any) -> AsyncIterator[Any]:
        raise _unimplemented("Copy")
        yield  # an async generator, like the handlers that override it

    async def Stat(self, input_message: Any) -> Any:
        raise _unimplemented("Stat")

    async def FilesystemOperation(self, input_message: Any) -> Any:
        raise _unimplemented("FilesystemOperation")

    async def CreateProcess(self, input_message: Any) -> Any:
        raise _unimplemented("CreateProcess")

    async def DeleteProcess(self, input_message: Any) -> Any:
        raise _unimplemented("DeleteProcess")

    async def StartProcess(self, input_message: Any) -> Any:
        raise _unimplemented("StartProcess")

    async def KillProcess(self, input_message: Any) -> Any:
        raise _unimplemented("KillProcess")

    async def WaitProcess(self, input_message: Any) -> Any:
        raise _unimplemented("WaitProcess")

    async def ResizeProcess(self, input_message: Any) -> Any:
        raise _unimplemented("ResizeProcess")

    async def CloseProcessStdin(self, input_message: Any) -> Any:
        raise _unimplemented("CloseProcessStdin")

    async def ContainerStatistics(self, input_message: Any) -> Any:
        raise _unimplemented("ContainerStatistics")

    async def ProxyVsock(self, input_message: Any) -> Any:
        raise _unimplemented("ProxyVsock")

    async def StopVsockProxy(self, input_message: Any) -> Any:
        raise _unimplemented("StopVsockProxy")

    async def IpLinkSet(self, input_message: Any) -> Any:
        raise _unimplemented("IpLinkSet")

    async def IpAddrAdd(self, input_message: Any) -> Any:
        raise _unimplemented("IpAddrAdd")

    async def IpRouteAddLink(self, input_message: Any) -> Any:
        raise _unimplemented("IpRouteAddLink")

    async def IpRouteAddDefault(self, input_message: Any) -> Any:
        raise _unimplemented("IpRouteAddDefault")

    async def ConfigureDns(self, input_message: Any) -> Any:
        raise _unimplemented("ConfigureDns")

    async def ConfigureHosts(self, input_message: Any) -> Any:
        raise _unimplemented("ConfigureHosts")

    async def Sync(self, input_message: Any) -> Any:
        raise _unimplemented("Sync")

    async def Kill(self, input_message: Any) -> Any:
        raise _unimplemented("Kill")

    @property
    def service(self) -> Any:
        """The ``purerpc.Service`` of this servicer (for ``purerpc.Server``)."""
        import purerpc

        service_obj = purerpc.Service(self.SERVICE_NAME)
        for spec in self.METHODS:
            cardinality = purerpc.Cardinality[spec.cardinality]
            signature = purerpc.RPCSignature(
                cardinality, spec.request_type, spec.response_type
            )
            service_obj.add_method(spec.name, getattr(self, spec.name), signature)
        return service_obj
