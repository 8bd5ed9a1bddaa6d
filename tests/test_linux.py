"""trinit._linux: the syscall numbers are the kernel's, and the wrappers behave like ``os``.

The numbers are compared with the kernel's own uapi headers (Debian's linux-libc-dev, which
``scripts/setup.sh`` installs): x86_64's ``asm/unistd_64.h`` and, for aarch64, the generic
table ``asm-generic/unistd.h`` that arm64's ``asm/unistd.h`` includes unchanged.
"""

from __future__ import annotations

import errno
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trinit import _linux

HEADERS = {
    "x86_64": [
        "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",  # linux-libc-dev on x86_64
        "/usr/x86_64-linux-gnu/include/asm/unistd_64.h",  # linux-libc-dev-amd64-cross
    ],
    "aarch64": ["/usr/include/asm-generic/unistd.h"],  # linux-libc-dev, any architecture
}
_DEFINE = re.compile(r"^#define __NR(?:3264)?_(\w+)\s+(\d+)\s*$", re.MULTILINE)


def _kernel_table(arch: str) -> dict[str, int]:
    for candidate in HEADERS[arch]:
        path = Path(candidate)
        if path.exists():
            return {name: int(num) for name, num in _DEFINE.findall(path.read_text())}
    raise AssertionError(f"no syscall header for {arch} (run scripts/setup.sh): {HEADERS[arch]}")


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_numbers_are_the_kernels(arch: str) -> None:
    kernel = _kernel_table(arch)
    assert len(kernel) > 250  # the header was really parsed
    ours = _linux.SYSCALL_NUMBERS[arch]
    assert ours == {name: kernel[name] for name in ours}
    assert ours.keys() == _linux.SYSCALL_NUMBERS["x86_64"].keys()  # every call on every arch


def test_machine_is_platforms() -> None:
    assert _linux.machine() == platform.machine()
    assert _linux.syscall_number("openat2") == 437


def test_unknown_architecture_fails_the_call_not_the_import() -> None:
    with pytest.raises(_linux.UnsupportedArchitecture, match="openat2 on riscv64") as info:
        _linux.syscall_number("openat2", "riscv64")
    assert info.value.errno == errno.ENOSYS
    assert isinstance(info.value, OSError)
    # import under a pretended unknown machine: fine until a raw call is made
    code = (
        "import os, errno\n"
        "real = os.uname\n"
        "os.uname = lambda: type(real())(('Linux','h','r','v','riscv64'))\n"
        "from trinit import _linux\n"
        "_linux.prctl(_linux.PR_SET_KEEPCAPS, 0)\n"  # a libc wrapper: no number needed
        "try:\n"
        "    _linux.openat2(-100, '/', os.O_RDONLY, 0, 0)\n"
        "except _linux.UnsupportedArchitecture as exc:\n"
        "    print(exc.errno == errno.ENOSYS, exc.strerror)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("True no syscall number for openat2 on riscv64")


def test_raw_and_wrapped_calls_work_here(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    root = os.open(tmp_path, os.O_PATH)
    try:
        with pytest.raises(OSError) as info:
            _linux.openat2(root, "../f", os.O_RDONLY, 0, _linux.RESOLVE_BENEATH)
        assert info.value.errno == errno.EXDEV
        fd = _linux.openat2(root, "/f", os.O_RDONLY, 0, _linux.RESOLVE_IN_ROOT)
        assert os.read(fd, 1) == b"x"
        assert os.get_inheritable(fd) is False
        os.close(fd)
    finally:
        os.close(root)
    pidfd = _linux.pidfd_open(os.getpid())
    os.close(pidfd)
    with pytest.raises(ProcessLookupError):
        _linux.pidfd_open(999_999_999)
    effective, permitted, _ = _linux.capget()
    assert effective & ~permitted == 0
    _linux.reset_signal(32)  # glibc's own signal: only the raw syscall reaches it


def test_subreaper_and_finit_module_error() -> None:
    # The effect, not the flag: an orphaned grandchild is re-parented to us and reaped here.
    code = (
        "import os, time\n"
        "from trinit import _linux\n"
        "_linux.set_child_subreaper()\n"
        "if os.fork() == 0:\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(0.2); os._exit(0)\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "print(os.wait()[1] == 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    with open("/dev/null", "rb") as null, pytest.raises(OSError) as info:
        _linux.finit_module(null.fileno())
    # The kernel's refusal (EPERM, EINVAL, ENOEXEC; ENOSYS in a sandboxed kernel), an OSError
    assert not isinstance(info.value, _linux.UnsupportedArchitecture)


def test_fork_sibling_is_a_child_of_the_callers_parent() -> None:
    """``fork_sibling``: the child's parent is the caller's parent (here: this test), which
    reaps it; the caller never sees it as its own child."""
    # Each line is one write(2) to the shared pipe: print() under PYTHONUNBUFFERED writes
    # its pieces one by one, and the two processes' lines interleaved ("forkedsibling 1 2").
    script = (
        "import os\n"
        "from trinit import _linux\n"
        "def say(*words):\n"
        "    os.write(1, (' '.join(map(str, words)) + '\\n').encode())\n"
        "pid = _linux.fork_sibling()\n"
        "if pid == 0:\n"
        "    say('sibling', os.getpid(), os.getppid())\n"
        "    os._exit(7)\n"
        "say('forked', pid)\n"
        "try:\n"
        "    os.waitpid(pid, os.WNOHANG)\n"
        "    say('caller reaped it')\n"
        "except ChildProcessError:\n"
        "    say('not my child')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=30
    )
    lines = [line for line in done.stdout.split("\n") if line]
    siblings = [line.split() for line in lines if line.startswith("sibling")]
    if not siblings:  # say how the sibling ended
        forked = int(next(line for line in lines if line.startswith("forked")).split()[1])
        _, status = os.waitpid(forked, 0)
        raise AssertionError(f"no line from the sibling: {lines}, its wait status {status:#x}, "
                             f"stderr {done.stderr[-2000:]!r}")  # fmt: skip
    sibling = siblings[0]
    assert "not my child" in lines
    pid, parent = int(sibling[1]), int(sibling[2])
    assert parent == os.getpid()
    _, status = os.waitpid(pid, 0)  # ours to reap
    assert os.waitstatus_to_exitcode(status) == 7
