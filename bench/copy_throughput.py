"""Copy throughput: COPY_OUT and COPY_IN of a 1 GiB file through trinit versus ``cat``.

trinit runs as a LocalAgent (unix transport); its data connection goes to a host listener
whose reader counts bytes. The baseline, measured in the same run, is ``cat`` writing the
same file into a unix socket drained by the same reader (and, for COPY_IN, ``cat`` reading
from a socket into a file). Prints MiB/s and the ratio trinit / cat.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trinit._proto import sandbox_pb2 as pb
from trinit.host import HostPort, LocalAgent

MiB = 1 << 20


def _drain(conn: socket.socket, out: list[int]) -> None:
    buf = memoryview(bytearray(MiB))
    total = 0
    while n := conn.recv_into(buf):
        total += n
    out.append(total)


def _serve_file(conn: socket.socket, path: str) -> None:
    with open(path, "rb") as f:
        conn.sendfile(f)
    conn.shutdown(socket.SHUT_WR)


def trinit_copy_out(agent: LocalAgent, path: str) -> float:
    port = agent.host.ports.next()
    listener = HostPort.listen(agent.transport, port)
    got: list[int] = []
    start = time.perf_counter()
    replies = agent.host.stub.Copy(
        pb.CopyRequest(direction=pb.CopyRequest.COPY_OUT, path=path, vsock_port=port)
    )
    next(replies)
    conn = listener.accept(30)
    _drain(conn, got)
    list(replies)
    elapsed = time.perf_counter() - start
    conn.close()
    listener.close()
    assert got == [os.path.getsize(path)], got
    return elapsed


def trinit_copy_in(agent: LocalAgent, src: str, dest: str) -> float:
    port = agent.host.ports.next()
    listener = HostPort.listen(agent.transport, port)

    def serve() -> None:
        conn = listener.accept(30)
        with conn:
            _serve_file(conn, src)

    thread = threading.Thread(target=serve)
    start = time.perf_counter()
    thread.start()
    list(
        agent.host.stub.Copy(
            pb.CopyRequest(direction=pb.CopyRequest.COPY_IN, path=dest, vsock_port=port)
        )
    )
    elapsed = time.perf_counter() - start
    thread.join()
    listener.close()
    assert os.path.getsize(dest) == os.path.getsize(src)
    return elapsed


def cat_out(path: str) -> float:
    reader, writer = socket.socketpair()
    got: list[int] = []
    thread = threading.Thread(target=_drain, args=(reader, got))
    start = time.perf_counter()
    thread.start()
    subprocess.run(["cat", path], stdout=writer.fileno(), check=True)
    writer.close()
    thread.join()
    elapsed = time.perf_counter() - start
    reader.close()
    assert got == [os.path.getsize(path)]
    return elapsed


def cat_in(src: str, dest: str) -> float:
    ours, theirs = socket.socketpair()
    thread = threading.Thread(target=_serve_file, args=(ours, src))
    start = time.perf_counter()
    thread.start()
    with open(dest, "wb") as out:
        subprocess.run(["cat"], stdin=theirs.fileno(), stdout=out, check=True)
    elapsed = time.perf_counter() - start
    thread.join()
    ours.close()
    theirs.close()
    return elapsed


def main() -> None:
    size = int(sys.argv[1]) * MiB if len(sys.argv) > 1 else 1024 * MiB
    workdir = tempfile.mkdtemp(prefix="trinit-copy-bench-", dir="/tmp")
    src = os.path.join(workdir, "src.bin")
    try:
        with open(src, "wb") as f:
            block = os.urandom(MiB)
            for _ in range(size // MiB):
                f.write(block)
        with LocalAgent.start(log_level="warning") as agent:
            results: dict[str, float] = {}
            benches: tuple[tuple[str, Callable[[], float]], ...] = (
                ("trinit COPY_OUT", lambda: trinit_copy_out(agent, src)),
                ("cat into a socket", lambda: cat_out(src)),
                ("trinit COPY_IN", lambda: trinit_copy_in(agent, src, src + ".in")),
                ("cat from a socket", lambda: cat_in(src, src + ".cat")),
            )
            for name, fn in benches:
                results[name] = min(fn() for _ in range(3))
        mib = size / MiB
        for name, seconds in results.items():
            print(f"  {name:<20} {mib / seconds:8.0f} MiB/s")
        print(f"  COPY_OUT / cat: {results['cat into a socket'] / results['trinit COPY_OUT']:.2f}")
        print(f"  COPY_IN / cat:  {results['cat from a socket'] / results['trinit COPY_IN']:.2f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
