"""The device filter (trinit.cgroup): rule semantics, the assembled program, the real kernel.

Three layers, each against what runc does (runc's devices emulator and devicefilter are
the reference): the rule list and its cgroup-v1 emulation (pure), the eBPF program run by a
small interpreter of the instructions it uses (pure: every verdict of a rule set), and the
program loaded and attached to a fresh cgroup of this machine's cgroup2 hierarchy with a
forked child inside it doing mknod and open in a private tmpfs (real; the nodes exist only
in that tmpfs, in the child's own mount namespace, and no I/O is done on them).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from trinit import _linux as sc
from trinit import errors
from trinit._mountinfo import read_mounts
from trinit.cgroup import (
    DEFAULT_DEVICE_RULES,
    DeviceRule,
    LoadedFilters,
    attach_device_filter,
    attached_device_filters,
    device_filter,
)

MKNOD, READ, WRITE = 1, 2, 4
BLOCK, CHAR = 1, 2


# --- an interpreter for the instructions the filter uses ------------------------------------


def run_filter(program: bytes, kind: int, major: int, minor: int, access: int) -> bool:
    """Execute ``program`` on a ``bpf_cgroup_dev_ctx``; True means the kernel would allow."""
    ctx = struct.pack("<III", (access << 16) | kind, major, minor)
    regs = [0] * 11
    pc = 0
    mask32 = (1 << 32) - 1
    mask64 = (1 << 64) - 1
    for _ in range(10_000):
        code, regs_byte, off, imm = struct.unpack_from("<BBhi", program, pc * 8)
        dst, src = regs_byte & 0xF, regs_byte >> 4
        pc += 1
        if code == 0x61:  # ldx w: only R1 (the ctx) is ever the base
            assert src == 1
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif code == 0x54:
            regs[dst] = (regs[dst] & imm) & mask32
        elif code == 0x74:
            regs[dst] = (regs[dst] & mask32) >> imm
        elif code == 0xB4:
            regs[dst] = imm & mask32
        elif code == 0xBC:
            regs[dst] = regs[src] & mask32
        elif code == 0x55:
            if regs[dst] != imm & mask64:
                pc += off
        elif code == 0x5D:
            if regs[dst] != regs[src]:
                pc += off
        elif code == 0x95:
            return bool(regs[0])
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
    raise AssertionError("program did not terminate")


def verdict(
    devices: list[dict[str, object]] | None, kind: int, major: int, minor: int, access: int
) -> bool:
    return run_filter(device_filter({"devices": devices or []}), kind, major, minor, access)


def test_default_list_is_runcs() -> None:
    texts = [str(rule) for rule in DEFAULT_DEVICE_RULES]
    assert texts == [
        "allow c *:* m", "allow b *:* m", "allow c 1:3 rwm", "allow c 1:8 rwm",
        "allow c 1:7 rwm", "allow c 5:0 rwm", "allow c 1:5 rwm", "allow c 1:9 rwm",
        "allow c 136:* rwm", "allow c 5:2 rwm", "allow c 10:200 rwm",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "major", "minor", "access", "allowed"),
    [
        (CHAR, 1, 3, READ | WRITE, True),  # null
        (CHAR, 1, 5, READ, True),  # zero
        (CHAR, 136, 7, READ | WRITE, True),  # /dev/pts/7
        (CHAR, 5, 2, READ | WRITE, True),  # ptmx
        (CHAR, 10, 200, READ | WRITE, True),  # tun
        (BLOCK, 8, 0, MKNOD, True),  # runc lets any node be made...
        (BLOCK, 8, 0, READ, False),  # ...but not opened
        (BLOCK, 7, 0, READ | WRITE, False),
        (CHAR, 1, 1, READ, False),  # /dev/mem
        (CHAR, 10, 237, READ, False),  # loop-control
        (CHAR, 5, 1, READ | WRITE, False),  # console is not in runc's list
    ],
)
def test_default_verdicts(kind: int, major: int, minor: int, access: int, allowed: bool) -> None:
    assert verdict(None, kind, major, minor, access) is allowed


def test_specific_grant_and_access_subset() -> None:
    grant = [{"allow": True, "type": "b", "major": 7, "minor": 0, "access": "r"}]
    assert verdict(grant, BLOCK, 7, 0, READ)
    assert not verdict(grant, BLOCK, 7, 0, READ | WRITE)  # w was not granted
    assert not verdict(grant, BLOCK, 7, 1, READ)
    assert not verdict(grant, CHAR, 7, 0, READ)  # the type matters


def test_wildcards() -> None:
    minors = [{"allow": True, "type": "b", "major": 7, "access": "rw"}]
    assert verdict(minors, BLOCK, 7, 0, READ | WRITE) and verdict(minors, BLOCK, 7, 99, WRITE)
    assert not verdict(minors, BLOCK, 8, 0, READ)
    everything = [{"allow": True, "access": "rwm"}]  # type a: allow all
    assert verdict(everything, BLOCK, 8, 0, READ | WRITE)


def test_rules_apply_in_order() -> None:
    # Docker's shape: deny all, then grants; a later deny removes an earlier grant.
    rules = [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "b", "major": 7, "minor": 0, "access": "rw"},
        {"allow": False, "type": "b", "major": 7, "minor": 0, "access": "w"},
    ]
    assert verdict(rules, BLOCK, 7, 0, READ)
    assert not verdict(rules, BLOCK, 7, 0, WRITE)
    # allow all, then deny one node: a deny-list program
    deny_one = [
        {"allow": True, "access": "rwm"},
        {"allow": False, "type": "b", "major": 8, "minor": 0, "access": "rwm"},
    ]
    assert not verdict(deny_one, BLOCK, 8, 0, READ)
    assert verdict(deny_one, BLOCK, 8, 1, READ)
    # the defaults come after the spec's rules: a spec cannot take /dev/null away
    no_null = [{"allow": False, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]
    assert verdict(no_null, CHAR, 1, 3, READ)


def test_hole_in_a_wildcard_is_refused() -> None:
    rules = [
        {"allow": True, "type": "c", "major": 4, "access": "rw"},
        {"allow": False, "type": "c", "major": 4, "minor": 1, "access": "w"},
    ]
    with pytest.raises(errors.InvalidArgument, match="cannot punch a hole"):
        device_filter({"devices": rules})


@pytest.mark.parametrize(
    "rule",
    [
        {"allow": True, "type": "b", "major": 7, "access": ""},
        {"allow": True, "type": "x", "access": "r"},
        {"allow": True, "type": "b", "access": "rwx"},
        {"allow": True, "type": "b", "major": "7", "access": "r"},
    ],
)
def test_malformed_rules_are_invalid_argument(rule: dict[str, object]) -> None:
    with pytest.raises(errors.InvalidArgument):
        device_filter({"devices": [rule]})


def test_assembled_programs_are_remembered_and_bounded() -> None:
    """Equal rule lists share one assembled program (assembling is ~0.2 ms of a create); a
    host sending ever new lists makes trinit remember at most PROGRAMS_KEPT of them, and a
    refused list is refused every time."""
    from trinit.cgroup._devices import PROGRAMS_KEPT, _program

    rules = [{"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"}]
    first = device_filter({"devices": rules})
    assert device_filter({"devices": [dict(rule) for rule in rules]}) is first
    for minor in range(3 * PROGRAMS_KEPT):
        grant = {"allow": True, "type": "c", "major": 99, "minor": minor, "access": "r"}
        program = device_filter({"devices": [grant]})
        assert run_filter(program, CHAR, 99, minor, READ)
        assert not run_filter(program, CHAR, 99, minor + 1, READ)
    assert _program.cache_info().currsize == PROGRAMS_KEPT
    hole = [
        {"allow": True, "type": "c", "major": 4, "access": "rw"},
        {"allow": False, "type": "c", "major": 4, "minor": 1, "access": "w"},
    ]
    for _ in range(2):
        with pytest.raises(errors.InvalidArgument, match="cannot punch a hole"):
            device_filter({"devices": hole})


def test_rule_text() -> None:
    assert str(DeviceRule(False, "b", 7, -1, "rw")) == "deny b 7:* rw"


# --- the real kernel ----------------------------------------------------------------------


@pytest.fixture
def cgroup_dir() -> Iterator[str]:
    mount = next((m.mount_point for m in read_mounts() if m.fstype == "cgroup2"), None)
    if mount is None:
        pytest.fail("no cgroup2 hierarchy on this machine: the device filter cannot be tested")
    path = os.path.join(mount, f"trinit-devtest-{secrets.token_hex(4)}")
    os.mkdir(path)
    try:
        yield path
    finally:
        os.rmdir(path)  # the children below have exited: it is empty


PROBES = (
    ("null", stat.S_IFCHR, 1, 3),
    ("loop0", stat.S_IFBLK, 7, 0),
    ("loopctl", stat.S_IFCHR, 10, 237),
)


def probe_in_cgroup(cgroup: str, scratch: str) -> dict[str, str]:
    """Fork a child into ``cgroup``; it mknods and opens each of PROBES in a private tmpfs.

    Returns ``{"mknod <name>": "ok" | errno name, "open <name>": ...}``. No byte is read or
    written through any node.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        status = 1
        try:
            os.close(read_end)
            sc.unshare(sc.CLONE_NEWNS)
            sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC, None)
            sc.mount("tmpfs", scratch, "tmpfs", 0, "mode=700")
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
                procs.write(str(os.getpid()))
            lines = []
            for name, kind, major, minor in PROBES:
                path = os.path.join(scratch, name)
                for step in ("mknod", "open"):
                    try:
                        if step == "mknod":
                            os.mknod(path, kind | 0o600, os.makedev(major, minor))
                        else:
                            os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))
                        result = "ok"
                    except OSError as exc:
                        result = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                    lines.append(f"{step} {name}={result}")
            os.write(write_end, "\n".join(lines).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read().decode()
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    return dict(line.split("=", 1) for line in data.splitlines())


def test_filter_attached_to_a_real_cgroup(cgroup_dir: str, tmp_path: Path) -> None:
    attach_device_filter(cgroup_dir, device_filter({"devices": []}))
    assert len(attached_device_filters(cgroup_dir)) == 1
    seen = probe_in_cgroup(cgroup_dir, str(tmp_path))
    assert seen["mknod null"] == "ok" and seen["open null"] == "ok"
    assert seen["mknod loop0"] == "ok"  # runc's default list allows making any node...
    assert seen["open loop0"] == "EPERM"  # ...and opening none it does not list
    assert seen["open loopctl"] == "EPERM"


def test_grant_and_replace(cgroup_dir: str, tmp_path: Path) -> None:
    attach_device_filter(cgroup_dir, device_filter({"devices": []}))
    grant = {"devices": [{"allow": True, "type": "b", "major": 7, "minor": 0, "access": "rw"}]}
    attach_device_filter(cgroup_dir, device_filter(grant))  # replaces the first filter
    assert len(attached_device_filters(cgroup_dir)) == 1
    seen = probe_in_cgroup(cgroup_dir, str(tmp_path))
    assert seen["open loop0"] != "EPERM"  # ENXIO without a loop driver, else ok
    assert seen["open loopctl"] == "EPERM"


@pytest.fixture
def two_cgroups(cgroup_dir: str) -> Iterator[tuple[str, str]]:
    pair = (os.path.join(cgroup_dir, "a"), os.path.join(cgroup_dir, "b"))
    for path in pair:
        os.mkdir(path)
    try:
        yield pair
    finally:
        for path in pair:
            os.rmdir(path)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_one_loaded_program_serves_many_cgroups(two_cgroups: tuple[str, str]) -> None:
    """The verifier runs once per distinct program (~1.4 ms of every container start)."""
    loaded = LoadedFilters()
    program = device_filter({"devices": []})
    for path in two_cgroups:
        attach_device_filter(path, program, loaded)
    ids = [attached_device_filters(path) for path in two_cgroups]
    assert len(ids[0]) == 1 and ids[0] == ids[1]  # the same program object
    assert len(loaded) == 1
    loaded.forget(program)
    assert len(loaded) == 0
    assert attached_device_filters(two_cgroups[0]) == ids[0]  # attachments hold it


def test_loaded_programs_are_bounded(cgroup_dir: str) -> None:
    before = _open_fds()
    loaded = LoadedFilters(limit=2)
    for minor in range(4):
        rule = {"allow": True, "type": "c", "major": 10, "minor": 200 + minor, "access": "r"}
        attach_device_filter(cgroup_dir, device_filter({"devices": [rule]}), loaded)
    assert len(loaded) == 2
    assert _open_fds() == before + 2  # the kept two, nothing else left open
    loaded.clear()
    assert _open_fds() == before


def test_a_kept_program_already_among_others_is_loaded_afresh(cgroup_dir: str) -> None:
    """A re-used cgroup holding our kept program *and* another: the kernel refuses the
    same program twice with BPF_F_ALLOW_MULTI, so a fresh copy is attached instead."""
    loaded = LoadedFilters()
    program = device_filter({"devices": []})
    attach_device_filter(cgroup_dir, program, loaded)
    other = sc.bpf_prog_load(  # a second, different filter, attached beside it
        sc.BPF_PROG_TYPE_CGROUP_DEVICE,
        device_filter({"devices": [{"allow": False, "type": "a", "access": "rwm"}]}),
        "Apache",
        expected_attach_type=sc.BPF_CGROUP_DEVICE,
    )[0]
    directory = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sc.bpf_prog_attach(directory, other, sc.BPF_CGROUP_DEVICE, sc.BPF_F_ALLOW_MULTI, 0)
    finally:
        os.close(directory)
        os.close(other)
    assert len(attached_device_filters(cgroup_dir)) == 2
    attach_device_filter(cgroup_dir, program, loaded)
    assert len(attached_device_filters(cgroup_dir)) == 3


def test_attach_refused_names_the_errno(tmp_path: Path) -> None:
    """The refusal path: a directory that is not a cgroup fails closed with the errno."""
    with pytest.raises(errors.Internal, match=r"BPF_PROG_ATTACH .*\(E[A-Z]+\)"):
        attach_device_filter(str(tmp_path), device_filter({"devices": []}))


def test_bpf_prog_load_retries_eagain(monkeypatch: pytest.MonkeyPatch) -> None:
    """The verifier fails with EAGAIN when a signal is pending (a SIGCHLD in trinit): the
    load is tried again, as libbpf does, instead of failing the container's create."""
    calls: list[int] = []

    def flaky(cmd: int, attr: object) -> int:
        calls.append(cmd)
        if len(calls) < 3:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        return 42

    monkeypatch.setattr(sc, "_bpf", flaky)
    fd, _ = sc.bpf_prog_load(0, b"\0" * 8, "GPL")
    assert fd == 42
    assert calls == [sc.BPF_PROG_LOAD] * 3


def test_bpf_prog_load_gives_up_after_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def always(cmd: int, attr: object) -> int:
        calls.append(cmd)
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    monkeypatch.setattr(sc, "_bpf", always)
    with pytest.raises(OSError) as info:
        sc.bpf_prog_load(0, b"\0" * 8, "GPL")
    assert info.value.errno == errno.EAGAIN
    assert len(calls) == sc.BPF_PROG_LOAD_ATTEMPTS


def test_bpf_prog_load_does_not_retry_other_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def denied(cmd: int, attr: object) -> int:
        calls.append(cmd)
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(sc, "_bpf", denied)
    with pytest.raises(OSError):
        sc.bpf_prog_load(0, b"\0" * 8, "GPL")
    assert len(calls) == 1
