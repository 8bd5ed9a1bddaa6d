"""Real container processes through the exec helper, isolated from the machine.

Each test runs this file as a driver script under ``unshare --mount --pid --fork --uts --ipc
--net``: the driver is PID 1 of a fresh PID namespace with a private mount namespace, so every
mount, hostname and process the helper creates dies with it. The driver calls
:func:`trinit.exec.launch` under trio, reaps with ``os.waitpid`` and prints one JSON result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import rootfs as rootfs_helper  # noqa: E402

# --- driver (runs inside the namespaces) ------------------------------------------------------


def _fds() -> list[int]:
    return sorted(int(n) for n in os.listdir("/proc/self/fd"))


def _reap_until(pids: set[int], statuses: dict[int, int]) -> None:
    while not pids <= statuses.keys():
        pid, status = os.waitpid(-1, 0)
        statuses[pid] = status


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _write_json(path: str, value: object) -> None:
    with open(path, "w") as file:
        json.dump(value, file)


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO on a PTY master once the slave is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def _launch_one(
    argv_tail: list[str], terminal: bool, stdio_out: bool, result: dict[str, Any]
) -> tuple[int | None, int | None, int | None]:
    """Launch; fill result['error'|'pid'|'elapsed']; return (pid, out_r, err_r/pty)."""
    from trinit.errors import TrinitError
    from trinit.exec import launch

    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    out_r = out_w = err_r = err_w = None
    if stdio_out and not terminal:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
    stdio = (null, out_w if out_w is not None else null, err_w if err_w is not None else null)
    pids: list[int] = []
    start = time.monotonic()
    try:
        launched = await launch(argv_tail, stdio=stdio, on_pid=pids.append, terminal=terminal)
    except TrinitError as exc:
        result["error"] = exc.message
        result["code"] = int(exc.code)
        launched = None
    finally:
        result["elapsed"] = time.monotonic() - start
        for fd in (null, out_w, err_w):
            if fd is not None:
                os.close(fd)
    result.setdefault("pids", []).append(pids)
    if launched is None:
        return None, out_r, err_r
    if terminal:
        result["pty_master"] = launched.pty_master is not None
        return launched.pid, launched.pty_master, None
    return launched.pid, out_r, err_r


async def _drive(scenario: dict[str, Any]) -> dict[str, Any]:
    from trinit.exec import alter_spec

    work = scenario["work"]
    result: dict[str, Any] = {}
    statuses: dict[int, int] = {}
    spec = alter_spec(scenario["spec"], "c1")
    bundle = os.path.join(work, "bundle")
    os.makedirs(bundle, exist_ok=True)
    _write_json(os.path.join(bundle, "config.json"), spec)
    run_tail = ["run", "--bundle-path", bundle, "--cgroup-root", os.path.join(work, "cg")]
    terminal = bool(spec["process"].get("terminal"))
    exec_process = scenario.get("exec")

    fds_before = _fds()
    pid, out, err = await _launch_one(run_tail, terminal, exec_process is None, result)
    if exec_process is not None and pid is not None:
        exec_spec = alter_spec(dict(spec, process=exec_process), "e1")
        path = os.path.join(work, "process.json")
        _write_json(path, exec_spec["process"])
        exec_tail = ["exec", "--process-path", path, "--parent-pid", str(pid)]
        exec_terminal = bool(exec_process.get("terminal"))
        exec_result: dict[str, Any] = {}
        epid, eout, eerr = await _launch_one(exec_tail, exec_terminal, True, exec_result)
        exec_result["stdout"] = _read_all(eout).decode() if eout is not None else ""
        exec_result["stderr"] = _read_all(eerr).decode() if eerr is not None else ""
        for fd in (eout, eerr):
            if fd is not None:
                os.close(fd)
        helper_pids = set(exec_result["pids"][0][:1])
        _reap_until(helper_pids | ({epid} if epid else set()), statuses)
        if epid:
            exec_result["status"] = _exit_code(statuses[epid])
        result["exec"] = exec_result
        os.kill(pid, 9)
    result["stdout"] = _read_all(out).decode() if out is not None else ""
    result["stderr"] = _read_all(err).decode() if err is not None else ""
    for fd in (out, err):
        if fd is not None:
            os.close(fd)
    _reap_until(set(result["pids"][0][:1]) | ({pid} if pid else set()), statuses)
    if pid:
        result["status"] = _exit_code(statuses[pid])
    result["fds_before"] = fds_before
    result["fds_after"] = _fds()
    return result


def _driver_main() -> None:
    import trio

    scenario = json.loads(sys.argv[1])
    result = trio.run(_drive, scenario)
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    _driver_main()
    sys.exit(0)

# --- tests -----------------------------------------------------------------------------------

import pytest  # noqa: E402

UNSHARE = ["unshare", "--mount", "--pid", "--fork", "--uts", "--ipc", "--net"]


@pytest.fixture(scope="module")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("rootfs"))
    rootfs_helper.build_busybox_rootfs(path)
    return path


def drive(tmp_path: Any, spec: dict[str, Any], exec_process: Any = None) -> dict[str, Any]:
    scenario = {"work": str(tmp_path), "spec": spec}
    if exec_process is not None:
        scenario["exec"] = exec_process
    proc = subprocess.run(
        [*UNSHARE, sys.executable, __file__, json.dumps(scenario)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def spec_for(root: str, args: list[str], **process: Any) -> dict[str, Any]:
    return rootfs_helper.test_spec(root, args, process=process)


def test_echo_exact_bytes(busybox_root: str, tmp_path: Any) -> None:
    result = drive(tmp_path, spec_for(busybox_root, ["echo", "hello"]))
    assert result.get("error") is None
    assert result["stdout"] == "hello\n"
    assert result["status"] == 0
    assert len(result["pids"][0]) == 2  # helper, then container
    assert result["fds_after"] == result["fds_before"]


def test_exit_status(busybox_root: str, tmp_path: Any) -> None:
    result = drive(tmp_path, spec_for(busybox_root, ["sh", "-c", "echo err >&2; exit 7"]))
    assert result["stderr"] == "err\n"
    assert result["status"] == 7


def test_missing_executable(busybox_root: str, tmp_path: Any) -> None:
    result = drive(tmp_path, spec_for(busybox_root, ["nosuchprog"]))
    assert result["error"] == "vmexec error: failed to find target executable nosuchprog"
    assert result["code"] == 13
    assert result["fds_after"] == result["fds_before"]


def test_empty_args(busybox_root: str, tmp_path: Any) -> None:
    result = drive(tmp_path, spec_for(busybox_root, []))
    assert result["error"] == "vmexec error: process args cannot be empty"


def test_user_bin(busybox_root: str, tmp_path: Any) -> None:
    spec = spec_for(busybox_root, ["id"], user={"uid": 1, "gid": 1})
    result = drive(tmp_path, spec)
    assert result["stdout"] == "uid=1(bin) gid=1(bin) groups=1(bin)\n"


def test_username_and_home(busybox_root: str, tmp_path: Any) -> None:
    spec = spec_for(
        busybox_root,
        ["sh", "-c", 'echo "$HOME $(id -u) $(pwd)"'],
        user={"uid": 0, "gid": 0, "username": "nobody"},
        cwd="/work/dir",
    )
    result = drive(tmp_path, spec)
    # CAP_DAC_OVERRIDE (granted by the spec) lets nobody create the cwd
    assert result["stdout"] == "/nonexistent 65534 /work/dir\n"
    spec["process"]["capabilities"] = {}
    spec["process"]["cwd"] = "/work2/dir"
    result = drive(tmp_path, spec)
    # without it the cwd creation, which runs after the uid change, fails
    assert result["error"].startswith("vmexec error: create cwd /work2/dir: [Errno 13]")


def test_no_fds_leak_into_container(busybox_root: str, tmp_path: Any) -> None:
    result = drive(tmp_path, spec_for(busybox_root, ["ls", "/proc/self/fd"]))
    assert result["stdout"].split() == ["0", "1", "2", "3"]


def test_namespaces_hostname_and_pid1(busybox_root: str, tmp_path: Any) -> None:
    script = "echo $$; hostname; cat /proc/self/cgroup | head -1; cat /proc/sys/kernel/msgmax"
    spec = rootfs_helper.test_spec(
        busybox_root, ["sh", "-c", script], linux={"sysctl": {"kernel.msgmax": "4242"}}
    )
    result = drive(tmp_path, spec)
    lines = result["stdout"].splitlines()
    assert lines[0] == "1"
    assert lines[1] == "testbox"
    assert lines[2].endswith(":/")  # own cgroup namespace
    assert lines[3] == "4242"


def test_masked_and_readonly_paths(busybox_root: str, tmp_path: Any) -> None:
    script = (
        "cat /proc/kcore | wc -c; touch /proc/sys/x 2>/dev/null || echo ro; "
        "ls -l /dev/ptmx /dev/fd | cut -c1; test -c /dev/null && echo null"
    )
    result = drive(tmp_path, spec_for(busybox_root, ["sh", "-c", script]))
    assert result["stdout"].split() == ["0", "ro", "l", "c", "null"]


def test_readonly_root(busybox_root: str, tmp_path: Any) -> None:
    spec = rootfs_helper.test_spec(
        busybox_root,
        ["sh", "-c", "touch /x 2>/dev/null || echo ro; touch /tmp/y && echo rw"],
        root={"readonly": True},
    )
    result = drive(tmp_path, spec)
    assert result["stdout"].split() == ["ro", "rw"]


def test_terminal(busybox_root: str, tmp_path: Any) -> None:
    result = drive(tmp_path, spec_for(busybox_root, ["sh", "-c", "tty; echo $TERM"], terminal=True))
    assert result.get("error") is None
    assert result["pty_master"] is True
    assert result["stdout"].replace("\r\n", "\n") == "/dev/pts/0\nxterm\n"
    assert result["fds_after"] == result["fds_before"]


def test_bad_mount_names_stage(busybox_root: str, tmp_path: Any) -> None:
    spec = rootfs_helper.test_spec(busybox_root, ["true"])
    spec["mounts"].append({"type": "nosuchfs", "source": "x", "destination": "/mnt/x"})
    result = drive(tmp_path, spec)
    assert result["error"].startswith("vmexec error: mount /mnt/x: [Errno 19]")


def test_exec_joins_init_namespaces(busybox_root: str, tmp_path: Any) -> None:
    spec = spec_for(busybox_root, ["sleep", "1000"])
    exec_process = dict(spec["process"], args=["sh", "-c", "hostname; ps -o pid,args"])
    result = drive(tmp_path, spec, exec_process)
    assert result.get("error") is None
    exec_result = result["exec"]
    assert exec_result.get("error") is None, exec_result
    lines = exec_result["stdout"].splitlines()
    assert lines[0] == "testbox"
    assert any(line.split() == ["1", "sleep", "1000"] for line in lines[1:]), lines
    assert exec_result["status"] == 0
    assert result["status"] == 128 + 9
    assert result["fds_after"] == result["fds_before"]


def test_exec_terminal(busybox_root: str, tmp_path: Any) -> None:
    spec = spec_for(busybox_root, ["sleep", "1000"])
    exec_process = dict(spec["process"], args=["tty"], terminal=True)
    result = drive(tmp_path, spec, exec_process)
    assert result["exec"]["stdout"].strip() == "/dev/pts/0"


def test_exec_missing_executable(busybox_root: str, tmp_path: Any) -> None:
    spec = spec_for(busybox_root, ["sleep", "1000"])
    exec_process = dict(spec["process"], args=["nosuchprog"])
    result = drive(tmp_path, spec, exec_process)
    assert result["exec"]["error"] == ("vmexec error: failed to find target executable nosuchprog")


def test_launch_time_of_true(busybox_root: str, tmp_path: Any) -> None:
    result = drive(tmp_path, spec_for(busybox_root, ["true"]))
    assert result["status"] == 0
    print(f"launch() of /bin/true took {result['elapsed'] * 1000:.1f} ms")


def _status_field(text: str, name: str) -> str:
    return next(line.split()[1] for line in text.splitlines() if line.startswith(name + ":"))


def test_credentials_rlimits_and_all_64_capability_bits(busybox_root: str, tmp_path: Any) -> None:
    caps = [*rootfs_helper.DEFAULT_CAPABILITIES, "CAP_SYSLOG", "cap_bpf", "NOT_A_CAP"]
    spec = spec_for(
        busybox_root, ["sh", "-c", "ulimit -n; ulimit -c; cat /proc/self/status"],
        noNewPrivileges=True,
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 600},
                 {"type": "RLIMIT_CORE", "soft": 2**64 - 1, "hard": 2**64 - 1}],
        capabilities={"bounding": caps, "effective": caps, "permitted": caps,
                      "ambient": ["CAP_KILL"], "inheritable": ["CAP_KILL"]},
        user={"uid": 1, "gid": 1, "additionalGids": [10, 20]},
    )  # fmt: skip
    result = drive(tmp_path, spec)
    out = result["stdout"]
    lines = out.splitlines()
    assert lines[:2] == ["512", "unlimited"]
    expected = sum(1 << i for i in (0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31, 34, 39))
    assert int(_status_field(out, "CapBnd"), 16) == expected
    # a non-root user keeps only the ambient set across execve
    assert int(_status_field(out, "CapEff"), 16) == 1 << 5
    assert int(_status_field(out, "CapAmb"), 16) == 1 << 5
    assert _status_field(out, "NoNewPrivs") == "1"
    assert _status_field(out, "Uid") == "1"
    groups = next(line for line in lines if line.startswith("Groups:")).split()[1:]
    assert groups == ["1", "10", "20"]


def test_root_gets_bounding_set(busybox_root: str, tmp_path: Any) -> None:
    caps = ["CAP_CHOWN", "CAP_SYSLOG"]
    spec = spec_for(
        busybox_root,
        ["cat", "/proc/self/status"],
        capabilities={"bounding": caps, "effective": caps, "permitted": caps},
    )
    out = drive(tmp_path, spec)["stdout"]
    assert int(_status_field(out, "CapEff"), 16) == 1 | 1 << 34
    # Python ignores SIGPIPE and SIGXFSZ: the helper restores defaults before execve
    assert int(_status_field(out, "SigIgn"), 16) == 0
    assert int(_status_field(out, "SigBlk"), 16) == 0


def test_unknown_rlimit(busybox_root: str, tmp_path: Any) -> None:
    spec = spec_for(busybox_root, ["true"], rlimits=[{"type": "RLIMIT_FOO", "soft": 1, "hard": 1}])
    result = drive(tmp_path, spec)
    assert result["error"] == "vmexec error: setrlimit: unknown rlimit type 'RLIMIT_FOO'"


def test_bind_mounts_dir_ro_and_file(busybox_root: str, tmp_path: Any) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello").write_text("hi\n")
    single = tmp_path / "single"
    single.write_text("one\n")
    spec = rootfs_helper.test_spec(
        busybox_root,
        ["sh", "-c", "cat /mnt/data/hello /etc/single; touch /mnt/data/x 2>/dev/null || echo ro"],
    )
    spec["mounts"] += [
        {
            "type": "none",
            "source": str(data),
            "destination": "/mnt/data",
            "options": ["bind", "ro"],
        },
        {"type": "none", "source": str(single), "destination": "/etc/single", "options": ["bind"]},
    ]
    result = drive(tmp_path, spec)
    assert result["stdout"] == "hi\none\nro\n"
    assert not (data / "x").exists()


def test_exec_when_init_has_only_mount_and_pid_namespaces(busybox_root: str, tmp_path: Any) -> None:
    spec = rootfs_helper.test_spec(busybox_root, ["sleep", "1000"], hostname="")
    spec["linux"]["namespaces"] = [{"type": "mount", "path": ""}, {"type": "pid", "path": ""},
                                   {"type": "network", "path": ""}]  # fmt: skip
    exec_process = dict(spec["process"], args=["sh", "-c", "echo $$; ps -o pid,args"])
    result = drive(tmp_path, spec, exec_process)
    assert result["exec"].get("error") is None, result["exec"]
    lines = result["exec"]["stdout"].splitlines()
    assert lines[0] != "1"
    assert any(line.split() == ["1", "sleep", "1000"] for line in lines[1:]), lines
