"""End-to-end tests in a real guest: QEMU (TCG) boots Debian's kernel with the trinit initfs.

One boot runs every scenario (see ``guest_driver.py``); each test below checks one of them.
The VM is booted once per session by the ``vm`` fixture. When QEMU or the kernel is missing
the tests fail (not skip) and say to run ``scripts/vm-deps.sh``.
"""

from __future__ import annotations

from collections.abc import Iterator

import harness
import pytest

pytestmark = pytest.mark.vm

MIB = 1 << 20


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> str:
    try:
        harness.find_qemu()
        harness.find_kernel()
    except harness.MissingDeps as exc:
        pytest.fail(str(exc), pytrace=False)
    return str(tmp_path_factory.mktemp("vm"))


@pytest.fixture(scope="module")
def vm(workdir: str) -> Iterator[harness.VmRun]:
    run = harness.run_vm(workdir)
    print(
        f"\nVM run: {run.wall_seconds:.1f} s wall, initfs {run.initfs_bytes / MIB:.1f} MiB, "
        f"QEMU exit {run.exit_code}, timeline {run.timeline}"
    )
    for name, entry in run.results.items():
        print(f"  {name}: {'ok' if entry['ok'] else 'FAILED'} {entry['data']}")
    if run.exit_code is None:  # QEMU was killed at the time limit: keep the evidence
        print(f"QEMU timed out; console tail:\n{run.console[-8000:]}")
    yield run


def ok(run: harness.VmRun, name: str) -> dict[str, object]:
    entry = run.result(name)
    assert entry["ok"], f"{name} failed in the guest:\n{entry['error']}"
    data = entry["data"]
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def fatal_boot(workdir: str, vm: harness.VmRun) -> harness.FatalBoot:
    """A second, short boot of the same image with a broken early kernel module."""
    run = harness.run_fatal_boot(workdir)
    print(f"\nfatal boot: {run.wall_seconds:.1f} s wall, QEMU exit {run.exit_code}")
    return run


def test_boot_to_first_rpc(vm: harness.VmRun) -> None:
    data = ok(vm, "boot")
    first_rpc = data["first_rpc_uptime"]
    assert isinstance(first_rpc, float)
    stages = list(vm.timeline)
    assert stages[0] == "launcher" and "serving" in stages, vm.timeline
    assert vm.timeline["serving"] <= first_rpc


def test_setup_emulator_as_the_first_rpc(vm: harness.VmRun) -> None:
    """binfmt_misc is mounted before the API listens (docs/compat.md, "binfmt_misc before
    serving"): the host's SetupEmulator may come first."""
    assert ok(vm, "boot")["emulator_registered_first"] is True


def test_container_sees_its_limits(vm: harness.VmRun) -> None:
    data = ok(vm, "cgroup_limits")
    assert data == {"memory.max": "536870912", "cpu.max": "200000 100000"}


def test_container_cannot_lift_its_limits(vm: harness.VmRun) -> None:
    data = ok(vm, "cgroup_escape")
    inside = data["inside"]
    assert isinstance(inside, list)
    assert inside[:2] == ["memory=1", "cpu=1"]
    assert data["outside"] == ["536870912", "200000 100000"]


def test_pid1_is_the_oom_killers_last_choice(vm: harness.VmRun) -> None:
    assert ok(vm, "boot")["pid1_oom_score_adj"] == -1000


def test_ctrl_alt_del_is_handed_to_pid1(vm: harness.VmRun) -> None:
    """0: the kernel sends SIGINT to PID 1 (a clean stop); 1 would restart the VM at once."""
    assert ok(vm, "boot")["ctrl_alt_del"] == 0


def test_containers_cannot_reach_a_default_vsock_listener(vm: harness.VmRun) -> None:
    data = ok(vm, "vsock_guard")
    probes = data["probes"]
    assert isinstance(probes, list) and len(probes) == 3
    assert not any("answered" in line for line in probes[:2]), data
    assert "answered=" in probes[2], data  # PID 1 admits the driver (and so the probe)


