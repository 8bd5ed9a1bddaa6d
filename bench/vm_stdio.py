"""Stdio over real vsock in a guest: trinit's pump next to socat doing the same relay.

In one VM run (TCG, 2 vCPUs, vsock_loopback), the in-guest driver receives N MiB twice
from the same producer (``cat`` of a pattern file, checked byte for byte):

* trinit: the producer is a container process; trinit pumps its stdout pipe to the
  driver's AF_VSOCK listener (CID 1);
* socat: the producer's pipe goes into ``socat -u - VSOCK-CONNECT:1:PORT`` to the same kind
  of listener.

The throughput under TCG (software emulation) is not a KVM figure: it measures the emulator.
What carries over is the pump's CPU cost per byte in the guest (trinit's own utime + stime
from /proc/1/stat over the transfer, in CPU-s/GiB), printed for the trinit leg.

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
    for name, label in (("stdout_bulk", "trinit pump"), ("socat_stdio", "socat relay")):
        entry = run.results.get(name)
        if entry is None or not entry["ok"]:
            print(f"{label:12} FAILED: {entry['error'] if entry else 'no result'}")
            continue
        data = entry["data"]
        cpu = ""
        if "agent_cpu_s_per_gib" in data:
            cpu = (f"; trinit (PID 1) CPU {data['agent_cpu_s']:.2f} s = "
                   f"{data['agent_cpu_s_per_gib']:.2f} CPU-s/GiB")  # fmt: skip
        print(f"{label:12} {data['bytes'] / 2**20:6.0f} MiB in {data['seconds']:6.2f} s = "
              f"{data['mib_per_s']:7.1f} MiB/s{cpu}")  # fmt: skip


if __name__ == "__main__":
    main()
