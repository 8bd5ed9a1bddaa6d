"""Assemble a bootable initramfs from the running installation.

What goes in (paths inside the image):

* ``/usr/bin/python3.X``: this interpreter, plus every shared library it and the packaged
  extension modules load, each at the path this machine's loader resolves it to (so RUNPATH
  and the loader's default directories find them in the guest too). Libraries are stripped
  of symbols when ``strip`` is available.
* ``/usr/lib/python3.X/``: the standard-library modules trinit needs (see ``_pysel``) as
  sourceless ``.pyc`` (unchecked hash-based, PEP 552, so no source and no mtime checks) and
  the needed ``lib-dynload`` extension modules. ``os.pyc`` there is the interpreter's
  prefix landmark.
* ``/usr/lib/python3.X/site-packages/``: trinit and the third-party packages it imports, as
  ``.pyc`` plus their extension modules.
* ``/sbin/init`` (the launcher, see ``_launcher``), ``/init -> sbin/init`` and
  ``/sbin/vminitd -> init`` (the path the host binds into containers as ``/.cz-init``).
* ``/lib/modules/<release>/...`` and ``/etc/trinit/modules`` (load order, early/late) when a
  modules directory is given.
* ``/dev/console`` (so the kernel can open the console for PID 1), ``/dev/null`` and
  ``/dev/urandom`` (the interpreter's hash seed at early boot), and the empty directories
  ``proc sys run tmp mnt var dev``.
* Extras for tests and debugging: files, binaries (with their libraries), more Python
  modules, agent arguments and the preinit hook.

The archive is written to a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import importlib.util
import marshal
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from . import _elf, _kmod, _launcher, _pysel
from ._cpio import CpioWriter

_PYC_UNCHECKED_HASH = 0b01


@dataclass
class InitfsOptions:
    output: str
    modules_dir: str | None = None
    no_modules: bool = False
    """Build without kernel modules, on purpose: only for a kernel with vsock built in. Without
    it, a build that has no ``modules_dir`` is refused (its VM would boot without AF_VSOCK
    and never answer the host: a dead VM nobody can ask why)."""
    kernel_modules: Sequence[str] = (*_kmod.VSOCK_MODULES, *_kmod.LATE_MODULES)
    extra_kernel_modules: Sequence[str] = ()
    python_modules: Sequence[str] = ()
    files: Sequence[tuple[str, str]] = ()
    binaries: Sequence[tuple[str, str]] = ()
    agent_args: Sequence[str] = ()
    preinit: str | None = None
    strip: bool = True
    optimize: int = 0


@dataclass
class BuildReport:
    output: str
    compressed_bytes: int
    uncompressed_bytes: int
    entries: int
    parts: dict[str, int] = field(default_factory=dict)  # category -> uncompressed bytes
    kernel_modules: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [
            f"{self.output}: {self.compressed_bytes / 2**20:.1f} MiB compressed, "
            f"{self.uncompressed_bytes / 2**20:.1f} MiB unpacked, {self.entries} entries"
        ]
        for part, size in sorted(self.parts.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {part:<22} {size / 2**20:7.2f} MiB")
        if self.kernel_modules:
            lines.append("  kernel modules: " + " ".join(self.kernel_modules))
        return "\n".join(lines)


class _Image:
    """The archive being written plus its bookkeeping (libraries seen, bytes per part)."""

    def __init__(self, cpio: CpioWriter, strip: bool, optimize: int) -> None:
        self.cpio = cpio
        self.strip = strip and shutil.which("strip") is not None
        self.optimize = optimize
        self.libraries: set[str] = set()
        self.parts: dict[str, int] = {}

    def add(self, part: str, name: str, data: bytes, mode: int = 0o644) -> None:
        self.cpio.file(name, data, mode)
        self.parts[part] = self.parts.get(part, 0) + len(data)

    def add_elf(self, part: str, source: str, name: str, mode: int = 0o755) -> None:
        self.add(part, name, _read_elf(source, self.strip), mode)
        for library in _elf.needed_libraries(source):
            if library not in self.libraries:
                self.libraries.add(library)
                self.add("shared libraries", library, _read_elf(library, self.strip), 0o755)

    def add_python(self, part: str, source: str, name: str) -> None:
        """A .py as sourceless .pyc at ``name`` (which ends in .pyc), or an extension module."""
        if source.endswith(".so"):
            self.add_elf(part, source, name)
            return
        with open(source, "rb") as file:
            text = file.read()
        display = name[: -len("c")]
        code = compile(text, display, "exec", dont_inherit=True, optimize=self.optimize)
        header = importlib.util.MAGIC_NUMBER + _PYC_UNCHECKED_HASH.to_bytes(4, "little")
        self.add(part, name, header + importlib.util.source_hash(text) + marshal.dumps(code))

    def add_tree(self, part: str, source: str, destination: str) -> None:
        """A package directory (or single module file) under ``destination``."""
        if os.path.isfile(source):
            self._add_module_file(part, source, os.path.join(destination, os.path.basename(source)))
            return
        for directory, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "tests", "test"))
            for filename in sorted(files):
                path = os.path.join(directory, filename)
                rel = os.path.relpath(path, os.path.dirname(source))
                self._add_module_file(part, path, os.path.join(destination, rel))

    def _add_module_file(self, part: str, path: str, name: str) -> None:
        if path.endswith(".py"):
            self.add_python(part, path, name + "c")
        elif path.endswith(".so"):
            self.add_elf(part, path, name)


def _read_elf(path: str, strip: bool) -> bytes:
    if not strip:
        with open(path, "rb") as file:
            return file.read()
    with tempfile.TemporaryDirectory() as scratch:
        copy = os.path.join(scratch, "elf")
        shutil.copyfile(path, copy)
        subprocess.run(["strip", "--strip-unneeded", copy], check=False, capture_output=True)
        with open(copy, "rb") as file:
            return file.read()


def early_module_names(index: _kmod.ModuleIndex, wanted: Sequence[str]) -> set[str]:
    """The modules loaded before the API listens: vsock and its virtio transport (with their
    dependencies), binfmt_misc when ``wanted`` names it, plus a test-only module such as
    vsock_loopback when ``wanted`` names it."""
    early = (*_kmod.TEST_EARLY_MODULES, *_kmod.EARLY_OPTIONAL_MODULES)
    extra = [m for m in wanted if m.replace("-", "_") in early]
    return {m.name for m in index.resolve([*_kmod.VSOCK_MODULES, *extra])}


Progress = Callable[[str], None]
"""Told the name of each phase as it begins (the CLI shows them on a terminal)."""

PHASES = (
    "checking the output directory",
    "selecting Python modules",
    "resolving kernel modules",
    "writing the interpreter",
    "writing the standard library",
    "writing site-packages",
    "writing trinit",
    "writing kernel modules and extras",
)


def check_output(output: str) -> None:
    """Refuse an output whose directory is missing or not writable, before any work (a build
    takes tens of seconds). ``os.access`` also sees a read-only filesystem (EROFS), even as
    root."""
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"output directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"output directory {directory} is not writable")
    if os.path.isdir(output):
        raise IsADirectoryError(f"output {output} is a directory: give a file name")


def check_modules(options: InitfsOptions) -> None:
    """Kernel modules are required unless ``no_modules`` says, explicitly, that this kernel
    has vsock built in (see :attr:`InitfsOptions.no_modules`)."""
    if options.modules_dir is None and not options.no_modules:
        raise ValueError(
            "no kernel modules: give --kernel-release R (or --modules-dir DIR) so the image "
            "can load vsock, or --no-modules if the guest kernel has vsock built in"
        )
    if options.modules_dir is not None and options.no_modules:
        raise ValueError("--no-modules contradicts a modules directory: give one or the other")


def build_initfs(options: InitfsOptions, progress: Progress | None = None) -> BuildReport:
    """Write the initramfs described by ``options`` to ``options.output``; return a report.

    Raises ValueError without modules (unless ``options.no_modules``) or for a module file
    that cannot be decompressed, FileNotFoundError or PermissionError for an output directory
    that is missing or read-only (checked before any work) and for a missing kernel module
    (vsock included), file or binary, and subprocess.CalledProcessError if a Python module
    cannot be imported at build time. A partially written archive is removed.
    ``progress`` is called with each of :data:`PHASES` as it begins.
    """
    phase = progress or (lambda _name: None)
    phase(PHASES[0])
    check_modules(options)
    check_output(options.output)
    phase(PHASES[1])
    layout = _pysel.PythonLayout.current()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    interpreter = f"/usr/bin/{version}"
    stdlib = f"/usr/lib/{version}"
    site = f"{stdlib}/site-packages"
    roots = [*_pysel.trinit_modules(layout), *options.python_modules]
    selection = _pysel.select(layout, roots)
    modules: list[_kmod.KernelModule] = []
    early: set[str] = set()
    phase(PHASES[2])
    if options.modules_dir is not None:
        index = _kmod.ModuleIndex(options.modules_dir)
        wanted = [*options.kernel_modules, *options.extra_kernel_modules]
        early = early_module_names(index, wanted)
        modules = index.resolve(wanted)
    partial = options.output + ".partial"
    try:
        with CpioWriter(partial) as cpio:
            image = _Image(cpio, options.strip, options.optimize)
            for directory in ("proc", "sys", "run", "tmp", "mnt", "var", "dev", "etc", "bin"):
                cpio.directory(directory)
            # The console for PID 1's stdio; urandom because the interpreter reads it for its
            # hash seed when getrandom(2) would block this early (before devtmpfs is mounted).
            cpio.char_device("dev/console", 5, 1)
            cpio.char_device("dev/null", 1, 3, 0o666)
            cpio.char_device("dev/urandom", 1, 9, 0o666)
            phase(PHASES[3])
            image.add_elf("interpreter", layout.executable, interpreter)
            phase(PHASES[4])
            for path in sorted(selection.stdlib_files):
                rel = os.path.relpath(path, layout.stdlib)
                suffix = "c" if rel.endswith(".py") else ""
                image.add_python("stdlib", path, f"{stdlib}/{rel}{suffix}")
            phase(PHASES[5])
            for package in sorted(selection.packages):
                image.add_tree("site-packages", package, site)
            phase(PHASES[6])
            image.add_tree("trinit", os.path.join(layout.trinit_root, "trinit"), site)
            launcher = _launcher.render(interpreter, site, list(options.agent_args))
            image.add("launcher", "sbin/init", launcher.encode(), 0o755)
            cpio.symlink("init", "sbin/init")
            phase(PHASES[7])
            # the path Apple's host binds into containers (/.cz-init, pause): the agent's
            # default --entry-point, recognised by inode (trinit/exec/_selfexec.py)
            cpio.symlink("sbin/vminitd", "init")
            lines = []
            for module in modules:
                image.add("kernel modules", module.archive_path, module.read())
                stage = "early" if module.name in early else "late"
                lines.append(f"{stage} {module.archive_path}\n")
            if lines:
                image.add("kernel modules", "etc/trinit/modules", "".join(lines).encode())
            if options.preinit is not None:
                with open(options.preinit, "rb") as file:
                    image.add("extras", "etc/trinit/preinit.py", file.read())
            for source, destination in options.files:
                with open(source, "rb") as file:
                    image.add("extras", destination, file.read(), os.stat(source).st_mode & 0o777)
            for source, destination in options.binaries:
                image.add_elf("extras", source, destination)
            entries = cpio.count
            payload = cpio.payload_bytes
        os.replace(partial, options.output)
    except BaseException:
        _remove(partial)
        raise
    return BuildReport(
        output=options.output,
        compressed_bytes=os.path.getsize(options.output),
        uncompressed_bytes=payload,
        entries=entries,
        parts=image.parts,
        kernel_modules=[m.name for m in modules],
    )


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def parse_pairs(values: Iterable[str], *, default_same: bool) -> list[tuple[str, str]]:
    """``SRC:DEST`` (or ``SRC`` alone, meaning the same path, when ``default_same``)."""
    pairs = []
    for value in values:
        source, sep, destination = value.partition(":")
        if not sep:
            if not default_same:
                raise ValueError(f"{value!r}: expected SRC:DEST")
            destination = source
        pairs.append((source, destination))
    return pairs
