"""The vminit image: trinit laid out the way Apple's host boots vminitd, for any architecture.

Apple's host boots its init image as the root filesystem (an ext4 block device, or
virtiofs) with ``init=/sbin/vminitd ro rootfstype=ext4 root=/dev/vda``. This module builds
that tree once, in a staging directory, and the packers turn it into an ext4 filesystem
(``_ext4``), an OCI image layout (``_oci``) or a cpio initramfs (:func:`pack_cpio`)::

    /sbin/vminitd                         the launcher (see ``_launcher``): the interpreter
                                          runs it and it starts ``trinit agent`` in the same
                                          process, so trinit is PID 1. No shell involved.
    /usr/lib/trinit/bin/python3.11        the interpreter, under a private prefix
    /usr/lib/trinit/lib/python3.11/       the standard library trinit needs (.pyc) and its
                                          lib-dynload extension modules; ``os.pyc`` is the
                                          prefix landmark, so no PYTHONHOME is needed
    /usr/lib/trinit/lib/python3.11/site-packages/   trinit and its packages (.pyc)
    /lib/<multiarch>/..., /usr/lib/<multiarch>/...  shared libraries, at the paths the
                                          loader searches (the loader itself at the
                                          absolute PT_INTERP path the interpreter names:
                                          that path is fixed in the binary, so a private
                                          prefix cannot hold it)
    /bin /sbin /dev /sys /proc /run /tmp /mnt /var /etc   as in vminitd's image (empty)

Where the pieces come from (:class:`Source`): for this machine's architecture, this
installation (the running interpreter, its standard library and site-packages), as
``trinit initfs build`` does. For another architecture, a *cross root* made by
``trinit image sysroot`` (``_sysroot``): Debian's packages for that architecture unpacked
(the interpreter, its libraries, its standard-library sources and extension modules, the
kernel and its modules, busybox) plus that architecture's wheels for every package with
compiled code. Pure-Python packages and trinit come from this installation: bytecode does
not depend on the CPU. All ``.pyc`` are compiled here, by this interpreter: CPython's
bytecode and its magic number only change between minor versions (3.11.x all use 3495), so
the build refuses a cross root whose Python is not the same minor version.

The image boots read-only: nothing in it is written at run time (trinit mounts tmpfs on
/run and /tmp, see ``trinit._pid1``). Kernel modules are optional: Apple's kernel has
virtio, ext4, virtiofs and vsock built in, so the default module list is empty; Debian's
kernel gets them from the loader initrd (``_loader``) instead.
"""

from __future__ import annotations

import importlib.util
import marshal
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from trinit import _arch
from trinit._arch import Arch

from . import _elfdeps, _kmod, _launcher, _pysel
from ._cpio import CpioWriter

PREFIX = "/usr/lib/trinit"
"""The interpreter's private prefix in the image."""
LAUNCHER = "/sbin/vminitd"
"""Where Apple's host looks for the init (``init=/sbin/vminitd``)."""
DIRECTORIES = ("bin", "sbin", "dev", "sys", "proc", "run", "tmp", "mnt", "var", "etc")
"""The empty top-level directories of vminitd's image."""
DEVICES = (("dev/console", 5, 1, 0o600), ("dev/null", 1, 3, 0o666), ("dev/urandom", 1, 9, 0o666))
"""Character devices for kernels that run init before devtmpfs is on /dev (a cpio without a
loader); the loader and Apple's kernel mount devtmpfs over /dev first."""
_PYC_UNCHECKED_HASH = 0b01


@dataclass
class ImageOptions:
    arch: str = field(default_factory=lambda: os.uname().machine)
    cross_root: str | None = None  # from `trinit image sysroot`; required for a foreign arch
    modules_dir: str | None = None  # kernel modules the image loads itself (default: none)
    kernel_modules: Sequence[str] = ()
    python_modules: Sequence[str] = ()
    files: Sequence[tuple[str, str]] = ()
    binaries: Sequence[tuple[str, str]] = ()
    agent_args: Sequence[str] = ()
    preinit: str | None = None
    optimize: int = 0
    strip: bool = True


