"""The devices controller of cgroup v2: OCI ``linux.resources.devices`` as an eBPF filter.

cgroup v2 has no ``devices.allow``/``devices.deny`` files: device access (open for read or
write, and mknod of block and char nodes) is decided by ``BPF_PROG_TYPE_CGROUP_DEVICE``
programs attached to the cgroup. Without one, a container with CAP_MKNOD can make a node for
any disk of the VM and read or write it. This module turns the spec's rules into such a
program and attaches it, exactly as runc does (so isolation is at least runc's):

1. The rule list is the spec's rules followed by runc's default allow list
   (:data:`DEFAULT_DEVICE_RULES`): mknod of any char or block node, rwm on null, zero, full,
   random, urandom, tty, ptmx, every /dev/pts/N and /dev/net/tun. runc appends the same
   list to every container; opening anything else fails with EPERM.
2. The rules are applied in order to an emulation of the cgroup v1 devices controller
   (:class:`DeviceEmulator`, runc's ``devices.emulator``): an ``a`` rule resets the
   default (allow all or deny all), other rules add or remove exceptions to it. Removing
   part of a wildcard exception (``deny c 1:3`` after ``allow c *:*``) is refused, as runc
   refuses it, rather than silently ignored as cgroup v1 would.
3. The resulting exceptions become the program (:func:`assemble`): one block per exception
   comparing type, access, major and minor, returning the exception's verdict on a match,
   and the default verdict when none matches. The instruction sequence is runc's.

Attachment (:func:`attach_device_filter`) happens on the agent side when the container's
cgroup is created, before the init is moved in, so nothing in the container ever runs
unfiltered; execs join the same cgroup. ``BPF_F_ALLOW_MULTI`` keeps filters of ancestor
cgroups in force; a filter already on the directory (a re-used cgroupsPath) is replaced
with ``BPF_F_REPLACE`` when there is exactly one, as runc does. The cgroup holds the
program: it goes away with the cgroup, so removal needs no extra step.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from trinit import _linux as _libc
from trinit.errors import Internal, InvalidArgument

WILDCARD = -1
ALL_ACCESS = "rwm"

# struct bpf_cgroup_dev_ctx access_type: (access << 16) | type
BPF_DEVCG_ACC_MKNOD = 1
BPF_DEVCG_ACC_READ = 2
BPF_DEVCG_ACC_WRITE = 4
BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2

LICENSE = "Apache"  # the program is runc's (Apache-2.0); the kernel wants a license string
LOG_SIZE = 64 * 1024


@dataclass(frozen=True)
class DeviceRule:
    """One cgroup device rule: ``kind`` is ``a``, ``b`` or ``c``; -1 is a wildcard number."""

    allow: bool
    kind: str = "a"
    major: int = WILDCARD
    minor: int = WILDCARD
    access: str = ALL_ACCESS

    def __str__(self) -> str:
        def number(value: int) -> str:
            return "*" if value < 0 else str(value)

        verdict = "allow" if self.allow else "deny"
        return f"{verdict} {self.kind} {number(self.major)}:{number(self.minor)} {self.access}"


def _allow(kind: str, major: int, minor: int, access: str = ALL_ACCESS) -> DeviceRule:
    return DeviceRule(True, kind, major, minor, access)


# runc's specconv.AllowedDevices, in its order (appended after the spec's own rules).
DEFAULT_DEVICE_RULES: tuple[DeviceRule, ...] = (
    _allow("c", WILDCARD, WILDCARD, "m"),  # mknod of any char node (opening is separate)
    _allow("b", WILDCARD, WILDCARD, "m"),  # mknod of any block node
    _allow("c", 1, 3),  # /dev/null
    _allow("c", 1, 8),  # /dev/random
    _allow("c", 1, 7),  # /dev/full
    _allow("c", 5, 0),  # /dev/tty
    _allow("c", 1, 5),  # /dev/zero
    _allow("c", 1, 9),  # /dev/urandom
    _allow("c", 136, WILDCARD),  # /dev/pts/N
    _allow("c", 5, 2),  # /dev/ptmx
    _allow("c", 10, 200),  # /dev/net/tun
)


def parse_rules(entries: Iterable[Mapping[str, Any]] | None) -> list[DeviceRule]:
    """OCI ``linux.resources.devices`` entries -> rules (InvalidArgument if malformed).

    As runc: ``type`` defaults to ``a``, a missing major or minor is a wildcard, an empty
    ``access`` is an error, and only the letters r, w and m are accepted.
    """
    rules = []
    for index, entry in enumerate(entries or []):
        if not isinstance(entry, Mapping):
            raise InvalidArgument(f"devices: rule {index} is not an object")
        kind = entry.get("type") or "a"
        if kind not in ("a", "b", "c"):
            raise InvalidArgument(f"devices: rule {index}: invalid cgroup device type {kind!r}")
        access = entry.get("access") or ""
        if not access:
            raise InvalidArgument(f"devices: rule {index}: access cannot be empty")
        if not isinstance(access, str) or set(access) - set(ALL_ACCESS):
            raise InvalidArgument(f"devices: rule {index}: invalid access {access!r}")
        numbers = []
        for name in ("major", "minor"):
            value = entry.get(name)
            if value is None:
                value = WILDCARD
            if not isinstance(value, int) or isinstance(value, bool) or value >= 1 << 32:
                raise InvalidArgument(f"devices: rule {index}: invalid {name} {value!r}")
            numbers.append(value if value >= 0 else WILDCARD)
        rules.append(DeviceRule(bool(entry.get("allow")), kind, numbers[0], numbers[1], access))
    return rules


def container_rules(resources: Mapping[str, Any] | None) -> list[DeviceRule]:
    """The full rule list for a container: its spec's rules, then :data:`DEFAULT_DEVICE_RULES`."""
    entries = (resources or {}).get("devices")
    return parse_rules(entries) + list(DEFAULT_DEVICE_RULES)


