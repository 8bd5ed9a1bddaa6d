"""Pure parts of the exec helper: option parsing, JSON decoding, PATH lookup, capabilities."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from trinit import _linux as sc
from trinit.exec import parse_mount_options
from trinit.exec._child import (
    CAPABILITIES,
    ChildError,
    _parse_args,
    cap_mask,
    console_size,
    decode_json,
    find_executable,
)
from trinit.exec._mountopts import MountOptions, statfs_mount_flags


def test_mount_options_shared_with_the_mount_rpc() -> None:
    # the table itself is tested in test_system_mount.py; here: what the helper derives
    assert parse_mount_options([]) == MountOptions(0, 0, "")
    bind_ro = parse_mount_options(["rbind", "ro", "nosuid"])
    assert bind_ro.bind_remount_flags == (sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | sc.MS_NOSUID)
    assert parse_mount_options(["bind"]).bind_remount_flags == 0
    assert parse_mount_options(["nosuid"]).bind_remount_flags == 0  # not a bind
    assert parse_mount_options(["bind", "remount", "ro"]).skip_main_call
    assert not parse_mount_options(["remount", "ro"]).skip_main_call
    assert parse_mount_options(["defaults", "rprivate", "mode=755"]) == MountOptions(
        0, sc.MS_PRIVATE | sc.MS_REC, "mode=755"
    )
    with pytest.raises(ValueError, match="longer than a page"):
        parse_mount_options(["x" * 4097])


def test_statfs_flags() -> None:
    assert statfs_mount_flags(1 | 2 | 4 | 8) == (
        sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    )
    assert statfs_mount_flags(4096 | 1024) == sc.MS_RELATIME | sc.MS_NOATIME
    assert statfs_mount_flags(os.statvfs("/").f_flag) & sc.MS_RDONLY == 0


@pytest.mark.parametrize(
    "text",
    [
        '{"a": [1, -2.5e3, "x\\/y\\u00e9", true, false, null, {}], "b": {"c": ""}}',
        "  \n[]\t",
        '"s"',
        "12345678901234567890",
    ],
)
def test_decode_json_matches_json(text: str) -> None:
    assert decode_json(text.encode()) == json.loads(text)


@pytest.mark.parametrize("text", ["", "{", '{"a": 1} x', "NaN", "[1,]", '{"a": 1}{}'])
def test_decode_json_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        decode_json(text.encode())


def test_cap_mask() -> None:
    assert len(CAPABILITIES) == 41
    assert CAPABILITIES[40] == "CAP_CHECKPOINT_RESTORE"
    assert cap_mask(["CAP_CHOWN", "kill", "cap_sys_admin", "CAP_NOPE"]) == (1 | 1 << 5 | 1 << 21)
    assert cap_mask(["CAP_BPF", "syslog"]) == (1 << 39 | 1 << 34)  # above 32: granted
    assert cap_mask(None) == 0


def test_find_executable(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    (bindir / "plain").write_text("not executable")
    (bindir / "dir").mkdir()
    env = [f"PATH=/nonexistent:{bindir}"]
    assert find_executable("tool", "/", env) == str(tool)
    assert find_executable(str(tool), "/", []) == str(tool)
    assert find_executable("bin/../bin/tool", str(tmp_path), []) == str(tool)
    for missing in ("plain", "dir", "nosuchprog", "/nonexistent/x", "./tool"):
        with pytest.raises(ChildError) as info:
            find_executable(missing, "/", env)
        assert str(info.value) == f"failed to find target executable {missing}"


def test_find_executable_empty_path_element_is_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = tmp_path / "tool"
    tool.write_text("")
    tool.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    assert find_executable("tool", "/", ["PATH=/nonexistent:"]) == "./tool"


def test_find_executable_falls_back_to_own_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/bin")
    assert find_executable("sh", "/", ["HOME=/"]) == "/bin/sh"


def test_parse_args() -> None:
    assert _parse_args(["run", "--bundle-path", "/b"]) == ("run", {"bundle-path": "/b"})
    assert _parse_args(["exec", "--process-path", "/p", "--parent-pid", "7"]) == (
        "exec", {"process-path": "/p", "parent-pid": "7"}
    )  # fmt: skip
    assert _parse_args(["exec", "--process-json", "{}", "--parent-pid", "7"]) == (
        "exec", {"process-json": "{}", "parent-pid": "7"}
    )  # fmt: skip
    both = ["--process-path", "p", "--process-json", "{}"]
    for bad in ([], ["nope"], ["run"], ["run", "--bundle-path"], ["exec", "--process-path", "p"],
                ["run", "bundle", "x"], ["exec", "--parent-pid", "7"],
                ["exec", *both, "--parent-pid", "7"]):  # fmt: skip
        with pytest.raises(ChildError):
            _parse_args(bad)


def test_inline_process_json() -> None:
    from trinit.exec._child import _inline_json

    assert _inline_json('{"args": ["a\\u00e9"]}', "process") == {"args": ["a\u00e9"]}
    for bad, reason in (("[]", "not a JSON object"), ("{", "property name"), ("{} x", "extra")):
        with pytest.raises(ChildError, match=f"failed to decode process: .*{reason}"):
            _inline_json(bad, "process")


def test_apply_cgroup_seam(tmp_path: Path) -> None:
    from trinit.exec._child import _apply_cgroup, _open_cgroup

    leaf = tmp_path / "container" / "c1"
    spec = {
        "linux": {
            "cgroupsPath": "/container/c1",
            "resources": {
                "memory": {"limit": 1 << 20},
                "cpu": {"quota": 200000, "period": 100000},
                "pids": {"limit": -1},
            },
        }
    }
    assert _open_cgroup(spec, str(tmp_path)) is None  # no such directory: nothing
    assert not leaf.exists()
    leaf.mkdir(parents=True)
    for name in ("memory.max", "cpu.max", "pids.max", "cgroup.procs"):
        (leaf / name).write_text("")
    target = _open_cgroup(spec, str(tmp_path))
    assert target is not None
    try:
        _apply_cgroup(42, target)
    finally:
        target.close()
    contents = {p.name: p.read_text() for p in leaf.iterdir()}
    # limits are the daemon's job (written before the launch); the helper only places the pid
    assert contents == {
        "memory.max": "", "cpu.max": "", "pids.max": "", "cgroup.procs": "42",
    }  # fmt: skip
    (leaf / "cgroup.procs").unlink()
    (leaf / "cgroup.procs").mkdir()
    with pytest.raises(ChildError, match=r"^cgroup cgroup.procs: \[Errno 21\]"):
        _open_cgroup(spec, str(tmp_path))


def _fork_and_report(target: object) -> tuple[bool, str]:
    """fork_into(target) with a child that reports its /proc/self/cgroup through a pipe."""
    return _fork_and_report_entered(target, 0)


def _fork_and_report_entered(target: object, entered: int) -> tuple[bool, str]:
    from trinit.exec._child import fork_into

    read_end, write_end = os.pipe()
    pid, placed = fork_into(target, entered)  # type: ignore[arg-type]
    if pid == 0:  # the child: plain system calls only, then _exit
        try:
            with open("/proc/self/cgroup", "rb") as file:
                os.write(write_end, file.read())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return placed, text


def test_fork_into_falls_back_outside_cgroup2(tmp_path: Path) -> None:
    """A directory that is not a cgroup2 one: a plain fork, to be moved by the caller."""
    from trinit.exec._child import _open_cgroup

    (tmp_path / "c" / "cgroup.procs").parent.mkdir()
    (tmp_path / "c" / "cgroup.procs").write_text("")
    target = _open_cgroup({"linux": {"cgroupsPath": "c"}}, str(tmp_path))
    assert target is not None
    try:
        placed, text = _fork_and_report(target)
    finally:
        target.close()
    assert not placed
    with open("/proc/self/cgroup") as file:
        assert text == file.read()  # still ours
    assert _fork_and_report(None)[0] is False


def test_fork_into_a_real_cgroup2_directory() -> None:
    """On cgroup2 the child is born in the container's cgroup: no move (and no wait)."""
    import secrets

    from test_cgroup_real import cgroup2_mount, remove_leftovers

    from trinit.exec._child import _open_cgroup

    mount = cgroup2_mount()
    assert mount is not None, "this machine has a cgroup2 hierarchy (hybrid or unified)"
    name = f"trinit-test-{secrets.token_hex(4)}"
    top = os.path.join(mount, name)
    os.mkdir(top)
    try:
        target = _open_cgroup({"linux": {"cgroupsPath": name}}, mount)
        assert target is not None
        try:
            placed, text = _fork_and_report(target)
        finally:
            target.close()
        assert placed
        assert f"0::/{name}\n" in text
        # After entering a user namespace the kernel would judge other credentials: fork
        target = _open_cgroup({"linux": {"cgroupsPath": name}}, mount)
        assert target is not None
        try:
            placed, text = _fork_and_report_entered(target, sc.CLONE_NEWUSER)
        finally:
            target.close()
        assert not placed and f"0::/{name}\n" not in text
    finally:
        remove_leftovers(top)