@dataclass
class Tree:
    """A staged image: a directory plus the device nodes to create when packing (staging
    needs no privileges)."""

    root: str
    arch: Arch
    devices: list[tuple[str, int, int, int]] = field(default_factory=list)
    parts: dict[str, int] = field(default_factory=dict)
    kernel_modules: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # compiled packages without a build

    def path(self, name: str) -> str:
        clean = os.path.normpath("/" + name).lstrip("/")
        return os.path.join(self.root, clean)

    def add(self, part: str, name: str, data: bytes, mode: int = 0o644) -> None:
        target = self.path(name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.lexists(target):
            os.unlink(target)
        with open(target, "wb") as file:
            file.write(data)
        os.chmod(target, mode)
        self.parts[part] = self.parts.get(part, 0) + len(data)

    def symlink(self, name: str, target: str) -> None:
        link = self.path(name)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(target, link)

    @property
    def size(self) -> int:
        return sum(self.parts.values())


class Source:
    """Where the interpreter, standard library, packages and libraries come from."""

    def __init__(self, arch: Arch, cross_root: str | None) -> None:
        self.arch = arch
        self.layout = _pysel.PythonLayout.current()
        self.version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        native = os.uname().machine == arch.name
        if not native and cross_root is None:
            raise ValueError(
                f"building for {arch.name} on {os.uname().machine} needs --cross-root "
                f"(make one with `trinit image sysroot --arch {arch.name} -o DIR`)"
            )
        self.cross = None if native else os.path.abspath(str(cross_root))
        self.root = "/" if self.cross is None else os.path.join(self.cross, "root")
        self.resolver = _elfdeps.Resolver(self.root, arch)
        if self.cross is None:
            self.interpreter = self.layout.executable
            self.stdlib = self.layout.stdlib
        else:
            self.interpreter = os.path.join(self.root, "usr/bin", self.version)
            self.stdlib = os.path.join(self.root, "usr/lib", self.version)
            if not os.path.isfile(os.path.join(self.stdlib, "os.py")):
                raise ValueError(
                    f"{self.cross}: no {self.version} standard library; the image's bytecode "
                    f"is compiled by this {self.version}, so the cross root must hold the "
                    "same minor version"
                )
        self.dynload = os.path.join(self.stdlib, "lib-dynload")

    @property
    def modules_dir(self) -> str:
        """Where this root keeps kernel modules (``/lib/modules``)."""
        return os.path.join(self.root, "lib/modules")

    def stdlib_file(self, host_path: str) -> str | None:
        """The file to package for this machine's standard-library file ``host_path``; None
        when the target interpreter has the module built in."""
        if self.cross is None:
            return host_path
        rel = os.path.relpath(host_path, self.layout.stdlib)
        if rel.startswith("lib-dynload" + os.sep):
            module = os.path.basename(rel).split(".")[0]
            candidate = os.path.join(
                self.dynload, f"{module}.cpython-{sys.version_info.major}"
                f"{sys.version_info.minor}-{self.arch.multiarch}.so"
            )  # fmt: skip
            return candidate if os.path.isfile(candidate) else None
        candidate = os.path.join(self.stdlib, rel)
        return candidate if os.path.isfile(candidate) else None

    def package(self, host_package: str) -> str | None:
        """The top-level package (or module file) to package for this machine's
        ``host_package``: the same one when it is pure Python, else the target's from the
        cross root's wheels; None when the cross root has no build of it.

        The module selection follows every import it can see, including optional ones
        (grpc reaches for grpc_tools, for one), so a compiled package without a target
        build is left out and listed in the report rather than failing the build; one the
        guest really imports fails there, loudly (the VM tests would show it). Add a build
        with ``trinit image sysroot --wheel DIST``."""
        if self.cross is None or not _has_elf(host_package):
            return host_package
        candidate = os.path.join(self.cross, "site-packages", os.path.basename(host_package))
        return candidate if os.path.exists(candidate) else None

    def binary(self, path: str) -> str:
        """A ``--binary`` source: a root-relative path in the cross root when it is there."""
        if self.cross is None:
            return path
        inside = os.path.join(self.root, path.lstrip("/"))
        return inside if os.path.exists(inside) else path


def _has_elf(path: str) -> bool:
    files = [path] if os.path.isfile(path) else [
        os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(".so")
    ]  # fmt: skip
    return any(f.endswith(".so") for f in files)


class _Assembler:
    def __init__(self, tree: Tree, source: Source, options: ImageOptions) -> None:
        self.tree = tree
        self.source = source
        self.options = options
        self.libraries: set[str] = set()
        self.strip = options.strip and source.cross is None and shutil.which("strip") is not None

    def elf(self, part: str, source: str, name: str, mode: int = 0o755) -> None:
        self.tree.add(part, name, _read(source, self.strip), mode)
        for library in self.source.resolver.closure(source):
            if library not in self.libraries:
                self.libraries.add(library)
                host = self.source.resolver.host_path(library)
                self.tree.add("shared libraries", library, _read(host, self.strip), 0o755)

    def python(self, part: str, source: str, name: str) -> None:
        if source.endswith(".so"):
            self.elf(part, source, name)
            return
        with open(source, "rb") as file:
            text = file.read()
        code = compile(text, name[:-1], "exec", dont_inherit=True, optimize=self.options.optimize)
        header = importlib.util.MAGIC_NUMBER + _PYC_UNCHECKED_HASH.to_bytes(4, "little")
        self.tree.add(part, name, header + importlib.util.source_hash(text) + marshal.dumps(code))

    def package(self, part: str, source: str, destination: str) -> None:
        if os.path.isfile(source):
            self._module(part, source, os.path.join(destination, os.path.basename(source)))
            return
        for directory, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "tests", "test"))
            for filename in sorted(files):
                path = os.path.join(directory, filename)
                rel = os.path.relpath(path, os.path.dirname(source))
                self._module(part, path, os.path.join(destination, rel))

    def _module(self, part: str, path: str, name: str) -> None:
        if path.endswith(".py"):
            self.python(part, path, name + "c")
        elif path.endswith(".so"):
            self.elf(part, path, name)


