"""binfmt_misc is there before the host's first RPC (docs/compat.md, "binfmt_misc before
serving"): PID 1 mounts it during the synchronous boot steps, and SetupEmulator mounts it on
demand when the kernel has it but nobody mounted it. Mounts are fakes here: in the machine's
initial user namespace binfmt_misc is one global instance, so a test never mounts it."""

from __future__ import annotations

import signal
from collections.abc import Iterable
from pathlib import Path

import pytest

import trinit.cgroup
from trinit import _pid1
from trinit._proto import sandbox_pb2 as pb
from trinit.errors import Internal
from trinit.system import binfmt_line, setup_emulator

ROSETTA = pb.SetupEmulatorRequest(
    name="x86_64", type="M", magic="\\x7fELF", mask="\\xff", binary_path="/run/r", flags="CF"
)


def test_pid1_mounts_binfmt_misc_before_serving(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """prepare() (which runs before trio and the API listener) mounts binfmt_misc, after the
    early modules (one of which may provide it)."""
    calls: list[str] = []
    every_target = {t: "x" for t in ("/dev", "/run", "/sys", "/sys/fs/cgroup")}
    monkeypatch.setattr(_pid1, "mount_points", lambda: every_target)
    monkeypatch.setattr(_pid1, "root_is_initramfs", lambda: False)
    monkeypatch.setattr(_pid1, "mount", lambda *a, **k: calls.append(f"mount {a[1]}"))
    monkeypatch.setattr(_pid1, "ensure_console", lambda: None)
    monkeypatch.setattr(_pid1, "set_oom_score_adj", lambda value: None)
    monkeypatch.setattr(_pid1, "raise_nofile_limit", lambda: 0)
    monkeypatch.setattr(signal, "signal", lambda *a: None)

    def load_modules(paths: Iterable[str]) -> int:
        calls.append(f"modules {list(paths)}")
        return 0

    def setup_own_cgroup(manager: object) -> None:
        calls.append("cgroup")

    monkeypatch.setattr(_pid1, "load_modules", load_modules)
    monkeypatch.setattr(_pid1, "mount_binfmt_misc", lambda: calls.append("binfmt_misc"))
    monkeypatch.setattr(trinit.cgroup, "setup_own_cgroup", setup_own_cgroup)
    (tmp_path / "modules").write_text("early /lib/vsock.ko\nlate /lib/virtio_pci.ko\n")
    boot = _pid1.Boot(module_list=str(tmp_path / "modules"))
    boot.prepare()
    assert calls == ["modules ['/lib/vsock.ko']", "binfmt_misc", "cgroup"]


def test_pid1_binfmt_misc_failure_is_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise OSError(19, "mount binfmt_misc on /proc/sys/fs/binfmt_misc: No such device")

    _pid1.Boot().early_binfmt_misc(refuse)  # logged, no exception


async def test_setup_emulator_mounts_on_demand(tmp_path: Path) -> None:
    mounted: list[str] = []

    def fake_mount(target: str) -> None:
        mounted.append(target)
        Path(target, "register").write_text("")

    await setup_emulator(ROSETTA, binfmt_misc=str(tmp_path), mount=fake_mount)
    assert mounted == [str(tmp_path)]
    assert (tmp_path / "register").read_text() == binfmt_line(ROSETTA)
    await setup_emulator(ROSETTA, binfmt_misc=str(tmp_path), mount=fake_mount)
    assert mounted == [str(tmp_path)]  # mounted once


async def test_setup_emulator_without_kernel_support(tmp_path: Path) -> None:
    """No /proc/sys/fs/binfmt_misc directory: the kernel lacks it; nothing to mount."""
    mounted: list[str] = []
    missing = tmp_path / "binfmt_misc"
    with pytest.raises(Internal) as info:
        await setup_emulator(ROSETTA, binfmt_misc=str(missing), mount=mounted.append)
    assert info.value.message == f"{missing} is not mounted"
    assert mounted == []


async def test_setup_emulator_mount_failure(tmp_path: Path) -> None:
    def refuse(target: str) -> None:
        raise PermissionError(1, "Operation not permitted")

    with pytest.raises(Internal, match=r"^setupEmulator: failed to mount binfmt_misc: .*EPERM"):
        await setup_emulator(ROSETTA, binfmt_misc=str(tmp_path), mount=refuse)
