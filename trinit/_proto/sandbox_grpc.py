"""purerpc stubs generated from proto/sandbox.proto by scripts/gen_proto.py."""

from collections.abc import AsyncIterator
from typing import Any

import purerpc
from purerpc.grpclib.exceptions import UnimplementedError

from . import sandbox_pb2 as sandbox__pb2


class SandboxContextServicer(purerpc.Servicer):
    SERVICE_NAME = "com.apple.containerization.sandbox.v3.SandboxContext"

    async def Mount(self, input_message: Any) -> Any:
        raise UnimplementedError("Mount is not implemented")

    async def Umount(self, input_message: Any) -> Any:
        raise UnimplementedError("Umount is not implemented")

    async def Setenv(self, input_message: Any) -> Any:
        raise UnimplementedError("Setenv is not implemented")

    async def Getenv(self, input_message: Any) -> Any:
        raise UnimplementedError("Getenv is not implemented")

    async def Mkdir(self, input_message: Any) -> Any:
        raise UnimplementedError("Mkdir is not implemented")

    async def Sysctl(self, input_message: Any) -> Any:
        raise UnimplementedError("Sysctl is not implemented")

    async def SetTime(self, input_message: Any) -> Any:
        raise UnimplementedError("SetTime is not implemented")

    async def SetupEmulator(self, input_message: Any) -> Any:
        raise UnimplementedError("SetupEmulator is not implemented")

    async def WriteFile(self, input_message: Any) -> Any:
        raise UnimplementedError("WriteFile is not implemented")

    async def Copy(self, input_message: Any) -> AsyncIterator[Any]:
        raise UnimplementedError("Copy is not implemented")
        yield  # an async generator, like the handlers that override it

    async def Stat(self, input_message: Any) -> Any:
        raise UnimplementedError("Stat is not implemented")

    async def FilesystemOperation(self, input_message: Any) -> Any:
        raise UnimplementedError("FilesystemOperation is not implemented")

    async def CreateProcess(self, input_message: Any) -> Any:
        raise UnimplementedError("CreateProcess is not implemented")

    async def DeleteProcess(self, input_message: Any) -> Any:
        raise UnimplementedError("DeleteProcess is not implemented")

    async def StartProcess(self, input_message: Any) -> Any:
        raise UnimplementedError("StartProcess is not implemented")

    async def KillProcess(self, input_message: Any) -> Any:
        raise UnimplementedError("KillProcess is not implemented")

    async def WaitProcess(self, input_message: Any) -> Any:
        raise UnimplementedError("WaitProcess is not implemented")

    async def ResizeProcess(self, input_message: Any) -> Any:
        raise UnimplementedError("ResizeProcess is not implemented")

    async def CloseProcessStdin(self, input_message: Any) -> Any:
        raise UnimplementedError("CloseProcessStdin is not implemented")

    async def ContainerStatistics(self, input_message: Any) -> Any:
        raise UnimplementedError("ContainerStatistics is not implemented")

    async def ProxyVsock(self, input_message: Any) -> Any:
        raise UnimplementedError("ProxyVsock is not implemented")

    async def StopVsockProxy(self, input_message: Any) -> Any:
        raise UnimplementedError("StopVsockProxy is not implemented")

    async def IpLinkSet(self, input_message: Any) -> Any:
        raise UnimplementedError("IpLinkSet is not implemented")

    async def IpAddrAdd(self, input_message: Any) -> Any:
        raise UnimplementedError("IpAddrAdd is not implemented")

    async def IpRouteAddLink(self, input_message: Any) -> Any:
        raise UnimplementedError("IpRouteAddLink is not implemented")

    async def IpRouteAddDefault(self, input_message: Any) -> Any:
        raise UnimplementedError("IpRouteAddDefault is not implemented")

    async def ConfigureDns(self, input_message: Any) -> Any:
        raise UnimplementedError("ConfigureDns is not implemented")

    async def ConfigureHosts(self, input_message: Any) -> Any:
        raise UnimplementedError("ConfigureHosts is not implemented")

    async def Sync(self, input_message: Any) -> Any:
        raise UnimplementedError("Sync is not implemented")

    async def Kill(self, input_message: Any) -> Any:
        raise UnimplementedError("Kill is not implemented")

    @property
    def service(self) -> purerpc.Service:
        service_obj = purerpc.Service("com.apple.containerization.sandbox.v3.SandboxContext")
        service_obj.add_method(
            "Mount",
            self.Mount,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.MountRequest,
                sandbox__pb2.MountResponse,
            ),
        )
        service_obj.add_method(
            "Umount",
            self.Umount,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.UmountRequest,
                sandbox__pb2.UmountResponse,
            ),
        )
        service_obj.add_method(
            "Setenv",
            self.Setenv,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.SetenvRequest,
                sandbox__pb2.SetenvResponse,
            ),
        )
        service_obj.add_method(
            "Getenv",
            self.Getenv,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.GetenvRequest,
                sandbox__pb2.GetenvResponse,
            ),
        )
        service_obj.add_method(
            "Mkdir",
            self.Mkdir,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.MkdirRequest,
                sandbox__pb2.MkdirResponse,
            ),
        )
        service_obj.add_method(
            "Sysctl",
            self.Sysctl,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.SysctlRequest,
                sandbox__pb2.SysctlResponse,
            ),
        )
        service_obj.add_method(
            "SetTime",
            self.SetTime,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.SetTimeRequest,
                sandbox__pb2.SetTimeResponse,
            ),
        )
        service_obj.add_method(
            "SetupEmulator",
            self.SetupEmulator,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.SetupEmulatorRequest,
                sandbox__pb2.SetupEmulatorResponse,
            ),
        )
        service_obj.add_method(
            "WriteFile",
            self.WriteFile,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.WriteFileRequest,
                sandbox__pb2.WriteFileResponse,
            ),
        )
        service_obj.add_method(
            "Copy",
            self.Copy,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_STREAM,
                sandbox__pb2.CopyRequest,
                sandbox__pb2.CopyResponse,
            ),
        )
        service_obj.add_method(
            "Stat",
            self.Stat,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.StatRequest,
                sandbox__pb2.StatResponse,
            ),
        )
        service_obj.add_method(
            "FilesystemOperation",
            self.FilesystemOperation,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.FilesystemOperationRequest,
                sandbox__pb2.FilesystemOperationResponse,
            ),
        )
        service_obj.add_method(
            "CreateProcess",
            self.CreateProcess,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.CreateProcessRequest,
                sandbox__pb2.CreateProcessResponse,
            ),
        )
        service_obj.add_method(
            "DeleteProcess",
            self.DeleteProcess,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.DeleteProcessRequest,
                sandbox__pb2.DeleteProcessResponse,
            ),
        )
        service_obj.add_method(
            "StartProcess",
            self.StartProcess,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.StartProcessRequest,
                sandbox__pb2.StartProcessResponse,
            ),
        )
        service_obj.add_method(
            "KillProcess",
            self.KillProcess,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.KillProcessRequest,
                sandbox__pb2.KillProcessResponse,
            ),
        )
        service_obj.add_method(
            "WaitProcess",
            self.WaitProcess,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.WaitProcessRequest,
                sandbox__pb2.WaitProcessResponse,
            ),
        )
        service_obj.add_method(
            "ResizeProcess",
            self.ResizeProcess,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.ResizeProcessRequest,
                sandbox__pb2.ResizeProcessResponse,
            ),
        )
        service_obj.add_method(
            "CloseProcessStdin",
            self.CloseProcessStdin,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.CloseProcessStdinRequest,
                sandbox__pb2.CloseProcessStdinResponse,
            ),
        )
        service_obj.add_method(
            "ContainerStatistics",
            self.ContainerStatistics,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.ContainerStatisticsRequest,
                sandbox__pb2.ContainerStatisticsResponse,
            ),
        )
        service_obj.add_method(
            "ProxyVsock",
            self.ProxyVsock,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.ProxyVsockRequest,
                sandbox__pb2.ProxyVsockResponse,
            ),
        )
        service_obj.add_method(
            "StopVsockProxy",
            self.StopVsockProxy,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.StopVsockProxyRequest,
                sandbox__pb2.StopVsockProxyResponse,
            ),
        )
        service_obj.add_method(
            "IpLinkSet",
            self.IpLinkSet,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.IpLinkSetRequest,
                sandbox__pb2.IpLinkSetResponse,
            ),
        )
        service_obj.add_method(
            "IpAddrAdd",
            self.IpAddrAdd,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.IpAddrAddRequest,
                sandbox__pb2.IpAddrAddResponse,
            ),
        )
        service_obj.add_method(
            "IpRouteAddLink",
            self.IpRouteAddLink,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.IpRouteAddLinkRequest,
                sandbox__pb2.IpRouteAddLinkResponse,
            ),
        )
        service_obj.add_method(
            "IpRouteAddDefault",
            self.IpRouteAddDefault,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.IpRouteAddDefaultRequest,
                sandbox__pb2.IpRouteAddDefaultResponse,
            ),
        )
        service_obj.add_method(
            "ConfigureDns",
            self.ConfigureDns,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.ConfigureDnsRequest,
                sandbox__pb2.ConfigureDnsResponse,
            ),
        )
        service_obj.add_method(
            "ConfigureHosts",
            self.ConfigureHosts,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.ConfigureHostsRequest,
                sandbox__pb2.ConfigureHostsResponse,
            ),
        )
        service_obj.add_method(
            "Sync",
            self.Sync,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.SyncRequest,
                sandbox__pb2.SyncResponse,
            ),
        )
        service_obj.add_method(
            "Kill",
            self.Kill,
            purerpc.RPCSignature(
                purerpc.Cardinality.UNARY_UNARY,
                sandbox__pb2.KillRequest,
                sandbox__pb2.KillResponse,
            ),
        )
        return service_obj