_Meta = tuple[str, int, int]  # (kind, major, minor)


class DeviceEmulator:
    """The cgroup v1 devices controller's state, as runc's emulator models it.

    ``default_allow`` is the verdict for a device no exception matches; ``exceptions``
    maps (kind, major, minor) to the access letters that get the opposite verdict.
    A fresh emulator denies everything.
    """

    def __init__(self) -> None:
        self.default_allow = False
        self.exceptions: dict[_Meta, frozenset[str]] = {}

    def apply(self, rule: DeviceRule) -> None:
        """Apply one rule; InvalidArgument for a hole punched into a wildcard exception."""
        if rule.kind == "a":
            self.default_allow = rule.allow
            self.exceptions = {}
            return
        meta = (rule.kind, rule.major, rule.minor)
        access = frozenset(rule.access)
        if rule.allow == self.default_allow:
            self._remove(meta, access, rule)
        else:
            self.exceptions[meta] = self.exceptions.get(meta, frozenset()) | access

    def _remove(self, meta: _Meta, access: frozenset[str], rule: DeviceRule) -> None:
        kind, major, minor = meta
        for partial in (
            (kind, WILDCARD, minor),
            (kind, major, WILDCARD),
            (kind, WILDCARD, WILDCARD),
        ):
            if partial != meta and self.exceptions.get(partial, frozenset()) & access:
                raise InvalidArgument(
                    f"devices: rule {rule} cannot punch a hole in the wildcard rule "
                    f"{partial[0]} {_number(partial[1])}:{_number(partial[2])} "
                    f"{_letters(self.exceptions[partial])}"
                )
        remaining = self.exceptions.get(meta, frozenset()) - access
        if remaining:
            self.exceptions[meta] = remaining
        else:
            self.exceptions.pop(meta, None)

    def exception_rules(self) -> list[DeviceRule]:
        """The exceptions as rules with the non-default verdict, sorted (major, minor, type)."""
        ordered = sorted(
            self.exceptions.items(), key=lambda item: (item[0][1], item[0][2], item[0][0])
        )
        return [
            DeviceRule(not self.default_allow, kind, major, minor, _letters(access))
            for (kind, major, minor), access in ordered
        ]


def _number(value: int) -> str:
    return "*" if value < 0 else str(value)


def _letters(access: Iterable[str]) -> str:
    return "".join(letter for letter in ALL_ACCESS if letter in access)


def emulate(rules: Iterable[DeviceRule]) -> DeviceEmulator:
    emulator = DeviceEmulator()
    for rule in rules:
        emulator.apply(rule)
    return emulator


# --- eBPF assembly ---------------------------------------------------------------------------
# struct bpf_insn { u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm; } (little endian)

_LDX_MEM_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W
_ALU32_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
_ALU32_RSH_K = 0x74  # BPF_ALU | BPF_RSH | BPF_K
_ALU32_MOV_K = 0xB4  # BPF_ALU | BPF_MOV | BPF_K
_ALU32_MOV_X = 0xBC  # BPF_ALU | BPF_MOV | BPF_X
_JMP_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K
_JMP_JNE_X = 0x5D  # BPF_JMP | BPF_JNE | BPF_X
_JMP_EXIT = 0x95  # BPF_JMP | BPF_EXIT

