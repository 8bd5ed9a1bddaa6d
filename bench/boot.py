"""Boot benchmark: kernel start to trinit serving, from the VM's boot timeline.

Boots the test initfs under QEMU (TCG, 2 vCPUs: the VM-test configuration, see
docs/vm.md) and prints trinit's boot timeline (uptime at each stage, CLOCK_BOOTTIME
seconds since the kernel started), the uptime at which the in-guest driver's first RPC was
answered, and the sizes of the production and test initfs. Under TCG everything is ~10-20x
slower than under KVM: compare runs on the same machine, not absolute numbers.

    .venv/bin/python bench/boot.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "vm"))

import harness  # noqa: E402

from trinit.initfs import InitfsOptions, build_initfs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    kernel = harness.find_kernel()
    with tempfile.TemporaryDirectory() as scratch:
        production = build_initfs(InitfsOptions(output=f"{scratch}/initfs.cpio.gz",
                                                modules_dir=kernel.modules_dir))  # fmt: skip
        print(production.describe())
        serving, first_rpc = [], []
        for run_index in range(args.runs):
            # Small stdio transfers: this benchmark is about the boot.
            run = harness.run_vm(f"{scratch}/run{run_index}", stdout_mib=10)
            print(f"\nrun {run_index + 1}: test initfs {run.initfs_bytes / 2**20:.1f} MiB, "
                  f"VM wall {run.wall_seconds:.1f} s")  # fmt: skip
            for stage, uptime in run.timeline.items():
                print(f"  {uptime:8.3f} s  {stage}")
            boot = run.results.get("boot", {}).get("data", {})
            if "first_rpc_uptime" in boot:
                print(f"  {boot['first_rpc_uptime']:8.3f} s  first RPC answered (in-guest driver)")
                first_rpc.append(float(boot["first_rpc_uptime"]))
            if "serving" in run.timeline:
                serving.append(run.timeline["serving"])
        if serving:
            print(
                f"\nkernel start -> serving: median {statistics.median(serving):.3f} s; "
                f"-> first RPC: median {statistics.median(first_rpc or [0.0]):.3f} s "
                f"({len(serving)} run(s), TCG)"
            )


if __name__ == "__main__":
    main()
