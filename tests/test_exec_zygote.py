"""The warm exec helper (``trinit.exec._zygote.HelperPool``) with real processes.

Each process test runs this file as a driver under ``unshare --mount --pid --fork
--mount-proc``: the driver is PID 1 of a fresh PID namespace (so ``kill(-1)`` and "is any
process left?" are about this test only, and everything dies with it) and runs trinit's own
:class:`~trinit.nursery.Reaper`, which receives every pid the launcher reports, like the
agent does. The driver prints one JSON result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import rootfs as rootfs_helper  # noqa: E402

# --- driver (runs inside the namespaces) ------------------------------------------------------


def _fds() -> list[int]:
    return sorted(int(n) for n in os.listdir("/proc/self/fd"))


def _read(path: str) -> str:
    with open(path) as file:
        return file.read()


def _live_processes() -> list[int]:
    """Pids in this PID namespace, other than ourselves, that are not zombies."""
    live = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/stat") as file:
                state = file.read().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            live.append(int(name))
    return live


class Driver:
    def __init__(self, work: str, rootfs: str, nursery: Any) -> None:
        from trinit.nursery import Reaper

        self.work = work
        self.rootfs = rootfs
        self.nursery = nursery
        self.reaper = Reaper()
        self._count = 0

    async def launch(
        self,
        launcher: Callable[..., Awaitable[Any]],
        args: list[str],
        env: dict[str, str] | None = None,
        process_env: list[str] | None = None,
        linux: dict[str, Any] | None = None,
        mounts: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Run ``args`` as a container init to completion; its pids, output and status.
        ``linux`` replaces keys of the spec's ``linux``; ``mounts`` are added."""
        from trinit.errors import TrinitError
        from trinit.exec import alter_spec

        self._count += 1
        spec = alter_spec(rootfs_helper.test_spec(self.rootfs, args), f"z{self._count}")
        if process_env is not None:  # after alter_spec, which would add a PATH
            spec["process"]["env"] = process_env
        spec["linux"].update(linux or {})
        spec["mounts"] += mounts or []
        bundle = os.path.join(self.work, f"bundle{self._count}")
        os.makedirs(bundle)
        with open(os.path.join(bundle, "config.json"), "w") as file:  # noqa: ASYNC230
            json.dump(spec, file)
        tail = ["run", "--bundle-path", bundle, "--cgroup-root", os.path.join(self.work, "cg")]
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        pids: list[int] = []
        watches = []

        def on_pid(pid: int) -> None:
            pids.append(pid)
            watches.append(self.reaper.register(pid))

        result: dict[str, Any] = {"pids": pids}
        start = time.monotonic()
        try:
            launched = await launcher(
                tail, stdio=(null, out_w, out_w), on_pid=on_pid, python=sys.executable, env=env
            )
        except TrinitError as exc:
            result["error"] = exc.message
            launched = None
        except BaseException:
            os.close(out_r)
            raise
        finally:
            result["elapsed"] = time.monotonic() - start
            os.close(null)
            os.close(out_w)
        for watch in watches:  # the helper, then the container
            status = await watch.wait()
            if launched is not None and watch.pid == launched.pid:
                result["status"] = status.exit_code
        with os.fdopen(out_r, "rb") as out:  # every writer has exited
            result["stdout"] = out.read().decode()
        return result