_R0, _R1, _R2, _R3, _R4, _R5 = range(6)
_NEXT = object()  # placeholder jump target: the start of the next block


@dataclass(frozen=True)
class Insn:
    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    def encode(self) -> bytes:
        return struct.pack("<BBhi", self.code, (self.src << 4) | self.dst, self.off, self.imm)


def _signed32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def _block(rule: DeviceRule) -> list[Insn]:
    """Instructions for one exception; jumps with ``off=-1`` go to the next block."""
    kind = {"c": BPF_DEVCG_DEV_CHAR, "b": BPF_DEVCG_DEV_BLOCK}.get(rule.kind)
    if kind is None:
        raise InvalidArgument(f"devices: rule {rule}: no filter for device type {rule.kind!r}")
    access = 0
    for letter in rule.access:
        access |= {"r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE, "m": BPF_DEVCG_ACC_MKNOD}[
            letter
        ]
    code = [Insn(_JMP_JNE_K, _R2, imm=kind, off=-1)]
    if access != BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD:
        # the requested access must be a subset of the rule's: (R3 & access) == R3
        code += [
            Insn(_ALU32_MOV_X, _R1, _R3),
            Insn(_ALU32_AND_K, _R1, imm=access),
            Insn(_JMP_JNE_X, _R1, _R3, off=-1),
        ]
    if rule.major >= 0:
        code.append(Insn(_JMP_JNE_K, _R4, imm=_signed32(rule.major), off=-1))
    if rule.minor >= 0:
        code.append(Insn(_JMP_JNE_K, _R5, imm=_signed32(rule.minor), off=-1))
    code += [Insn(_ALU32_MOV_K, _R0, imm=int(rule.allow)), Insn(_JMP_EXIT)]
    # resolve "next block" jumps: the block's length is now known
    return [
        Insn(i.code, i.dst, i.src, len(code) - index - 1, i.imm) if i.off == -1 else i
        for index, i in enumerate(code)
    ]


def assemble(rules: Iterable[DeviceRule]) -> list[Insn]:
    """The filter program for ``rules`` (applied in order, runc's semantics)."""
    emulator = emulate(rules)
    code = [
        Insn(_LDX_MEM_W, _R2, _R1, 0),  # R2 <- access_type
        Insn(_ALU32_AND_K, _R2, imm=0xFFFF),  # R2 <- device type (low 16 bits)
        Insn(_LDX_MEM_W, _R3, _R1, 0),
        Insn(_ALU32_RSH_K, _R3, imm=16),  # R3 <- access (high 16 bits)
        Insn(_LDX_MEM_W, _R4, _R1, 4),  # R4 <- major
        Insn(_LDX_MEM_W, _R5, _R1, 8),  # R5 <- minor
    ]
    for rule in emulator.exception_rules():
        code += _block(rule)
    code += [Insn(_ALU32_MOV_K, _R0, imm=int(emulator.default_allow)), Insn(_JMP_EXIT)]
    return code


def encode(code: Iterable[Insn]) -> bytes:
    return b"".join(insn.encode() for insn in code)


# --- loading and attaching -------------------------------------------------------------------


PROGRAMS_KEPT = 32
"""Assembled programs remembered by :func:`device_filter`, least recently used dropped."""


def device_filter(resources: Mapping[str, Any] | None) -> bytes:
    """The encoded filter program for a container's ``linux.resources``.

    Pure: raises InvalidArgument for a malformed rule or a hole punched into a wildcard,
    before anything is created. The program of a rule list is assembled once and then
    remembered (the last :data:`PROGRAMS_KEPT` lists): assembling takes ~0.2 ms of every
    CreateProcess, and almost every container has the same list.
    """
    return _program(tuple(container_rules(resources)))


@functools.lru_cache(maxsize=PROGRAMS_KEPT)
def _program(rules: tuple[DeviceRule, ...]) -> bytes:
    return encode(assemble(rules))


def load_program(insns: bytes) -> int:
    """Load a device filter; the caller owns (and closes) the returned fd.

    Internal naming the errno (and the verifier's log) when the kernel refuses it.
    """
    try:
        fd, _ = _libc.bpf_prog_load(
            _libc.BPF_PROG_TYPE_CGROUP_DEVICE,
            insns,
            LICENSE,
            expected_attach_type=_libc.BPF_CGROUP_DEVICE,
            name="trinit_devices",
            log_size=LOG_SIZE,
        )
    except OSError as exc:
        log = f": {exc.filename}" if exc.filename else ""
        reason = _describe(exc)
        raise Internal(f"devices: BPF_PROG_LOAD of the device filter: {reason}{log}") from exc
    return fd


