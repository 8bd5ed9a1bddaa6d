"""linux.seccomp through a real agent: real container processes make real system calls.

Each profile is checked by what the process observes (errno, death by SIGSYS, the Seccomp
line of /proc/self/status); the probe (tests/seccomplib.py) makes one raw syscall. Every
run gets a fresh container: deleting an init unmounts its rootfs.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from agentlib import Container
from seccomplib import PROBE, allow_but, nr, with_seccomp

from trinit.host import LocalAgent, Result, default_seccomp

EPERM, EDQUOT = 1, 122
SIGSYS_EXIT = 128 + 31
CLONE_NEWUSER = 0x10000000


def _run(
    agent: LocalAgent, args: list[str], seccomp: dict[str, Any] | None, **overrides: Any
) -> Result:
    return Container(agent.host).run(args, **with_seccomp(seccomp, **overrides))


def _probe(
    agent: LocalAgent, seccomp: dict[str, Any] | None, *args: object, **overrides: Any
) -> str:
    result = _run(agent, [PROBE, *(str(a) for a in args)], seccomp, **overrides)
    assert result.exit_code == 0, result
    return result.stdout.decode().strip()


def test_errno_rule_denies_mkdir_and_errno_ret_is_used(agent: LocalAgent) -> None:
    deny = allow_but({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"})
    result = _run(agent, ["mkdir", "/tmp/d"], deny)
    assert result.exit_code == 1
    assert b"Operation not permitted" in result.stderr
    quota = allow_but(
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": EDQUOT}
    )
    assert _probe(agent, quota, nr("mkdirat"), -100, 0) == f"ret=-1 errno={EDQUOT}"
    assert _run(agent, ["mkdir", "/tmp/d"], None).exit_code == 0


@pytest.mark.parametrize(
    "action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD"]
)
def test_kill_on_unshare_ends_by_sigsys(agent: LocalAgent, action: str) -> None:
    profile = allow_but({"names": ["unshare"], "action": action})
    result = _run(agent, [PROBE, str(nr("unshare")), "0"], profile)
    assert result.exit_code == SIGSYS_EXIT
    assert result.stdout == b""


def test_trap_and_default_errno(agent: LocalAgent) -> None:
    trap = allow_but({"names": ["getppid"], "action": "SCMP_ACT_TRAP"})
    assert _run(agent, [PROBE, str(nr("getppid"))], trap).exit_code == SIGSYS_EXIT
    # everything allowed but the default; the default errno is defaultErrnoRet
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EDQUOT,
        "syscalls": [{"names": sorted(_NEEDED), "action": "SCMP_ACT_ALLOW"}],
    }
    # no_new_privs: the filter goes in just before execve, after the helper's own calls
    nnp = {"noNewPrivileges": True}
    assert _probe(agent, profile, nr("getppid"), process=nnp) == f"ret=-1 errno={EDQUOT}"


def test_argument_filter_on_64_bit_values(agent: LocalAgent) -> None:
    only = allow_but({
        "names": ["personality"], "action": "SCMP_ACT_ERRNO",
        "args": [{"index": 0, "value": 0xFFFFFFFF, "op": "SCMP_CMP_NE"}],
    })  # fmt: skip
    assert _probe(agent, only, nr("personality"), 0xFFFFFFFF).endswith("errno=0")
    assert _probe(agent, only, nr("personality"), 8) == f"ret=-1 errno={EPERM}"
    # same low half, different high half: a 32-bit comparison would let it through
    assert _probe(agent, only, nr("personality"), 0x1FFFFFFFF) == f"ret=-1 errno={EPERM}"


@pytest.mark.parametrize(
    ("op", "value", "two", "denied", "allowed"),
    [
        ("SCMP_CMP_EQ", 8, 0, [8], [0, 0x100000008]),
        ("SCMP_CMP_LT", 0x100000000, 0, [0, 0xFFFFFFFF], [0x100000000, 0x200000000]),
        ("SCMP_CMP_LE", 8, 0, [0, 8], [9, 0x100000000]),
        ("SCMP_CMP_GT", 0x100000000, 0, [0x100000001, 0x200000000], [8, 0x100000000]),
        ("SCMP_CMP_GE", 8, 0, [8, 0x100000000], [0, 7]),
        ("SCMP_CMP_MASKED_EQ", 0xF00000000F, 0x1000000008, [0x1000000008, 0x10FFFFFFF8], [8]),
    ],
)
def test_every_comparison_operator(
    agent: LocalAgent, op: str, value: int, two: int, denied: list[int], allowed: list[int]
) -> None:
    arg = {"index": 1, "value": value, "valueTwo": two, "op": op}
    # getppid ignores its arguments, so every value reaches the filter and returns normally
    profile = allow_but({"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "args": [arg]})
    for number in denied:
        assert _probe(agent, profile, nr("getppid"), 0, number) == f"ret=-1 errno={EPERM}", number
    for number in allowed:
        assert _probe(agent, profile, nr("getppid"), 0, number).endswith(" errno=0"), number


def test_unknown_syscall_names_are_ignored(agent: LocalAgent) -> None:
    profile = allow_but(
        {"names": ["no_such_syscall", "mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO"}
    )
    assert _probe(agent, profile, nr("mkdirat"), -100, 0) == f"ret=-1 errno={EPERM}"


@pytest.mark.parametrize(
    "seccomp",
    [
        {"defaultAction": "SCMP_ACT_MAYBE"},
        {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]},
        allow_but(
            {
                "names": ["getpid"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ROUGHLY"}],
            }
        ),
        allow_but(
            {
                "names": ["getpid"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}],
            }
        ),
        allow_but({"names": ["getpid"], "action": "SCMP_ACT_NOTIFY"}),
        {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/seccomp.sock"},
        {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]},
        allow_but({"names": "getpid", "action": "SCMP_ACT_ERRNO"}),
        allow_but({"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}),
    ],
)
def test_malformed_profile_is_invalid_argument_at_create(
    agent: LocalAgent, seccomp: dict[str, Any]
) -> None:
    c = Container(agent.host)
    proc = agent.host.process(c.id, c.spec(["true"], **with_seccomp(seccomp)))
    with pytest.raises(grpc.RpcError) as info:
        proc.create()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "seccomp" in (info.value.details() or "")
    proc.close()


def test_status_shows_filter_and_flags_are_accepted(agent: LocalAgent) -> None:
    flags = [
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_TSYNC",
    ]
    for profile in (allow_but(), allow_but(flags=flags)):
        result = _run(agent, ["grep", "^Seccomp:", "/proc/self/status"], profile)
        assert result.stdout == b"Seccomp:\t2\n"
    result = _run(agent, ["grep", "^Seccomp:", "/proc/self/status"], None)
    assert result.stdout == b"Seccomp:\t0\n"


def test_non_root_user_with_and_without_no_new_privileges(agent: LocalAgent) -> None:
    # without no_new_privs the filter must go in while CAP_SYS_ADMIN is still held
    deny = allow_but({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"})
    for nnp in (False, True):
        process = {"user": {"uid": 65534, "gid": 65534}, "noNewPrivileges": nnp}
        assert _probe(agent, deny, nr("mkdirat"), -100, 0, process=process) == "ret=-1 errno=1"


def test_an_exec_gets_its_containers_filter(agent: LocalAgent) -> None:
    deny = allow_but({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"})
    c = Container(agent.host)
    init = agent.host.process(c.id, c.spec(["sleep", "100000"], **with_seccomp(deny)),
                              stdout=False, stderr=False)  # fmt: skip
    init.create()
    init.start()
    try:
        # the exec's own spec has no seccomp: as in runc, the container's applies
        result = c.exec("e1", ["mkdir", "/tmp/x"], **with_seccomp(None))
        assert result.exit_code == 1
        assert b"Operation not permitted" in result.stderr
    finally:
        init.kill(9)
        init.wait(timeout=30)
        init.close()
        init.delete()


def test_default_profile_blocks_keyctl_and_user_namespaces_for_root(agent: LocalAgent) -> None:
    profile = default_seccomp()
    assert _probe(agent, profile, nr("keyctl"), 0) == f"ret=-1 errno={EPERM}"
    assert _probe(agent, profile, nr("unshare"), CLONE_NEWUSER) == f"ret=-1 errno={EPERM}"
    result = _run(agent, ["unshare", "-U", "true"], profile)
    assert result.exit_code != 0
    # and an ordinary workload runs
    script = "mkdir /tmp/a && echo hi > /tmp/a/f && cat /tmp/a/f"
    result = _run(agent, ["sh", "-c", script], profile)
    assert (result.exit_code, result.stdout) == (0, b"hi\n")
    # without the profile the same calls reach the kernel
    assert _probe(agent, None, nr("unshare"), CLONE_NEWUSER).endswith("errno=0")


_NEEDED = (
    "arch_prctl", "brk", "close", "execve", "exit", "exit_group", "fstat", "newfstatat",
    "ioctl", "mmap", "munmap", "mprotect", "prlimit64", "readlink", "readlinkat",
    "rseq", "set_robust_list", "set_tid_address", "write", "getrandom", "uname",
)  # fmt: skip