async def _scenario(name: str, driver: Driver) -> dict[str, Any]:
    import trio

    from trinit.exec._zygote import HelperPool

    fds_before = _fds()
    pool = HelperPool()
    result: dict[str, Any] = {}
    if name == "reuse":
        first = await driver.launch(pool.launch, ["echo", "one"])
        await pool.prewarm()
        result["server"] = pool.server_pid
        cgroups = [f"/proc/{pool.server_pid}/cgroup", "/proc/self/cgroup"]
        result["same_cgroup"] = len({_read(path) for path in cgroups}) == 1
        second = await driver.launch(pool.launch, ["ls", "/proc/self/fd"])
        await pool.prewarm(ready=True)  # (idle until the first hand-off: then trinit's policy)
        third = await driver.launch(pool.launch, ["cat", "/proc/self/stat"])
        result["runs"] = [first, second, third]
        result["server_after"] = pool.server_pid
        result["served"] = pool.served
        result["fresh_spawns"] = pool.fresh_spawns
    elif name == "many":
        await pool.prewarm(ready=True)
        result["server"] = pool.server_pid
        result["runs"] = [await driver.launch(pool.launch, ["echo", str(i)]) for i in range(20)]
        result["server_after"] = pool.server_pid
        result["served"] = pool.served
        result["fresh_spawns"] = pool.fresh_spawns
    elif name == "killed":
        await pool.prewarm()
        server = pool.server_pid
        assert server is not None
        watch = driver.reaper.register(server)
        os.kill(-1, signal.SIGKILL)  # like the host's Kill(-1, SIGKILL): all but PID 1 (us)
        result["zygote_status"] = (await watch.wait()).exit_code
        result["server"] = server
        result["runs"] = [await driver.launch(pool.launch, ["echo", "fallback"])]
        result["fresh_spawns"] = pool.fresh_spawns
        await pool.prewarm(ready=True)  # a successor was started by that launch
        result["successor"] = pool.server_pid
        result["runs"].append(await driver.launch(pool.launch, ["echo", "successor"]))
        result["served"] = pool.served
    elif name == "env":
        await pool.prewarm()
        environment = dict(os.environ, PATH="/zbin:/bin")  # set after the server started
        runs = [await driver.launch(pool.launch, ["ztool"], env=environment, process_env=[])]
        environment = {"PATH": "/bin"}
        runs.append(await driver.launch(pool.launch, ["ztool"], env=environment, process_env=[]))
        result["runs"] = runs
        result["served"] = pool.served
    elif name == "concurrent":
        await pool.prewarm(ready=True)
        result["server"] = pool.server_pid
        concurrent: list[dict[str, Any]] = []

        async def one(text: str) -> None:
            concurrent.append(await driver.launch(pool.launch, ["echo", text]))

        async with trio.open_nursery() as nursery:
            for text in "abcdefgh":
                nursery.start_soon(one, text)
        result["runs"] = concurrent
        result["served"] = pool.served
        result["fresh_spawns"] = pool.fresh_spawns
    elif name == "cancelled":
        await pool.prewarm()
        server = pool.server_pid
        assert server is not None
        watch = driver.reaper.register(server)
        os.kill(server, signal.SIGSTOP)  # it takes the request but never answers
        with trio.CancelScope() as scope:
            driver.nursery.start_soon(_cancel_when_blocked, scope)
            await driver.launch(pool.launch, ["echo", "never"])
        result["cancelled"] = scope.cancelled_caught
        result["zygote_status"] = (await watch.wait()).exit_code
        result["runs"] = [await driver.launch(pool.launch, ["echo", "after"])]
    elif name == "direct":
        await pool.prewarm(ready=True)
        server = pool.server_pid
        assert server is not None
        own = [f"/proc/{server}/ns/pid", f"/proc/{server}/ns/pid_for_children"]
        direct = await driver.launch(pool.launch, ["sh", "-c", "echo $$"])
        result["restored"] = len({os.readlink(path) for path in own}) == 1
        # a spec joining a PID namespace by path goes to a helper, as before
        joined = [
            {"type": kind, "path": "/proc/1/ns/pid" if kind == "pid" else ""}
            for kind in ("ipc", "mount", "pid", "uts")
        ]
        shared = await driver.launch(pool.launch, ["true"], linux={"namespaces": joined})
        # a direct init that fails after its pid is known: the helper's error text
        broken = {"destination": "/mnt", "type": "none", "source": "/no/such", "options": ["bind"]}
        failed = await driver.launch(pool.launch, ["true"], mounts=[broken])
        after = await driver.launch(pool.launch, ["echo", "after"])
        result["runs"] = [direct, shared, failed, after]
        result["served"] = pool.served
        result["fresh_spawns"] = pool.fresh_spawns
    elif name == "close-in-flight":
        await driver.launch(pool.launch, ["true"])  # its successor is being spawned now
    await pool.aclose()
    result["closed_server"] = pool.server_pid
    result["after_close"] = [await driver.launch(pool.launch, ["echo", "closed"])]
    await pool.aclose()
    result["live_after_close"] = _live_processes()
    result["fds_before"], result["fds_after"] = fds_before, _fds()
    return result


async def _cancel_when_blocked(scope: Any) -> None:
    import trio.testing

    await trio.testing.wait_all_tasks_blocked(0.05)
    scope.cancel()


