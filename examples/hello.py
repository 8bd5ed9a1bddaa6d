"""Run containers through a local trinit agent, the way a VM host drives one.

Starts ``trinit agent --transport unix:DIR`` as PID 1 of fresh namespaces on this machine
(needs root), builds a busybox rootfs, and runs a few processes in containers over the
SandboxContext API with the host library: stdout, stdin, an exec into a running container.
"""

from __future__ import annotations

import shutil
import tempfile

from trinit.host import LocalAgent, build_busybox_rootfs, busybox_spec


def main() -> None:
    rootfs = tempfile.mkdtemp(prefix="trinit-example-rootfs-")
    build_busybox_rootfs(rootfs)
    try:
        with LocalAgent.start(log_level="info") as agent:
            host = agent.host
            print(f"agent up: {agent.transport} (pid {agent.pid})")

            root = host.mount_rootfs("hello", rootfs)
            result = host.run(
                "hello", busybox_spec(root, ["sh", "-c", "echo hello from $(hostname); id"])
            )
            print(f"[hello] exit {result.exit_code}:\n{result.stdout.decode()}", end="")

            root = host.mount_rootfs("upper", rootfs)
            result = host.run(
                "upper", busybox_spec(root, ["tr", "a-z", "A-Z"]), input=b"stdin works\n"
            )
            print(f"[upper] exit {result.exit_code}: {result.stdout.decode()}", end="")

            root = host.mount_rootfs("box", rootfs)
            init = host.process(
                "box", busybox_spec(root, ["sleep", "1000"]), stdout=False, stderr=False
            )
            init.create()
            print(f"[box] init pid {init.start()}")
            ps = host.run("box", busybox_spec(root, ["ps", "-o", "pid,args"]), process_id="ps")
            print(f"[box] exec ps:\n{ps.stdout.decode()}", end="")
            init.kill(9)
            print(f"[box] init exit {init.wait()}")
            init.delete()
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


if __name__ == "__main__":
    main()
