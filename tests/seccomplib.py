"""Seccomp test helpers: a static syscall probe and specs that mount it into containers.

``probe NR [ARG...]`` (C, built with ``gcc -static`` once per session into a directory that
specs bind-mount at ``/tmp/probe``) makes one raw ``syscall(NR, ARG...)`` (numbers in any C base)
and prints ``ret=<value> errno=<errno>``, so a test sees exactly what the filter returned,
with no libc wrapper choosing another syscall. Syscall numbers come from the generated table
for this machine's architecture.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Any

from rootfs import test_spec

from trinit.exec import _syscall_table

PROBE_SOURCE = r"""
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long args[6] = {0};
    if (argc < 2) return 2;
    long nr = strtol(argv[1], NULL, 0);
    for (int i = 2; i < argc && i < 8; i++) args[i - 2] = (long)strtoull(argv[i], NULL, 0);
    errno = 0;
    long ret = syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]);
    printf("ret=%ld errno=%d\n", ret, ret == -1 ? errno : 0);
    return 0;
}
"""

NATIVE = {"x86_64": _syscall_table.X86_64, "aarch64": _syscall_table.AARCH64}[os.uname().machine]
PROBE_DIR = "/tmp/probe"
PROBE = PROBE_DIR + "/probe"
_PROBE_DIR: str | None = None


def nr(name: str) -> int:
    """The native syscall number of ``name``."""
    return NATIVE[name]


def probe_dir() -> str:
    """A directory holding the static ``probe`` binary (built once per session)."""
    global _PROBE_DIR
    if _PROBE_DIR is None:
        directory = tempfile.mkdtemp(prefix="trinit-probe-", dir="/tmp")
        source = os.path.join(directory, "probe.c")
        with open(source, "w") as file:
            file.write(PROBE_SOURCE)
        subprocess.run(
            ["gcc", "-static", "-O1", "-o", os.path.join(directory, "probe"), source], check=True
        )
        os.unlink(source)
        _PROBE_DIR = directory
    return _PROBE_DIR


def cleanup_probe() -> None:
    global _PROBE_DIR
    if _PROBE_DIR is not None:
        shutil.rmtree(_PROBE_DIR, ignore_errors=True)
        _PROBE_DIR = None


def probe_mounts() -> list[dict[str, Any]]:
    """The test spec's mounts plus a read-only bind of the probe directory at /tmp/probe.

    Under the spec's /tmp tmpfs, so the mount point is never made in the shared rootfs."""
    mounts: list[dict[str, Any]] = test_spec("/", [])["mounts"]
    bind = {"destination": PROBE_DIR, "type": "none", "source": probe_dir(),
            "options": ["bind", "ro"]}  # fmt: skip
    return [*mounts, bind]


def with_seccomp(seccomp: dict[str, Any] | None, **overrides: Any) -> dict[str, Any]:
    """Spec overrides: the probe mounted and ``linux.seccomp`` set (or left out for None)."""
    linux = dict(overrides.pop("linux", {}))
    if seccomp is not None:
        linux["seccomp"] = seccomp
    return {"mounts": probe_mounts(), "linux": linux, **overrides}


def allow_but(*rules: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A profile allowing everything except ``rules``."""
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": list(rules), **fields}
