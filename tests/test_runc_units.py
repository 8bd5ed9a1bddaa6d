"""runc mode's pure parts: the bundle spec's cgroupsPath and the v1 clean-up (on plain
directories: rmdir of an empty directory behaves as on a cgroup without processes)."""

from __future__ import annotations

from pathlib import Path

from trinit.host._local import find_cgroup2_mount
from trinit.nursery._runc import last_error, remove_v1_leftovers, runc_spec


def test_runc_spec_points_runc_at_trinits_cgroup() -> None:
    spec = {"linux": {"cgroupsPath": "/container/c1", "namespaces": []}, "process": {}}
    assert runc_spec(spec, None) is spec
    # the cgroup2 hierarchy of this machine is mounted somewhere: a path below it
    mount = find_cgroup2_mount()
    assert mount is not None
    altered = runc_spec(spec, f"{mount}/agent-x/container/c1")
    assert altered["linux"] == {"cgroupsPath": "/agent-x/container/c1", "namespaces": []}
    assert spec["linux"]["cgroupsPath"] == "/container/c1"  # the original is untouched


def test_remove_v1_leftovers_removes_empty_parents_only(tmp_path: Path) -> None:
    mounts = [tmp_path / "memory", tmp_path / "pids"]
    for mount in mounts:
        (mount / "agent" / "container" / "c1").mkdir(parents=True)
    (mounts[1] / "agent" / "container" / "c2").mkdir()  # still used by another container
    remove_v1_leftovers("/agent/container/c1", [str(m) for m in mounts])
    assert list(mounts[0].iterdir()) == []
    assert sorted(p.name for p in (mounts[1] / "agent" / "container").iterdir()) == ["c2"]
    remove_v1_leftovers("/agent/container/c1", [str(m) for m in mounts])  # idempotent


def test_last_error_reads_runcs_json_log(tmp_path: Path) -> None:
    log = tmp_path / "runc.log"
    assert last_error(log) == ""
    log.write_text(
        '{"level":"info","msg":"x"}\nnot json\n{"level":"error","msg":"no such file"}\n'
        '{"level":"debug","msg":"y"}\n'
    )
    assert last_error(log) == "no such file"
