"""A host-side client for trinit (or vminitd): run processes in containers, stream stdio.

It drives the SandboxContext API with the official grpcio client, the way a VMM's host
library does (docs/protocol.md §10): listen on the stdio ports, CreateProcess (the guest dials
them), accept, StartProcess, stream, CloseProcessStdin, WaitProcess, DeleteProcess.
Tests and benchmarks use it; it is deliberately synchronous (threads for the stdio streams)
so it also serves simple scripts.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from trinit._proto import sandbox_pb2 as pb
from trinit._proto.sandbox_pb2_grpc import SandboxContextStub

from ._ports import HostPort, PortAllocator
from ._vsock import VsockRelay

Sink = Callable[[bytes], None]

VSOCK_CONNECT_SETTLE = 10.0
"""Seconds :meth:`Host.wait_ready` waits, after its own timeout, for a vsock connect still in
flight to end (so the error it raises is that connect's, not an empty timeout)."""


@dataclass
class Result:
    exit_code: int
    stdout: bytes
    stderr: bytes


class Host:
    """A connection to one trinit agent.

    ``transport`` is the agent's own transport string (``unix:DIR`` or ``vsock``); for
    ``vsock`` give ``guest_cid`` too.
    """

    def __init__(
        self,
        transport: str,
        *,
        port: int = 1024,
        guest_cid: int | None = None,
        max_message_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.transport = transport
        self._relay: VsockRelay | None = None
        if transport.startswith("unix:"):
            target = f"unix:{transport[5:]}/guest_{port}"
        elif transport == "vsock":
            if guest_cid is None:
                raise ValueError("vsock needs guest_cid")
            self._relay = VsockRelay(guest_cid, port)
            target = self._relay.target
        else:
            raise ValueError(f"unknown transport {transport!r}")
        self.channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
            ],
        )
        self.stub = SandboxContextStub(self.channel)  # type: ignore[no-untyped-call]
        self.ports = PortAllocator()
        self._rootfs_mounts: dict[str, str] = {}
        """container id -> the rootfs this Host bind-mounted for it and has not seen go."""

    def close(self) -> None:
        self.channel.close()
        if self._relay is not None:
            self._relay.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the agent accepts the API connection.

        Raises :class:`VsockConnectError` (CID, port and errno of the last attempt) when a
        vsock agent could not be reached, else TimeoutError naming the target: grpcio's own
        timeout error is empty and says nothing about why.
        """
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            if self._relay is not None:
                self._relay.settle(VSOCK_CONNECT_SETTLE)
                if self._relay.last_error is not None:
                    raise self._relay.last_error from None
            raise TimeoutError(f"agent at {self.transport} not ready after {timeout} s") from None

    def mount_rootfs(self, container_id: str, source: str) -> str:
        """Bind-mount a host-visible rootfs directory at the bundle's rootfs.

        As the host does before CreateProcess (docs/protocol.md §10). Deleting the container
        (its init process) unmounts it in the agent; if the container is never created, call
        :meth:`unmount_rootfs` (:meth:`run` does so itself when its create fails).
        """
        dest = f"/run/container/{container_id}/rootfs"
        self.stub.Mount(pb.MountRequest(type="", source=source, destination=dest, options=["bind"]))
        self._rootfs_mounts[container_id] = dest
        return dest

    def unmount_rootfs(self, container_id: str) -> None:
        """Undo :meth:`mount_rootfs` for a container that was never created (a created one
        unmounts its rootfs when deleted). A no-op if this Host has no mount for it."""
        dest = self._rootfs_mounts.pop(container_id, None)
        if dest is not None:
            self.stub.Umount(pb.UmountRequest(path=dest))

    def _forget_rootfs(self, container_id: str) -> None:
        """The container was deleted: the agent unmounted its rootfs with its bundle."""
        self._rootfs_mounts.pop(container_id, None)

    def copy_in(
        self,
        data: bytes,
        path: str,
        *,
        mode: int = 0,
        create_parents: bool = False,
        is_archive: bool = False,
    ) -> None:
        """COPY_IN: serve ``data`` on a fresh host port; the guest dials it and writes
        ``path`` (a file, or with ``is_archive`` a gzip tar extracted into the directory)."""
        port = self.ports.next()
        listener = HostPort.listen(self.transport, port)
        sender = threading.Thread(target=_serve_bytes, args=(listener, data), daemon=True)
        sender.start()
        try:
            replies = list(
                self.stub.Copy(
                    pb.CopyRequest(
                        direction=pb.CopyRequest.COPY_IN,
                        path=path,
                        mode=mode,
                        create_parents=create_parents,
                        vsock_port=port,
                        is_archive=is_archive,
                    )
                )
            )
        finally:
            # the RPC is over: a guest that has not dialled by now never will (a refusal
            # before the dial), and the sender must not wait out its accept for it
            listener.stop_accepting()
            sender.join(30)
            listener.close()
        if not replies or replies[-1].status != pb.CopyResponse.COMPLETE or replies[-1].error:
            raise RuntimeError(f"copy in failed: {replies}")

    def copy_out(self, path: str) -> tuple[bytes, bool]:
        """COPY_OUT: returns (bytes, is_archive); a directory arrives as a gzip tar."""
        port = self.ports.next()
        listener = HostPort.listen(self.transport, port)
        received = bytearray()
        try:
            replies = self.stub.Copy(
                pb.CopyRequest(direction=pb.CopyRequest.COPY_OUT, path=path, vsock_port=port)
            )
            metadata = next(replies)
            conn = listener.accept(30)
            with conn:
                _drain(conn, received.extend)
            rest = list(replies)
        finally:
            listener.close()
        if not rest or rest[-1].status != pb.CopyResponse.COMPLETE or rest[-1].error:
            raise RuntimeError(f"copy out failed: {rest}")
        if not metadata.is_archive and len(received) != metadata.total_size:
            raise RuntimeError(
                f"copy out: got {len(received)} bytes, expected {metadata.total_size}"
            )
        return bytes(received), metadata.is_archive

    def process(
        self,
        container_id: str,
        spec: dict[str, Any],
        *,
        process_id: str | None = None,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
        stdout_sink: Sink | None = None,
        stderr_sink: Sink | None = None,
        oci_runtime_path: str | None = None,
    ) -> Process:
        """``oci_runtime_path``: CreateProcess's ``ociRuntimePath`` (runc mode)."""
        return Process(
            self,
            container_id,
            process_id or container_id,
            spec,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            stdout_sink=stdout_sink,
            stderr_sink=stderr_sink,
            oci_runtime_path=oci_runtime_path,
        )

    def run(
        self,
        container_id: str,
        spec: dict[str, Any],
        *,
        process_id: str | None = None,
        input: bytes | None = None,
        delete: bool = True,
        timeout: float | None = None,
    ) -> Result:
        """Create, start, feed stdin, wait and (by default) delete; returns code and output.

        Deleting the container's init (``process_id`` None or the container id) deletes the
        container, and the agent unmounts its rootfs with it. If CreateProcess fails there is
        nothing to delete: the rootfs that :meth:`mount_rootfs` bind-mounted for it is
        unmounted instead, and the create error is raised. An error of the clean-up itself
        never replaces the error that caused it (it is attached as a note).
        """
        proc = self.process(container_id, spec, process_id=process_id, stdin=input is not None)
        is_init = proc.process_id == container_id
        try:
            proc.create()
        except BaseException as exc:
            proc.close()
            if is_init:
                _cleanup(exc, "UmountRootfs", lambda: self.unmount_rootfs(container_id))
            raise
        try:
            proc.start()
            if input is not None:
                try:
                    proc.write(input)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the process exited without reading all of its input
                proc.close_stdin()
            code = proc.wait(timeout=timeout)
            proc.join_output()
        except BaseException as exc:
            proc.close()
            if delete:
                _cleanup(exc, "DeleteProcess", proc.delete)
            raise
        proc.close()
        if delete:
            proc.delete()
        return Result(code, bytes(proc.stdout_data), bytes(proc.stderr_data))


