"""Container start benchmark: Create+Start+Wait+Delete of /bin/true in a fresh container.

trinit (a LocalAgent over the unix transport, rootfs bind-mounted per container through the
Mount RPC, as a host does) versus ``runc run`` of the same busybox rootfs, measured in the
same run. Goal (issue 2): trinit <= 1.0x runc's wall time. runc is optional: without it only
trinit's numbers print.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trinit.host import LocalAgent, build_busybox_rootfs, busybox_spec  # noqa: E402


def bench_trinit(rootfs: str, runs: int) -> list[float]:
    times = []
    with LocalAgent.start(log_level="warning") as agent:
        host = agent.host
        for i in range(runs + 2):
            cid = f"bench{i}"
            start = time.perf_counter()
            root = host.mount_rootfs(cid, rootfs)
            result = host.run(cid, busybox_spec(root, ["/bin/true"]))
            elapsed = time.perf_counter() - start
            assert result.exit_code == 0, result
            if i >= 2:  # warm-up
                times.append(elapsed)
    return times


def bench_runc(rootfs: str, runs: int) -> list[float] | None:
    runc = shutil.which("runc")
    if runc is None:
        return None
    bundle = tempfile.mkdtemp(prefix="trinit-runc-")
    try:
        subprocess.run([runc, "spec"], cwd=bundle, check=True)
        config_path = os.path.join(bundle, "config.json")
        with open(config_path) as f:
            config = json.load(f)
        config["process"]["terminal"] = False
        config["process"]["args"] = ["/bin/true"]
        config["root"] = {"path": rootfs, "readonly": False}
        with open(config_path, "w") as f:
            json.dump(config, f)
        times = []
        for i in range(runs + 2):
            start = time.perf_counter()
            subprocess.run(
                [runc, "run", "--bundle", bundle, f"trinit-bench-{os.getpid()}-{i}"],
                check=True,
                stdin=subprocess.DEVNULL,
            )
            elapsed = time.perf_counter() - start
            if i >= 2:
                times.append(elapsed)
        return times
    finally:
        shutil.rmtree(bundle, ignore_errors=True)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    rootfs = tempfile.mkdtemp(prefix="trinit-bench-rootfs-", dir="/tmp")
    try:
        build_busybox_rootfs(rootfs)
        ours = statistics.median(bench_trinit(rootfs, runs))
        print(
            f"trinit: mount+create+start+wait+delete of /bin/true: median {ours * 1000:.1f} ms "
            f"over {runs} runs"
        )
        theirs_all = bench_runc(rootfs, runs)
        if theirs_all is None:
            print("runc not installed: no baseline (apt-get install runc)")
            return
        theirs = statistics.median(theirs_all)
        print(f"runc run of the same rootfs: median {theirs * 1000:.1f} ms")
        print(f"ratio trinit/runc: {ours / theirs:.2f}x (goal <= 1.0x)")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


if __name__ == "__main__":
    main()
