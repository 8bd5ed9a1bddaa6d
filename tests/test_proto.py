"""The wire contract: generated code is fresh, and the service has vminitd's exact shape."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

from trinit._proto import sandbox_pb2 as pb
from trinit._proto.sandbox_grpc import SandboxContextServicer

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)], check=True
    )
    for generated in sorted(tmp_path.iterdir()):
        committed = ROOT / "trinit" / "_proto" / generated.name
        assert committed.read_text() == generated.read_text(), (
            f"{committed} is stale: run scripts/gen_proto.py"
        )


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
