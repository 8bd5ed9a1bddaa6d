"""Sysctl, SetTime, SetupEmulator: against a temporary /proc/sys stand-in, a private network
namespace (real per-namespace sysctls), and settimeofday only with values the kernel refuses
before changing anything."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trinit._proto import sandbox_pb2 as pb
from trinit.errors import Internal
from trinit.system import binfmt_line, set_time, setup_emulator, sysctl, sysctl_path


def test_sysctl_path() -> None:
    assert sysctl_path("net.ipv4.ip_forward") == "/proc/sys/net/ipv4/ip_forward"
    assert ".." not in sysctl_path("..x..y")


async def test_sysctl_writes_without_truncation(tmp_path: Path) -> None:
    (tmp_path / "kernel").mkdir()
    target = tmp_path / "kernel" / "x"
    target.write_text("0000")
    await sysctl(pb.SysctlRequest(settings={"kernel.x": "12"}), proc_sys=str(tmp_path))
    assert target.read_text() == "1200"  # no O_TRUNC, no newline: as on procfs


async def test_sysctl_stops_at_first_error(tmp_path: Path) -> None:
    # map order is unspecified (as in vminitd): one error, naming one of the failing keys
    request = pb.SysctlRequest(settings={"missing.one": "1", "missing.two": "2"})
    with pytest.raises(Internal) as info:
        await sysctl(request, proc_sys=str(tmp_path))
    assert info.value.message.count("missing.") == 1
    assert info.value.message.startswith("sysctl: failed to set sysctl: missing.")
    assert info.value.message.endswith("No such file or directory (ENOENT)")


_NETNS_SYSCTL = textwrap.dedent(
    """
    import json, trio
    from trinit._proto import sandbox_pb2 as pb
    from trinit.system import sysctl
    from trinit.errors import TrinitError
    out = {}
    async def main():
        await sysctl(pb.SysctlRequest(settings={"net.ipv4.ip_forward": "1"}))
        out["forward"] = open("/proc/sys/net/ipv4/ip_forward").read()
        try:
            await sysctl(pb.SysctlRequest(settings={"net.ipv4.ip_forward": "junk"}))
        except TrinitError as e:
            out["junk"] = [int(e.code), e.message]
    trio.run(main)
    print(json.dumps(out))
    """
)


def test_sysctl_real_in_private_netns() -> None:
    before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    result = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", _NETNS_SYSCTL],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["forward"] == "1\n"
    assert out["junk"][0] == 13
    assert out["junk"][1].startswith("sysctl: failed to set sysctl: net.ipv4.ip_forward: ")
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == before


async def test_set_time_passes_values() -> None:
    calls: list[tuple[int, int]] = []
    await set_time(
        pb.SetTimeRequest(sec=1_700_000_000, usec=250),
        settimeofday=lambda s, u: calls.append((s, u)),
    )
    assert calls == [(1_700_000_000, 250)]


async def test_set_time_kernel_refusal() -> None:
    # usec out of range: the kernel returns EINVAL before it touches the clock
    with pytest.raises(Internal, match=r"^failed to settimeofday: Invalid argument \(EINVAL\)$"):
        await set_time(pb.SetTimeRequest(sec=1_700_000_000, usec=1_000_000))
    with pytest.raises(Internal, match=r"EINVAL"):
        await set_time(pb.SetTimeRequest(sec=-5, usec=0))


ROSETTA = pb.SetupEmulatorRequest(
    binary_path="/run/rosetta/rosetta",
    name="x86_64",
    type="M",
    offset="",
    magic=r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00",
    mask=r"\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
    flags="CF",
)


def test_binfmt_line() -> None:
    assert binfmt_line(ROSETTA) == (
        r":x86_64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00:"
        r"\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:"
        "/run/rosetta/rosetta:CF"
    )


async def test_setup_emulator_writes_register(tmp_path: Path) -> None:
    (tmp_path / "register").write_text("")
    await setup_emulator(ROSETTA, binfmt_misc=str(tmp_path))
    assert (tmp_path / "register").read_text() == binfmt_line(ROSETTA)


async def test_setup_emulator_not_mounted(tmp_path: Path) -> None:
    with pytest.raises(Internal) as info:
        await setup_emulator(ROSETTA, binfmt_misc=str(tmp_path))
    assert info.value.message == f"{tmp_path} is not mounted"


async def test_setup_emulator_write_failure(tmp_path: Path) -> None:
    (tmp_path / "register").mkdir()  # exists, but cannot be opened for writing
    with pytest.raises(
        Internal, match=r"^setupEmulator: failed to register binfmt_misc entry: .*EISDIR"
    ):
        await setup_emulator(ROSETTA, binfmt_misc=str(tmp_path))