class LoadedFilters:
    """Device filters loaded once and attached to every cgroup that asks for the same one.

    Loading runs the kernel's verifier, ~1.4 ms per container start here; almost every
    container asks for the same program (runc's default list, or the same spec). A loaded
    program can be attached to any number of cgroups, and each attachment holds it, so
    closing an fd here never detaches anything. At most ``limit`` programs are kept (the
    least recently used is closed), so a host sending ever new rules cannot make trinit
    hold more. Thread-safe: cgroups are prepared in worker threads.
    """

    def __init__(self, limit: int = 16) -> None:
        self._limit = limit
        self._fds: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, insns: bytes) -> int:
        """An fd of the loaded program ``insns``; the caller closes it."""
        with self._lock:
            cached = self._fds.get(insns)
            if cached is not None:
                self._fds.move_to_end(insns)
                return fcntl.fcntl(cached, fcntl.F_DUPFD_CLOEXEC, 0)
        loaded = load_program(insns)  # outside the lock: the verifier takes a while
        with self._lock:
            if insns not in self._fds:
                self._fds[insns] = fcntl.fcntl(loaded, fcntl.F_DUPFD_CLOEXEC, 0)
                while len(self._fds) > self._limit:
                    os.close(self._fds.popitem(last=False)[1])
        return loaded

    def forget(self, insns: bytes) -> None:
        """Drop (and close) the kept program for ``insns``, if any."""
        with self._lock:
            fd = self._fds.pop(insns, None)
        if fd is not None:
            os.close(fd)

    def clear(self) -> None:
        """Close every kept program (attachments keep theirs)."""
        with self._lock:
            fds, self._fds = list(self._fds.values()), OrderedDict()
        for fd in fds:
            os.close(fd)

    def __len__(self) -> int:
        return len(self._fds)


LOADED = LoadedFilters()
"""The agent's loaded device filters (:func:`attach_device_filter` uses it)."""


def attach_device_filter(
    cgroup_dir: str, insns: bytes, loaded: LoadedFilters | None = None
) -> None:
    """Attach the filter ``insns`` (from :func:`device_filter`) to ``cgroup_dir``, loading it
    unless ``loaded`` (default :data:`LOADED`) has it already.

    Fails closed: Internal (naming the call and the errno) if the kernel refuses, so a
    container never runs with device access it was not given. Blocking; run it in a thread.
    """
    loaded = LOADED if loaded is None else loaded
    prog_fd = loaded.open(insns)
    try:
        dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        os.close(prog_fd)
        raise Internal(f"devices: open {cgroup_dir}: {_describe(exc)}") from exc
    try:
        try:
            _attach(dir_fd, prog_fd, cgroup_dir)
        except Internal:
            # The shared program may be attached there already among others (a re-used
            # cgroupsPath): the kernel refuses the same program twice. A fresh one is not.
            loaded.forget(insns)
            os.close(prog_fd)
            prog_fd = -1
            prog_fd = load_program(insns)
            _attach(dir_fd, prog_fd, cgroup_dir)
    finally:
        os.close(dir_fd)
        if prog_fd >= 0:
            os.close(prog_fd)


def _attach(dir_fd: int, prog_fd: int, cgroup_dir: str) -> None:
    flags = _libc.BPF_F_ALLOW_MULTI
    replace_fd = -1
    try:
        attached = _libc.bpf_prog_query(dir_fd, _libc.BPF_CGROUP_DEVICE)
    except OSError:
        attached = []
    if len(attached) == 1:
        try:
            replace_fd = _libc.bpf_prog_get_fd_by_id(attached[0])
            flags |= _libc.BPF_F_REPLACE
        except OSError:
            replace_fd = -1
    try:
        _libc.bpf_prog_attach(dir_fd, prog_fd, _libc.BPF_CGROUP_DEVICE, flags, max(replace_fd, 0))
    except OSError as exc:
        raise Internal(
            f"devices: BPF_PROG_ATTACH (BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI) to "
            f"{cgroup_dir}: {_describe(exc)}"
        ) from exc
    finally:
        if replace_fd >= 0:
            os.close(replace_fd)


def attached_device_filters(cgroup_dir: str) -> list[int]:
    """Ids of the device filters attached to ``cgroup_dir`` (tests and diagnostics)."""
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _libc.bpf_prog_query(fd, _libc.BPF_CGROUP_DEVICE)
    finally:
        os.close(fd)


def _describe(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"{exc.strerror or exc} ({name})"
