"""The wire contract: generated code is fresh, and the service has vminitd's exact shape."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

from trinit._proto import sandbox_pb2 as pb
from trinit._proto.sandbox_grpc import SandboxContextServicer

ROOT = Path(__file__).resolve().parent.parent


# The generators' own version stamps: they say which grpcio-tools/protoc ran, not what the
# proto says. test_packaging checks them against the pins; here they are masked, so the
# check of the content holds whichever generator version is installed.
_STAMPS = re.compile(
    r"^(# Protobuf Python Version: |GRPC_GENERATED_VERSION = ).*$"
    r"|^_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)",
    re.M,
)


def _content(text: str) -> str:
    return _STAMPS.sub("<stamp>", text)


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)], check=True
    )
    for generated in sorted(tmp_path.iterdir()):
        committed = ROOT / "trinit" / "_proto" / generated.name
        assert _content(committed.read_text()) == _content(generated.read_text()), (
            f"{committed} is stale: run scripts/gen_proto.py"
        )


def test_stamp_mask_hides_only_the_stamps() -> None:
    committed = (ROOT / "trinit" / "_proto" / "sandbox_pb2_grpc.py").read_text()
    assert _content(committed) != committed
    assert _content(committed.replace("1.85.1", "9.9.9")) == _content(committed)
    assert _content(committed.replace("SandboxContext", "X")) != _content(committed)


def test_service_identity_and_rpcs() -> None:
    service = pb.DESCRIPTOR.services_by_name["SandboxContext"]
    assert service.full_name == "com.apple.containerization.sandbox.v3.SandboxContext"
    names = [m.name for m in service.methods]
    assert len(names) == 30
    streaming = [m.name for m in service.methods if m.server_streaming or m.client_streaming]
    assert streaming == ["Copy"]
    assert len(SandboxContextServicer().service.methods) == 30


def _fields(message: str) -> dict[str, tuple[int, int, bool]]:
    proto = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(proto)
    found = {m.name: m for m in proto.message_type}
    return {f.name: (f.number, f.type, f.proto3_optional) for f in found[message].field}


def test_selected_field_numbers_and_presence() -> None:
    T = descriptor_pb2.FieldDescriptorProto
    assert _fields("KillRequest") == {
        "pid": (1, T.TYPE_INT32, False),
        "signal": (3, T.TYPE_INT32, False),
    }
    create = _fields("CreateProcessRequest")
    assert create["containerID"] == (2, T.TYPE_STRING, True)
    assert create["stdin"] == (3, T.TYPE_UINT32, True)
    assert create["configuration"] == (7, T.TYPE_BYTES, False)
    assert create["options"] == (8, T.TYPE_BYTES, True)
    assert _fields("GetenvResponse") == {"value": (1, T.TYPE_STRING, True)}
    assert _fields("WaitProcessResponse")["exited_at"][0] == 2
    assert _fields("ProxyVsockRequest")["guestSocketPermissions"] == (4, T.TYPE_UINT32, True)
    assert _fields("MemoryEventStats")["oom_group_kill"] == (6, T.TYPE_UINT64, False)
