"""Compile an OCI ``linux.seccomp`` object to a classic-BPF seccomp filter.

Used twice with the same code: by CreateProcess (``trinit.exec._oci``) to refuse a malformed
profile with INVALID_ARGUMENT before anything starts, and by the exec helper
(``trinit.exec._child``), which compiles it again before pivot_root and installs the result
as its last step before execve. Standard library only, no ``typing`` or ``json`` at run
time: the helper imports this module and must start fast.

What the program does, following what runc (libseccomp 2.5 plus runc's -ENOSYS patch)
shows a process:

* It loads ``seccomp_data.arch`` first and dispatches to one section per listed
  architecture. The native architecture is always present (libseccomp adds it to every
  filter); an architecture that is not listed gets libseccomp's bad-architecture action,
  ``SCMP_ACT_KILL`` (the thread dies by SIGSYS). x86_64 and x32 share AUDIT_ARCH_X86_64: a
  number with ``__X32_SYSCALL_BIT`` is x32, and when x32 is not listed it is a bad
  architecture.
* In a section, syscall numbers are found through a binary search; each syscall's rules
  are tried in profile order and the first whose conditions all hold decides; no rule
  matching means the default action. Rules whose action equals the default action are
  dropped, and a rule with several conditions on the same argument becomes one rule per
  condition (both as runc does).
* A syscall number above the highest one the profile names for that architecture returns
  ENOSYS unless the default action allows (runc's stub), so a libc probing a newer
  syscall falls back instead of failing with EPERM.
* Argument comparisons are 64-bit, as two 32-bit halves (little-endian layout), on 64-bit
  architectures; on i386, x32 and arm only the low half exists, as in libseccomp.
* Syscall names come from a table generated from the kernel headers
  (``_syscall_table``); a name unknown for an architecture is skipped, as runc does.
"""

from __future__ import annotations

import os
import struct

from trinit.exec import _syscall_table as table

TYPE_CHECKING = False  # typing costs import time in the exec helper
if TYPE_CHECKING:
    from typing import Any

# seccomp return values (linux/seccomp.h)
RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000

EPERM = 1
ENOSYS = 38

# seccomp(2) filter flags
FILTER_FLAGS: dict[str, int] = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}

X32_SYSCALL_BIT = 0x40000000
AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
AUDIT_ARCH_ARM = 0x40000028

# SCMP_ARCH_* -> (AUDIT_ARCH_*, table, 64-bit arguments). None: a name OCI and libseccomp
# know but no trinit VM can run; it is accepted and can never match a running process.
ARCHES: dict[str, tuple[int, dict[str, int], bool] | None] = {
    "SCMP_ARCH_X86_64": (AUDIT_ARCH_X86_64, table.X86_64, True),
    "SCMP_ARCH_X86": (AUDIT_ARCH_I386, table.I386, False),
    "SCMP_ARCH_X32": (AUDIT_ARCH_X86_64, table.X32, False),
    "SCMP_ARCH_AARCH64": (AUDIT_ARCH_AARCH64, table.AARCH64, True),
    "SCMP_ARCH_ARM": (AUDIT_ARCH_ARM, table.ARM, False),
    **{
        name: None
        for name in (
            "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
            "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
            "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC",
            "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64", "SCMP_ARCH_LOONGARCH64",
        )
    },
}  # fmt: skip
NATIVE_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}

ACTIONS = (
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG",
)  # fmt: skip
OPS = (
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
)  # fmt: skip

# classic BPF opcodes (linux/filter.h)
LD_W_ABS = 0x20
ALU_AND_K = 0x54
JMP_JA = 0x05
JMP_JEQ_K = 0x15
JMP_JGT_K = 0x25
JMP_JGE_K = 0x35
JMP_JSET_K = 0x45
RET_K = 0x06

OFFSET_NR = 0
OFFSET_ARCH = 4
OFFSET_ARGS = 16
MAX_INSTRUCTIONS = 4096  # BPF_MAXINSNS
U64 = (1 << 64) - 1


class SeccompError(ValueError):
    """A profile the compiler refuses; the text names the field."""


