"""The vminit boot contract on x86_64: the ext4 image boots the way Apple's host boots it.

One boot (TCG): a read-only virtio disk holding ``trinit image build --format ext4``, the
command line ``init=/sbin/vminitd ro rootfstype=ext4 root=/dev/vda``, and Debian's kernel
with the loader initrd (``trinit image loader``), which loads the modules Apple's kernel has
built in. The in-guest driver then checks the root, runs a container and an exec through
trinit, and powers the VM off with SIGTERM.

``test_virtiofs_root`` (marker ``vm_virtiofs``, opt-in: ~2 minutes more) boots the same tree
shared by virtiofsd with ``rootfstype=virtiofs root=rootfs``.
"""

from __future__ import annotations

import harness
import pytest

pytestmark = pytest.mark.vm

SCENARIOS = ["root_fs", "exec_stdio", "cgroup_limits"]


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> harness.VmRun:
    try:
        harness.find_qemu()
        harness.find_kernel()
    except harness.MissingDeps as exc:
        pytest.fail(str(exc), pytrace=False)
    workdir = str(tmp_path_factory.mktemp("vminit"))
    run = harness.run_vminit_vm(workdir, arch="x86_64", scenarios=SCENARIOS, timeout=900)
    print(f"\nvminit ext4 boot: {run.wall_seconds:.1f} s wall, image {run.initfs_bytes >> 20} MiB,"
          f" QEMU exit {run.exit_code}, timeline {run.timeline}")  # fmt: skip
    for name, entry in run.results.items():
        print(f"  {name}: {'ok' if entry['ok'] else 'FAILED'} {entry['data']}")
    return run


def ok(run: harness.VmRun, name: str) -> dict[str, object]:
    entry = run.result(name)
    assert entry["ok"], f"{name} failed in the guest:\n{entry['error']}"
    data = entry["data"]
    assert isinstance(data, dict)
    return data


def test_pid1_is_sbin_vminitd_on_a_read_only_ext4_root(vm: harness.VmRun) -> None:
    data = ok(vm, "root_fs")
    assert data["fstype"] == "ext4"
    options = data["options"]
    assert isinstance(options, list) and "ro" in options
    assert data["run"] == ["tmpfs"]
    pid1 = data["pid1"]
    assert isinstance(pid1, list) and pid1[-1] == "/sbin/vminitd", pid1
    assert "trinit-loader: root /dev/vda (ext4, ro) mounted" in vm.console


def test_container_and_exec_run_through_it(vm: harness.VmRun) -> None:
    assert ok(vm, "exec_stdio") == {"bytes": 1 << 20, "exit_code": 7, "init_exit": 137}
    assert ok(vm, "cgroup_limits") == {"memory.max": "536870912", "cpu.max": "200000 100000"}


def test_sigterm_powers_off(vm: harness.VmRun) -> None:
    ok(vm, "done")
    assert vm.exit_code == 0, vm.console[-4000:]
    assert "Kernel panic" not in vm.console


@pytest.fixture(scope="module")
def virtiofs(tmp_path_factory: pytest.TempPathFactory, vm: harness.VmRun) -> harness.VmRun:
    """A second boot: the same tree shared by virtiofsd, ``rootfstype=virtiofs``."""
    workdir = str(tmp_path_factory.mktemp("virtiofs"))
    try:
        run = harness.run_virtiofs_vm(workdir, scenarios=["root_fs", "exec_stdio"])
    except harness.MissingDeps as exc:
        pytest.fail(str(exc), pytrace=False)
    print(f"\nvminit virtiofs boot: {run.wall_seconds:.1f} s wall, QEMU exit {run.exit_code}")
    for name, entry in run.results.items():
        print(f"  {name}: {'ok' if entry['ok'] else 'FAILED'} {entry['data']}")
    return run


@pytest.mark.vm_virtiofs
def test_virtiofs_root(virtiofs: harness.VmRun) -> None:
    data = ok(virtiofs, "root_fs")
    assert data["fstype"] == "virtiofs"
    options = data["options"]
    assert isinstance(options, list) and "ro" in options
    assert ok(virtiofs, "exec_stdio")["bytes"] == 1 << 20
    ok(virtiofs, "done")
    assert virtiofs.exit_code == 0, virtiofs.console[-4000:]
