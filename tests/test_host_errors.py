"""The host library reports the error that happened, and cleans up after a failure.

A new user's first mistake is usually a bad spec; ``Host.run`` must then show the
CreateProcess error (not a DeleteProcess NOT_FOUND from its clean-up) and must not leave the
rootfs bind mount behind in the agent. A vsock host that cannot reach the guest must say
which CID and port it dialled and what the kernel answered.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from agentlib import Container

import trinit.host as hostlib
from trinit._proto import sandbox_pb2 as pb
from trinit.host import LocalAgent


def _mount_points(agent: LocalAgent) -> set[str]:
    """Mount points inside the agent's mount namespace (read from outside, as root)."""
    text = Path(f"/proc/{agent.pid}/mountinfo").read_text()
    return {line.split()[4] for line in text.splitlines()}


def _bad_spec(ctr: Container) -> dict[str, Any]:
    spec = ctr.spec(["true"])
    spec["process"]["args"] = "true"  # a string, not a list: CreateProcess refuses it
    return spec


def test_run_reraises_the_create_error_not_the_delete_error(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    with pytest.raises(grpc.RpcError) as info:
        agent.host.run(ctr.id, _bad_spec(ctr))
    assert info.value.code() != grpc.StatusCode.NOT_FOUND, info.value.details()
    assert info.value.details().startswith("createProcess"), info.value.details()


def test_failed_create_unmounts_the_rootfs(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    assert ctr.root in _mount_points(agent)
    with pytest.raises(grpc.RpcError):
        agent.host.run(ctr.id, _bad_spec(ctr))
    assert ctr.root not in _mount_points(agent)


def test_run_deletes_the_container_and_unmounts_its_rootfs(agent: LocalAgent) -> None:
    ctr = Container(agent.host)
    assert ctr.run(["true"]).exit_code == 0
    assert ctr.root not in _mount_points(agent)


def test_run_keeps_the_original_error_when_delete_fails_too(agent: LocalAgent) -> None:
    """Start fails (no such executable) and run's clean-up delete fails as well (here: every
    DeleteProcess is sent twice, so it ends in a real NOT_FOUND): the start error is the one
    raised, the delete error rides along as a note."""
    host = agent.host
    real_delete: Callable[..., pb.DeleteProcessResponse] = host.stub.DeleteProcess

    def delete_twice(request: pb.DeleteProcessRequest, **kw: Any) -> pb.DeleteProcessResponse:
        real_delete(request, **kw)
        return real_delete(request, **kw)

    host.stub.DeleteProcess = delete_twice
    ctr = Container(host)
    with pytest.raises(grpc.RpcError) as info:
        host.run(ctr.id, ctr.spec(["nosuchprog"]))
    assert "failed to find target executable nosuchprog" in info.value.details()
    assert any("DeleteProcess" in note for note in getattr(info.value, "__notes__", []))


def _direct_connect_errno(cid: int, port: int) -> int:
    """What the kernel answers a plain AF_VSOCK connect here (the relay must report it)."""
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as sock:
        try:
            sock.connect((cid, port))
        except OSError as exc:
            assert exc.errno is not None
            return exc.errno
    pytest.skip(f"something listens on vsock CID {cid} port {port} on this machine")


# here: CID 3 ENODEV, CID 2 (the host) ECONNRESET, a CID no VM has ETIMEDOUT after 2 s
@pytest.mark.parametrize("cid", [3, 2, 3_999_999])
def test_vsock_connect_errors_name_cid_port_and_errno(cid: int) -> None:
    expected = _direct_connect_errno(cid, 1024)
    with hostlib.Host("vsock", guest_cid=cid, port=1024) as host:
        with pytest.raises(hostlib.VsockConnectError) as info:
            host.wait_ready(timeout=1.5)  # room for grpc to try once on a loaded machine
    message = str(info.value)
    assert f"CID {cid}" in message and "port 1024" in message, message
    assert info.value.errno == expected
    assert errno.errorcode[expected] in message, message


def test_copy_in_sender_takes_a_guest_that_hangs_up(tmp_path: Path) -> None:
    """A refused COPY_IN: the agent closes the data connection unread. The host's sender
    thread must end quietly (the RPC's status reports the refusal), not die of EPIPE."""
    from trinit.host._client import _serve_bytes
    from trinit.host._ports import HostPort

    listener = HostPort.listen(f"unix:{tmp_path}", 7001)
    failures: list[BaseException | None] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: failures.append(args.exc_value)
    try:
        sender = threading.Thread(target=_serve_bytes, args=(listener, b"x" * (64 << 20)))
        sender.start()
        guest = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        guest.connect(str(tmp_path / "host_7001"))
        guest.recv(1)  # the sender is writing
        guest.close()  # unread data: the sender's next write fails
        sender.join(30)
        assert not sender.is_alive()
    finally:
        threading.excepthook = hook
        listener.close()
    assert failures == []


def test_copy_in_refused_before_the_guest_dials_reports_at_once(agent: LocalAgent) -> None:
    """The agent refuses the path before it dials for the data (``create_parents`` where a
    parent is a file): the RPC's error comes back at once, not after the sender thread's
    30 s accept of a connection that will never come."""
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        agent.host.copy_in(b"data", "/etc/passwd/sub/file", create_parents=True)
    assert info.value.code() is not grpc.StatusCode.OK
    assert time.monotonic() - started < 15  # was 30 s: the accept's own timeout
