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
    ) -> dict[str, Any]:
        """Run ``args`` as a container init to completion; its pids, output and status."""
        from trinit.errors import TrinitError
        from trinit.exec import alter_spec

        self._count += 1
        spec = alter_spec(rootfs_helper.test_spec(self.rootfs, args), f"z{self._count}")
        if process_env is not None:  # after alter_spec, which would add a PATH
            spec["process"]["env"] = process_env
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
        result["spare"] = pool.spare_pid
        cgroups = [f"/proc/{pool.spare_pid}/cgroup", "/proc/self/cgroup"]
        result["same_cgroup"] = len({_read(path) for path in cgroups}) == 1
        second = await driver.launch(pool.launch, ["ls", "/proc/self/fd"])
        await pool.prewarm(ready=True)  # (idle until the hand-off: then trinit's policy)
        result["spare2"] = pool.spare_pid
        third = await driver.launch(pool.launch, ["cat", "/proc/self/stat"])
        result["runs"] = [first, second, third]
    elif name == "killed":
        await pool.prewarm()
        spare = pool.spare_pid
        assert spare is not None
        watch = driver.reaper.register(spare)
        os.kill(-1, signal.SIGKILL)  # like the host's Kill(-1, SIGKILL): all but PID 1 (us)
        result["zygote_status"] = (await watch.wait()).exit_code
        result["spare"] = spare
        result["runs"] = [await driver.launch(pool.launch, ["echo", "fallback"])]
    elif name == "env":
        await pool.prewarm()
        spare = pool.spare_pid
        environment = dict(os.environ, PATH="/zbin:/bin")  # set after the zygote started
        runs = [await driver.launch(pool.launch, ["ztool"], env=environment, process_env=[])]
        await pool.prewarm()
        environment = {"PATH": "/bin"}
        runs.append(await driver.launch(pool.launch, ["ztool"], env=environment, process_env=[]))
        result["spare"] = spare
        result["runs"] = runs
    elif name == "concurrent":
        await pool.prewarm()
        result["spare"] = pool.spare_pid
        concurrent: list[dict[str, Any]] = []

        async def one(text: str) -> None:
            concurrent.append(await driver.launch(pool.launch, ["echo", text]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "a")
            nursery.start_soon(one, "b")
        result["runs"] = concurrent
    elif name == "cancelled":
        await pool.prewarm()
        spare = pool.spare_pid
        assert spare is not None
        watch = driver.reaper.register(spare)
        os.kill(spare, signal.SIGSTOP)  # it takes the request but never answers
        with trio.CancelScope() as scope:
            driver.nursery.start_soon(_cancel_when_blocked, scope)
            await driver.launch(pool.launch, ["echo", "never"])
        result["cancelled"] = scope.cancelled_caught
        result["zygote_status"] = (await watch.wait()).exit_code
        result["runs"] = [await driver.launch(pool.launch, ["echo", "after"])]
    elif name == "close-in-flight":
        await driver.launch(pool.launch, ["true"])  # its successor is being spawned now
    await pool.aclose()
    result["closed_spare"] = pool.spare_pid
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
    assert result["closed_spare"] is None
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


def test_second_launch_is_the_zygote(busybox_root: str, tmp_path: Any) -> None:
    result = drive("reuse", tmp_path, busybox_root)
    first, second, third = result["runs"]
    assert first["stdout"] == "one\n" and first["status"] == 0
    assert first["pids"][0] != result["spare"]  # no zygote yet: a fresh helper
    assert second["pids"][0] == result["spare"]  # the warm helper served it
    assert result["same_cgroup"]  # it started in trinit's cgroup, like a fresh helper
    assert second["status"] == 0
    assert second["stdout"].split() in (["0", "1", "2"], ["0", "1", "2", "3"])
    assert third["pids"][0] == result["spare2"]
    policy = int(third["stdout"].rpartition(")")[2].split()[38])  # field 41 of stat(5)
    assert policy == os.sched_getscheduler(0)  # not the zygote's SCHED_IDLE


def test_killed_zygote_falls_back(busybox_root: str, tmp_path: Any) -> None:
    result = drive("killed", tmp_path, busybox_root)
    assert result["zygote_status"] == 128 + signal.SIGKILL
    (run,) = result["runs"]
    assert run.get("error") is None and run["stdout"] == "fallback\n"
    assert run["pids"][0] != result["spare"]


def test_environment_is_the_one_at_launch_time(busybox_root: str, tmp_path: Any) -> None:
    result = drive("env", tmp_path, busybox_root)
    found, not_found = result["runs"]
    assert found["pids"][0] == result["spare"]
    assert found["stdout"] == "found in zbin\n"
    assert not_found["error"] == "vmexec error: failed to find target executable ztool"


def test_concurrent_launches_share_no_zygote(busybox_root: str, tmp_path: Any) -> None:
    result = drive("concurrent", tmp_path, busybox_root)
    outputs = sorted(run["stdout"] for run in result["runs"])
    assert outputs == ["a\n", "b\n"]
    helpers = [run["pids"][0] for run in result["runs"]]
    assert len(set(helpers)) == 2 and result["spare"] in helpers


def test_cancelled_hand_off_kills_the_zygote(busybox_root: str, tmp_path: Any) -> None:
    result = drive("cancelled", tmp_path, busybox_root)
    assert result["cancelled"] is True
    assert result["zygote_status"] == 128 + signal.SIGKILL
    assert result["runs"][0]["stdout"] == "after\n"


def test_aclose_with_a_spawn_in_flight(busybox_root: str, tmp_path: Any) -> None:
    drive("close-in-flight", tmp_path, busybox_root)
