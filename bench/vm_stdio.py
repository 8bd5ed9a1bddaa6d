"""Stdio over real vsock in a guest: trinit's pump next to socat doing the same relay.

In one VM run (TCG, 2 vCPUs, vsock_loopback), the in-guest driver receives N MiB twice
from the same producer (``cat`` of a pattern file, checked byte for byte):

* trinit: the producer is a container process; trinit pumps its stdout pipe to the
  driver's AF_VSOCK listener (CID 1);
* socat: the producer's pipe goes into ``socat -u - VSOCK-CONNECT:1:PORT`` to the same kind
  of listener.

The throughput under TCG (software emulation) is not a KVM figure: it measures the emulator.
What carries over is the CPU cost per byte in the guest: trinit's own utime + stime from
/proc/1/stat over the transfer, and socat's from its rusage, in CPU-s/GiB. Under TCG every
guest instruction is emulated, so the absolute CPU-s/GiB are inflated too; their ratio is
the figure to carry over.

    .venv/bin/python bench/vm_stdio.py [--mib 250]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "vm"))

import harness  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=250, help="multiple of 10 (default 250)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run = harness.run_vm(scratch, stdout_mib=args.mib)
    pump_cpu: list[float] = []
    for name, label in (("stdout_bulk", "trinit pump"), ("socat_stdio", "socat relay")):
        entry = run.results.get(name)
        if entry is None or not entry["ok"]:
            print(f"{label:12} FAILED: {entry['error'] if entry else 'no result'}")
            continue
        data = entry["data"]
        cpu = ""
        for key, who in (("agent_cpu_s", "trinit (PID 1)"), ("relay_cpu_s", "socat")):
            if f"{key}_per_gib" in data:
                cpu = (f"; {who} CPU {data[key]:.2f} s = "
                       f"{data[f'{key}_per_gib']:.2f} CPU-s/GiB")  # fmt: skip
                pump_cpu.append(data[f"{key}_per_gib"])
        print(f"{label:12} {data['bytes'] / 2**20:6.0f} MiB in {data['seconds']:6.2f} s = "
              f"{data['mib_per_s']:7.1f} MiB/s{cpu}")  # fmt: skip

    if len(pump_cpu) == 2:
        print(
            f"CPU per byte in the guest, trinit/socat: {pump_cpu[0] / pump_cpu[1]:.2f}x "
            "(the same emulation for both: the ratio carries over to KVM; the absolute "
            "CPU-s/GiB are inflated by TCG)"
        )


if __name__ == "__main__":
    main()
