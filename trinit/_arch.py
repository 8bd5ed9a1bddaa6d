"""Every architecture-specific value trinit uses, one table per architecture.

trinit runs on x86_64 and aarch64 guests and builds images for either from an x86_64 (or
aarch64) machine, so the values that differ are kept here, once: the raw syscall numbers
``trinit._linux`` needs at run time, and for the image builder the ELF machine number, the
dynamic loader's path, Debian's architecture and multiarch names, the OCI/Go architecture
name, the wheel platform tag and the QEMU system emulator.

Imported by ``trinit._linux``, which the exec helper loads before pivot_root: this module
therefore imports nothing at all (no ``dataclasses``, no ``typing``) and only defines data.
Keys are the machine names ``uname -m`` (``os.uname().machine``) reports.
"""

from __future__ import annotations


class Arch:
    """One architecture's values (immutable by convention; see the table below)."""

    __slots__ = (
        "console",
        "debian",
        "elf_machine",
        "loader",
        "multiarch",
        "name",
        "oci",
        "qemu",
        "syscalls",
        "wheel_platform",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        *,
        elf_machine: int,
        loader: str,
        multiarch: str,
        debian: str,
        oci: str,
        qemu: str,
        wheel_platform: str,
        syscalls: dict[str, int],
        console: str,
    ) -> None:
        self.name = name
        self.elf_machine = elf_machine
        """``e_machine`` in the ELF header (EM_X86_64 = 62, EM_AARCH64 = 183)."""
        self.loader = loader
        """The dynamic loader, as PT_INTERP names it in the distribution's binaries."""
        self.multiarch = multiarch
        """Debian's multiarch tuple: the library directory ``/lib/<multiarch>``."""
        self.debian = debian
        """Debian's architecture name (``apt-get download PKG:<debian>``)."""
        self.oci = oci
        """The OCI image config's ``architecture`` (Go's GOARCH)."""
        self.qemu = qemu
        """The QEMU system emulator for this architecture."""
        self.wheel_platform = wheel_platform
        """The wheel platform tag for ``pip download --platform``."""
        self.syscalls = syscalls
        """``name -> number`` for the calls ``trinit._linux`` makes through ``syscall(2)``."""
        self.console = console
        """The first serial console's name on QEMU's default machine for this architecture."""

    def __repr__(self) -> str:
        return f"Arch({self.name!r})"


ARCHES: dict[str, Arch] = {
    "x86_64": Arch(
        "x86_64",
        elf_machine=62,
        loader="/lib64/ld-linux-x86-64.so.2",
        multiarch="x86_64-linux-gnu",
        debian="amd64",
        oci="amd64",
        qemu="qemu-system-x86_64",
        wheel_platform="manylinux2014_x86_64",
        syscalls={
            "rt_sigaction": 13,
            "finit_module": 313,
            "openat2": 437,
            "seccomp": 317,
            "bpf": 321,
            "open_tree": 428,
            "move_mount": 429,
            "mount_setattr": 442,
            "clone3": 435,
        },
        console="ttyS0",
    ),
    "aarch64": Arch(
        "aarch64",
        elf_machine=183,
        loader="/lib/ld-linux-aarch64.so.1",
        multiarch="aarch64-linux-gnu",
        debian="arm64",
        oci="arm64",
        qemu="qemu-system-aarch64",
        wheel_platform="manylinux2014_aarch64",
        syscalls={
            "rt_sigaction": 134,
            "finit_module": 273,
            "openat2": 437,
            "seccomp": 277,
            "bpf": 280,
            "open_tree": 428,
            "move_mount": 429,
            "mount_setattr": 442,
            "clone3": 435,
        },
        console="ttyAMA0",
    ),
}
"""``uname -m`` name -> :class:`Arch`."""

ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "x86-64": "x86_64"}
"""Other spellings (Debian, OCI, Go) accepted by :func:`get`."""


def get(name: str) -> Arch:
    """The architecture named ``name`` (``uname -m``, Debian or OCI spelling).

    Raises KeyError naming the known ones."""
    key = ALIASES.get(name, name)
    try:
        return ARCHES[key]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r} (known: {', '.join(ARCHES)})") from None