def _cleanup(error: BaseException, what: str, step: Callable[[], None]) -> None:
    """Run a clean-up step while ``error`` propagates; its own failure becomes a note on
    ``error`` instead of replacing it (the caller needs the original cause)."""
    try:
        step()
    except Exception as exc:
        detail = exc.details() if isinstance(exc, grpc.RpcError) else str(exc)
        error.add_note(f"(clean-up {what} also failed: {detail})")


@dataclass
class Process:
    host: Host
    container_id: str
    process_id: str
    spec: dict[str, Any]
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    stdout_sink: Sink | None = None
    stderr_sink: Sink | None = None
    oci_runtime_path: str | None = None
    pid: int | None = None
    stdout_data: bytearray = field(default_factory=bytearray)
    stderr_data: bytearray = field(default_factory=bytearray)
    _listeners: dict[str, HostPort] = field(default_factory=dict)
    _conns: dict[str, socket.socket] = field(default_factory=dict)
    _readers: list[threading.Thread] = field(default_factory=list)
    _deleted: bool = False
    created: bool = False

    @property
    def terminal(self) -> bool:
        return bool(self.spec.get("process", {}).get("terminal", False))

    def create(self, accept_timeout: float = 30.0) -> None:
        wanted = [
            ("stdin", self.stdin),
            ("stdout", self.stdout),
            ("stderr", self.stderr and not self.terminal),
        ]
        request = pb.CreateProcessRequest(
            id=self.process_id,
            containerID=self.container_id,
            configuration=json.dumps(self.spec).encode(),
        )
        if self.oci_runtime_path is not None:
            request.ociRuntimePath = self.oci_runtime_path
        for name, on in wanted:
            if on:
                port = self.host.ports.next()
                self._listeners[name] = HostPort.listen(self.host.transport, port)
                setattr(request, name, port)
        self.host.stub.CreateProcess(request)
        self.created = True
        for name, listener in self._listeners.items():
            self._conns[name] = listener.accept(accept_timeout)
            listener.close()
        for name, sink, buf in (
            ("stdout", self.stdout_sink, self.stdout_data),
            ("stderr", self.stderr_sink, self.stderr_data),
        ):
            conn = self._conns.get(name)
            if conn is not None:
                thread = threading.Thread(
                    target=_drain, args=(conn, sink or buf.extend), daemon=True
                )
                thread.start()
                self._readers.append(thread)

    def start(self) -> int:
        reply = self.host.stub.StartProcess(
            pb.StartProcessRequest(id=self.process_id, containerID=self.container_id)
        )
        self.pid = reply.pid
        return int(reply.pid)

    def attach(self, **options: Any) -> int:
        """The interactive session: create (if needed), start, relay this program's stdin,
        stdout, stderr, window size and signals, wait; the exit code. Options and details:
        :func:`trinit.host.attach`."""
        from ._attach import attach

        return attach(self, **options)

    def write(self, data: bytes) -> None:
        self._conns["stdin"].sendall(data)

    def close_stdin(self) -> None:
        self.host.stub.CloseProcessStdin(
            pb.CloseProcessStdinRequest(id=self.process_id, containerID=self.container_id)
        )

    def resize(self, rows: int, columns: int) -> None:
        self.host.stub.ResizeProcess(
            pb.ResizeProcessRequest(
                id=self.process_id, containerID=self.container_id, rows=rows, columns=columns
            )
        )

    def kill(self, signal: int) -> None:
        self.host.stub.KillProcess(
            pb.KillProcessRequest(id=self.process_id, containerID=self.container_id, signal=signal)
        )

    def wait(self, timeout: float | None = None) -> int:
        reply = self.host.stub.WaitProcess(
            pb.WaitProcessRequest(id=self.process_id, containerID=self.container_id),
            timeout=timeout,
        )
        return int(reply.exitCode)

    def join_output(self, timeout: float = 30.0) -> None:
        """Wait for EOF on stdout/stderr (the guest closes them promptly after exit)."""
        for thread in self._readers:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError("stdio stream did not reach EOF")

    def delete(self) -> None:
        if self._deleted:
            return
        self._deleted = True
        self.host.stub.DeleteProcess(
            pb.DeleteProcessRequest(id=self.process_id, containerID=self.container_id)
        )
        if self.process_id == self.container_id:
            self.host._forget_rootfs(self.container_id)

    def close(self) -> None:
        for listener in self._listeners.values():
            listener.close()
        for conn in self._conns.values():
            try:
                conn.close()
            except OSError:
                pass


