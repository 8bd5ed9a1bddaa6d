import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAT_CATEGORY_UNSPECIFIED: _ClassVar[StatCategory]
    STAT_CATEGORY_PROCESS: _ClassVar[StatCategory]
    STAT_CATEGORY_MEMORY: _ClassVar[StatCategory]
    STAT_CATEGORY_CPU: _ClassVar[StatCategory]
    STAT_CATEGORY_BLOCK_IO: _ClassVar[StatCategory]
    STAT_CATEGORY_NETWORK: _ClassVar[StatCategory]
    STAT_CATEGORY_MEMORY_EVENTS: _ClassVar[StatCategory]
STAT_CATEGORY_UNSPECIFIED: StatCategory
STAT_CATEGORY_PROCESS: StatCategory
STAT_CATEGORY_MEMORY: StatCategory
STAT_CATEGORY_CPU: StatCategory
STAT_CATEGORY_BLOCK_IO: StatCategory
STAT_CATEGORY_NETWORK: StatCategory
STAT_CATEGORY_MEMORY_EVENTS: StatCategory

class Stdio(_message.Message):
    __slots__ = ("stdinPort", "stdoutPort", "stderrPort")
    STDINPORT_FIELD_NUMBER: _ClassVar[int]
    STDOUTPORT_FIELD_NUMBER: _ClassVar[int]
    STDERRPORT_FIELD_NUMBER: _ClassVar[int]
    stdinPort: int
    stdoutPort: int
    stderrPort: int
    def __init__(self, stdinPort: _Optional[int] = ..., stdoutPort: _Optional[int] = ..., stderrPort: _Optional[int] = ...) -> None: ...

class SetupEmulatorRequest(_message.Message):
    __slots__ = ("binary_path", "name", "type", "offset", "magic", "mask", "flags")
    BINARY_PATH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAGIC_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    binary_path: str
    name: str
    type: str
    offset: str
    magic: str
    mask: str
    flags: str
    def __init__(self, binary_path: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[str] = ..., offset: _Optional[str] = ..., magic: _Optional[str] = ..., mask: _Optional[str] = ..., flags: _Optional[str] = ...) -> None: ...

class SetupEmulatorResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetTimeRequest(_message.Message):
    __slots__ = ("sec", "usec")
    SEC_FIELD_NUMBER: _ClassVar[int]
    USEC_FIELD_NUMBER: _ClassVar[int]
    sec: int
    usec: int
    def __init__(self, sec: _Optional[int] = ..., usec: _Optional[int] = ...) -> None: ...

class SetTimeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SysctlRequest(_message.Message):
    __slots__ = ("settings",)
    class SettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: _containers.ScalarMap[str, str]
    def __init__(self, settings: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SysctlResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProxyVsockRequest(_message.Message):
    __slots__ = ("id", "vsock_port", "guestPath", "guestSocketPermissions", "action")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        INTO: _ClassVar[ProxyVsockRequest.Action]
        OUT_OF: _ClassVar[ProxyVsockRequest.Action]
    INTO: ProxyVsockRequest.Action
    OUT_OF: ProxyVsockRequest.Action
    ID_FIELD_NUMBER: _ClassVar[int]
    VSOCK_PORT_FIELD_NUMBER: _ClassVar[int]
    GUESTPATH_FIELD_NUMBER: _ClassVar[int]
    GUESTSOCKETPERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    vsock_port: int
    guestPath: str
    guestSocketPermissions: int
    action: ProxyVsockRequest.Action
    def __init__(self, id: _Optional[str] = ..., vsock_port: _Optional[int] = ..., guestPath: _Optional[str] = ..., guestSocketPermissions: _Optional[int] = ..., action: _Optional[_Union[ProxyVsockRequest.Action, str]] = ...) -> None: ...

class ProxyVsockResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StopVsockProxyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class StopVsockProxyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MountRequest(_message.Message):
    __slots__ = ("type", "source", "destination", "options")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    type: str
    source: str
    destination: str
    options: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, type: _Optional[str] = ..., source: _Optional[str] = ..., destination: _Optional[str] = ..., options: _Optional[_Iterable[str]] = ...) -> None: ...

class MountResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UmountRequest(_message.Message):
    __slots__ = ("path", "flags")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    path: str
    flags: int
    def __init__(self, path: _Optional[str] = ..., flags: _Optional[int] = ...) -> None: ...

class UmountResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetenvRequest(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class SetenvResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetenvRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class GetenvResponse(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: str
    def __init__(self, value: _Optional[str] = ...) -> None: ...

class CreateProcessRequest(_message.Message):
    __slots__ = ("id", "containerID", "stdin", "stdout", "stderr", "ociRuntimePath", "configuration", "options")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINERID_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    OCIRUNTIMEPATH_FIELD_NUMBER: _ClassVar[int]
    CONFIGURATION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    id: str
    containerID: str
    stdin: int
    stdout: int
    stderr: int
    ociRuntimePath: str
    configuration: bytes
    options: bytes
    def __init__(self, id: _Optional[str] = ..., containerID: _Optional[str] = ..., stdin: _Optional[int] = ..., stdout: _Optional[int] = ..., stderr: _Optional[int] = ..., ociRuntimePath: _Optional[str] = ..., configuration: _Optional[bytes] = ..., options: _Optional[bytes] = ...) -> None: ...

class CreateProcessResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WaitProcessRequest(_message.Message):
    __slots__ = ("id", "containerID")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINERID_FIELD_NUMBER: _ClassVar[int]
    id: str
    containerID: str
    def __init__(self, id: _Optional[str] = ..., containerID: _Optional[str] = ...) -> None: ...

class WaitProcessResponse(_message.Message):
    __slots__ = ("exitCode", "exited_at")
    EXITCODE_FIELD_NUMBER: _ClassVar[int]
    EXITED_AT_FIELD_NUMBER: _ClassVar[int]
    exitCode: int
    exited_at: _timestamp_pb2.Timestamp
    def __init__(self, exitCode: _Optional[int] = ..., exited_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ResizeProcessRequest(_message.Message):
    __slots__ = ("id", "containerID", "rows", "columns")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINERID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    id: str
    containerID: str
    rows: int
    columns: int
    def __init__(self, id: _Optional[str] = ..., containerID: _Optional[str] = ..., rows: _Optional[int] = ..., columns: _Optional[int] = ...) -> None: ...

class ResizeProcessResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteProcessRequest(_message.Message):
    __slots__ = ("id", "containerID")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINERID_FIELD_NUMBER: _ClassVar[int]
    id: str
    containerID: str
    def __init__(self, id: _Optional[str] = ..., containerID: _Optional[str] = ...) -> None: ...

class DeleteProcessResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StartProcessRequest(_message.Message):
    __slots__ = ("id", "containerID")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINERID_FIELD_NUMBER: _ClassVar[int]
    id: str
    containerID: str
    def __init__(self, id: _Optional[str] = ..., containerID: _Optional[str] = ...) -> None: ...

class StartProcessResponse(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: int
    def __init__(self, pid: _Optional[int] = ...) -> None: ...

class KillProcessRequest(_message.Message):
    __slots__ = ("id", "containerID", "signal")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINERID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    id: str
    containerID: str
    signal: int
    def __init__(self, id: _Optional[str] = ..., containerID: _Optional[str] = ..., signal: _Optional[int] = ...) -> None: ...

class KillProcessResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: int
    def __init__(self, result: _Optional[int] = ...) -> None: ...

class CloseProcessStdinRequest(_message.Message):
    __slots__ = ("id", "containerID")
    ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINERID_FIELD_NUMBER: _ClassVar[int]
    id: str
    containerID: str
    def __init__(self, id: _Optional[str] = ..., containerID: _Optional[str] = ...) -> None: ...

class CloseProcessStdinResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MkdirRequest(_message.Message):
    __slots__ = ("path", "all", "perms")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    PERMS_FIELD_NUMBER: _ClassVar[int]
    path: str
    all: bool
    perms: int
    def __init__(self, path: _Optional[str] = ..., all: _Optional[bool] = ..., perms: _Optional[int] = ...) -> None: ...

class MkdirResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WriteFileRequest(_message.Message):
    __slots__ = ("path", "data", "mode", "flags")
    class WriteFileFlags(_message.Message):
        __slots__ = ("create_parent_dirs", "append", "create_if_missing")
        CREATE_PARENT_DIRS_FIELD_NUMBER: _ClassVar[int]
        APPEND_FIELD_NUMBER: _ClassVar[int]
        CREATE_IF_MISSING_FIELD_NUMBER: _ClassVar[int]
        create_parent_dirs: bool
        append: bool
        create_if_missing: bool
        def __init__(self, create_parent_dirs: _Optional[bool] = ..., append: _Optional[bool] = ..., create_if_missing: _Optional[bool] = ...) -> None: ...
    PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    path: str
    data: bytes
    mode: int
    flags: WriteFileRequest.WriteFileFlags
    def __init__(self, path: _Optional[str] = ..., data: _Optional[bytes] = ..., mode: _Optional[int] = ..., flags: _Optional[_Union[WriteFileRequest.WriteFileFlags, _Mapping]] = ...) -> None: ...

class WriteFileResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CopyRequest(_message.Message):
    __slots__ = ("direction", "path", "mode", "create_parents", "vsock_port", "is_archive")
    class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        COPY_IN: _ClassVar[CopyRequest.Direction]
        COPY_OUT: _ClassVar[CopyRequest.Direction]
    COPY_IN: CopyRequest.Direction
    COPY_OUT: CopyRequest.Direction
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    CREATE_PARENTS_FIELD_NUMBER: _ClassVar[int]
    VSOCK_PORT_FIELD_NUMBER: _ClassVar[int]
    IS_ARCHIVE_FIELD_NUMBER: _ClassVar[int]
    direction: CopyRequest.Direction
    path: str
    mode: int
    create_parents: bool
    vsock_port: int
    is_archive: bool
    def __init__(self, direction: _Optional[_Union[CopyRequest.Direction, str]] = ..., path: _Optional[str] = ..., mode: _Optional[int] = ..., create_parents: _Optional[bool] = ..., vsock_port: _Optional[int] = ..., is_archive: _Optional[bool] = ...) -> None: ...

class CopyResponse(_message.Message):
    __slots__ = ("status", "is_archive", "total_size", "error")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        METADATA: _ClassVar[CopyResponse.Status]
        COMPLETE: _ClassVar[CopyResponse.Status]
    METADATA: CopyResponse.Status
    COMPLETE: CopyResponse.Status
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IS_ARCHIVE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: CopyResponse.Status
    is_archive: bool
    total_size: int
    error: str
    def __init__(self, status: _Optional[_Union[CopyResponse.Status, str]] = ..., is_archive: _Optional[bool] = ..., total_size: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class StatRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class Stat(_message.Message):
    __slots__ = ("dev", "ino", "mode", "nlink", "uid", "gid", "rdev", "size", "blksize", "blocks", "atime", "mtime", "ctime")
    DEV_FIELD_NUMBER: _ClassVar[int]
    INO_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    NLINK_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    RDEV_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    BLKSIZE_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    ATIME_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    CTIME_FIELD_NUMBER: _ClassVar[int]
    dev: int
    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blksize: int
    blocks: int
    atime: _timestamp_pb2.Timestamp
    mtime: _timestamp_pb2.Timestamp
    ctime: _timestamp_pb2.Timestamp
    def __init__(self, dev: _Optional[int] = ..., ino: _Optional[int] = ..., mode: _Optional[int] = ..., nlink: _Optional[int] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., rdev: _Optional[int] = ..., size: _Optional[int] = ..., blksize: _Optional[int] = ..., blocks: _Optional[int] = ..., atime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., mtime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ctime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StatResponse(_message.Message):
    __slots__ = ("stat", "error")
    STAT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    stat: Stat
    error: str
    def __init__(self, stat: _Optional[_Union[Stat, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class FiTrimParams(_message.Message):
    __slots__ = ("one_shot",)
    class OneShot(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    ONE_SHOT_FIELD_NUMBER: _ClassVar[int]
    one_shot: FiTrimParams.OneShot
    def __init__(self, one_shot: _Optional[_Union[FiTrimParams.OneShot, _Mapping]] = ...) -> None: ...

class FiFreezeParams(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FiThawParams(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FiTrimResult(_message.Message):
    __slots__ = ("trimmed_bytes",)
    TRIMMED_BYTES_FIELD_NUMBER: _ClassVar[int]
    trimmed_bytes: int
    def __init__(self, trimmed_bytes: _Optional[int] = ...) -> None: ...

class FilesystemOperationRequest(_message.Message):
    __slots__ = ("path", "trim", "freeze", "thaw")
    PATH_FIELD_NUMBER: _ClassVar[int]
    TRIM_FIELD_NUMBER: _ClassVar[int]
    FREEZE_FIELD_NUMBER: _ClassVar[int]
    THAW_FIELD_NUMBER: _ClassVar[int]
    path: str
    trim: FiTrimParams
    freeze: FiFreezeParams
    thaw: FiThawParams
    def __init__(self, path: _Optional[str] = ..., trim: _Optional[_Union[FiTrimParams, _Mapping]] = ..., freeze: _Optional[_Union[FiFreezeParams, _Mapping]] = ..., thaw: _Optional[_Union[FiThawParams, _Mapping]] = ...) -> None: ...

class FilesystemOperationResponse(_message.Message):
    __slots__ = ("trim",)
    TRIM_FIELD_NUMBER: _ClassVar[int]
    trim: FiTrimResult
    def __init__(self, trim: _Optional[_Union[FiTrimResult, _Mapping]] = ...) -> None: ...

class IpLinkSetRequest(_message.Message):
    __slots__ = ("interface", "up", "mtu")
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    MTU_FIELD_NUMBER: _ClassVar[int]
    interface: str
    up: bool
    mtu: int
    def __init__(self, interface: _Optional[str] = ..., up: _Optional[bool] = ..., mtu: _Optional[int] = ...) -> None: ...

class IpLinkSetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IpAddrAddRequest(_message.Message):
    __slots__ = ("interface", "ipv4Address", "ipv6Address")
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    IPV4ADDRESS_FIELD_NUMBER: _ClassVar[int]
    IPV6ADDRESS_FIELD_NUMBER: _ClassVar[int]
    interface: str
    ipv4Address: str
    ipv6Address: str
    def __init__(self, interface: _Optional[str] = ..., ipv4Address: _Optional[str] = ..., ipv6Address: _Optional[str] = ...) -> None: ...

class IpAddrAddResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IpRouteAddLinkRequest(_message.Message):
    __slots__ = ("interface", "dstIpv4Addr", "srcIpv4Addr", "dstIpv6Addr", "srcIpv6Addr")
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    DSTIPV4ADDR_FIELD_NUMBER: _ClassVar[int]
    SRCIPV4ADDR_FIELD_NUMBER: _ClassVar[int]
    DSTIPV6ADDR_FIELD_NUMBER: _ClassVar[int]
    SRCIPV6ADDR_FIELD_NUMBER: _ClassVar[int]
    interface: str
    dstIpv4Addr: str
    srcIpv4Addr: str
    dstIpv6Addr: str
    srcIpv6Addr: str
    def __init__(self, interface: _Optional[str] = ..., dstIpv4Addr: _Optional[str] = ..., srcIpv4Addr: _Optional[str] = ..., dstIpv6Addr: _Optional[str] = ..., srcIpv6Addr: _Optional[str] = ...) -> None: ...

class IpRouteAddLinkResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IpRouteAddDefaultRequest(_message.Message):
    __slots__ = ("interface", "ipv4Gateway", "ipv6Gateway")
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    IPV4GATEWAY_FIELD_NUMBER: _ClassVar[int]
    IPV6GATEWAY_FIELD_NUMBER: _ClassVar[int]
    interface: str
    ipv4Gateway: str
    ipv6Gateway: str
    def __init__(self, interface: _Optional[str] = ..., ipv4Gateway: _Optional[str] = ..., ipv6Gateway: _Optional[str] = ...) -> None: ...

class IpRouteAddDefaultResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConfigureDnsRequest(_message.Message):
    __slots__ = ("location", "nameservers", "domain", "searchDomains", "options")
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    NAMESERVERS_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    SEARCHDOMAINS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    location: str
    nameservers: _containers.RepeatedScalarFieldContainer[str]
    domain: str
    searchDomains: _containers.RepeatedScalarFieldContainer[str]
    options: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, location: _Optional[str] = ..., nameservers: _Optional[_Iterable[str]] = ..., domain: _Optional[str] = ..., searchDomains: _Optional[_Iterable[str]] = ..., options: _Optional[_Iterable[str]] = ...) -> None: ...

class ConfigureDnsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConfigureHostsRequest(_message.Message):
    __slots__ = ("location", "entries", "comment")
    class HostsEntry(_message.Message):
        __slots__ = ("ipAddress", "hostnames", "comment")
        IPADDRESS_FIELD_NUMBER: _ClassVar[int]
        HOSTNAMES_FIELD_NUMBER: _ClassVar[int]
        COMMENT_FIELD_NUMBER: _ClassVar[int]
        ipAddress: str
        hostnames: _containers.RepeatedScalarFieldContainer[str]
        comment: str
        def __init__(self, ipAddress: _Optional[str] = ..., hostnames: _Optional[_Iterable[str]] = ..., comment: _Optional[str] = ...) -> None: ...
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    location: str
    entries: _containers.RepeatedCompositeFieldContainer[ConfigureHostsRequest.HostsEntry]
    comment: str
    def __init__(self, location: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[ConfigureHostsRequest.HostsEntry, _Mapping]]] = ..., comment: _Optional[str] = ...) -> None: ...

class ConfigureHostsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SyncResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KillRequest(_message.Message):
    __slots__ = ("pid", "signal")
    PID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    pid: int
    signal: int
    def __init__(self, pid: _Optional[int] = ..., signal: _Optional[int] = ...) -> None: ...

class KillResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: int
    def __init__(self, result: _Optional[int] = ...) -> None: ...

class ContainerStatisticsRequest(_message.Message):
    __slots__ = ("container_ids", "categories")
    CONTAINER_IDS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    container_ids: _containers.RepeatedScalarFieldContainer[str]
    categories: _containers.RepeatedScalarFieldContainer[StatCategory]
    def __init__(self, container_ids: _Optional[_Iterable[str]] = ..., categories: _Optional[_Iterable[_Union[StatCategory, str]]] = ...) -> None: ...

class ContainerStatisticsResponse(_message.Message):
    __slots__ = ("containers",)
    CONTAINERS_FIELD_NUMBER: _ClassVar[int]
    containers: _containers.RepeatedCompositeFieldContainer[ContainerStats]
    def __init__(self, containers: _Optional[_Iterable[_Union[ContainerStats, _Mapping]]] = ...) -> None: ...

class ContainerStats(_message.Message):
    __slots__ = ("container_id", "process", "memory", "cpu", "block_io", "networks", "memory_events")
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    BLOCK_IO_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_EVENTS_FIELD_NUMBER: _ClassVar[int]
    container_id: str
    process: ProcessStats
    memory: MemoryStats
    cpu: CPUStats
    block_io: BlockIOStats
    networks: _containers.RepeatedCompositeFieldContainer[NetworkStats]
    memory_events: MemoryEventStats
    def __init__(self, container_id: _Optional[str] = ..., process: _Optional[_Union[ProcessStats, _Mapping]] = ..., memory: _Optional[_Union[MemoryStats, _Mapping]] = ..., cpu: _Optional[_Union[CPUStats, _Mapping]] = ..., block_io: _Optional[_Union[BlockIOStats, _Mapping]] = ..., networks: _Optional[_Iterable[_Union[NetworkStats, _Mapping]]] = ..., memory_events: _Optional[_Union[MemoryEventStats, _Mapping]] = ...) -> None: ...

class ProcessStats(_message.Message):
    __slots__ = ("current", "limit")
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    current: int
    limit: int
    def __init__(self, current: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class MemoryStats(_message.Message):
    __slots__ = ("usage_bytes", "limit_bytes", "swap_usage_bytes", "swap_limit_bytes", "cache_bytes", "kernel_stack_bytes", "slab_bytes", "page_faults", "major_page_faults", "inactive_file", "anon", "workingset_refault_anon", "workingset_refault_file", "pgsteal_kswapd", "pgsteal_direct", "pgsteal_khugepaged")
    USAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    SWAP_USAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SWAP_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    CACHE_BYTES_FIELD_NUMBER: _ClassVar[int]
    KERNEL_STACK_BYTES_FIELD_NUMBER: _ClassVar[int]
    SLAB_BYTES_FIELD_NUMBER: _ClassVar[int]
    PAGE_FAULTS_FIELD_NUMBER: _ClassVar[int]
    MAJOR_PAGE_FAULTS_FIELD_NUMBER: _ClassVar[int]
    INACTIVE_FILE_FIELD_NUMBER: _ClassVar[int]
    ANON_FIELD_NUMBER: _ClassVar[int]
    WORKINGSET_REFAULT_ANON_FIELD_NUMBER: _ClassVar[int]
    WORKINGSET_REFAULT_FILE_FIELD_NUMBER: _ClassVar[int]
    PGSTEAL_KSWAPD_FIELD_NUMBER: _ClassVar[int]
    PGSTEAL_DIRECT_FIELD_NUMBER: _ClassVar[int]
    PGSTEAL_KHUGEPAGED_FIELD_NUMBER: _ClassVar[int]
    usage_bytes: int
    limit_bytes: int
    swap_usage_bytes: int
    swap_limit_bytes: int
    cache_bytes: int
    kernel_stack_bytes: int
    slab_bytes: int
    page_faults: int
    major_page_faults: int
    inactive_file: int
    anon: int
    workingset_refault_anon: int
    workingset_refault_file: int
    pgsteal_kswapd: int
    pgsteal_direct: int
    pgsteal_khugepaged: int
    def __init__(self, usage_bytes: _Optional[int] = ..., limit_bytes: _Optional[int] = ..., swap_usage_bytes: _Optional[int] = ..., swap_limit_bytes: _Optional[int] = ..., cache_bytes: _Optional[int] = ..., kernel_stack_bytes: _Optional[int] = ..., slab_bytes: _Optional[int] = ..., page_faults: _Optional[int] = ..., major_page_faults: _Optional[int] = ..., inactive_file: _Optional[int] = ..., anon: _Optional[int] = ..., workingset_refault_anon: _Optional[int] = ..., workingset_refault_file: _Optional[int] = ..., pgsteal_kswapd: _Optional[int] = ..., pgsteal_direct: _Optional[int] = ..., pgsteal_khugepaged: _Optional[int] = ...) -> None: ...

class CPUStats(_message.Message):
    __slots__ = ("usage_usec", "user_usec", "system_usec", "throttling_periods", "throttled_periods", "throttled_time_usec")
    USAGE_USEC_FIELD_NUMBER: _ClassVar[int]
    USER_USEC_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_USEC_FIELD_NUMBER: _ClassVar[int]
    THROTTLING_PERIODS_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_PERIODS_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_TIME_USEC_FIELD_NUMBER: _ClassVar[int]
    usage_usec: int
    user_usec: int
    system_usec: int
    throttling_periods: int
    throttled_periods: int
    throttled_time_usec: int
    def __init__(self, usage_usec: _Optional[int] = ..., user_usec: _Optional[int] = ..., system_usec: _Optional[int] = ..., throttling_periods: _Optional[int] = ..., throttled_periods: _Optional[int] = ..., throttled_time_usec: _Optional[int] = ...) -> None: ...

class BlockIOStats(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[BlockIOEntry]
    def __init__(self, devices: _Optional[_Iterable[_Union[BlockIOEntry, _Mapping]]] = ...) -> None: ...

class BlockIOEntry(_message.Message):
    __slots__ = ("major", "minor", "read_bytes", "write_bytes", "read_operations", "write_operations")
    MAJOR_FIELD_NUMBER: _ClassVar[int]
    MINOR_FIELD_NUMBER: _ClassVar[int]
    READ_BYTES_FIELD_NUMBER: _ClassVar[int]
    WRITE_BYTES_FIELD_NUMBER: _ClassVar[int]
    READ_OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    WRITE_OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    major: int
    minor: int
    read_bytes: int
    write_bytes: int
    read_operations: int
    write_operations: int
    def __init__(self, major: _Optional[int] = ..., minor: _Optional[int] = ..., read_bytes: _Optional[int] = ..., write_bytes: _Optional[int] = ..., read_operations: _Optional[int] = ..., write_operations: _Optional[int] = ...) -> None: ...

class NetworkStats(_message.Message):
    __slots__ = ("interface", "receivedPackets", "transmittedPackets", "receivedBytes", "transmittedBytes", "receivedErrors", "transmittedErrors")
    INTERFACE_FIELD_NUMBER: _ClassVar[int]
    RECEIVEDPACKETS_FIELD_NUMBER: _ClassVar[int]
    TRANSMITTEDPACKETS_FIELD_NUMBER: _ClassVar[int]
    RECEIVEDBYTES_FIELD_NUMBER: _ClassVar[int]
    TRANSMITTEDBYTES_FIELD_NUMBER: _ClassVar[int]
    RECEIVEDERRORS_FIELD_NUMBER: _ClassVar[int]
    TRANSMITTEDERRORS_FIELD_NUMBER: _ClassVar[int]
    interface: str
    receivedPackets: int
    transmittedPackets: int
    receivedBytes: int
    transmittedBytes: int
    receivedErrors: int
    transmittedErrors: int
    def __init__(self, interface: _Optional[str] = ..., receivedPackets: _Optional[int] = ..., transmittedPackets: _Optional[int] = ..., receivedBytes: _Optional[int] = ..., transmittedBytes: _Optional[int] = ..., receivedErrors: _Optional[int] = ..., transmittedErrors: _Optional[int] = ...) -> None: ...

class MemoryEventStats(_message.Message):
    __slots__ = ("low", "high", "max", "oom", "oom_kill", "oom_group_kill")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    OOM_FIELD_NUMBER: _ClassVar[int]
    OOM_KILL_FIELD_NUMBER: _ClassVar[int]
    OOM_GROUP_KILL_FIELD_NUMBER: _ClassVar[int]
    low: int
    high: int
    max: int
    oom: int
    oom_kill: int
    oom_group_kill: int
    def __init__(self, low: _Optional[int] = ..., high: _Optional[int] = ..., max: _Optional[int] = ..., oom: _Optional[int] = ..., oom_kill: _Optional[int] = ..., oom_group_kill: _Optional[int] = ...) -> None: ...