def test_fork_into_a_removed_cgroup_after_a_new_pid_namespace() -> None:
    """clone3 refused (the cgroup is gone) after a new PID namespace was made: a clear
    error, never the plain fork the poisoned namespace would refuse with ENOMEM."""
    import secrets

    from test_cgroup_real import cgroup2_mount

    from trinit.exec._child import ChildError, _open_cgroup, fork_into

    mount = cgroup2_mount()
    assert mount is not None
    name = f"trinit-test-{secrets.token_hex(4)}"
    os.mkdir(os.path.join(mount, name))
    target = _open_cgroup({"linux": {"cgroupsPath": name}}, mount)
    os.rmdir(os.path.join(mount, name))
    assert target is not None and target.cgroup2
    try:
        with pytest.raises(ChildError, match=r"^fork into the container cgroup: "):
            fork_into(target, sc.CLONE_NEWPID)  # (no namespace made here: only the flag)
        placed, _ = _fork_and_report(target)  # without one: falls back to fork
        assert not placed
    finally:
        target.close()


@pytest.mark.parametrize(
    ("process", "size"),
    [
        ({}, None),
        ({"consoleSize": None}, None),
        ({"consoleSize": {"height": 40, "width": 120}}, (40, 120)),
        ({"consoleSize": {"height": 0x10028, "width": 80}}, (40, 80)),  # uint16, as Resize
        ({"consoleSize": {"height": True, "width": 80}}, None),
        ({"consoleSize": {"height": 40}}, None),
    ],
)
def test_console_size(process: dict[str, object], size: tuple[int, int] | None) -> None:
    assert console_size(process) == size
