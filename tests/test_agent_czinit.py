"""End to end: ``/.cz-init`` and the pod pause container in a rootfs without any interpreter.

Apple's host bind-mounts the guest's ``/sbin/vminitd`` at ``/.cz-init`` [bind, ro] and runs
``["/.cz-init", "--", ARGV...]``; a pod's pause container gets the VM's ``/sbin`` bound in
and runs ``["/sbin/vminitd", "pause"]``. Here ``ENTRY`` stands for ``/sbin/vminitd``: a
launcher script for this machine's Python (the shape of trinit's real launcher), which the
busybox rootfs cannot run (it has no interpreter at all). The agent is told about it with
``--entry-point`` and must run init and pause mode in the exec helper instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentlib import Container, Output

from trinit.host import LocalAgent

LAUNCHER = f"""#!{sys.executable} -I
from trinit.__main__ import main
main()
"""


@pytest.fixture
def entry_dir() -> Iterator[Path]:
    """A directory standing for the VM's ``/sbin`` with ``vminitd`` (the entry point) in it."""
    directory = Path(tempfile.mkdtemp(prefix="trinit-sbin-", dir="/tmp"))
    os.chmod(directory, 0o755)
    (directory / "vminitd").write_text(LAUNCHER)
    os.chmod(directory / "vminitd", 0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def czagent(entry_dir: Path) -> Iterator[LocalAgent]:
    running = LocalAgent.start(extra_args=("--entry-point", str(entry_dir / "vminitd")))
    try:
        yield running
    finally:
        code = running.stop()
        if code != 0:
            print(running.log()[-20000:])
        running.remove()


def _cz_init_spec(ctr: Container, entry: Path, argv: list[str], **overrides: Any) -> dict[str, Any]:
    """The spec as the host builds it with ``useInit``."""
    spec = ctr.spec(["/.cz-init", "--", *argv], **overrides)
    spec["mounts"].append(
        {
            "type": "bind",
            "source": str(entry),
            "destination": "/.cz-init",
            "options": ["bind", "ro"],
        }
    )
    return spec


def test_the_rootfs_has_no_interpreter(czagent: LocalAgent, entry_dir: Path) -> None:
    """The premise: exec'ing the entry point file by another path fails in this rootfs."""
    ctr = Container(czagent.host)
    copy = ["sh", "-c", "cat /.cz-init > /tmp/x && chmod +x /tmp/x && exec /tmp/x -- true"]
    result = czagent.host.run(ctr.id, _cz_init_spec(ctr, entry_dir / "vminitd", copy), timeout=60)
    assert result.exit_code != 0
    assert sys.executable.encode() in result.stderr or b"not found" in result.stderr


@pytest.mark.parametrize(("argv", "code"), [(["sh", "-c", "exit 42"], 42), (["false"], 1)])
def test_cz_init_exit_codes(
    czagent: LocalAgent, entry_dir: Path, argv: list[str], code: int
) -> None:
    ctr = Container(czagent.host)
    spec = _cz_init_spec(ctr, entry_dir / "vminitd", argv)
    result = czagent.host.run(ctr.id, spec, timeout=60)
    assert (result.exit_code, result.stderr) == (code, b"")


def test_cz_init_output_and_environment(czagent: LocalAgent, entry_dir: Path) -> None:
    ctr = Container(czagent.host)
    argv = ["sh", "-c", 'echo "pid=$$ ppid=$PPID x=$X"; cat /proc/1/comm']
    spec = _cz_init_spec(ctr, entry_dir / "vminitd", argv)
    spec["process"]["env"].append("X=y z")
    result = czagent.host.run(ctr.id, spec, timeout=60)
    assert result.exit_code == 0, result.stderr
    # the init is PID 1 of the container, named after the program the host ran
    assert result.stdout.decode() == "pid=2 ppid=1 x=y z\n.cz-init\n"


def _started(ctr: Container, spec: dict[str, Any]) -> tuple[Any, Output]:
    """Create and start ``spec``; its output, whose event is set once it printed ``ready``."""
    output = Output(b"ready\n")
    proc = ctr.host.process(ctr.id, spec, stdout_sink=output.sink)
    proc.create()
    proc.start()
    return proc, output


def test_cz_init_forwards_sigterm(czagent: LocalAgent, entry_dir: Path) -> None:
    """A container init ignores SIGTERM it has no handler for; /.cz-init forwards it to the
    child (busybox sh, killed by it): 128 + 15."""
    ctr = Container(czagent.host)
    spec = _cz_init_spec(ctr, entry_dir / "vminitd", ["sh", "-c", "echo ready; exec sleep 1000"])
    proc, output = _started(ctr, spec)
    try:
        assert output.seen.wait(60)
        proc.kill(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        proc.close()
        proc.delete()


def test_cz_init_forwards_to_the_group_with_p(czagent: LocalAgent, entry_dir: Path) -> None:
    """``-p``: the signal goes to the child's process group, so a background job dies too and
    the shell that waits for it sees that (``wait`` returns 128 + 15 for it)."""
    ctr = Container(czagent.host)
    # "ready" comes from the job once its TERM trap is reset (an earlier SIGTERM would find
    # it still ignoring TERM, inherited from the shell, and it would never end)
    script = "trap '' TERM; (trap - TERM; echo ready; exec sleep 1000) & wait $!; echo $?"
    spec = _cz_init_spec(ctr, entry_dir / "vminitd", ["sh", "-c", script])
    spec["process"]["args"].insert(1, "-p")
    proc, output = _started(ctr, spec)
    try:
        assert output.seen.wait(60)
        proc.kill(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        proc.join_output()
        assert output.data.decode() == "ready\n143\n"
    finally:
        proc.close()
        proc.delete()


# The orphan waits until it has been re-parented to PID 1 (the init), then exits; the shell
# waits until the orphan's /proc entry is gone, which only happens once PID 1 reaped it.
REAP_SCRIPT = """
(sh -c 'until [ "$(cut -d" " -f4 /proc/$$/stat)" = 1 ]; do :; done' & echo $! > /tmp/orphan)
read orphan < /tmp/orphan
while [ -e /proc/$orphan ]; do :; done
echo reaped
"""


def test_cz_init_reaps_orphans(czagent: LocalAgent, entry_dir: Path) -> None:
    ctr = Container(czagent.host)
    spec = _cz_init_spec(ctr, entry_dir / "vminitd", ["sh", "-c", REAP_SCRIPT])
    result = czagent.host.run(ctr.id, spec, timeout=60)
    assert (result.exit_code, result.stdout, result.stderr) == (0, b"reaped\n", b"")


def _pause_spec(ctr: Container, sbin: Path) -> dict[str, Any]:
    """The pod pause container as the host builds it: the VM's /sbin bound in."""
    spec = ctr.spec(["/sbin/vminitd", "pause"], hostname="")
    spec["mounts"].append(
        {"type": "bind", "source": str(sbin), "destination": "/sbin", "options": ["bind", "ro"]}
    )
    return spec


def test_pause_container_reaps_and_exits_0_on_sigterm(czagent: LocalAgent, entry_dir: Path) -> None:
    ctr = Container(czagent.host)
    pause = czagent.host.process(ctr.id, _pause_spec(ctr, entry_dir), stdout=False)
    pause.create()
    pause.start()
    try:
        # an exec in the pause container's namespaces leaves an orphan: pause reaps it
        result = ctr.exec(f"{ctr.id}-reap", ["sh", "-c", REAP_SCRIPT])
        assert (result.exit_code, result.stdout) == (0, b"reaped\n")
        pause.kill(signal.SIGTERM)
        assert pause.wait(timeout=60) == 0
        pause.join_output()
        assert b"received SIGTERM, exiting" in pause.stderr_data
    finally:
        pause.close()
        pause.delete()


def test_other_commands_of_the_entry_point_fail_to_start(
    czagent: LocalAgent, entry_dir: Path
) -> None:
    ctr = Container(czagent.host)
    spec = _pause_spec(ctr, entry_dir)
    spec["process"]["args"] = ["/sbin/vminitd", "agent"]
    proc = czagent.host.process(ctr.id, spec)
    proc.create()
    try:
        with pytest.raises(Exception, match="only init and pause run in a container"):
            proc.start()
    finally:
        proc.close()
        proc.delete()
