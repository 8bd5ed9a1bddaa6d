"""Seccomp cost: compiling and installing Docker's default profile, and a container start.

Prints, as medians: the import of the compiler and its syscall table in a fresh ``python -I
-S`` (the exec helper pays it once per process with a profile), the compile of
``trinit.host.default_seccomp()``, the install (``seccomp(2)``/``prctl``, in forked children:
a filter cannot be removed), and Create+Start+Wait+Delete of ``/bin/true`` with and without
the profile through a LocalAgent (the baseline). Goal (issue 9): compile + install < 5 ms.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trinit import _linux as sc  # noqa: E402
from trinit.exec import _seccomp  # noqa: E402
from trinit.host import LocalAgent, build_busybox_rootfs, busybox_spec, default_seccomp  # noqa: E402


def import_ms(runs: int) -> float:
    """The import as the exec helper does it: package stubs, no trinit/__init__ (trio)."""
    code = (
        "import sys, time\n"
        f"R = {str(ROOT)!r}\n"
        "for n, p in (('trinit', R + '/trinit'), ('trinit.exec', R + '/trinit/exec')):\n"
        "    m = type(sys)(n); m.__path__ = [p]; sys.modules[n] = m\n"
        "t = time.perf_counter()\n"
        "from trinit.exec import _seccomp\n"
        "print((time.perf_counter() - t) * 1000)\n"
    )
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
        )
        times.append(float(out.stdout))
    return statistics.median(times)


def compile_ms(profile: dict[str, Any], runs: int) -> tuple[float, int]:
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        compiled = _seccomp.compile_filter(profile)
        times.append((time.perf_counter() - begin) * 1000)
    return statistics.median(times), len(compiled)


def install_ms(profile: dict[str, Any], runs: int) -> float:
    compiled = _seccomp.compile_filter(profile)
    times = []
    for _ in range(runs):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
            begin = time.perf_counter()
            sc.seccomp_set_mode_filter(compiled.program, compiled.flags)
            elapsed = (time.perf_counter() - begin) * 1000
            os.write(write_fd, str(elapsed).encode())
            os._exit(0)
        os.close(write_fd)
        times.append(float(os.read(read_fd, 64)))
        os.close(read_fd)
        os.waitpid(pid, 0)
    return statistics.median(times)


def container_ms(
    rootfs: str, seccomp: dict[str, Any] | None, agent: LocalAgent, runs: int
) -> float:
    times = []
    for i in range(runs + 2):
        cid = f"sc{'p' if seccomp else 'n'}{i}"
        root = agent.host.mount_rootfs(cid, rootfs)
        linux = {"seccomp": seccomp} if seccomp else {}
        spec = busybox_spec(root, ["/bin/true"], linux=linux)
        begin = time.perf_counter()
        result = agent.host.run(cid, spec)
        times.append((time.perf_counter() - begin) * 1000)
        assert result.exit_code == 0, result
    return statistics.median(times[2:])


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    profile = default_seccomp()
    imported = import_ms(max(5, runs // 3))
    compiled, length = compile_ms(profile, runs)
    installed = install_ms(profile, runs)
    print(f"default profile: {len(profile['syscalls'])} rules, {length} BPF instructions")
    print(f"import of the compiler in a fresh python -I -S: {imported:.2f} ms")
    print(f"compile: {compiled:.2f} ms   install: {installed:.3f} ms   "
          f"compile+install: {compiled + installed:.2f} ms (goal < 5 ms: "
          f"{(compiled + installed) / 5:.2f}x of it)")  # fmt: skip
    rootfs = tempfile.mkdtemp(prefix="trinit-bench-rootfs-")
    build_busybox_rootfs(rootfs)
    with LocalAgent.start(log_level="warning") as agent:
        plain = container_ms(rootfs, None, agent, runs)
        with_profile = container_ms(rootfs, profile, agent, runs)
    subprocess.run(["rm", "-rf", rootfs], check=False)
    extra = with_profile - plain
    print(f"container /bin/true: {plain:.1f} ms without, {with_profile:.1f} ms with the "
          f"default profile: +{extra:.1f} ms ({with_profile / plain:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
