"""The seccomp compiler, checked by running its programs in a classic-BPF interpreter.

The interpreter below (the few opcodes the compiler emits, with the kernel's rules: unsigned
32-bit A, forward jumps only, falling off the end is an error) evaluates a program on a
``seccomp_data``; a Python reference says what each profile must return. The syscall tables
are checked against this machine's kernel headers. Real processes: test_agent_seccomp.py.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trinit import _linux
from trinit.exec import _seccomp as sc
from trinit.exec import _syscall_table as table
from trinit.host import default_seccomp

ROOT = Path(__file__).resolve().parent.parent
X86 = "x86_64"
ALLOW, KILL = sc.RET_ALLOW, sc.RET_KILL_THREAD


def errno(value: int) -> int:
    return sc.RET_ERRNO | value


def run(
    program: bytes, nr: int, arch: int = sc.AUDIT_ARCH_X86_64, args: tuple[int, ...] = ()
) -> int:
    """Evaluate ``program`` on one seccomp_data as the kernel would."""
    padded = (*args, *([0] * (6 - len(args))))
    data = struct.pack("<IIQ6Q", nr, arch, 0, *padded)
    insns: list[tuple[int, int, int, int]] = [
        struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)
    ]
    assert 0 < len(insns) <= 4096
    a, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == sc.LD_W_ABS:
            a = struct.unpack_from("<I", data, k)[0]
        elif code == sc.ALU_AND_K:
            a &= k
        elif code == sc.RET_K:
            return k
        elif code == sc.JMP_JA:
            pc += k
        elif code in (sc.JMP_JEQ_K, sc.JMP_JGT_K, sc.JMP_JGE_K, sc.JMP_JSET_K):
            taken = {
                sc.JMP_JEQ_K: a == k, sc.JMP_JGT_K: a > k,
                sc.JMP_JGE_K: a >= k, sc.JMP_JSET_K: bool(a & k),
            }[code]  # fmt: skip
            pc += jt if taken else jf
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        assert pc < len(insns), "fell off the end of the program"


def build(profile: dict[str, Any], machine: str = X86) -> bytes:
    return sc.compile_filter(profile, machine).program


def allow_but(*rules: dict[str, Any], **fields: object) -> dict[str, Any]:
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": list(rules), **fields}


# --- tables ------------------------------------------------------------------------------------


def _header(path: str, pattern: str) -> dict[str, int]:
    text = Path(path).read_text()
    return {m.group(1): int(m.group(2)) for m in re.finditer(pattern, text, re.M)}


def test_tables_match_this_machines_kernel_headers() -> None:
    base = "/usr/include/x86_64-linux-gnu/asm/"
    assert _header(base + "unistd_64.h", r"^#define __NR_(\w+) (\d+)$") == table.X86_64
    assert _header(base + "unistd_32.h", r"^#define __NR_(\w+) (\d+)$") == table.I386
    x32 = _header(base + "unistd_x32.h", r"^#define __NR_(\w+) \(__X32_SYSCALL_BIT \+ (\d+)\)$")
    assert {name: nr | sc.X32_SYSCALL_BIT for name, nr in x32.items()} == table.X32
    assert len(table.X86_64) > 300 and len(table.AARCH64) > 250 and len(table.ARM) > 350


def test_generated_table_is_what_the_generator_writes() -> None:
    script = ROOT / "scripts" / "gen_syscall_tables.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_known_numbers_on_every_architecture() -> None:
    # a few fixed points of each ABI, and the syscall layer's own number for seccomp(2)
    assert (table.X86_64["seccomp"], table.AARCH64["seccomp"]) == (317, 277)
    assert (table.I386["socketcall"], table.ARM["cacheflush"]) == (102, 0x0F0002)
    assert "open" not in table.AARCH64 and table.AARCH64["openat"] == 56
    # every raw number of the syscall layer agrees with the generated tables
    tables = {"x86_64": table.X86_64, "aarch64": table.AARCH64}
    for arch, numbers in _linux.SYSCALL_NUMBERS.items():
        for name, number in numbers.items():
            assert tables[arch][name] == number, (arch, name)


# --- semantics ---------------------------------------------------------------------------------


def test_errno_kill_trap_log_trace_and_defaults() -> None:
    mkdir, getpid, kill, chmod, log, uname = (table.X86_64[n] for n in (
        "mkdir", "getpid", "kill", "chmod", "getuid", "uname"))  # fmt: skip
    program = build({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 13,
        "syscalls": [
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["chmod"], "action": "SCMP_ACT_TRAP"},
            {"names": ["getuid"], "action": "SCMP_ACT_LOG"},
            {"names": ["uname"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
        ],
    })  # fmt: skip
    assert run(program, mkdir) == errno(1)  # a rule's ERRNO defaults to EPERM
    assert run(program, getpid) == ALLOW
    assert run(program, kill) == sc.RET_KILL_PROCESS
    assert run(program, chmod) == sc.RET_TRAP
    assert run(program, log) == sc.RET_LOG
    assert run(program, uname) == sc.RET_TRACE | 7
    assert run(program, table.X86_64["open"]) == errno(13)
    assert run(program, table.X86_64["getppid"]) == errno(38)  # above the highest named


def test_architecture_dispatch_native_always_and_unlisted_killed() -> None:
    getpid = table.X86_64["getpid"]
    program = build(allow_but({"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}))
    assert run(program, getpid) == errno(1)
    assert run(program, table.I386["getpid"], arch=sc.AUDIT_ARCH_I386) == KILL
    assert run(program, table.X32["getpid"]) == KILL  # x32 not listed: a bad architecture
    program = build(allow_but({"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
                              architectures=["SCMP_ARCH_X86", "SCMP_ARCH_X32"]))  # fmt: skip
    assert run(program, getpid) == errno(1)
    assert run(program, table.I386["getpid"], arch=sc.AUDIT_ARCH_I386) == errno(1)
    assert run(program, table.I386["getppid"], arch=sc.AUDIT_ARCH_I386) == ALLOW
    assert run(program, table.X32["getpid"]) == errno(1)
    assert run(program, 1, arch=sc.AUDIT_ARCH_AARCH64) == KILL
    arm = build(allow_but({"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
                          architectures=["SCMP_ARCH_ARM"]), "aarch64")  # fmt: skip
    assert run(arm, table.AARCH64["getpid"], arch=sc.AUDIT_ARCH_AARCH64) == errno(1)
    assert run(arm, table.ARM["getpid"], arch=sc.AUDIT_ARCH_ARM) == errno(1)
    assert run(arm, table.X86_64["getpid"]) == KILL


def test_rule_order_default_equal_rules_and_unknown_names() -> None:
    unshare = table.X86_64["unshare"]
    program = build({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["unshare"], "action": "SCMP_ACT_ERRNO"},  # = default: dropped (runc)
            {"names": ["no_such_call", "unshare"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["unshare"], "action": "SCMP_ACT_KILL"},  # after an unconditional rule
        ],
    })  # fmt: skip
    assert run(program, unshare) == ALLOW


def test_enosys_above_the_profiles_highest_syscall_unless_default_allows() -> None:
    deny = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read", "futex_waitv"], "action": "SCMP_ACT_ALLOW"}]}  # fmt: skip
    program = build(deny)
    top = table.X86_64["futex_waitv"]
    assert run(program, top) == ALLOW
    assert run(program, top - 1) == errno(1)
    assert run(program, top + 1) == errno(38)
    assert run(build({**deny, "defaultErrnoRet": 38}), top + 1) == errno(38)
    assert run(build(allow_but({"names": ["read"], "action": "SCMP_ACT_KILL"})), top + 1) == ALLOW


def _holds(op: str, arg: int, value: int, two: int) -> bool:
    return {
        "SCMP_CMP_NE": arg != value, "SCMP_CMP_LT": arg < value, "SCMP_CMP_LE": arg <= value,
        "SCMP_CMP_EQ": arg == value, "SCMP_CMP_GE": arg >= value, "SCMP_CMP_GT": arg > value,
        "SCMP_CMP_MASKED_EQ": arg & value == two,
    }[op]  # fmt: skip


u64 = st.one_of(
    st.integers(0, 2**64 - 1),
    st.sampled_from([0, 1, 0xFFFFFFFF, 0x100000000, 0x1FFFFFFFF, 2**63, 2**64 - 1]),
)


@settings(max_examples=300, deadline=None)
@given(op=st.sampled_from(sc.OPS), arg=u64, value=u64, two=u64, index=st.integers(0, 5))
def test_every_operator_on_64_bit_arguments(
    op: str, arg: int, value: int, two: int, index: int
) -> None:
    rule = {"names": ["ioctl"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": index, "op": op, "value": value, "valueTwo": two}]}  # fmt: skip
    program = build(allow_but(rule, architectures=["SCMP_ARCH_X86"]))
    args = tuple(arg if i == index else ~arg & (2**64 - 1) for i in range(6))
    expected = errno(1) if _holds(op, arg, value, two) else ALLOW
    assert run(program, table.X86_64["ioctl"], args=args) == expected
    # i386 has 32-bit arguments: only the low halves take part, as in libseccomp
    low = tuple(a & 0xFFFFFFFF for a in args)
    expected32 = _holds(op, arg & 0xFFFFFFFF, value & 0xFFFFFFFF, two & 0xFFFFFFFF)
    result = run(program, table.I386["ioctl"], arch=sc.AUDIT_ARCH_I386, args=low)
    assert result == (errno(1) if expected32 else ALLOW)


def test_conditions_of_a_rule_and_and_same_argument_conditions_or() -> None:
    both = {"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "args": [
        {"index": 0, "op": "SCMP_CMP_EQ", "value": 1},
        {"index": 1, "op": "SCMP_CMP_EQ", "value": 2}]}  # fmt: skip
    either = {"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "args": [
        {"index": 0, "op": "SCMP_CMP_EQ", "value": 1},
        {"index": 0, "op": "SCMP_CMP_EQ", "value": 2}]}  # fmt: skip
    nr = table.X86_64["ioctl"]
    p, q = build(allow_but(both)), build(allow_but(either))
    assert [run(p, nr, args=a) for a in ((1, 2), (1, 3), (2, 2))] == [errno(1), ALLOW, ALLOW]
    assert [run(q, nr, args=a) for a in ((1,), (2,), (3,))] == [errno(1), errno(1), ALLOW]


def test_long_programs_use_long_jumps() -> None:
    # 300 conditional syscalls: the search tree's jumps span far more than 255 instructions
    names = sorted(table.X86_64, key=table.X86_64.__getitem__)[:300]
    above = [{"index": 2, "op": "SCMP_CMP_GT", "value": 2**40}]
    rules = [
        {"names": [n], "action": "SCMP_ACT_ERRNO", "errnoRet": 5, "args": above} for n in names
    ]
    program = build(allow_but(*rules))
    assert len(program) // 8 > 3 * 256
    for name in names[::17]:
        nr = table.X86_64[name]
        assert run(program, nr, args=(0, 0, 2**41)) == errno(5)
        assert run(program, nr, args=(0, 0, 2**40)) == ALLOW


def test_a_profile_too_large_for_bpf_is_refused() -> None:
    names = list(table.X86_64)
    rules = [
        {"names": names, "action": "SCMP_ACT_ERRNO",
         "args": [{"index": i % 6, "op": "SCMP_CMP_GE", "value": i}]}
        for i in range(12)
    ]  # fmt: skip
    with pytest.raises(sc.SeccompError, match="4096"):
        build(allow_but(*rules))


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ([], "must be an object"),
        ({"defaultAction": "SCMP_ACT_NOPE"}, "unknown action"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]},
         "unknown architecture"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}, "notify is not supported"),
        (allow_but({"names": ["read"], "action": "SCMP_ACT_NOTIFY"}), "SCMP_ACT_NOTIFY"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_X"]},
         "unsupported flag"),
        (allow_but({"names": [], "action": "SCMP_ACT_ERRNO"}), "names must not be empty"),
        (allow_but({"names": ["read"], "action": "SCMP_ACT_ERRNO",
                    "args": [{"index": 0, "op": "SCMP_CMP_NEAR", "value": 1}]}),
         "unknown operator"),
        (allow_but({"names": ["read"], "action": "SCMP_ACT_ERRNO",
                    "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": -1}]}), "value must be"),
        (allow_but({"names": ["read"], "action": "SCMP_ACT_KILL", "errnoRet": 1}), "errnoRet"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}, "defaultErrnoRet"),
    ],
)  # fmt: skip
def test_malformed_profiles_are_refused(profile: object, message: str) -> None:
    with pytest.raises(sc.SeccompError, match=message):
        sc.compile_filter(profile, X86)


# --- the default profile -----------------------------------------------------------------------


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_default_profile_compiles_and_denies_what_docker_denies(machine: str) -> None:
    profile = default_seccomp(machine=machine)
    numbers = {"x86_64": table.X86_64, "aarch64": table.AARCH64}[machine]
    audit = {"x86_64": sc.AUDIT_ARCH_X86_64, "aarch64": sc.AUDIT_ARCH_AARCH64}[machine]
    program = build(profile, machine)
    for name in ("keyctl", "unshare", "mount", "kexec_load", "bpf", "add_key", "reboot"):
        assert run(program, numbers[name], arch=audit) == errno(1), name
    for name in ("read", "openat", "execve", "clone", "futex", "getpid"):
        assert run(program, numbers[name], arch=audit) == ALLOW, name
    assert run(program, numbers["clone"], arch=audit, args=(0x10000000,)) == errno(1)
    assert run(program, numbers["clone3"], arch=audit) == errno(38)
    assert run(program, numbers["personality"], arch=audit, args=(0xFFFFFFFF,)) == ALLOW
    assert run(program, numbers["personality"], arch=audit, args=(1,)) == errno(1)
    assert run(program, 1000, arch=audit) == errno(38)


def test_default_profile_follows_capabilities_and_architecture() -> None:
    x86, arm64 = default_seccomp(machine="x86_64"), default_seccomp(machine="aarch64")
    assert x86["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert arm64["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]

    def names(p: dict[str, Any]) -> set[str]:
        return {n for rule in p["syscalls"] for n in rule["names"]}

    assert "arch_prctl" in names(x86) and "arch_prctl" not in names(arm64)
    assert "cacheflush" in names(arm64) and "cacheflush" not in names(x86)
    admin = default_seccomp(["CAP_SYS_ADMIN"], machine="x86_64")
    program = build(admin)
    assert run(program, table.X86_64["unshare"]) == ALLOW
    assert run(program, table.X86_64["clone"], args=(0x10000000,)) == ALLOW
    assert run(program, table.X86_64["clone3"]) == ALLOW
    assert all("includes" not in rule and "excludes" not in rule for rule in admin["syscalls"])