def test_fatal_boot_step_powers_off_with_the_reason(fatal_boot: harness.FatalBoot) -> None:
    console = fatal_boot.console
    assert fatal_boot.exit_code == 0, f"QEMU did not power off cleanly:\n{console[-4000:]}"
    assert "Kernel panic" not in console, console[-4000:]
    lines = [line for line in console.splitlines() if "trinit: fatal:" in line]
    assert lines, console[-4000:]
    assert "boot failed" in lines[-1] and "broken.ko" in lines[-1], lines
    assert lines[-1].rstrip().endswith("; powering off"), lines


def test_oom_kill_counted_in_statistics(vm: harness.VmRun) -> None:
    data = ok(vm, "oom")
    assert data["exit_code"] == 137
    for key in ("oom_kill", "pids_current", "memory_usage", "cpu_usage_usec"):
        value = data[key]
        assert isinstance(value, int) and value > 0, (key, data)


def test_devices_filtered_and_created(vm: harness.VmRun) -> None:
    """The VM's disk cannot be opened from a container (runc's default device rules); a
    granted node can; linux.devices nodes have their mode and owner (details: the driver)."""
    data = ok(vm, "devices")
    lines = data["lines"]
    assert isinstance(lines, list)
    assert lines[2].startswith("made=EPERM vmdisk=EPERM"), data


def test_pids_limit_enforced(vm: harness.VmRun) -> None:
    data = ok(vm, "pids_limit")
    assert data["pids.max"] == "10"


def test_250_mib_stdout_over_vsock_exact(vm: harness.VmRun) -> None:
    data = ok(vm, "stdout_bulk")
    assert data["bytes"] == 250 * MIB
    ok(vm, "socat_stdio")  # the same transfer relayed by socat, for the benchmark


def test_orphans_reaped_by_pid1(vm: harness.VmRun) -> None:
    data = ok(vm, "orphans")
    assert data["parents"] == [1] and data["zombies"] == 0


def test_user_namespace_and_idmapped_mount_in_the_vm(vm: harness.VmRun) -> None:
    data = ok(vm, "userns")
    release = tuple(int(part) for part in str(data["kernel"]).split("-")[0].split(".")[:2])
    if release >= (6, 3):  # tmpfs supports idmapped mounts
        assert data["made_owner_in_vm"] == 0, data
    else:  # the kernel's refusal, reported with the mount's name when StartProcess fails
        error = data["idmapped"]["error"]  # type: ignore[index]
        assert "mount /mnt: idmapped mount: [Errno 22] Invalid argument" in error, data


def test_network_rpcs_in_the_vm(vm: harness.VmRun) -> None:
    """IpLinkSet, IpAddrAdd and IpRouteAddLink in the guest's namespace, through the
    pyroute2 the image carries; the route's source seen by a socket."""
    data = ok(vm, "network")
    assert data["source"] == "10.213.0.1"
    unknown = data["unknown"]
    assert isinstance(unknown, list)
    code, details = unknown
    assert code == "INTERNAL" and "nope0" in details, data
    print(f"\nfirst network RPC in the guest (TCG): {data['first_rpc_s']} s")


def test_kill_minus_one_leaves_pid1_serving(vm: harness.VmRun) -> None:
    data = ok(vm, "kill_all")
    assert data["victim_exit"] == 137
    assert "Kernel panic" not in vm.console


def test_sigterm_from_a_guest_process_is_refused(vm: harness.VmRun) -> None:
    """The driver is a process in PID 1's namespace, like a container sharing it."""
    assert ok(vm, "foreign_sigterm") == {"serving": True}
    assert "refused SIGTERM from pid " in vm.console
    assert "refused SIGINT from pid " in vm.console


def test_sigterm_deletes_syncs_and_powers_off(vm: harness.VmRun) -> None:
    data = ok(vm, "shutdown_requested")
    assert data["disk_writes_before_sigterm"] == 0
    assert vm.exit_code == 0, f"QEMU did not exit cleanly:\n{vm.console[-4000:]}"
    assert "received SIGTERM, shutting down" in vm.console
    assert "powering off" in vm.console
    attempt = data["attempt"]
    assert isinstance(attempt, int)
    marker = harness.SHUTDOWN_MARKER + b"#%d" % attempt
    assert vm.disk_head.startswith(marker), "the marker was not synced"
