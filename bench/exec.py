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


def bench_trinit(rootfs: str, runs: int) -> tuple[list[float], list[float]]:
    """Wall times of the whole sequence and of StartProcess alone (what ``host.run`` does,
    with the start timed separately)."""
    times, starts = [], []
    with LocalAgent.start(log_level="warning") as agent:
        host = agent.host
        for i in range(runs + 2):
            cid = f"bench{i}"
            begin = time.perf_counter()
            root = host.mount_rootfs(cid, rootfs)
            proc = host.process(cid, busybox_spec(root, ["/bin/true"]))
            try:
                proc.create()
                before_start = time.perf_counter()
                proc.start()
                started = time.perf_counter() - before_start
                code = proc.wait()
                proc.join_output()
            finally:
                proc.close()
                proc.delete()
            elapsed = time.perf_counter() - begin
            assert code == 0, code
            if i >= 2:  # warm-up (the first start also has no warm exec helper yet)
                times.append(elapsed)
                starts.append(started)
    return times, starts


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
        ours_all, starts = bench_trinit(rootfs, runs)
        ours = statistics.median(ours_all)
        print(
            f"trinit: mount+create+start+wait+delete of /bin/true: median {ours * 1000:.1f} ms "
            f"over {runs} runs (StartProcess alone: {statistics.median(starts) * 1000:.1f} ms)"
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
