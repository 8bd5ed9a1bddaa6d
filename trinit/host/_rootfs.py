"""A busybox container rootfs and an OCI spec that is safe on a development machine.

:func:`build_busybox_rootfs` hard-links (or copies) the machine's static ``/bin/busybox``
into a directory and creates one symlink per applet, plus ``/etc/passwd`` with root(0),
bin(1) and nobody(65534) and a matching ``/etc/group``. Examples, tests and benchmarks use it.

:func:`busybox_spec` returns a host-like spec (what CreateProcess receives, before the
guest's alterations) whose mounts never touch the machine: a tmpfs ``/dev`` with single
device nodes bind-mounted from the machine's ``/dev``, a new devpts instance, no devtmpfs
and no sysfs (README "Hazards"). Run it only under an agent in its own namespaces
(:class:`trinit.host.LocalAgent`) or in a real guest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

BUSYBOX = "/bin/busybox"

PASSWD = """root:x:0:0:root:/root:/bin/sh
bin:x:1:1:bin:/bin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """root:x:0:
bin:x:1:
tty:x:5:
nogroup:x:65534:
"""

DEVICE_BINDS = ("null", "zero", "full", "random", "urandom", "tty")

DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip

MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]  # fmt: skip

READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def _applets() -> list[str]:
    out = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True, text=True)
    return [name for name in out.stdout.split() if name and "/" not in name]


def build_busybox_rootfs(path: str) -> None:
    """Populate ``path`` (created if missing) with a minimal busybox root filesystem."""
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys",
                      "tmp", "root", "run"):  # fmt: skip
        os.makedirs(os.path.join(path, directory), exist_ok=True)
    os.chmod(path, 0o755)  # pytest's tmp dirs are 0700: non-root users could not walk "/"
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    target = os.path.join(path, "bin", "busybox")
    try:
        os.link(BUSYBOX, target)
    except OSError:
        shutil.copy2(BUSYBOX, target)
    for applet in _applets():
        link = os.path.join(path, "bin", applet)
        if applet != "busybox" and not os.path.lexists(link):
            os.symlink("/bin/busybox", link)
    with open(os.path.join(path, "etc", "passwd"), "w") as file:
        file.write(PASSWD)
    with open(os.path.join(path, "etc", "group"), "w") as file:
        file.write(GROUP)


def _mount(kind: str, source: str, destination: str, options: list[str]) -> dict[str, Any]:
    return {"type": kind, "source": source, "destination": destination, "options": options}


def busybox_spec(rootfs: str, args: list[str], **overrides: Any) -> dict[str, Any]:
    """A host-like OCI spec for ``rootfs`` running ``args``.

    Each keyword overrides a top-level key; a dict value is merged into an existing dict
    (so ``process={"terminal": True}`` keeps the other process fields).
    """
    mounts = [
        _mount("proc", "proc", "/proc", []),
        _mount("tmpfs", "tmpfs", "/dev", ["nosuid", "mode=755"]),
        *[_mount("none", f"/dev/{name}", f"/dev/{name}", ["bind"]) for name in DEVICE_BINDS],
        _mount(
            "tmpfs", "shm", "/dev/shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
        ),
        _mount(
            "devpts",
            "devpts",
            "/dev/pts",
            ["nosuid", "noexec", "newinstance", "gid=5", "mode=0620", "ptmxmode=0666"],
        ),
        _mount("tmpfs", "tmpfs", "/tmp", ["nosuid", "nodev", "mode=1777"]),
    ]
    caps = list(DEFAULT_CAPABILITIES)
    spec: dict[str, Any] = {
        "ociVersion": "",
        "hostname": "testbox",
        "process": {
            "args": list(args),
            "cwd": "/",
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "terminal": False,
            "noNewPrivileges": False,
            "user": {"uid": 0, "gid": 0},
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "inheritable": [],
                "ambient": [],
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        },
        "root": {"path": rootfs, "readonly": False},
        "mounts": mounts,
        "linux": {
            "cgroupsPath": "",
            "namespaces": [
                {"type": kind, "path": ""} for kind in ("cgroup", "ipc", "mount", "pid", "uts")
            ],
            "resources": {"devices": [], "hugepageLimits": []},
            "sysctl": {},
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key].update(value)
        else:
            spec[key] = value
    return spec
