"""The in-guest test driver: drives trinit (PID 1) over real AF_VSOCK through vsock_loopback.

Runs inside the VM as an ordinary process (started by ``guest_preinit.py``), with trinit
started ``--host-cid 1`` so the stdio connections trinit dials come back to the listeners
this driver opens on CID 1. Each scenario reports one JSON line ``VMTEST {...}`` on the
second serial port (``/dev/ttyS1``), which the pytest side reads from a file after QEMU
exits; ``{"scenario": name, "ok": bool, "data": {...}, "error": text}``.

``Kill(-1, SIGKILL)`` kills this driver too (it kills every process but PID 1). The driver
therefore records its progress in ``/run/vmtest/state.json`` before that call; the preinit
thread (inside PID 1, which the kill spares) starts it again and it resumes with the checks
that PID 1 is still serving, then the shutdown scenario. Not a pytest module: it runs in the
guest's interpreter with the packaged site-packages.

The driver is an ordinary process in PID 1's namespace, like a container sharing it: its
own SIGTERM to PID 1 is refused (``foreign_sigterm`` checks that). To power off it asks the
preinit thread, which runs inside PID 1 (``guest_preinit.py``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

# site-packages under the interpreter's prefix: /usr in the initfs, /usr/lib/trinit in the
# vminit image (`trinit image build`)
sys.path.insert(0, os.path.join(sys.prefix, "lib", "python{}.{}".format(*sys.version_info[:2]),
                                "site-packages"))  # fmt: skip


import grpc

from trinit._proto import sandbox_pb2 as pb
from trinit.host import Host, HostPort, build_busybox_rootfs, busybox_spec

SITE = sys.path[0]
STATE = "/run/vmtest/state.json"
RESPAWN = "/run/vmtest/respawn"
POWEROFF = "/run/vmtest/poweroff"  # the preinit thread in PID 1 sends the SIGTERM
ROOTFS = "/run/vmtest/rootfs"
RESULTS = os.environ.get("VMTEST_RESULTS", "/dev/ttyS1")  # the console on aarch64 `virt`
SELECTED = [n for n in os.environ.get("VMTEST_SCENARIOS", "").split(",") if n]  # [] = all
DISK = "/dev/vda"
SETTLE_S = 0.5  # how long the shutdown marker must stay unwritten before SIGTERM
MIB = 1 << 20
NET_ADDRESS = "10.213.0.1"  # put on lo by the network scenario
NET_ROUTE = "10.214.0.0/24"  # a link route on lo, NET_ADDRESS its source
NET_ROUTED = "10.214.0.5"
API_PORT = 1024
STDOUT_BYTES = int(os.environ.get("VMTEST_STDOUT_MIB", "250")) * MIB
LINE = b"trinit stdio over vsock: 0123456789 abcdefghijklmnopqrstuvwxyz.\n"  # 64 bytes
PATTERN_FILE = "/pattern.bin"  # inside the rootfs: LINE repeated to PATTERN_MIB
PATTERN_MIB = 10
SHUTDOWN_MARKER = b"TRINIT-SYNCED-BY-PID1"
PROBE = "/usr/lib/trinit-vmtest/vsockprobe"
GUARD_PORT = 2024
IOCTL_VM_SOCKETS_GET_LOCAL_CID = 0x7B9


def uptime() -> float:
    with open("/proc/uptime") as file:
        return float(file.read().split()[0])


def report(scenario: str, ok: bool, data: dict[str, Any] | None = None, error: str = "") -> None:
    line = json.dumps({"scenario": scenario, "ok": ok, "data": data or {}, "error": error})
    fd = os.open(RESULTS, os.O_WRONLY | os.O_APPEND | os.O_NOCTTY)
    try:  # one write: the line stays whole on a console that trinit logs to as well
        os.write(fd, f"\nVMTEST {line}\n".encode())
    finally:
        os.close(fd)
    print(f"vmtest: {scenario}: {'ok' if ok else 'FAILED ' + error}", file=sys.stderr, flush=True)


OPT_IN = ("root_fs", "exec_stdio", "pty")
"""Run only when VMTEST_SCENARIOS names them (the vminit and aarch64 boots): the full x86_64
run has a tight time budget."""


def selected(name: str) -> bool:
    """VMTEST_SCENARIOS names the scenarios to run (empty: all but OPT_IN); boot and
    setup_rootfs always run."""
    if name in ("boot", "setup_rootfs"):
        return True
    return name in SELECTED if SELECTED else name not in OPT_IN


def scenario(name: str, body: Callable[[], dict[str, Any]]) -> bool:
    if not selected(name):
        return True
    try:
        data = body()
    except Exception as exc:
        report(name, False, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        return False
    report(name, True, data)
    return True


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def load_state() -> dict[str, Any]:
    try:
        with open(STATE) as file:
            return dict(json.load(file))
    except FileNotFoundError:
        return {}


def save_state(state: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(STATE), exist_ok=True)
    with open(STATE + ".tmp", "w") as file:
        json.dump(state, file)
    os.replace(STATE + ".tmp", STATE)


def agent_cpu_seconds() -> float:
    """User + system CPU seconds of trinit (PID 1 in the guest), all of its threads; exited
    children are not included (their time goes to cutime/cstime only once reaped)."""
    with open("/proc/1/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def pid1_start_time() -> str:
    with open("/proc/1/stat") as file:
        return file.read().rsplit(")", 1)[1].split()[19]


def leave_trinit_cgroup() -> None:
    """A respawned driver starts in trinit's cgroup (memory.high 80 MiB): move to the root."""
    try:
        with open("/sys/fs/cgroup/cgroup.procs", "w") as file:
            file.write(str(os.getpid()))
    except OSError:
        pass


