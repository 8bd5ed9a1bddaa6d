"""Memory of a container's init: trinit's in-process ``/.cz-init`` against ``tini``.

Each container runs ``sleep 1000`` under an init, as Apple's host does with ``useInit``:
trinit's (``["/.cz-init", "--", ...]`` with trinit's entry point bind-mounted at
``/.cz-init``, run in-process by the exec helper) or tini's (Debian's static ``tini-static``
bind-mounted, ``["/tini", "--", ...]``), in a busybox rootfs without any interpreter. For
each init process the unique memory (USS: Private_Clean + Private_Dirty of
``/proc/PID/smaps_rollup``) and the RSS are read once every container is running, through the
agent's own /proc (``/proc/<agent>/root/proc/<pid>``, the pid StartProcess returned).

Goal (issue 10): USS <= 2 MiB per container. ``tini`` comes from Debian's ``tini`` package
(``scripts/setup.sh`` installs it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trinit.host import LocalAgent, Process, build_busybox_rootfs, busybox_spec  # noqa: E402

LAUNCHER = f"#!{sys.executable} -I\nfrom trinit.__main__ import main\nmain()\n"


def memory(agent: LocalAgent, pid: int) -> tuple[int, int]:
    """(USS, RSS) in KiB of ``pid`` (a pid in the agent's PID namespace)."""
    fields: dict[str, int] = {}
    path = f"/proc/{agent.pid}/root/proc/{pid}/smaps_rollup"
    with open(path, encoding="ascii") as file:
        for line in file:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                fields[key] = int(parts[0])
    return fields["Private_Clean"] + fields["Private_Dirty"], fields["Rss"]


def _bind(source: str, destination: str) -> dict[str, Any]:
    return {"type": "bind", "source": source, "destination": destination, "options": ["bind", "ro"]}


def run(kind: str, count: int, rootfs: str, entry: str, tini: str) -> list[tuple[int, int]]:
    results: list[tuple[int, int]] = []
    with LocalAgent.start(log_level="warning", extra_args=("--entry-point", entry)) as agent:
        procs: list[Process] = []
        try:
            for index in range(count):
                cid = f"{kind}{index}"
                root = agent.host.mount_rootfs(cid, rootfs)
                if kind == "trinit":
                    spec = busybox_spec(root, ["/.cz-init", "--", "sleep", "1000"])
                    spec["mounts"].append(_bind(entry, "/.cz-init"))
                else:
                    spec = busybox_spec(root, ["/tini", "--", "sleep", "1000"])
                    spec["mounts"].append(_bind(tini, "/tini"))
                proc = agent.host.process(cid, spec, stdout=False, stderr=False)
                procs.append(proc)
                proc.create()
                proc.start()
            for proc in procs:
                assert proc.pid is not None
                results.append(memory(agent, proc.pid))
        finally:
            for proc in procs:
                try:
                    proc.kill(9)
                    proc.wait(timeout=30)
                finally:
                    proc.close()
                    proc.delete()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=5)
    args = parser.parse_args()
    tini = shutil.which("tini-static")
    if tini is None:
        sys.exit("tini-static not found: apt-get install tini (scripts/setup.sh does)")
    work = Path(tempfile.mkdtemp(prefix="trinit-uss-", dir="/tmp"))
    try:
        os.chmod(work, 0o755)
        rootfs = str(work / "rootfs")
        build_busybox_rootfs(rootfs)
        entry = work / "vminitd"
        entry.write_text(LAUNCHER)
        entry.chmod(0o755)
        for kind in ("trinit", "tini"):
            values = run(kind, args.containers, rootfs, str(entry), tini)
            uss = [u for u, _ in values]
            rss = [r for _, r in values]
            print(
                f"{kind:6s} init, {len(values)} containers: USS median {statistics.median(uss)} "
                f"KiB (min {min(uss)}, max {max(uss)}), RSS median {statistics.median(rss)} KiB"
            )
            print(f"       each (USS, RSS) KiB: {values}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
