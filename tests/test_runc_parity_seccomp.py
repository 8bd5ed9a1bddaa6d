"""linux.seccomp: the same spec through runc and through trinit gives the same observations.

runc (1.1, libseccomp 2.5) is the reference: errno values, death by SIGSYS, the -ENOSYS
answer for syscalls newer than the profile, the bad-architecture kill of an x32 call, and
the seccomp lines of /proc/self/status. The probe (tests/seccomplib.py) makes one raw syscall
and prints what came back; nothing else is compared.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from runclib import compare
from seccomplib import PROBE, allow_but, nr, with_seccomp

from trinit.host import LocalAgent, default_seccomp

X32_BIT = 0x40000000
CLONE_NEWUSER = 0x10000000
ON_X86_64 = os.uname().machine == "x86_64"


def _same(
    agent: LocalAgent, args: list[str], seccomp: dict[str, Any] | None, **overrides: Any
) -> str:
    trinit, runc = compare(agent, args, **with_seccomp(seccomp, **overrides))
    assert (trinit.exit_code, trinit.stdout) == (runc.exit_code, runc.stdout), args
    return trinit.stdout


def _probe(agent: LocalAgent, seccomp: dict[str, Any] | None, *args: int, **overrides: Any) -> str:
    return _same(agent, [PROBE, *(str(a) for a in args)], seccomp, **overrides)


def test_errno_and_errno_ret_match(agent: LocalAgent) -> None:
    deny = allow_but({"names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO"})
    assert _probe(agent, deny, nr("mkdirat"), -100, 0) == "ret=-1 errno=1\n"
    quota = allow_but({"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122})
    assert _probe(agent, quota, nr("mkdirat"), -100, 0) == "ret=-1 errno=122\n"


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP"])
def test_kill_and_trap_exit_status_match(agent: LocalAgent, action: str) -> None:
    profile = allow_but({"names": ["unshare"], "action": action})
    trinit, runc = compare(agent, [PROBE, str(nr("unshare")), "0"], **with_seccomp(profile))
    assert trinit.exit_code == runc.exit_code == 128 + 31


def test_argument_filter_matches(agent: LocalAgent) -> None:
    profile = allow_but({
        "names": ["personality"], "action": "SCMP_ACT_ERRNO",
        "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_NE"}],
    })  # fmt: skip
    for value in (0xFFFFFFFF, 8, 0x1FFFFFFFF):
        _probe(agent, profile, nr("personality"), value)
    # several conditions on one argument are alternatives (runc splits them into rules)
    either = allow_but({
        "names": ["getppid"], "action": "SCMP_ACT_ERRNO",
        "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                 {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}],
    })  # fmt: skip
    outputs = [_probe(agent, either, nr("getppid"), value) for value in (1, 2, 3)]
    assert [line.split()[1] for line in outputs] == ["errno=1", "errno=1", "errno=0"]


def test_default_profile_matches(agent: LocalAgent) -> None:
    profile = default_seccomp()
    assert _probe(agent, profile, nr("keyctl"), 0) == "ret=-1 errno=1\n"
    assert _probe(agent, profile, nr("unshare"), CLONE_NEWUSER) == "ret=-1 errno=1\n"
    assert _probe(agent, profile, nr("kexec_load")) == "ret=-1 errno=1\n"
    # newer than anything the profile names: ENOSYS, so a libc falls back
    assert _probe(agent, profile, 1000) == "ret=-1 errno=38\n"
    _same(agent, ["sh", "-c", "echo hi > /tmp/f && cat /tmp/f && ls /tmp"], profile)


@pytest.mark.skipif(not ON_X86_64, reason="x32 is an x86_64 ABI")
def test_unlisted_architecture_is_killed_like_runc(agent: LocalAgent) -> None:
    only_native = allow_but(architectures=["SCMP_ARCH_X86_64"])
    trinit, runc = compare(agent, [PROBE, str(X32_BIT | 39)], **with_seccomp(only_native))
    assert trinit.exit_code == runc.exit_code == 128 + 31
    # listed: the call reaches the kernel (ENOSYS where x32 is off)
    with_x32 = allow_but(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"])
    _probe(agent, with_x32, X32_BIT | 39)


STATUS = (
    "grep -E '^(NoNewPrivs|Seccomp|Seccomp_filters|Speculation_Store_Bypass):' /proc/self/status"
)


@pytest.mark.parametrize("nnp", [False, True])
def test_status_lines_match(agent: LocalAgent, nnp: bool) -> None:
    # (``flags`` are not compared: runc 1.1.5 refuses every seccomp flag with "seccomp flags
    # are not yet supported by runc"; trinit applies them, docs/compat.md "seccomp")
    out = _same(agent, ["sh", "-c", STATUS], allow_but(), process={"noNewPrivileges": nnp})
    assert "Seccomp:\t2" in out