async def _drive(name: str, work: str, rootfs: str) -> dict[str, Any]:
    import trio

    async with trio.open_nursery() as nursery:
        driver = Driver(work, rootfs, nursery)
        await nursery.start(driver.reaper.run)
        result = await _scenario(name, driver)
        nursery.cancel_scope.cancel()
    return result


def _driver_main() -> None:
    import trio

    name, work, rootfs = sys.argv[1:4]
    sys.stdout.write(json.dumps(trio.run(_drive, name, work, rootfs)))


if __name__ == "__main__":
    _driver_main()
    sys.exit(0)

# --- tests -----------------------------------------------------------------------------------

import pytest  # noqa: E402

from trinit.exec._child import decode_request  # noqa: E402
from trinit.exec._zygote import encode_request  # noqa: E402

UNSHARE = ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "--uts", "--ipc", "--net"]


@pytest.fixture(scope="module")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("rootfs"))
    rootfs_helper.build_busybox_rootfs(path)
    os.mkdir(os.path.join(path, "zbin"))
    tool = os.path.join(path, "zbin", "ztool")
    with open(tool, "w") as file:
        file.write("#!/bin/sh\necho found in zbin\n")
    os.chmod(tool, 0o755)
    return path


def drive(name: str, tmp_path: Any, rootfs: str) -> dict[str, Any]:
    proc = subprocess.run(
        [*UNSHARE, sys.executable, __file__, name, str(tmp_path), rootfs],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    # Common to every scenario: the pool owns nothing after aclose, and launches go on.
    assert result["closed_server"] is None
    assert result["after_close"][0]["stdout"] == "closed\n"
    assert result["live_after_close"] == []
    assert result["fds_after"] == result["fds_before"]
    return result


def test_request_round_trip() -> None:
    env = {"PATH": "/zbin", "EMPTY": "", "EQ": "a=b", "BYTES": "\udcff"}
    argv = ["run", "--bundle-path", "/b c", ""]
    assert decode_request(encode_request(argv, env)) == (argv, env)
    assert decode_request(encode_request(["exec"], {})) == (["exec"], {})
    with pytest.raises(ValueError):
        encode_request(["run\0"], {})
    with pytest.raises(ValueError):
        encode_request(["run"], {"A=B": "c"})
    with pytest.raises(ValueError):
        decode_request(b"3\0run")


def test_the_agent_environment_goes_as_its_own_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """os.environ itself is encoded from os.environb (no decode and re-encode per
    variable): the same request as from an equal plain mapping, undecodable bytes too."""
    monkeypatch.setenv("TRINIT_TEST_PLAIN", "a=b")
    monkeypatch.setitem(os.environb, b"TRINIT_TEST_RAW", b"\xff\xfe")
    fast = encode_request(["exec"], os.environ)
    assert fast == encode_request(["exec"], dict(os.environ))
    assert b"\0TRINIT_TEST_RAW=\xff\xfe" in fast and b"\0TRINIT_TEST_PLAIN=a=b" in fast
    assert decode_request(fast) == (["exec"], dict(os.environ))


def test_launches_are_forked_by_one_server(busybox_root: str, tmp_path: Any) -> None:
    result = drive("reuse", tmp_path, busybox_root)
    first, second, third = result["runs"]
    assert first["stdout"] == "one\n" and first["status"] == 0
    assert result["fresh_spawns"] == 1  # no server yet: the first helper was spawned
    assert result["served"] == 2 and result["server_after"] == result["server"]
    helpers = {run["pids"][0] for run in result["runs"]}
    assert len(helpers) == 3 and result["server"] not in helpers
    assert result["same_cgroup"]  # it started in trinit's cgroup, like a fresh helper
    assert second["status"] == 0
    assert second["stdout"].split() in (["0", "1", "2"], ["0", "1", "2", "3"])
    policy = int(third["stdout"].rpartition(")")[2].split()[38])  # field 41 of stat(5)
    assert policy == os.sched_getscheduler(0)  # not the server's SCHED_IDLE


def test_one_server_serves_many_launches(busybox_root: str, tmp_path: Any) -> None:
    # Every helper is re-parented to the driver (its reaper received every helper status:
    # Driver.launch waits for them), none is the server, and the server survives them all.
    result = drive("many", tmp_path, busybox_root)
    assert [run["stdout"] for run in result["runs"]] == [f"{i}\n" for i in range(20)]
    assert all(run["status"] == 0 for run in result["runs"])
    assert result["served"] == 20 and result["fresh_spawns"] == 0
    assert result["server_after"] == result["server"]


def test_killed_server_falls_back_and_is_replaced(busybox_root: str, tmp_path: Any) -> None:
    result = drive("killed", tmp_path, busybox_root)
    assert result["zygote_status"] == 128 + signal.SIGKILL
    fallback, successor = result["runs"]
    assert fallback.get("error") is None and fallback["stdout"] == "fallback\n"
    assert result["fresh_spawns"] == 1
    assert result["successor"] not in (None, result["server"])
    assert successor["stdout"] == "successor\n" and result["served"] == 1


def test_environment_is_the_one_at_launch_time(busybox_root: str, tmp_path: Any) -> None:
    result = drive("env", tmp_path, busybox_root)
    found, not_found = result["runs"]
    assert result["served"] == 2
    assert found["stdout"] == "found in zbin\n"
    assert not_found["error"] == "vmexec error: failed to find target executable ztool"


def test_concurrent_launches_all_use_the_server(busybox_root: str, tmp_path: Any) -> None:
    result = drive("concurrent", tmp_path, busybox_root)
    outputs = sorted(run["stdout"] for run in result["runs"])
    assert outputs == [f"{c}\n" for c in "abcdefgh"]
    helpers = [run["pids"][0] for run in result["runs"]]
    assert len(set(helpers)) == 8 and result["server"] not in helpers
    assert result["served"] == 8 and result["fresh_spawns"] == 0


def test_cancelled_hand_off_kills_the_server(busybox_root: str, tmp_path: Any) -> None:
    result = drive("cancelled", tmp_path, busybox_root)
    assert result["cancelled"] is True
    assert result["zygote_status"] == 128 + signal.SIGKILL
    assert result["runs"][0]["stdout"] == "after\n"


def test_aclose_with_a_spawn_in_flight(busybox_root: str, tmp_path: Any) -> None:
    drive("close-in-flight", tmp_path, busybox_root)


def test_server_skips_a_malformed_request() -> None:
    """A request the server cannot decode is answered REFUSED, its fds closed, and the
    next request is served (in-process: the server's receive step on a socketpair)."""
    import socket

    from trinit.exec._child import ZYGOTE_REFUSED, _receive_request

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        r, w = os.pipe()
        try:
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _pack([r] * 6))]
            ours.sendmsg([b"9\0too short"], rights)
            good = encode_request(["exec"], {"A": "1"})
            ours.sendmsg([good], rights)
            request = _receive_request(theirs)
            assert request is not None
            argv, env, fds = request
            assert (argv, env) == (["exec"], {"A": "1"}) and len(fds) == 6
            assert ours.recv(8) == ZYGOTE_REFUSED
            for fd in fds:
                os.close(fd)
            ours.sendmsg([good], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _pack([r]))])
            ours.shutdown(socket.SHUT_WR)
            assert _receive_request(theirs) is None  # 1 fd: refused; then EOF
            assert ours.recv(8) == ZYGOTE_REFUSED
            assert sorted(_fds_of_pipe(r)) == sorted([r, w])  # every received copy closed
        finally:
            os.close(r)
            os.close(w)