def _read(path: str, strip: bool) -> bytes:
    if strip:
        import subprocess

        with tempfile.TemporaryDirectory() as scratch:
            copy = os.path.join(scratch, "elf")
            shutil.copyfile(path, copy)
            subprocess.run(["strip", "--strip-unneeded", copy], check=False, capture_output=True)
            with open(copy, "rb") as file:
                return file.read()
    with open(path, "rb") as file:
        return file.read()


def stage(root: str, options: ImageOptions) -> Tree:
    """Lay the image out under the (empty or missing) directory ``root``; return its Tree.

    Raises ValueError (wrong architecture, unusable cross root), FileNotFoundError (a
    missing library, kernel module, file or package build) and
    subprocess.CalledProcessError (a Python module that cannot be imported here)."""
    arch = _arch.get(options.arch)
    source = Source(arch, options.cross_root)
    tree = Tree(root, arch)
    os.makedirs(root, exist_ok=True)
    for directory in DIRECTORIES:
        os.makedirs(tree.path(directory), mode=0o755, exist_ok=True)
    tree.devices.extend(DEVICES)
    assembler = _Assembler(tree, source, options)
    version = source.version
    interpreter = f"{PREFIX}/bin/{version}"
    stdlib = f"{PREFIX}/lib/{version}"
    site = f"{stdlib}/site-packages"
    info = _elfdeps.read(source.interpreter)
    source.resolver.check(source.interpreter, info)
    if info is not None and info.interpreter not in (None, arch.loader):
        raise ValueError(f"{source.interpreter}: loader {info.interpreter}, not {arch.loader}")
    assembler.elf("interpreter", source.interpreter, interpreter)
    layout = source.layout
    roots = [*_pysel.trinit_modules(layout), *options.python_modules]
    selection = _pysel.select(layout, roots)
    for path in sorted(selection.stdlib_files):
        packaged = source.stdlib_file(path)
        if packaged is None:
            continue  # built into the target's interpreter
        rel = os.path.relpath(packaged, source.stdlib)
        suffix = "c" if rel.endswith(".py") else ""
        assembler.python("stdlib", packaged, f"{stdlib}/{rel}{suffix}")
    if not os.path.exists(tree.path(f"{stdlib}/os.pyc")):
        raise FileNotFoundError("os.py (the prefix landmark) was not packaged")
    for package in sorted(selection.packages):
        packaged = source.package(package)
        if packaged is None:
            tree.left_out.append(os.path.basename(package))
        else:
            assembler.package("site-packages", packaged, site)
    assembler.package("trinit", os.path.join(layout.trinit_root, "trinit"), site)
    launcher = _launcher.render(interpreter, site, list(options.agent_args))
    tree.add("launcher", LAUNCHER, launcher.encode(), 0o755)
    if options.kernel_modules:
        modules_dir = options.modules_dir
        if modules_dir is None:
            raise ValueError("kernel modules were named but no modules directory given")
        index = _kmod.ModuleIndex(modules_dir)
        lines = []
        for module in index.resolve(list(options.kernel_modules)):
            tree.add("kernel modules", module.archive_path, module.read())
            tree.kernel_modules.append(module.name)
            lines.append(f"early {module.archive_path}\n")
        tree.add("kernel modules", "/etc/trinit/modules", "".join(lines).encode())
    if options.preinit is not None:
        with open(options.preinit, "rb") as file:
            tree.add("extras", "/etc/trinit/preinit.py", file.read())
    for src, destination in options.files:
        with open(src, "rb") as file:
            tree.add("extras", destination, file.read(), os.stat(src).st_mode & 0o777)
    for src, destination in options.binaries:
        assembler.elf("extras", source.binary(src), destination)
    return tree