class Driver:
    host: Host

    def connect(self) -> None:
        """Once trinit listens (and has mounted /run, where the relay's socket lives)."""
        # the API over AF_VSOCK to trinit on this guest (vsock_loopback, CID 1); stdio
        # listeners are real AF_VSOCK ports that trinit dials back (--host-cid 1)
        self.host = Host("vsock", guest_cid=1, port=API_PORT)

    # ------------------------------------------------------------------ helpers
    def spec(self, args: list[str], *, pid_ns: bool = True, **linux: Any) -> dict[str, Any]:
        namespaces = ["cgroup", "ipc", "mount", "uts"] + (["pid"] if pid_ns else [])
        spec = busybox_spec(self.rootfs_in_bundle, args)
        spec["mounts"] += [
            {"type": "sysfs", "source": "sysfs", "destination": "/sys", "options": ["ro"]},
            {"type": "cgroup2", "source": "cgroup", "destination": "/sys/fs/cgroup",
             "options": ["rw", "nosuid", "nodev", "noexec"]},
        ]  # fmt: skip
        spec["linux"]["namespaces"] = [{"type": kind, "path": ""} for kind in namespaces]
        spec["linux"].update(linux)
        return spec

    rootfs_in_bundle = ""

    def container(self, cid: str) -> None:
        self.rootfs_in_bundle = self.host.mount_rootfs(cid, ROOTFS)

    def start_init(self, cid: str, args: list[str], **kw: Any) -> Any:
        self.container(cid)
        proc = self.host.process(cid, self.spec(args, **kw), stdout=False, stderr=False)
        proc.create()
        proc.start()
        return proc

    # ---------------------------------------------------------------- scenarios
    def boot(self) -> dict[str, Any]:
        """Wait for trinit's listener with plain connects (cheap, no gRPC backoff), then
        make the first RPC."""
        deadline = time.monotonic() + 120
        while True:
            try:  # (AF_VSOCK itself is missing until trinit has loaded the modules)
                with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as probe:
                    probe.connect((1, API_PORT))
                break
            except OSError:
                check(time.monotonic() < deadline, "trinit did not listen within 120 s")
                time.sleep(0.02)
        listening = uptime()
        self.connect()
        self.host.wait_ready(timeout=60)
        # SetupEmulator as the very first RPC: binfmt_misc must already be mounted (an
        # extension entry, harmless to the rest of the run)
        # (its failure is reported in the data, so that the other scenarios still run)
        try:
            self.host.stub.SetupEmulator(
                pb.SetupEmulatorRequest(
                    name="trinit-vmtest", type="E", magic="trinitvmtest", binary_path="/bin/true"
                ),
                timeout=30,
            )
        except grpc.RpcError as exc:
            emulator: object = f"{exc.code()}: {exc.details()}"
        else:
            emulator = os.path.exists("/proc/sys/fs/binfmt_misc/trinit-vmtest")
        answered = uptime()
        self.host.stub.Getenv(pb.GetenvRequest(key="PATH"), timeout=30)
        leave_trinit_cgroup()
        with open("/proc/1/oom_score_adj") as file:
            pid1_oom_score_adj = int(file.read())
        with open("/proc/sys/kernel/ctrl-alt-del") as file:
            ctrl_alt_del = int(file.read())
        return {"listening_uptime": listening, "first_rpc_uptime": answered,
                "pid1_start": pid1_start_time(),
                "pid1_oom_score_adj": pid1_oom_score_adj,
                "ctrl_alt_del": ctrl_alt_del,
                "emulator_registered_first": emulator}  # fmt: skip

    def setup_rootfs(self) -> dict[str, Any]:
        started = time.monotonic()
        build_busybox_rootfs(ROOTFS)
        check(PATTERN_MIB * MIB % len(LINE) == 0, "the pattern file must hold whole lines")
        check(STDOUT_BYTES % (PATTERN_MIB * MIB) == 0, "size must be whole pattern files")
        with open(ROOTFS + PATTERN_FILE, "wb") as file:
            file.write(LINE * (PATTERN_MIB * MIB // len(LINE)))
        return {"seconds": time.monotonic() - started}

    def cgroup_limits(self) -> dict[str, Any]:
        resources = {"memory": {"limit": 512 * MIB},
                     "cpu": {"quota": 200000, "period": 100000}, "pids": {"limit": 64}}  # fmt: skip
        self.limits_init = self.start_init("limits", ["sleep", "100000"], resources=resources)
        result = self.host.run(
            "limits", self.spec(["cat", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/cpu.max"]),
            process_id="limits-cat", timeout=60,
        )  # fmt: skip
        lines = result.stdout.decode().splitlines()
        check(result.exit_code == 0, f"cat exited {result.exit_code}: {result.stderr!r}")
        check(lines == ["536870912", "200000 100000"], f"inside the container: {lines}")
        return {"memory.max": lines[0], "cpu.max": lines[1]}

    def cgroup_escape(self) -> dict[str, Any]:
        """The container's cgroup namespace is rooted at its cgroup (nsdelegate): it cannot
        write its own limits; the VM (here: the driver, in the root namespace) still can."""
        script = (
            "cd /sys/fs/cgroup; echo max > memory.max; echo memory=$?; "
            "echo max > cpu.max; echo cpu=$?; cat /proc/self/cgroup memory.max cpu.max"
        )
        result = self.host.run("limits", self.spec(["sh", "-c", script]),
                               process_id="limits-escape", timeout=60)  # fmt: skip
        lines = result.stdout.decode().splitlines()
        stderr = result.stderr.decode(errors="replace")
        outside = read_cgroup("limits", "memory.max"), read_cgroup("limits", "cpu.max")
        data = {"inside": lines, "stderr": stderr.strip(), "outside": list(outside)}
        check(lines[:3] == ["memory=1", "cpu=1", "0::/"], f"writes not refused: {data}")
        check(stderr.count("Operation not permitted") == 2, f"not EPERM: {data}")
        check(lines[3:] == ["536870912", "200000 100000"], f"limits changed inside: {data}")
        check(outside == ("536870912", "200000 100000"), f"limits changed: {data}")
        return data

    def oom(self) -> dict[str, Any]:
        # The container cannot lower its own limit any more (nsdelegate): the VM does it.
        with open(cgroup_file("limits", "memory.max"), "w") as file:
            file.write("33554432")
        script = "exec dd if=/dev/zero of=/dev/null bs=96M count=1"
        result = self.host.run("limits", self.spec(["sh", "-c", script]),
                               process_id="limits-oom", timeout=120)  # fmt: skip
        check(result.exit_code == 137, f"dd exited {result.exit_code}: {result.stderr!r}")
        reply = self.host.stub.ContainerStatistics(
            pb.ContainerStatisticsRequest(container_ids=["limits"]), timeout=30
        )
        stats = reply.containers[0]
        data = {
            "exit_code": result.exit_code,
            "oom_kill": stats.memory_events.oom_kill,
            "oom": stats.memory_events.oom,
            "max_events": stats.memory_events.max,
            "pids_current": stats.process.current,
            "pids_limit": stats.process.limit,
            "memory_usage": stats.memory.usage_bytes,
            "memory_limit": stats.memory.limit_bytes,
            "cpu_usage_usec": stats.cpu.usage_usec,
        }
        check(stats.memory_events.oom_kill > 0, f"oom_kill not counted: {data}")
        check(stats.process.current > 0 and stats.memory.usage_bytes > 0, f"zero stats: {data}")
        check(stats.cpu.usage_usec > 0, f"zero cpu: {data}")
        self.limits_init.kill(signal.SIGKILL)
        self.limits_init.wait(timeout=60)
        self.limits_init.delete()
        return data

    def userns(self) -> dict[str, Any]:
        """A container in its own user namespace (root = VM uid 100000) under trinit as the
        real PID 1 (chrooted over the initramfs); then an idmapped bind mount of a VM-owned
        directory on /run (tmpfs: idmappable from Linux 6.3 on, refused before)."""
        started = time.monotonic()
        mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        data_dir = "/run/vmtest/userns-data"
        os.makedirs(data_dir, mode=0o755)

        def userns_spec(cid: str, script: str) -> dict[str, Any]:
            self.container(cid)
            spec = self.spec(["sh", "-c", script], uidMappings=mapping, gidMappings=mapping)
            spec["linux"]["namespaces"].append({"type": "user", "path": ""})
            # sysfs needs a network namespace owned by the user namespace (containers share
            # the VM's): left out, and cgroup2 with it (its mount point would have to be made
            # in the VM-owned rootfs, which the mapped root may not write)
            spec["mounts"] = [m for m in spec["mounts"] if not m["destination"].startswith("/sys")]
            return spec

        spec = userns_spec("userns", "id -u; cat /proc/self/uid_map; grep ^Uid /proc/self/status")
        result = self.host.run("userns", spec, timeout=60)
        lines = result.stdout.decode().split("\n")
        data: dict[str, Any] = {"inside": lines, "stderr": result.stderr.decode()[-300:]}
        check(result.exit_code == 0, f"exit {result.exit_code}: {data}")
        check(lines[0] == "0" and lines[1].split() == ["0", "100000", "65536"], f"{data}")
        check(lines[2].split() == ["Uid:", "0", "0", "0", "0"], f"{data}")
        spec = userns_spec("userns-idmap", "touch /mnt/made")
        spec["mounts"].append(
            {"type": "none", "source": data_dir, "destination": "/mnt", "options": ["bind"],
             "uidMappings": mapping, "gidMappings": mapping},
        )  # fmt: skip
        try:
            result = self.host.run("userns-idmap", spec, timeout=60)
            data["idmapped"] = {"exit": result.exit_code, "stderr": result.stderr.decode()}
            data["made_owner_in_vm"] = os.stat(os.path.join(data_dir, "made")).st_uid
        except Exception as exc:  # grpc.RpcError: StartProcess failed
            details = exc.details() if hasattr(exc, "details") else str(exc)
            data["idmapped"] = {"error": details}
        data["kernel"] = os.uname().release
        data["seconds"] = time.monotonic() - started
        return data

    def pids_limit(self) -> dict[str, Any]:
        # A failed fork ends a non-interactive ash, so the forks happen in an inner shell;
        # the outer one then uses builtins only (`cat` could not fork any more).
        script = ("sh -c 'i=0; while [ $i -lt 40 ]; do sleep 1000 & i=$((i+1)); done'; "
                  "read m < /sys/fs/cgroup/pids.max; read c < /sys/fs/cgroup/pids.current; "
                  "echo $m $c")  # fmt: skip
        self.container("pids")
        result = self.host.run(
            "pids", self.spec(["sh", "-c", script], resources={"pids": {"limit": 10}}), timeout=120
        )
        lines = result.stdout.decode().split()
        check(
            lines[:1] == ["10"],
            f"pids.max inside: {lines}, exit {result.exit_code}, stderr {result.stderr[-300:]!r}",
        )
        check(int(lines[1]) <= 10, f"pids.current above the limit: {lines}")
        check(b"fork" in result.stderr, f"no fork failure reported: {result.stderr[-300:]!r}")
        return {"pids.max": lines[0], "pids.current": lines[1],
                "stderr_tail": result.stderr.decode(errors="replace")[-120:]}  # fmt: skip

    def devices(self) -> dict[str, Any]:
        """The VM's own disk is out of a container's reach: a node for it (made with mknod,
        or given in linux.devices) cannot be opened; a granted b 7:0 can; linux.devices
        nodes get their mode and owner. Open only, read-only for the disk: no I/O at all."""
        started = time.monotonic()
        with open("/sys/block/vda/dev") as file:
            major, minor = (int(part) for part in file.read().split(":"))
        devices = [
            {"path": "/dev/loopx", "type": "b", "major": 7, "minor": 0, "fileMode": 0o640,
             "uid": 1, "gid": 5},
            {"path": "/dev/vmdisk", "type": "b", "major": major, "minor": minor},
        ]  # fmt: skip
        grant = [{"allow": True, "type": "b", "major": 7, "minor": 0, "access": "rw"}]
        script = (
            'probe() { if out=$(sh -c ": < $1" 2>&1); then echo ok;'
            " else case $out in *'not permitted'*) echo EPERM;; *) echo other;; esac; fi; }; "
            "stat -c '%F %t:%T %a %u:%g' /dev/loopx; "
            f"mknod /dev/made b {major} {minor}; echo mknod=$?; "
            "echo made=$(probe /dev/made) vmdisk=$(probe /dev/vmdisk)"
            " loopx=$(probe /dev/loopx) null=$(probe /dev/null)"
        )
        self.container("devices")
        spec = self.spec(["sh", "-c", script], devices=devices, resources={"devices": grant})
        result = self.host.run("devices", spec, timeout=60)
        lines = result.stdout.decode().splitlines()
        data = {"disk": f"{major}:{minor}", "lines": lines,
                "seconds": round(time.monotonic() - started, 2),
                "stderr": result.stderr.decode(errors="replace")[-300:]}  # fmt: skip
        check(result.exit_code == 0 and len(lines) == 3, f"probe failed: {data}")
        check(lines[0] == "block special file 7:0 640 1:5", f"linux.devices node: {data}")
        check(lines[1] == "mknod=0", f"mknod (runc allows it): {data}")
        check(lines[2].split()[:2] == ["made=EPERM", "vmdisk=EPERM"], f"disk opened: {data}")
        check(lines[2].split()[2:] in (["loopx=ok", "null=ok"], ["loopx=other", "null=ok"]),
              f"granted node or /dev/null refused: {data}")  # fmt: skip
        return data

    def vsock_guard(self) -> dict[str, Any]:
        """A container process cannot reach a guest vsock listener with the default policy.

        PID 1 runs with the test opt-in (--allow-local-vsock), so the guard is a second agent
        started here with the production defaults on port 2024. A container (default
        capabilities) probes it through CID 1 and the guest's own CID: each connection must
        be closed without an answer, and the agent logs one warning for the peer. The same
        probe against PID 1 (which admits local peers) gets an answer: the probe would see
        one if the guard let it in.
        """
        guest_cid = local_cid()
        shutil.copy(PROBE, os.path.join(ROOTFS, "bin", "vsockprobe"))
        boot = (f"import sys; sys.path.insert(0, {SITE!r}); from trinit.__main__ import main; "
                f"main(['trinit', 'agent', '--port', '{GUARD_PORT}'])")  # fmt: skip
        env = {"PATH": "/usr/bin:/bin", "TRINIT_BOOT": "0"}
        guard = subprocess.Popen([sys.executable, "-I", "-S", "-c", boot], env=env,
                                 stderr=subprocess.PIPE, text=True)  # fmt: skip
        log: list[str] = []
        try:
            assert guard.stderr is not None
            for line in guard.stderr:  # blocks until the guard listens (or dies)
                log.append(line)
                if "serving on" in line:
                    break
            check(any("serving on" in line for line in log), f"guard did not start: {log}")
            self.container("probe")
            probes = [(1, GUARD_PORT), (guest_cid, GUARD_PORT), (1, API_PORT)]
            script = "; ".join(f"vsockprobe {cid} {port}" for cid, port in probes)
            result = self.host.run("probe", self.spec(["sh", "-c", script]), timeout=60)
        finally:
            guard.send_signal(signal.SIGTERM)
            _, rest = guard.communicate(timeout=60)
            log += rest.splitlines(keepends=True)
        lines = result.stdout.decode().splitlines()
        refusals = [line.strip() for line in log if "refused a connection" in line]
        data = {"guest_cid": guest_cid, "probes": lines, "guard_warnings": refusals,
                "guard_exit": guard.returncode}  # fmt: skip
        check(result.exit_code == 0 and len(lines) == 3, f"probe failed: {data} {result.stderr!r}")
        for line in lines[:2]:
            check("answered" not in line, f"a container reached the guard agent: {data}")
            check("closed=" in line or "connect=" in line, f"unexpected probe result: {data}")
        check("answered=" in lines[2], f"the control probe got no answer from PID 1: {data}")
        # one line per peer CID however often it tries (both probes come from CID 1 when
        # vsock_loopback carries the guest-CID connection too)
        check(sum("from cid 1:" in line for line in refusals) == 1, f"warnings: {data}")
        check(len(refusals) <= 2, f"warnings: {data}")
        return data

    def producer_only(self) -> dict[str, Any]:
        """How fast the producer alone runs in this guest (the ceiling for both relays)."""
        started = time.monotonic()
        subprocess.run(["/bin/busybox", "sh", "-c",
                        f"cd {ROOTFS} && {producer_command()} > /dev/null"],
                       check=True)  # fmt: skip
        seconds = time.monotonic() - started
        rate = STDOUT_BYTES / MIB / seconds
        return {"bytes": STDOUT_BYTES, "seconds": seconds, "mib_per_s": rate}

    def stdout_bulk(self) -> dict[str, Any]:
        checker = PatternCheck(LINE)
        size = STDOUT_BYTES
        self.container("bulk")
        spec = self.spec(["sh", "-c", producer_command()])
        proc = self.host.process("bulk", spec, stdout_sink=checker.feed)
        proc.create()
        started = time.monotonic()
        cpu_before = agent_cpu_seconds()
        proc.start()
        code = proc.wait(timeout=600)
        proc.join_output(timeout=120)
        seconds = time.monotonic() - started
        agent_cpu = agent_cpu_seconds() - cpu_before
        proc.close()
        proc.delete()
        check(code == 0, f"exit {code}: {proc.stderr_data[-300:]!r}")
        check(checker.error is None, f"corrupt stdout: {checker.error}")
        check(checker.count == size, f"got {checker.count} bytes, want {size}")
        return {
            "bytes": size,
            "seconds": seconds,
            "mib_per_s": size / MIB / seconds,
            # the pump's cost per byte: what carries over from TCG to KVM
            "agent_cpu_s": agent_cpu,
            "agent_cpu_s_per_gib": agent_cpu / (size / 2**30),
        }

    def socat_stdio(self) -> dict[str, Any]:
        """The same producer and the same receiver, relayed by socat instead of trinit."""
        checker = PatternCheck(LINE)
        size = STDOUT_BYTES
        port = self.host.ports.next()
        listener = HostPort.listen("vsock", port)
        started = time.monotonic()
        # two processes, not one shell pipeline, so that socat's own CPU can be read
        producer = subprocess.Popen(
            ["/bin/busybox", "sh", "-c", f"cd {ROOTFS} && {producer_command()}"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        relay = subprocess.Popen(
            [shutil.which("socat") or "socat", "-u", "-", f"VSOCK-CONNECT:1:{port}"],
            stdin=producer.stdout,
        )
        assert producer.stdout is not None
        producer.stdout.close()
        conn = listener.accept(60)
        listener.close()
        buf = bytearray(MIB)
        view = memoryview(buf)
        while n := conn.recv_into(view):
            checker.feed(bytes(view[:n]))
        seconds = time.monotonic() - started
        conn.close()
        _, status, usage = os.wait4(relay.pid, 0)
        relay.returncode = os.waitstatus_to_exitcode(status)
        relay_cpu = usage.ru_utime + usage.ru_stime
        code = producer.wait(60) or relay.returncode
        check(code == 0 and checker.error is None and checker.count == size,
              f"socat relay: exit {code}, {checker.count} bytes, {checker.error}")  # fmt: skip
        return {
            "bytes": size,
            "seconds": seconds,
            "mib_per_s": size / MIB / seconds,
            "relay_cpu_s": relay_cpu,
            "relay_cpu_s_per_gib": relay_cpu / (size / 2**30),
        }

    def root_fs(self) -> dict[str, Any]:
        """How PID 1 was started and what / is: the vminit contract boots it read-only."""
        with open("/proc/self/mounts") as file:
            mounts = [line.split() for line in file]
        root = [m for m in mounts if m[1] == "/"][-1]
        with open("/proc/1/cmdline", "rb") as file:
            cmdline = file.read().split(b"\0")
        run = [m[2] for m in mounts if m[1] == "/run"]
        return {
            "fstype": root[2],
            "options": root[3].split(","),
            "run": run,
            "pid1": [a.decode() for a in cmdline if a],
            "machine": os.uname().machine,
        }

    def exec_stdio(self) -> dict[str, Any]:
        """An exec in a running container: 1 MiB of random stdin comes back byte for byte on
        stdout, stderr separately, and the exit code."""
        init = self.start_init("execs", ["sleep", "100000"])
        data = os.urandom(MIB)
        result = self.host.run("execs", self.spec(["sh", "-c", "cat; echo done >&2; exit 7"]),
                               process_id="exec-cat", input=data, timeout=120)  # fmt: skip
        init.kill(signal.SIGKILL)
        init_exit = init.wait(timeout=60)
        init.close()
        init.delete()
        check(result.exit_code == 7, f"exec exit {result.exit_code}: {result.stderr!r}")
        check(result.stdout == data, f"stdout differs: {len(result.stdout)} bytes")
        check(result.stderr == b"done\n", f"stderr: {result.stderr!r}")
        return {"bytes": len(data), "exit_code": result.exit_code, "init_exit": init_exit}

    def pty(self) -> dict[str, Any]:
        """A terminal process: its size is the requested one and its stdio is a pty."""
        self.container("pty")
        spec = self.spec(["sh", "-c", "stty size; tty"])
        spec["process"]["terminal"] = True
        spec["process"]["consoleSize"] = {"height": 40, "width": 120}
        proc = self.host.process("pty", spec, stderr=False)
        proc.create()
        proc.start()
        code = proc.wait(timeout=60)
        proc.join_output()
        proc.close()
        proc.delete()
        lines = bytes(proc.stdout_data).decode(errors="replace").split("\r\n")
        check(code == 0 and lines[0] == "40 120", f"exit {code}, output {lines}")
        check(lines[1].startswith("/dev/pts/"), f"not a pty: {lines}")
        return {"size": lines[0], "tty": lines[1]}

    def orphans(self) -> dict[str, Any]:
        """Double-forked children of a container without a PID namespace land on PID 1.

        The container's init starts ``count`` subshells through an intermediate ``sh`` that
        exits at once, then waits; everything lives until the driver removes the hold file.
        While they live, their parent must be PID 1; afterwards none may be left as a zombie.
        """
        count = 8
        wait_hold = "while [ -e /orphans.hold ]; do sleep 0.2; done"
        # /orphans.started comes after the loop: each intermediate ran in the foreground, so
        # by then it has exited and its orphan has been reparented (a pid in orphans.pids
        # alone may still have its intermediate as parent)
        script = (f"i=0; while [ $i -lt {count} ]; do sh -c '({wait_hold}) & "
                  f"echo $! >> /orphans.pids'; i=$((i+1)); done; echo > /orphans.started; "
                  f"{wait_hold}")  # fmt: skip
        pid_file = os.path.join(ROOTFS, "orphans.pids")
        started = os.path.join(ROOTFS, "orphans.started")
        hold = os.path.join(ROOTFS, "orphans.hold")
        for stale in (pid_file, started):
            if os.path.exists(stale):
                os.unlink(stale)
        with open(hold, "w"):
            pass
        self.container("orphans")
        proc = self.host.process("orphans", self.spec(["sh", "-c", script], pid_ns=False))
        proc.create()
        proc.start()
        deadline = time.monotonic() + 60
        while not os.path.exists(started):
            check(time.monotonic() < deadline, "orphans not started after 60 s")
            time.sleep(0.1)
        with open(pid_file) as file:
            pids = [int(p) for p in file.read().split()]
        check(len(pids) == count, f"orphans started: {pids}")
        parents = {pid: ppid_of(pid) for pid in pids}
        os.unlink(hold)
        code = proc.wait(timeout=60)
        proc.join_output()
        while any(os.path.exists(f"/proc/{pid}") for pid in pids):
            check(time.monotonic() < deadline, "orphans still present after 60 s")
            time.sleep(0.1)
        zombies = all_zombies()
        proc.close()
        proc.delete()
        check(code == 0, f"init exit {code}: {proc.stderr_data!r}")
        check(all(ppid == 1 for ppid in parents.values()), f"parents of the orphans: {parents}")
        check(not zombies, f"zombies: {zombies}")
        return {"orphans": count, "parents": sorted(set(parents.values())), "zombies": 0}

    def kill_all(self, state: dict[str, Any]) -> None:
        """Kill(-1, SIGKILL): this process dies; the respawned driver runs after_kill."""
        victim = self.start_init("victim", ["sleep", "100000"])
        state.update(phase="after-kill", victim_pid=victim.pid, kill_uptime=uptime())
        save_state(state)
        with open(RESPAWN, "w"):
            pass
        self.host.stub.Kill(pb.KillRequest(pid=-1, signal=9), timeout=30)
        time.sleep(30)  # never reached if the kill worked
        raise AssertionError("survived Kill(-1, 9)")

    def after_kill(self, state: dict[str, Any]) -> dict[str, Any]:
        self.connect()
        self.host.wait_ready(timeout=60)
        answered = uptime()
        reply = self.host.stub.WaitProcess(
            pb.WaitProcessRequest(id="victim", containerID="victim"), timeout=60
        )
        self.host.stub.DeleteProcess(pb.DeleteProcessRequest(id="victim", containerID="victim"))
        check(reply.exitCode == 137, f"victim exit code {reply.exitCode}")
        check(pid1_start_time() == state["pid1_start"], "PID 1 was restarted")
        check(not os.path.exists(f"/proc/{state['victim_pid']}"), "victim still present")
        return {"rpc_after_kill_s": answered - state["kill_uptime"], "victim_exit": reply.exitCode}

    def network(self) -> dict[str, Any]:
        """The network RPCs in the VM's own namespace, with the image's pyroute2 (loaded on
        the first of them, trinit._pyroute2): lo up, an address on it, a link route with
        that address as its source; each checked with a socket. An unknown interface is
        INTERNAL naming it."""
        stub = self.host.stub
        started = time.monotonic()
        stub.IpLinkSet(pb.IpLinkSetRequest(interface="lo", up=True), timeout=60)
        first_rpc_s = time.monotonic() - started
        stub.IpAddrAdd(pb.IpAddrAddRequest(interface="lo", ipv4Address=NET_ADDRESS + "/32"),
                       timeout=60)  # fmt: skip
        stub.IpRouteAddLink(
            pb.IpRouteAddLinkRequest(interface="lo", dstIpv4Addr=NET_ROUTE,
                                     srcIpv4Addr=NET_ADDRESS), timeout=60,
        )  # fmt: skip
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((NET_ADDRESS, 0))  # EADDRNOTAVAIL unless the address is there
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((NET_ROUTED, 9))  # a route lookup, nothing sent
            source = sock.getsockname()[0]
        check(source == NET_ADDRESS, f"the route's source is {source}")
        try:
            stub.IpLinkSet(pb.IpLinkSetRequest(interface="nope0", up=True), timeout=60)
            unknown = ["OK", ""]
        except grpc.RpcError as exc:
            unknown = [exc.code().name, exc.details() or ""]
        return {"first_rpc_s": round(first_rpc_s, 3), "source": source, "unknown": unknown}

    def foreign_sigterm(self) -> dict[str, Any]:
        """SIGTERM PID 1 from this process (inside its PID namespace): refused, still serving."""
        os.kill(1, signal.SIGTERM)
        os.kill(1, signal.SIGINT)
        time.sleep(1)
        self.host.stub.Setenv(pb.SetenvRequest(key="AFTER_SIGTERM", value="1"), timeout=30)
        reply = self.host.stub.Getenv(pb.GetenvRequest(key="AFTER_SIGTERM"), timeout=30)
        check(reply.value == "1", f"Getenv after the SIGTERM: {reply.value!r}")
        return {"serving": True}

    def shutdown(self) -> dict[str, Any]:
        """Dirty a block-device page that only an explicit sync(2) writes back; the caller
        then has PID 1 SIGTERMed (by the preinit thread, see :func:`request_power_off`).

        Periodic writeback is pushed out to an hour, and the device stays open (the last
        close of a block device would flush it): the marker reaches the disk only through
        trinit's sync. Not ``dirty_writeback_centisecs=0``: with it the kernel wrote each
        dirtied page within 0.5 s by itself, so the test passed without any sync from
        trinit. The host checks the disk image after QEMU exits."""
        self.start_init("last", ["sleep", "100000"])
        for name, value in (("dirty_writeback_centisecs", "360000"),
                            ("dirty_expire_centisecs", "360000")):  # fmt: skip
            with open(f"/proc/sys/vm/{name}", "w") as file:
                file.write(value)
        deadline = time.monotonic() + 60
        while not os.path.exists(DISK):
            check(time.monotonic() < deadline, f"{DISK} did not appear")
            time.sleep(0.1)
        self.disk_fd = os.open(DISK, os.O_RDWR)
        # A write the kernel started on its own (writeback queued before the sysctls took
        # hold, or still in flight from the previous attempt) may put a marker on the disk
        # without trinit's help: then let the disk settle and dirty the page again with a
        # new marker, until one stays unwritten for SETTLE_S. The host looks for the last.
        seen: list[str] = []
        for attempt in range(10):
            before = disk_writes()
            os.pwrite(self.disk_fd, shutdown_marker(attempt).ljust(4096, b"\0"), 0)
            time.sleep(SETTLE_S)
            writes = disk_writes() - before
            if writes == 0:
                break
            seen.append(f"attempt {attempt}: {writes} writes, {writeback_state()}")
        check(writes == 0, "the disk was written before SIGTERM: " + "; ".join(seen))
        return {"disk_writes_before_sigterm": writes, "attempt": attempt, "uptime": uptime()}


def request_power_off() -> None:
    """Ask the preinit thread (inside PID 1) to SIGTERM PID 1; ours would be refused."""
    with open(POWEROFF + ".tmp", "w") as file:
        file.write("1")
    os.replace(POWEROFF + ".tmp", POWEROFF)


def local_cid() -> int:
    """The guest's own CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock)."""
    with open("/dev/vsock", "rb") as dev:
        raw = fcntl.ioctl(dev.fileno(), IOCTL_VM_SOCKETS_GET_LOCAL_CID, b"\0\0\0\0")
    return int.from_bytes(raw, sys.byteorder)


def cgroup_file(container: str, name: str) -> str:
    return f"/sys/fs/cgroup/container/{container}/{name}"


def read_cgroup(container: str, name: str) -> str:
    with open(cgroup_file(container, name)) as file:
        return file.read().strip()


def disk_writes() -> int:
    with open("/sys/block/vda/stat") as file:
        return int(file.read().split()[4])


def writeback_state() -> str:
    """The page cache's dirty and writeback counts and vda's in-flight I/O: what a failed
    shutdown attempt reports, to tell the kernel's own writeback from someone's write."""
    with open("/proc/vmstat") as file:
        counts = dict(line.split() for line in file)
    with open("/sys/block/vda/inflight") as file:
        inflight = file.read().split()
    names = ("nr_dirty", "nr_writeback", "nr_dirty_threshold", "nr_dirty_background_threshold")
    return " ".join(f"{name}={counts.get(name)}" for name in names) + (
        f" vda inflight r/w={'/'.join(inflight)}")  # fmt: skip


def shutdown_marker(attempt: int) -> bytes:
    return SHUTDOWN_MARKER + b"#%d" % attempt


def producer_command() -> str:
    """``cat`` of the pattern file as often as STDOUT_BYTES needs (relative: runs in the
    container's / or, for socat and producer_only, in the rootfs directory)."""
    files = " ".join(["pattern.bin"] * (STDOUT_BYTES // (PATTERN_MIB * MIB)))
    return f"cat {files}"


class PatternCheck:
    """Checks a byte stream against endless repetitions of one line, chunk by chunk."""

    def __init__(self, line: bytes) -> None:
        self.line = line
        self.pattern = line * ((2 * MIB) // len(line) + 2)
        self.count = 0
        self.error: str | None = None

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view and self.error is None:
            part = view[:MIB]
            offset = self.count % len(self.line)
            if self.pattern[offset : offset + len(part)] != part:
                self.error = f"mismatch in the chunk at byte {self.count}"
            self.count += len(part)
            view = view[len(part) :]


def ppid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return int(file.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None


def all_zombies() -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    text = file.read()
            except OSError:
                continue
            if text.rsplit(")", 1)[1].split()[0] == "Z":
                found.append(text[:60])
    return found


def main() -> None:
    threading.current_thread().name = "vmtest-driver"
    driver = Driver()
    state = load_state()
    if state.get("phase") == "after-kill":
        os.unlink(RESPAWN)
        leave_trinit_cgroup()
        scenario("kill_all", lambda: driver.after_kill(state))
    else:
        boot: dict[str, Any] = {}

        def first_boot() -> dict[str, Any]:
            boot.update(driver.boot())
            return boot

        if scenario("boot", first_boot):
            state.update(pid1_start=boot["pid1_start"])
            scenario("setup_rootfs", driver.setup_rootfs)
            for name, body in (
                ("root_fs", driver.root_fs), ("exec_stdio", driver.exec_stdio),
                ("pty", driver.pty),
                ("cgroup_limits", driver.cgroup_limits),
                ("cgroup_escape", driver.cgroup_escape), ("oom", driver.oom),
                ("vsock_guard", driver.vsock_guard), ("devices", driver.devices),
                ("pids_limit", driver.pids_limit), ("stdout_bulk", driver.stdout_bulk),
                ("socat_stdio", driver.socat_stdio),
                ("producer_only", driver.producer_only), ("orphans", driver.orphans),
                ("userns", driver.userns), ("network", driver.network),
            ):  # fmt: skip
                scenario(name, body)
            try:
                if selected("kill_all"):
                    driver.kill_all(state)
            except Exception as exc:
                report("kill_all", False, error=f"{type(exc).__name__}: {exc}")
    # Always end the run: the host waits for the VM to power off.
    if not hasattr(driver, "host"):
        driver.connect()
    scenario("foreign_sigterm", driver.foreign_sigterm)
    scenario("shutdown_requested", driver.shutdown)
    report("done", True)
    request_power_off()
    time.sleep(600)  # the VM powers off around us


if __name__ == "__main__":
    main()