class Filter:
    """A compiled filter: the ``sock_filter`` array as bytes and the seccomp(2) flags."""

    __slots__ = ("flags", "program")

    def __init__(self, program: bytes, flags: int) -> None:
        self.program = program
        self.flags = flags

    def __len__(self) -> int:
        return len(self.program) // 8


# --- validation and rule preparation ---------------------------------------------------------


def _uint(value: object, where: str, bits: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << bits:
        raise SeccompError(f"{where} must be an integer in 0..{(1 << bits) - 1}")
    return value


def _str_list(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SeccompError(f"{where} must be an array of strings")
    return value


def _action(name: object, errno_ret: object, default_errno: int, where: str) -> int:
    """The SECCOMP_RET_* value of an OCI action (runc's errno defaults)."""
    if name == "SCMP_ACT_NOTIFY":
        raise SeccompError(f"{where}: SCMP_ACT_NOTIFY (a seccomp listener) is not supported")
    if name not in ACTIONS:
        raise SeccompError(f"{where}: unknown action {name!r}")
    if errno_ret is not None:
        errno_ret = _uint(errno_ret, f"{where} errnoRet", 16)
        if name not in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
            raise SeccompError(f"{where}: errnoRet is only valid with SCMP_ACT_ERRNO or TRACE")
    if name == "SCMP_ACT_ERRNO":
        return RET_ERRNO | (default_errno if errno_ret is None else errno_ret)
    if name == "SCMP_ACT_TRACE":
        return RET_TRACE | (EPERM if errno_ret is None else errno_ret)
    return {
        "SCMP_ACT_KILL": RET_KILL_THREAD,
        "SCMP_ACT_KILL_THREAD": RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS": RET_KILL_PROCESS,
        "SCMP_ACT_TRAP": RET_TRAP,
        "SCMP_ACT_ALLOW": RET_ALLOW,
        "SCMP_ACT_LOG": RET_LOG,
    }[str(name)]


# A condition: (argument index, op, value, valueTwo). A rule: (names, action, conditions).
Condition = tuple[int, str, int, int]
Rule = tuple[list[str], int, list[Condition]]
# One architecture's part of a filter: rules per syscall number, 64-bit args, ENOSYS bound.
_Part = tuple[dict[int, list[tuple[int, list[Condition]]]], bool, "int | None"]


def _conditions(args: object, where: str) -> list[Condition]:
    if args is None:
        return []
    if not isinstance(args, list):
        raise SeccompError(f"{where}.args must be an array")
    result: list[Condition] = []
    for arg in args:
        if not isinstance(arg, dict):
            raise SeccompError(f"{where}.args[] must be objects")
        index = _uint(arg.get("index"), f"{where}.args[].index", 3)
        if index > 5:
            raise SeccompError(f"{where}.args[].index must be in 0..5")
        op = arg.get("op")
        if op not in OPS:
            raise SeccompError(f"{where}.args[].op: unknown operator {op!r}")
        value = _uint(arg.get("value", 0), f"{where}.args[].value", 64)
        value_two = _uint(arg.get("valueTwo", 0), f"{where}.args[].valueTwo", 64)
        result.append((index, str(op), value, value_two))
    return result


def parse(seccomp: object, machine: str | None = None) -> tuple[int, list[str], list[Rule], int]:
    """Validate ``seccomp``: (default action, architectures, rules, flags); SeccompError."""
    if not isinstance(seccomp, dict):
        raise SeccompError("linux.seccomp must be an object")
    if seccomp.get("listenerPath"):
        raise SeccompError("linux.seccomp.listenerPath: seccomp notify is not supported")
    if seccomp.get("defaultErrnoRet") is not None:
        _uint(seccomp["defaultErrnoRet"], "linux.seccomp.defaultErrnoRet", 16)
        if seccomp.get("defaultAction") not in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
            raise SeccompError("linux.seccomp.defaultErrnoRet needs an ERRNO or TRACE default")
    default = _action(
        seccomp.get("defaultAction"), seccomp.get("defaultErrnoRet"), EPERM,
        "linux.seccomp.defaultAction",
    )  # fmt: skip
    native = NATIVE_ARCH.get(machine or os.uname().machine)
    arches = [native] if native else []
    for name in _str_list(seccomp.get("architectures") or [], "linux.seccomp.architectures"):
        if name not in ARCHES:
            raise SeccompError(f"linux.seccomp.architectures: unknown architecture {name!r}")
        if name not in arches:
            arches.append(name)
    flags = 0
    for name in _str_list(seccomp.get("flags") or [], "linux.seccomp.flags"):
        if name not in FILTER_FLAGS:
            raise SeccompError(f"linux.seccomp.flags: unsupported flag {name!r}")
        flags |= FILTER_FLAGS[name]
    syscalls = seccomp.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise SeccompError("linux.seccomp.syscalls must be an array")
    rules: list[Rule] = []
    for number, entry in enumerate(syscalls):
        where = f"linux.seccomp.syscalls[{number}]"
        if not isinstance(entry, dict):
            raise SeccompError(f"{where} must be an object")
        names = _str_list(entry.get("names"), f"{where}.names")
        if not names:
            raise SeccompError(f"{where}.names must not be empty")
        action = _action(entry.get("action"), entry.get("errnoRet"), EPERM, f"{where}.action")
        conditions = _conditions(entry.get("args"), where)
        if action == default:
            continue  # runc drops these: they could only shadow later rules
        indexes = [condition[0] for condition in conditions]
        if len(set(indexes)) != len(indexes):
            # runc: several conditions on one argument are alternatives, one rule each
            rules.extend((names, action, [condition]) for condition in conditions)
        else:
            rules.append((names, action, conditions))
    return default, arches, rules, flags


# --- code generation -------------------------------------------------------------------------


class _Label:
    __slots__ = ()


# An instruction: (code, jt, jf, k); jt/jf are labels (conditional jumps) or 0, k may be a
# label for JA. A label in the list marks the position of the next instruction.
_Insn = tuple[int, "_Label | int", "_Label | int", "_Label | int"]


class _Program:
    def __init__(self) -> None:
        self.items: list[_Insn | _Label] = []

    def emit(
        self, code: int, k: int | _Label = 0, jt: _Label | int = 0, jf: _Label | int = 0
    ) -> None:
        self.items.append((code, jt, jf, k))

    def mark(self, label: _Label) -> None:
        self.items.append(label)

    def ret(self, value: int) -> None:
        self.emit(RET_K, value)

    def jump(self, code: int, k: int, jt: _Label, jf: _Label) -> None:
        self.emit(code, k, jt, jf)

    def assemble(self) -> bytes:
        """Resolve labels; a conditional jump farther than 255 becomes jcond 0,1 + two JAs."""
        wide: set[int] = set()
        while True:
            positions: dict[int, int] = {}
            labels: dict[_Label, int] = {}
            pc = 0
            for index, item in enumerate(self.items):
                if isinstance(item, _Label):
                    labels[item] = pc
                    continue
                positions[index] = pc
                pc += 3 if index in wide else 1
            grew = False
            for index, pc in positions.items():
                code, jt, jf, _ = self.items[index]  # type: ignore[misc]
                if index in wide or code & 0x07 != 0x05 or code == JMP_JA:
                    continue
                for target in (jt, jf):
                    if isinstance(target, _Label) and labels[target] - pc - 1 > 255:
                        wide.add(index)
                        grew = True
                        break
            if not grew:
                break
        if pc > MAX_INSTRUCTIONS:
            raise SeccompError(f"linux.seccomp: the filter needs {pc} instructions (max 4096)")
        out = bytearray()
        pack = struct.Struct("=HBBI").pack

        def offset(target: _Label | int, at: int) -> int:
            if isinstance(target, _Label):
                distance = labels[target] - at - 1
                if distance < 0:
                    raise AssertionError("backward jump")
                return distance
            return target

        for index, pc in positions.items():
            code, jt, jf, k = self.items[index]  # type: ignore[misc]
            if index in wide:
                out += pack(code, 0, 1, k)
                out += pack(JMP_JA, 0, 0, offset(jt, pc + 1))
                out += pack(JMP_JA, 0, 0, offset(jf, pc + 2))
            elif code == JMP_JA:
                out += pack(code, 0, 0, offset(k, pc))
            else:
                out += pack(code, offset(jt, pc), offset(jf, pc), k)
        return bytes(out)


def _compare(
    prog: _Program, condition: Condition, wide: bool, passed: _Label, failed: _Label
) -> None:
    """Jump to ``passed`` or ``failed`` on one argument condition (A is clobbered)."""
    index, op, value, value_two = condition
    low = OFFSET_ARGS + 8 * index
    if op == "SCMP_CMP_MASKED_EQ":
        mask, datum = value, value_two
        halves = [(low + 4, mask >> 32, datum >> 32), (low, mask & 0xFFFFFFFF, datum & 0xFFFFFFFF)]
        if not wide:
            halves = halves[1:]
        for number, (offset, half_mask, half_datum) in enumerate(halves):
            last = number == len(halves) - 1
            prog.emit(LD_W_ABS, offset)
            prog.emit(ALU_AND_K, half_mask)
            cont = passed if last else _Label()
            prog.jump(JMP_JEQ_K, half_datum, cont, failed)
            if not last:
                prog.mark(cont)
        return
    if not wide:
        value &= 0xFFFFFFFF
    high, low_value = value >> 32, value & 0xFFFFFFFF
    # For op on the 64-bit value: (outcome if arg_hi > high, if arg_hi < high, low-half jump)
    lo_code, lo_true_passes = {
        "SCMP_CMP_EQ": (JMP_JEQ_K, True),
        "SCMP_CMP_NE": (JMP_JEQ_K, False),
        "SCMP_CMP_GT": (JMP_JGT_K, True),
        "SCMP_CMP_GE": (JMP_JGE_K, True),
        "SCMP_CMP_LT": (JMP_JGE_K, False),
        "SCMP_CMP_LE": (JMP_JGT_K, False),
    }[op]
    if wide:
        above, below = {
            "SCMP_CMP_EQ": (failed, failed),
            "SCMP_CMP_NE": (passed, passed),
            "SCMP_CMP_GT": (passed, failed),
            "SCMP_CMP_GE": (passed, failed),
            "SCMP_CMP_LT": (failed, passed),
            "SCMP_CMP_LE": (failed, passed),
        }[op]
        prog.emit(LD_W_ABS, low + 4)
        equal, not_above = _Label(), _Label()
        prog.jump(JMP_JGT_K, high, above, not_above)
        prog.mark(not_above)
        prog.jump(JMP_JEQ_K, high, equal, below)
        prog.mark(equal)
    prog.emit(LD_W_ABS, low)
    if lo_true_passes:
        prog.jump(lo_code, low_value, passed, failed)
    else:
        prog.jump(lo_code, low_value, failed, passed)


def _section(
    prog: _Program,
    numbers: dict[int, list[tuple[int, list[Condition]]]],
    wide: bool,
    enosys_above: int | None,
    *,
    default: int,
) -> None:
    """One architecture's code; ``seccomp_data.nr`` is in A on entry.

    The numbers become intervals with one outcome each (a return value, or the rules of one
    syscall with conditions), searched with a binary tree of JGE: a default-deny profile of
    300 syscalls is about 100 intervals, so a syscall costs a dozen instructions.
    """
    # (first number, outcome): an int is a return value, a list the rules of one syscall
    intervals: list[tuple[int, int | list[tuple[int, list[Condition]]]]] = [(0, default)]
    for number in sorted(numbers):
        rules = numbers[number]
        outcome: int | list[tuple[int, list[Condition]]] = rules if rules[0][1] else rules[0][0]
        if intervals[-1][0] == number:
            intervals.pop()  # the default gap after number - 1 is empty
        intervals.append((number, outcome))
        intervals.append((number + 1, default))
    merged: list[tuple[int, int | list[tuple[int, list[Condition]]]]] = []
    for start, outcome in intervals:
        if merged and isinstance(outcome, int) and merged[-1][1] == outcome:
            continue  # the same return value as the interval before: extend it
        merged.append((start, outcome))
    intervals = merged
    if enosys_above is not None:
        intervals = [item for item in intervals if item[0] <= enosys_above]
        intervals.append((enosys_above + 1, RET_ERRNO | ENOSYS))

    def leaf(outcome: int | list[tuple[int, list[Condition]]]) -> None:
        if isinstance(outcome, int):
            prog.ret(outcome)
            return
        for action, conditions in outcome:
            if not conditions:
                prog.ret(action)
                return
            next_rule = _Label()
            for position, condition in enumerate(conditions):
                passed = _Label()
                _compare(prog, condition, wide, passed, next_rule)
                prog.mark(passed)
                if position == len(conditions) - 1:
                    prog.ret(action)
            prog.mark(next_rule)
            prog.emit(LD_W_ABS, OFFSET_NR)  # conditions clobbered A; keep the invariant
        prog.ret(default)

    def search(start: int, stop: int) -> None:
        if stop - start == 1:
            leaf(intervals[start][1])
            return
        middle = (start + stop) // 2
        upper, lower = _Label(), _Label()
        prog.jump(JMP_JGE_K, intervals[middle][0], upper, lower)
        prog.mark(lower)
        search(start, middle)
        prog.mark(upper)
        search(middle, stop)

    search(0, len(intervals))


def compile_filter(seccomp: object, machine: str | None = None) -> Filter:
    """Validate and compile ``linux.seccomp``; SeccompError for a malformed profile.

    ``machine`` is ``os.uname().machine`` of the process the filter is for (x86_64 or
    aarch64), whose architecture every filter includes.
    """
    default, arches, rules, flags = parse(seccomp, machine)
    allow_default = default in (RET_ALLOW, RET_LOG)
    default_enosys = default == RET_ERRNO | ENOSYS
    # AUDIT_ARCH -> {SCMP name: (per-number rules, 64-bit arguments, ENOSYS bound)}
    sections: dict[int, dict[str, _Part]] = {}
    for name in arches:
        known = ARCHES[name]
        if known is None:
            continue
        audit, numbers_by_name, wide = known
        numbers: dict[int, list[tuple[int, list[Condition]]]] = {}
        for names, action, conditions in rules:
            for syscall in names:
                number = numbers_by_name.get(syscall)
                if number is not None:
                    numbers.setdefault(number, []).append((action, conditions))
        # runc's stub looks at every rule, also those equal to the default action
        largest = _largest_named(seccomp, numbers_by_name)
        enosys = None if allow_default or default_enosys or not largest else largest
        sections.setdefault(audit, {})[name] = (numbers, wide, enosys)

    prog = _Program()
    bad_arch = _Label()
    prog.emit(LD_W_ABS, OFFSET_ARCH)
    entries = [(audit, _Label()) for audit in sections]
    for audit, label in entries:
        nxt = _Label()
        prog.jump(JMP_JEQ_K, audit, label, nxt)
        prog.mark(nxt)
    prog.emit(JMP_JA, bad_arch)
    for audit, label in entries:
        prog.mark(label)
        prog.emit(LD_W_ABS, OFFSET_NR)
        parts = sections[audit]
        if audit == AUDIT_ARCH_X86_64:
            native, x32 = _Label(), _Label()
            prog.jump(
                JMP_JSET_K,
                X32_SYSCALL_BIT,
                x32 if "SCMP_ARCH_X32" in parts else bad_arch,
                native if "SCMP_ARCH_X86_64" in parts else bad_arch,
            )
            for name, target in (("SCMP_ARCH_X86_64", native), ("SCMP_ARCH_X32", x32)):
                if name in parts:
                    prog.mark(target)
                    _section(prog, *parts[name], default=default)
        else:
            (part,) = parts.values()
            _section(prog, *part, default=default)
    prog.mark(bad_arch)
    prog.ret(RET_KILL_THREAD)  # libseccomp's default bad-architecture action
    return Filter(prog.assemble(), flags)


def _largest_named(seccomp: Any, numbers_by_name: dict[str, int]) -> int:
    largest = 0
    for entry in seccomp.get("syscalls") or []:
        for name in entry.get("names") or []:
            largest = max(largest, numbers_by_name.get(name, 0))
    return largest