def pack_cpio(tree: Tree, output: str) -> int:
    """The staged tree as a gzip newc cpio (an initramfs): ``/init`` links to the launcher.

    Returns the number of entries. Written to a temporary name, renamed when complete."""
    partial = output + ".partial"
    try:
        with CpioWriter(partial) as cpio:
            for rel, kind, st in walk(tree.root):
                if kind == "dir":
                    cpio.directory(rel, st.st_mode & 0o7777)
                elif kind == "link":
                    cpio.symlink(rel, os.readlink(os.path.join(tree.root, rel)))
                else:
                    with open(os.path.join(tree.root, rel), "rb") as file:
                        cpio.file(rel, file.read(), st.st_mode & 0o7777)
            for name, major, minor, mode in tree.devices:
                cpio.char_device(name, major, minor, mode)
            cpio.symlink("init", LAUNCHER.lstrip("/"))
            count = cpio.count
        os.replace(partial, output)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    return count


def walk(root: str) -> list[tuple[str, str, os.stat_result]]:
    """Every entry under ``root`` in a stable order, parents first: (relative path, kind
    'dir'|'file'|'link', lstat)."""
    entries: list[tuple[str, str, os.stat_result]] = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        rel_dir = os.path.relpath(directory, root)
        for name in sorted([*dirs, *files]):
            path = os.path.join(directory, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                entries.append((rel, "link", st))
            elif stat.S_ISDIR(st.st_mode):
                entries.append((rel, "dir", st))
            elif stat.S_ISREG(st.st_mode):
                entries.append((rel, "file", st))
    entries.sort(key=lambda entry: entry[0].split(os.sep))
    return entries
