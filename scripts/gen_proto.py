"""Regenerate trinit/_proto from proto/sandbox.proto.

Why a script: the generated modules are committed (so an install needs no protoc), and
tests/test_proto_fresh.py runs this into a temporary directory and compares, so a stale
checkout fails CI. Output: protobuf messages (+ .pyi), purerpc stubs (the server side),
grpcio stubs (host library and tests). Imports are rewritten to be package-relative.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "trinit" / "_proto"
GENERATED = ("sandbox_pb2.py", "sandbox_pb2.pyi", "sandbox_grpc.py", "sandbox_pb2_grpc.py")


def generate(out_dir: Path) -> None:
    # build-time dependency only; grpcio-tools ships no type information
    from grpc_tools import protoc  # type: ignore[import-untyped]

    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(
            [
                "protoc",
                f"-I{PROTO_DIR}",
                f"-I{include}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                str(PROTO_DIR / "sandbox.proto"),
            ]
        )
        if rc != 0:
            raise SystemExit(f"protoc failed with {rc}")
        descriptor_set = Path(tmp) / "sandbox.desc"
        protoc.main(
            [
                "protoc",
                f"-I{PROTO_DIR}",
                f"-I{include}",
                f"--descriptor_set_out={descriptor_set}",
                str(PROTO_DIR / "sandbox.proto"),
            ]
        )
        (Path(tmp) / "sandbox_grpc.py").write_text(render_purerpc(descriptor_set.read_bytes()))
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in GENERATED:
            text = (Path(tmp) / name).read_text()
            text = re.sub(
                r"^import sandbox_pb2 as", "from . import sandbox_pb2 as", text, flags=re.M
            )
            (out_dir / name).write_text(text)
    init = out_dir / "__init__.py"
    init.write_text(
        '"""Generated from proto/sandbox.proto by scripts/gen_proto.py; do not edit."""\n'
    )


def render_purerpc(descriptor_set: bytes) -> str:
    """purerpc stubs for the service.

    purerpc 0.8's own protoc plugin refuses proto3 `optional` fields (it never declared the
    feature), so the servicer is rendered here from the descriptor. The base class answers
    every method UNIMPLEMENTED; trinit's servicer overrides what it implements.

    The module does not import purerpc when it is imported: purerpc's package ``__init__``
    imports its client, anyio and anyio's socket and TLS layers (~15 ms of the agent's
    start, docs/benchmarks.md), and the agent's server (trinit.rpc) needs none of it, only
    the plain method table ``METHODS``. ``service`` (what ``purerpc.Server.add_service``
    takes) and the UNIMPLEMENTED answers import purerpc when they are used.
    """
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    (proto,) = [f for f in fds.file if f.name == "sandbox.proto"]
    lines = [
        '"""purerpc stubs generated from proto/sandbox.proto by scripts/gen_proto.py.',
        "",
        "purerpc is imported only when ``service`` or an UNIMPLEMENTED answer is used (its",
        "package imports its client and anyio); a server reads the plain ``METHODS`` table.",
        '"""',
        "",
        "from collections.abc import AsyncIterator",
        "from typing import Any, NamedTuple",
        "",
        "from . import sandbox_pb2 as sandbox__pb2",
        "",
        "",
        "class MethodSpec(NamedTuple):",
        '    """One RPC: ``cardinality`` names a member of ``purerpc.Cardinality``."""',
        "",
        "    name: str",
        "    cardinality: str",
        "    request_type: Any",
        "    response_type: Any",
        "",
        "",
        "def _unimplemented(name: str) -> Exception:",
        "    from purerpc.grpclib.exceptions import UnimplementedError",
        "",
        '    return UnimplementedError(f"{name} is not implemented")',
        "",
    ]
    for service in proto.service:
        full = f"{proto.package}.{service.name}"
        lines += ["", f"class {service.name}Servicer:"]
        lines.append(f'    SERVICE_NAME = "{full}"')
        lines.append("    METHODS = (")
        for m in service.method:
            card = {
                (False, False): "UNARY_UNARY",
                (False, True): "UNARY_STREAM",
                (True, False): "STREAM_UNARY",
                (True, True): "STREAM_STREAM",
            }[(m.client_streaming, m.server_streaming)]
            lines += [
                "        MethodSpec(",
                f'            "{m.name}",',
                f'            "{card}",',
                f"            sandbox__pb2.{m.input_type.rsplit('.', 1)[1]},",
                f"            sandbox__pb2.{m.output_type.rsplit('.', 1)[1]},",
                "        ),",
            ]
        lines += ["    )", ""]
        for m in service.method:
            if m.server_streaming:
                lines += [
                    f"    async def {m.name}(self, input_message: Any) -> AsyncIterator[Any]:",
                    f'        raise _unimplemented("{m.name}")',
                    "        yield  # an async generator, like the handlers that override it",
                    "",
                ]
                continue
            lines += [
                f"    async def {m.name}(self, input_message: Any) -> Any:",
                f'        raise _unimplemented("{m.name}")',
                "",
            ]
        lines += [
            "    @property",
            "    def service(self) -> Any:",
            '        """The ``purerpc.Service`` of this servicer (for ``purerpc.Server``)."""',
            "        import purerpc",
            "",
            "        service_obj = purerpc.Service(self.SERVICE_NAME)",
            "        for spec in self.METHODS:",
            "            cardinality = purerpc.Cardinality[spec.cardinality]",
            "            signature = purerpc.RPCSignature(",
            "                cardinality, spec.request_type, spec.response_type",
            "            )",
            "            service_obj.add_method(spec.name, getattr(self, spec.name), signature)",
            "        return service_obj",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    generate(args.out)


if __name__ == "__main__":
    main()