def _serve_bytes(listener: HostPort, data: bytes) -> None:
    """COPY_IN's sender thread. A guest that hangs up early (a refused path) is not this
    thread's failure to report: the Copy RPC's status says why."""
    try:
        conn = listener.accept(30)
    except OSError:
        return
    with conn:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:  # EPIPE, ECONNRESET: the guest closed the connection
            pass


def _drain(conn: socket.socket, sink: Sink) -> None:
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while True:
        try:
            n = conn.recv_into(view)
        except OSError:
            return
        if n == 0:
            return
        sink(bytes(view[:n]))


def oci_spec(
    rootfs: str,
    args: Sequence[str],
    *,
    env: Sequence[str] = (),
    cwd: str = "/",
    terminal: bool = False,
    hostname: str = "",
    user: dict[str, Any] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    linux: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A minimal OCI spec shaped like the host's (docs/protocol.md §9)."""
    return {
        "ociVersion": "",
        "process": {
            "args": list(args),
            "cwd": cwd,
            "env": list(env),
            "terminal": terminal,
            "user": user or {"uid": 0, "gid": 0},
        },
        "hostname": hostname,
        "root": {"path": rootfs, "readonly": False},
        "mounts": mounts if mounts is not None else [],
        "linux": linux
        if linux is not None
        else {"namespaces": [{"type": t, "path": ""} for t in ("pid", "mount", "uts", "ipc")]},
    }
