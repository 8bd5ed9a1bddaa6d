"""The same OCI spec run by runc and by trinit gives the same observations (tests/runclib.py).

Known, documented differences are removed before comparing, each with its reason:
* ``Groups``: vminitd's OCI alteration appends the primary gid to ``additionalGids`` on every
  CreateProcess (docs/protocol.md §5.2), so a trinit process has it as a supplementary group;
  runc sets exactly ``additionalGids``. Kept for wire compatibility (docs/compat.md).
"""

from __future__ import annotations

from runclib import compare

from trinit.host import LocalAgent

STATUS = (
    "grep -E '^(Uid|Gid|Groups|NoNewPrivs|Seccomp|Cap(Inh|Prm|Eff|Bnd|Amb)):' /proc/self/status"
)


def _without_groups(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("Groups:"))


def test_credentials_capabilities_and_seccomp_match(agent: LocalAgent) -> None:
    trinit, runc = compare(agent, ["sh", "-c", STATUS])
    assert trinit.exit_code == runc.exit_code == 0
    assert _without_groups(trinit.stdout) == _without_groups(runc.stdout)
    assert "Groups:\t0 " in trinit.stdout  # the documented difference, still as documented


def test_exit_status_and_signals_match(agent: LocalAgent) -> None:
    # (a missing program is not compared: vminitd fails StartProcess with vmexec's text,
    # which the host relies on, where `runc run` exits 127)
    for args in (["sh", "-c", "exit 7"], ["sh", "-c", "kill -9 $$"]):
        trinit, runc = compare(agent, args)
        assert trinit.exit_code == runc.exit_code, args
