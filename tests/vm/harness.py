"""Host side of the VM tests and benchmarks: build the test initfs, boot it under QEMU, read
the results.

One boot runs every scenario in sequence (TCG is slow; a boot costs ~10 s): the in-guest
driver (``guest_driver.py``) reports one ``VMTEST {json}`` line per scenario on the second
serial port, which QEMU writes to a file; the console (first serial port) is kept for the
boot log and the timeline. The VM powers itself off at the end (trinit's SIGTERM path), so
QEMU's exit is the end of the run. The disk image attached as virtio-blk shows whether that
path synced.

Requirements: ``qemu-system-x86_64`` and a Debian kernel with its modules
(``/boot/vmlinuz-<release>``, ``/lib/modules/<release>``), installed by
``scripts/vm-deps.sh``; :class:`MissingDeps` says so when they are absent.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
SHUTDOWN_MARKER = b"TRINIT-SYNCED-BY-PID1"
DISK_BYTES = 4 << 20


class MissingDeps(RuntimeError):
    pass


@dataclass
class Kernel:
    image: str
    release: str
    modules_dir: str


def find_kernel() -> Kernel:
    """The newest /boot/vmlinuz-* that has /lib/modules/<release>."""
    for image in sorted(glob.glob("/boot/vmlinuz-*"), reverse=True):
        release = os.path.basename(image)[len("vmlinuz-") :]
        modules = os.path.join("/lib/modules", release)
        if os.path.exists(os.path.join(modules, "modules.dep")) and os.access(image, os.R_OK):
            return Kernel(image, release, modules)
    raise MissingDeps(
        "no kernel: /boot/vmlinuz-<release> with /lib/modules/<release> not found; "
        "run scripts/vm-deps.sh (apt-get install qemu-system-x86 linux-image-amd64)"
    )


def find_qemu() -> str:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise MissingDeps("qemu-system-x86_64 not found; run scripts/vm-deps.sh "
                          "(apt-get install qemu-system-x86 linux-image-amd64)")  # fmt: skip
    return qemu


def build_probe(workdir: str) -> str:
    """``vsockprobe.c`` built static (the container rootfs is busybox, without a libc)."""
    output = os.path.join(workdir, "vsockprobe")
    subprocess.run(["gcc", "-static", "-O2", "-o", output, os.path.join(HERE, "vsockprobe.c")],
                   check=True)  # fmt: skip
    return output


def build_test_initfs(output: str, kernel: Kernel) -> Any:
    """The production initfs plus the driver, grpcio, busybox, socat, virtio_blk, and the
    test-only opt-in that lets the in-guest driver reach the agent: vsock_loopback and
    ``--allow-local-vsock`` (with ``--host-cid 1``: trinit dials the driver's listeners)."""
    from trinit.initfs import InitfsOptions, build_initfs

    options = InitfsOptions(
        output=output,
        modules_dir=kernel.modules_dir,
        extra_kernel_modules=["virtio_blk", "vsock_loopback"],
        python_modules=["trinit.host", "subprocess", "json", "traceback", "shutil", "fcntl"],
        files=[(os.path.join(HERE, "guest_driver.py"), "/usr/lib/trinit-vmtest/guest_driver.py")],
        binaries=[
            (build_probe(os.path.dirname(output)), "/usr/lib/trinit-vmtest/vsockprobe"),
            ("/bin/busybox", "/bin/busybox"),
            (shutil.which("socat") or "/usr/bin/socat", "/usr/bin/socat"),
        ],
        agent_args=["--host-cid", "1", "--allow-local-vsock"],
        preinit=os.path.join(HERE, "guest_preinit.py"),
    )
    return build_initfs(options)


#: x86 kernel option for TCG: the kernel's early check that the IO-APIC timer ticks (a few
#: ticks in ~60 ms of busy-waiting) fails when a loaded host starves QEMU's threads, and the
#: boot panics ("IO-APIC + timer doesn't work!"); seen 3 times in ~60 loaded boots. Only on
#: x86: an option the kernel does not know would be passed on to init.
X86_TCG_ARGS = "no_timer_check"


def qemu_command(
    qemu: str,
    kernel: Kernel,
    initfs: str,
    console: str,
    results: str,
    disk: str,
    *,
    cpus: int = 2,
    memory_mib: int = 2048,
) -> list[str]:
    """The TCG command line the tests use (documented in docs/vm.md)."""
    return [
        qemu, "-accel", "tcg,thread=multi", "-smp", str(cpus), "-m", str(memory_mib),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-chardev", f"file,id=console,path={console}", "-serial", "chardev:console",
        "-chardev", f"file,id=results,path={results}", "-serial", "chardev:results",
        "-drive", f"file={disk},format=raw,if=virtio",
        "-kernel", kernel.image, "-initrd", initfs,
        "-append", f"console=ttyS0 panic=-1 {X86_TCG_ARGS} quiet",
    ]  # fmt: skip


@dataclass
class VmRun:
    results: dict[str, dict[str, Any]]
    console: str
    exit_code: int | None
    wall_seconds: float
    disk_head: bytes
    initfs_bytes: int
    timeline: dict[str, float] = field(default_factory=dict)

    def result(self, name: str) -> dict[str, Any]:
        if name not in self.results:
            raise AssertionError(
                f"scenario {name!r} did not report (QEMU exit {self.exit_code}); "
                f"console tail:\n{self.console[-6000:]}"
            )
        return self.results[name]


_TIMELINE = re.compile(r"boot: stage=(.+?) uptime=([0-9.]+)")
_UPTIME_PREFIX = re.compile(r"^\[\s*[0-9.]+\]\s*")


def run_vm(workdir: str, *, timeout: float = 900.0, stdout_mib: int | None = None) -> VmRun:
    """Build the test initfs, boot it once and collect every scenario's result."""
    qemu = find_qemu()
    kernel = find_kernel()
    os.makedirs(workdir, exist_ok=True)
    initfs = os.path.join(workdir, "initfs-test.cpio.gz")
    report = build_test_initfs(initfs, kernel)
    console = os.path.join(workdir, "console.log")
    results = os.path.join(workdir, "results.log")
    disk = os.path.join(workdir, "disk.img")
    with open(disk, "wb") as file:
        file.truncate(DISK_BYTES)
    command = qemu_command(qemu, kernel, initfs, console, results, disk)
    if stdout_mib is not None:
        command[-1] += f" VMTEST_STDOUT_MIB={stdout_mib}"  # the kernel passes it to init's env
    exit_code, output, wall = _run_qemu(command, timeout)
    text = _read(console) + output
    parsed: dict[str, dict[str, Any]] = {}
    for line in _read(results).splitlines():
        if line.startswith("VMTEST "):
            entry = json.loads(line[len("VMTEST ") :])
            parsed[entry["scenario"]] = entry
    with open(disk, "rb") as file:
        head = file.read(4096)
    timeline = {m.group(1): float(m.group(2)) for m in _TIMELINE.finditer(text)}
    return VmRun(parsed, text, exit_code, wall, head, report.compressed_bytes, timeline)


# ------------------------------------------------------------- the vminit boot contract
CROSS_ROOTS = os.environ.get("TRINIT_CROSS_ROOTS", "/var/cache/trinit")
"""Where scripts/aarch64-deps.sh keeps ``cross-<arch>`` (``trinit image sysroot``)."""


def cross_root(arch: str) -> str:
    """The cross root for a foreign ``arch``, made by scripts/aarch64-deps.sh."""
    path = os.path.join(CROSS_ROOTS, f"cross-{arch}")
    if not os.path.exists(os.path.join(path, "cross-root.json")):
        raise MissingDeps(f"no cross root for {arch} in {path}: run scripts/aarch64-deps.sh")
    return path


def image_kernel(arch: str) -> tuple[Kernel, str | None]:
    """(kernel, cross root or None) for booting an ``arch`` image on this machine."""
    from trinit.initfs import modules_dir_for

    if arch == os.uname().machine:
        return find_kernel(), None
    from trinit._arch import get

    root = cross_root(arch)
    modules = modules_dir_for(get(arch), root, None)
    release = os.path.basename(modules)
    image = os.path.join(root, "root/boot", f"vmlinuz-{release}")
    if not os.path.exists(image):
        raise MissingDeps(f"{image} missing: run scripts/aarch64-deps.sh")
    return Kernel(image, release, modules), root


def build_test_image(output: str, arch: str, root: str | None, image_format: str = "ext4") -> Any:
    """The production vminit image plus the in-guest driver, grpcio and busybox (and, on this
    machine's own architecture, socat and the vsock probe), with the test opt-in to reach the
    agent through vsock_loopback."""
    from trinit.initfs import ImageOptions, build_image

    binaries = [("/bin/busybox", "/bin/busybox")]  # the cross root's for a foreign arch
    if root is None:
        binaries += [
            (build_probe(os.path.dirname(output)), "/usr/lib/trinit-vmtest/vsockprobe"),
            (shutil.which("socat") or "/usr/bin/socat", "/usr/bin/socat"),
        ]
    options = ImageOptions(
        arch=arch,
        cross_root=root,
        python_modules=["trinit.host", "subprocess", "json", "traceback", "shutil", "fcntl"],
        files=[(os.path.join(HERE, "guest_driver.py"), "/usr/lib/trinit-vmtest/guest_driver.py")],
        binaries=binaries,
        agent_args=["--host-cid", "1", "--allow-local-vsock"],
        preinit=os.path.join(HERE, "guest_preinit.py"),
    )
    return build_image(options, image_format, output)


def build_test_loader(output: str, arch: str, kernel: Kernel, root: str | None) -> Any:
    """The loader initrd with vsock_loopback added (the in-guest driver's transport)."""
    from trinit._arch import get
    from trinit.initfs import BOOT_MODULES, build_loader, default_busybox

    target = get(arch)
    modules = [*BOOT_MODULES, "vsock_loopback"]
    return build_loader(output, target, default_busybox(target, root), kernel.modules_dir, modules)


def vminit_command(
    arch: str,
    kernel: Kernel,
    loader: str,
    console: str,
    results: str,
    root_args: list[str],
    append: str,
    *,
    cpus: int = 2,
    memory_mib: int = 2048,
) -> list[str]:
    """QEMU booting the vminit image as Apple's host does: ``root_args`` attach the root
    (a read-only virtio disk, or virtiofs), the command line names ``init=/sbin/vminitd``."""
    from trinit._arch import get

    target = get(arch)
    machine = ["-M", "virt", "-cpu", "max,pauth-impdef=on"] if arch == "aarch64" else []
    if arch == "x86_64":
        append = f"{X86_TCG_ARGS} {append}"
    serial = ["-chardev", f"file,id=console,path={console}", "-serial", "chardev:console"]
    if arch != "aarch64":  # `virt` has one UART: results go to the console there
        serial += ["-chardev", f"file,id=results,path={results}", "-serial", "chardev:results"]
    return [
        target.qemu, *machine, "-accel", "tcg,thread=multi", "-smp", str(cpus),
        "-m", str(memory_mib), "-nodefaults", "-no-user-config", "-display", "none",
        "-no-reboot", *serial, *root_args,
        "-kernel", kernel.image, "-initrd", loader,
        "-append", f"console={target.console} panic=-1 {append}",
    ]  # fmt: skip


EXT4_ROOT = "init=/sbin/vminitd ro rootfstype=ext4 root=/dev/vda"
"""Apple's host's command line for an ext4 init image."""


def run_vminit_vm(
    workdir: str,
    *,
    arch: str,
    scenarios: list[str],
    timeout: float = 600.0,
    stdout_mib: int | None = None,
) -> VmRun:
    """Build the test vminit image (ext4) and the loader for ``arch``, boot once the way
    Apple's host does (read-only virtio disk, ``init=/sbin/vminitd ro``), run ``scenarios``."""
    from trinit._arch import get

    target = get(arch)
    qemu = shutil.which(target.qemu)
    if qemu is None:
        raise MissingDeps(f"{target.qemu} not found: run scripts/aarch64-deps.sh")
    kernel, root = image_kernel(arch)
    os.makedirs(workdir, exist_ok=True)
    image = os.path.join(workdir, f"vminit-{arch}.ext4")
    report = build_test_image(image, arch, root)
    loader = os.path.join(workdir, f"loader-{arch}.cpio.gz")
    build_test_loader(loader, arch, kernel, root)
    console = os.path.join(workdir, "console.log")
    results = os.path.join(workdir, "results.log")
    append = f"{EXT4_ROOT} quiet VMTEST_SCENARIOS={','.join(scenarios)}"
    if arch == "aarch64":
        append += f" VMTEST_RESULTS=/dev/{target.console}"
    if stdout_mib is not None:
        append += f" VMTEST_STDOUT_MIB={stdout_mib}"
    drive = ["-drive", f"file={image},if=virtio,format=raw,readonly=on"]
    command = vminit_command(arch, kernel, loader, console, results, drive, append)
    exit_code, output, wall = _run_qemu(command, timeout)
    return _collect(console, results, output, exit_code, wall, b"", report.bytes)


VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
"""QEMU 7.2's virtiofsd (Debian 12's qemu-system-common)."""


def run_virtiofs_vm(workdir: str, *, scenarios: list[str], timeout: float = 900.0) -> VmRun:
    """Boot the test vminit tree (``--format dir``) shared by virtiofsd with
    ``rootfstype=virtiofs root=rootfs``; virtiofsd is stopped and the tree removed after."""
    qemu = find_qemu()
    kernel = find_kernel()
    if not os.access(VIRTIOFSD, os.X_OK):
        raise MissingDeps(f"{VIRTIOFSD} missing (Debian's qemu-system-common)")
    os.makedirs(workdir, exist_ok=True)
    tree = os.path.join(workdir, "vminit-root")
    report = build_test_image(tree, "x86_64", None, "dir")
    loader = os.path.join(workdir, "loader.cpio.gz")
    build_test_loader(loader, "x86_64", kernel, None)
    socket_path = os.path.join(workdir, "virtiofs.sock")
    daemon = subprocess.Popen(
        [VIRTIOFSD, f"--socket-path={socket_path}", "-o", f"source={tree}", "-o", "cache=none"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # it listens before it waits for QEMU; the file appears at bind, just before listen
        while not _listening(socket_path):
            if daemon.poll() is not None:
                raise RuntimeError(f"virtiofsd exited {daemon.returncode}")
            time.sleep(0.05)
        console = os.path.join(workdir, "console.log")
        results = os.path.join(workdir, "results.log")
        memory = 2048
        root = [
            "-object", f"memory-backend-memfd,id=mem,size={memory}M,share=on",
            "-numa", "node,memdev=mem",
            "-chardev", f"socket,id=fs,path={socket_path}",
            "-device", "vhost-user-fs-pci,chardev=fs,tag=rootfs",
        ]  # fmt: skip
        append = ("init=/sbin/vminitd ro rootfstype=virtiofs root=rootfs quiet "
                  f"VMTEST_SCENARIOS={','.join(scenarios)}")  # fmt: skip
        command = vminit_command("x86_64", kernel, loader, console, results, root, append,
                                 memory_mib=memory)  # fmt: skip
        command[0] = qemu
        exit_code, output, wall = _run_qemu(command, timeout)
    finally:
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(tree, ignore_errors=True)
    return _collect(console, results, output, exit_code, wall, b"", report.bytes)


def _collect(
    console: str, results: str, output: str, exit_code: int | None, wall: float,
    head: bytes, image_bytes: int,
) -> VmRun:  # fmt: skip
    text = _read(console) + output
    parsed: dict[str, dict[str, Any]] = {}
    for line in (_read(results) + "\n" + text).splitlines():
        line = _UPTIME_PREFIX.sub("", line.strip())
        if line.startswith("VMTEST {"):
            try:
                entry = json.loads(line[len("VMTEST ") :])
            except ValueError:
                continue  # a line the console interleaved with other output
            parsed[entry["scenario"]] = entry
    timeline = {m.group(1): float(m.group(2)) for m in _TIMELINE.finditer(text)}
    return VmRun(parsed, text, exit_code, wall, head, image_bytes, timeline)


def _listening(path: str) -> bool:
    """Whether a unix socket bound at ``path`` listens, read from /proc/net/unix (a probe
    connect would be virtiofsd's one client: it exits when that connection closes)."""
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            # Num RefCount Protocol Flags Type St Inode Path; __SO_ACCEPTCON in Flags
            if len(fields) == 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
                return True
    return False


def _run_qemu(command: list[str], timeout: float) -> tuple[int | None, str, float]:
    """Run QEMU to its exit (killed at ``timeout``: exit code None); (exit, output, wall)."""
    started = time.monotonic()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=timeout)
        exit_code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        exit_code = None
    return exit_code, output.decode(errors="replace"), time.monotonic() - started


@dataclass
class FatalBoot:
    console: str
    exit_code: int | None
    wall_seconds: float


def run_fatal_boot(workdir: str, *, timeout: float = 600.0) -> FatalBoot:
    """Boot the test initfs with a broken early kernel module: a real failing boot step.

    The kernel unpacks concatenated initramfs archives in order, later files replacing
    earlier ones, so a small second archive replaces the module list with one naming a
    file that is no kernel module (finit_module: ENOEXEC) and disables the preinit hook.
    """
    from trinit.initfs._cpio import CpioWriter

    qemu = find_qemu()
    kernel = find_kernel()
    os.makedirs(workdir, exist_ok=True)
    base = os.path.join(workdir, "initfs-test.cpio.gz")
    if not os.path.exists(base):
        build_test_initfs(base, kernel)
    overlay = os.path.join(workdir, "overlay.cpio.gz")
    with CpioWriter(overlay) as cpio:
        cpio.file("lib/modules/broken.ko", b"this is not an ELF kernel module\n")
        cpio.file("etc/trinit/modules", b"early /lib/modules/broken.ko\n")
        cpio.file("etc/trinit/preinit.py", b"")
    initfs = os.path.join(workdir, "initfs-fatal.cpio.gz")
    with open(initfs, "wb") as out:
        for part in (base, overlay):
            with open(part, "rb") as file:
                shutil.copyfileobj(file, out)
    console = os.path.join(workdir, "fatal-console.log")
    disk = os.path.join(workdir, "fatal-disk.img")
    with open(disk, "wb") as file:
        file.truncate(DISK_BYTES)
    command = qemu_command(qemu, kernel, initfs, console, os.devnull, disk)
    exit_code, output, wall = _run_qemu(command, timeout)
    return FatalBoot(_read(console) + output, exit_code, wall)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except FileNotFoundError:
        return ""