def _pack(fds: list[int]) -> bytes:
    return b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)


def _fds_of_pipe(fd: int) -> list[int]:
    """Our fds that refer to the same pipe as ``fd`` (either end)."""
    target = os.readlink(f"/proc/self/fd/{fd}")
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == target:
                found.append(int(name))
        except OSError:
            pass
    return found


def test_an_init_is_forked_straight_into_its_pid_namespace(
    busybox_root: str, tmp_path: Any
) -> None:
    """A ``run`` whose spec makes its own PID namespace: the fork server forks the init
    itself (one pid, no helper), as pid 1 of the new namespace, and its own children are
    born in its own PID namespace again afterwards."""
    result = drive("direct", tmp_path, busybox_root)
    direct, shared, failed, after = result["runs"]
    assert direct["stdout"] == "1\n" and direct["status"] == 0
    assert direct["pids"][0] == direct["pids"][1]
    assert result["restored"]
    assert shared["status"] == 0 and shared["pids"][0] != shared["pids"][1]
    assert failed["pids"][0] == failed["pids"][1]
    assert failed["error"].startswith("vmexec error: mount /mnt: ")
    assert after["stdout"] == "after\n" and after["pids"][0] == after["pids"][1]
    assert result["served"] == 4 and result["fresh_spawns"] == 0
