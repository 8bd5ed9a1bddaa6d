"""trinit on aarch64: the image cross-built on this machine boots under qemu-system-aarch64.

``trinit image build --arch aarch64`` assembles the ext4 vminit image from Debian's arm64
packages and aarch64 wheels (the cross root from scripts/aarch64-deps.sh); the loader
initrd carries Debian's arm64 kernel modules. One boot under TCG (``-M virt -cpu max``)
runs a subset of the x86_64 scenarios: a container, an exec with exact stdin/stdout bytes,
a PTY, cgroup limits and statistics (an OOM kill), stdout over vsock, and Kill(-1)
survival. Marker ``vm_aarch64``: minutes of emulation, so only ``pytest -m vm_aarch64``
runs it.
"""

from __future__ import annotations

import harness
import pytest

pytestmark = pytest.mark.vm_aarch64

SCENARIOS = ["root_fs", "exec_stdio", "pty", "cgroup_limits", "oom", "stdout_bulk", "kill_all"]
STDOUT_MIB = 10


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> harness.VmRun:
    workdir = str(tmp_path_factory.mktemp("aarch64"))
    try:
        run = harness.run_vminit_vm(workdir, arch="aarch64", scenarios=SCENARIOS,
                                    timeout=1200, stdout_mib=STDOUT_MIB)  # fmt: skip
    except harness.MissingDeps as exc:
        pytest.fail(str(exc), pytrace=False)
    print(f"\naarch64 boot: {run.wall_seconds:.1f} s wall, QEMU exit {run.exit_code}, "
          f"timeline {run.timeline}")  # fmt: skip
    for name, entry in run.results.items():
        print(f"  {name}: {'ok' if entry['ok'] else 'FAILED'} {entry['data']}")
    if run.exit_code is None:
        print(f"QEMU timed out; console tail:\n{run.console[-8000:]}")
    return run


def ok(run: harness.VmRun, name: str) -> dict[str, object]:
    entry = run.result(name)
    assert entry["ok"], f"{name} failed in the guest:\n{entry['error']}"
    data = entry["data"]
    assert isinstance(data, dict)
    return data


def test_boots_as_aarch64_from_a_read_only_root(vm: harness.VmRun) -> None:
    data = ok(vm, "root_fs")
    assert data["machine"] == "aarch64"
    assert data["fstype"] == "ext4"
    options = data["options"]
    assert isinstance(options, list) and "ro" in options
    pid1 = data["pid1"]
    assert isinstance(pid1, list) and pid1[-1] == "/sbin/vminitd"


def test_exec_stdin_and_stdout_bytes_exact(vm: harness.VmRun) -> None:
    assert ok(vm, "exec_stdio") == {"bytes": 1 << 20, "exit_code": 7, "init_exit": 137}


def test_pty(vm: harness.VmRun) -> None:
    data = ok(vm, "pty")
    assert data["size"] == "40 120"


def test_cgroup_limits_and_statistics(vm: harness.VmRun) -> None:
    assert ok(vm, "cgroup_limits") == {"memory.max": "536870912", "cpu.max": "200000 100000"}
    data = ok(vm, "oom")
    assert data["exit_code"] == 137
    for key in ("oom_kill", "pids_current", "memory_usage", "cpu_usage_usec"):
        value = data[key]
        assert isinstance(value, int) and value > 0, (key, data)


def test_stdout_over_vsock_exact(vm: harness.VmRun) -> None:
    assert ok(vm, "stdout_bulk")["bytes"] == STDOUT_MIB << 20


def test_kill_minus_one_leaves_pid1_serving_then_powers_off(vm: harness.VmRun) -> None:
    assert ok(vm, "kill_all")["victim_exit"] == 137
    ok(vm, "done")
    assert vm.exit_code == 0, vm.console[-4000:]
    assert "Kernel panic" not in vm.console
