"""mountinfo parsing: escapes, containing mount, mounts below a path (in a private namespace)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from trinit._mountinfo import mount_containing, read_mounts


def test_root_and_proc_are_found() -> None:
    mounts = read_mounts()
    assert any(m.mount_point == "/" for m in mounts)
    proc = mount_containing("/proc/self")
    assert proc is not None and proc.fstype == "proc"


def test_escaped_names_and_mounts_under(tmp_path: Path) -> None:
    # runs in its own mount namespace: nothing is mounted on the machine
    target = tmp_path / "dir with space"
    (target / "inner").mkdir(parents=True)
    script = f"""
import subprocess, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from trinit._mountinfo import mounts_under, mount_containing
top = {str(target)!r}
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", top], check=True)
subprocess.run(["mkdir", top + "/inner"], check=True)
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", top + "/inner"], check=True)
print(mounts_under(top))
print(mount_containing(top + "/inner/x").fstype)
"""
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert out[0] == repr([str(target / "inner"), str(target)])
    assert out[1] == "tmpfs"
