"""Unit tests of the initfs builder pieces and the PID-1 helpers (no VM, no root needed)."""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from trinit import _pid1
from trinit.initfs import build_initfs
from trinit.initfs._build import InitfsOptions, early_module_names
from trinit.initfs._cpio import CpioWriter
from trinit.initfs._elf import needed_libraries
from trinit.initfs._kmod import ModuleIndex
from trinit.initfs._launcher import render


def _entries(archive: Path) -> dict[str, tuple[int, bytes]]:
    """Parse a gzip'd newc archive back: name -> (mode, data)."""
    raw = gzip.decompress(archive.read_bytes())
    found: dict[str, tuple[int, bytes]] = {}
    offset = 0
    while True:
        assert raw[offset : offset + 6] == b"070701"
        fields = [int(raw[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name_start = offset + 110
        name = raw[name_start : name_start + name_size - 1].decode()
        data_start = name_start + name_size + (-(110 + name_size) % 4)
        data = raw[data_start : data_start + size]
        offset = data_start + size + (-size % 4)
        if name == "TRAILER!!!":
            return found
        found[name] = (mode, data)


def test_cpio_round_trip(tmp_path: Path) -> None:
    archive = tmp_path / "a.cpio.gz"
    with CpioWriter(str(archive)) as cpio:
        cpio.file("/usr/lib/x/y.pyc", b"abc", 0o644)
        cpio.symlink("init", "sbin/init")
        cpio.char_device("dev/console", 5, 1)
    entries = _entries(archive)
    assert list(entries) == ["usr", "usr/lib", "usr/lib/x", "usr/lib/x/y.pyc", "init", "dev",
                             "dev/console"]  # fmt: skip
    assert entries["usr/lib/x/y.pyc"] == (stat.S_IFREG | 0o644, b"abc")
    assert entries["init"] == (stat.S_IFLNK | 0o777, b"sbin/init")
    assert stat.S_ISCHR(entries["dev/console"][0])


def test_cpio_failure_leaves_no_trailer(tmp_path: Path) -> None:
    archive = tmp_path / "b.cpio.gz"
    with pytest.raises(RuntimeError), CpioWriter(str(archive)) as cpio:
        cpio.file("x", b"1")
        raise RuntimeError("stop")
    assert b"TRAILER!!!" not in gzip.decompress(archive.read_bytes())


def test_module_index_orders_dependencies(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text(
        "kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko:\n"
        "kernel/d-e.ko.xz:\n"
    )
    (tmp_path / "modules.builtin").write_text("kernel/builtin_one.ko\n")
    index = ModuleIndex(str(tmp_path))
    modules = index.resolve(["a", "d_e", "builtin-one"])
    assert [m.name for m in modules] == ["c", "b", "a", "d_e"]
    assert modules[-1].archive_path.endswith("/kernel/d-e.ko")
    with pytest.raises(FileNotFoundError):
        index.resolve(["nope"])


def test_production_image_has_no_vsock_loopback(tmp_path: Path) -> None:
    """vsock_loopback lets guest processes reach guest listeners through CID 1: a default
    build leaves it out and its agent refuses local peers; tests opt in by name."""
    defaults = InitfsOptions(output="unused")
    assert "vsock_loopback" not in defaults.kernel_modules
    assert "--allow-local-vsock" not in render("/p", "/s", list(defaults.agent_args))
    (tmp_path / "modules.dep").write_text(
        "kernel/vsock.ko:\nkernel/common.ko: kernel/vsock.ko\n"
        "kernel/vmw_vsock_virtio_transport.ko: kernel/common.ko kernel/vsock.ko\n"
        "kernel/vmw_vsock_virtio_transport_common.ko: kernel/vsock.ko\n"
        "kernel/vsock_loopback.ko: kernel/vmw_vsock_virtio_transport_common.ko\n"
        "kernel/virtio_pci.ko:\nkernel/binfmt_misc.ko:\n"
    )
    index = ModuleIndex(str(tmp_path))
    production = early_module_names(index, list(defaults.kernel_modules))
    assert "vsock_loopback" not in production and "vmw_vsock_virtio_transport" in production
    # mounted before the API listens (SetupEmulator may be the host's first call)
    assert "binfmt_misc" in production and "virtio_pci" not in production
    with_test_module = early_module_names(index, [*defaults.kernel_modules, "vsock_loopback"])
    assert with_test_module == production | {"vsock_loopback"}


def test_needed_libraries_of_static_and_dynamic() -> None:
    assert needed_libraries("/bin/busybox") == []  # static
    libs = needed_libraries(os.path.realpath("/bin/ls"))
    assert any("libc.so" in lib for lib in libs)


def test_launcher_execs_isolated_interpreter() -> None:
    text = render("/usr/bin/python3.11", "/usr/lib/python3.11/site-packages", ["--host-cid", "1"])
    assert text.startswith("#!/usr/bin/python3.11 -IS\n")
    compile(text, "init", "exec")
    assert "['--host-cid', '1']" in text


def test_load_modules_skips_loaded_and_stops_on_errors() -> None:
    calls: list[str] = []

    def loader(path: str) -> None:
        calls.append(path)
        if path == "loaded":
            raise FileExistsError(path)
        if path == "bad":
            raise OSError(8, "Exec format error")

    assert _pid1.load_modules(["a", "loaded", "b"], loader) == 2
    with pytest.raises(OSError):
        _pid1.load_modules(["bad", "never"], loader)
    assert calls == ["a", "loaded", "b", "bad"]


def test_timeline_marks_in_order() -> None:
    timeline = _pid1.Timeline()
    timeline.mark("a", 1.0)
    timeline.mark("b")
    assert [s for s, _ in timeline.stages] == ["a", "b"]
    assert timeline.stages[1][1] >= 0


def test_built_initfs_boots_its_interpreter(tmp_path: Path) -> None:
    """Build the production initfs (no kernel modules) and run its interpreter in a chroot
    of the unpacked tree: imports of the agent and the exec helper must succeed from .pyc."""
    from trinit.initfs import InitfsOptions, build_initfs

    out = tmp_path / "initfs.cpio.gz"
    report = build_initfs(InitfsOptions(output=str(out), no_modules=True))
    assert report.compressed_bytes < 20 * 2**20
    tree = tmp_path / "tree"
    tree.mkdir()
    for name, (mode, data) in _entries(out).items():
        path = tree / name
        if stat.S_ISDIR(mode):
            path.mkdir(exist_ok=True)
        elif stat.S_ISLNK(mode):
            path.symlink_to(data.decode())
        elif stat.S_ISREG(mode):
            path.write_bytes(data)
            path.chmod(mode & 0o777)
    assert not (tree / "usr/lib/python3.11/tkinter").exists()
    script = ("import sys; sys.path.insert(0, '/usr/lib/python3.11/site-packages'); "
              "import trinit._agent, trinit._pid1, trinit.exec._child, trinit.system._net; "
              "from pyroute2 import IPRoute; print('ok')")  # fmt: skip
    result = subprocess.run(["unshare", "--mount", "--", "chroot", str(tree),
                             "/usr/bin/python3.11", "-I", "-S", "-c", script],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.stdout.strip() == "ok", result.stderr


# --- builds that cannot produce a dead VM ---------------------------------------------------

TRINIT = [sys.executable, "-m", "trinit", "initfs", "build"]
ROOT = Path(__file__).resolve().parents[2]


def _initfs_cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRINIT, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, **kw
    )


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not proc.stdout
    return lines[0]


def test_build_without_modules_needs_no_modules(tmp_path: Path) -> None:
    """No --kernel-release/--modules-dir: the image would boot without vsock (a VM that never
    answers). That takes an explicit --no-modules; otherwise one line says what to give."""
    line = _one_error_line(_initfs_cli("-o", str(tmp_path / "i.cpio.gz")))
    assert "--kernel-release" in line and "--no-modules" in line, line
    assert not (tmp_path / "i.cpio.gz").exists()
    with pytest.raises(ValueError, match="--no-modules"):
        build_initfs(InitfsOptions(output=str(tmp_path / "i.cpio.gz")))


def test_modules_tree_without_vsock_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text("kernel/virtio_pci.ko:\n")
    line = _one_error_line(
        _initfs_cli("-o", str(tmp_path / "i.cpio.gz"), "--modules-dir", str(tmp_path))
    )
    assert "'vsock'" in line and str(tmp_path) in line, line


def test_kernel_release_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    line = _one_error_line(
        _initfs_cli("-o", str(tmp_path / "i.cpio.gz"), "--kernel-release", "0.0.0-nope")
    )
    assert "/lib/modules/0.0.0-nope/modules.dep not found" in line, line


def test_output_directory_is_checked_before_building(tmp_path: Path) -> None:
    line = _one_error_line(_initfs_cli("-o", str(tmp_path / "missing" / "i.cpio.gz"),
                                       "--no-modules"))  # fmt: skip
    assert f"output directory {tmp_path / 'missing'} does not exist" in line, line
    # as nobody, in a directory of root's with mode 0755 (root itself may write anywhere;
    # pytest's tmp_path sits in a 0700 directory nobody cannot even look into)
    readonly = Path(tempfile.mkdtemp(prefix="trinit-ro-", dir="/tmp"))
    try:
        readonly.chmod(0o755)
        drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        proc = subprocess.run(
            [*drop, *TRINIT, "-o", str(readonly / "i.cpio.gz"), "--no-modules"],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )  # fmt: skip
    finally:
        readonly.rmdir()
    line = _one_error_line(proc)
    assert f"output directory {readonly} is not writable" in line, line


def _fake_module(tmp_path: Path, relative: str, compress: Any) -> None:
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(compress(b"\x7fELF" + relative.encode()))


def test_compressed_modules_are_decompressed(tmp_path: Path) -> None:
    import lzma

    def zstd(data: bytes) -> bytes:
        return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True,
                              check=True).stdout  # fmt: skip

    kinds = {"kernel/a.ko.xz": lzma.compress, "kernel/b.ko.gz": gzip.compress,
             "kernel/c.ko.zst": zstd, "kernel/d.ko": lambda data: data}  # fmt: skip
    for relative, compress in kinds.items():
        _fake_module(tmp_path, relative, compress)
    (tmp_path / "modules.dep").write_text("".join(f"{r}:\n" for r in kinds))
    modules = ModuleIndex(str(tmp_path)).resolve(["a", "b", "c", "d"])
    for module, relative in zip(modules, kinds, strict=True):
        assert module.archive_path.endswith(relative.split(".ko")[0] + ".ko")
        assert module.read() == b"\x7fELF" + relative.encode()


def test_zstd_module_without_zstd_binary_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = subprocess.run(["zstd", "-q", "-c"], input=b"\x7fELF", capture_output=True,
                          check=True).stdout  # fmt: skip
    (tmp_path / "kernel").mkdir()
    (tmp_path / "kernel" / "c.ko.zst").write_bytes(data)
    (tmp_path / "modules.dep").write_text("kernel/c.ko.zst:\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no zstd on this PATH
    (module,) = ModuleIndex(str(tmp_path)).resolve(["c"])
    with pytest.raises(ValueError, match="no zstd binary"):
        module.read()


def test_progress_per_phase_only_on_a_terminal(tmp_path: Path) -> None:
    """A full build with stderr on a pseudo-terminal shows every phase; captured (not a tty),
    stderr carries no progress."""
    import pty

    from trinit.initfs._build import PHASES

    out = tmp_path / "i.cpio.gz"
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run([*TRINIT, "-o", str(out), "--no-modules"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=secondary, timeout=300)  # fmt: skip
        os.close(secondary)
        seen = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(primary)
    assert proc.returncode == 0, seen.decode()
    text = seen.decode()
    for number, name in enumerate(PHASES, 1):
        assert f"[{number}/{len(PHASES)}] {name}" in text, text
    assert out.exists()
    # captured: a build that fails in its third phase shows the error line and nothing else
    (tmp_path / "modules.dep").write_text("kernel/virtio_pci.ko:\n")
    quiet = _initfs_cli("-o", str(out), "--modules-dir", str(tmp_path))
    assert "'vsock'" in _one_error_line(quiet)
