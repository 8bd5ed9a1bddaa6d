"""Apply one image layer (a possibly compressed tar) to a root directory, OCI style.

Rules (the OCI image spec's "Applying changesets"):

* ``DIR/.wh.NAME`` deletes ``DIR/NAME`` of the layers below; the marker itself is not
  created. ``DIR/.wh..wh..opq`` makes DIR opaque: everything the layers below put in it
  goes, what this layer puts in it stays (whatever the order of the entries).
* A later entry replaces an earlier one, except that a directory over a directory merges.

Safety, the same ideas as the Copy RPC's extraction (``trinit/system/_copy.py``): every
path is walked one component at a time from an fd of the root with ``O_NOFOLLOW``, so
nothing is ever written through a symlink, a planted one or one from a lower layer. Unlike
Copy, an unsafe entry fails the whole layer instead of being skipped: an absolute name, a
``..`` component, a hard link to a name outside the tree, a path below a symlink. Symlinks
are created as they are (their targets are inert data here). Device nodes are not created:
a cache directory on this machine must not hold a world-writable disk node; containers get
their /dev from the spec anyway. Owners (as root), modes including set-id bits, and mtimes
are kept, directories' once their contents exist.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat as stat_mod
import tarfile
from collections.abc import Iterable
from typing import IO

CHUNK = 1 << 20
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class LayerError(Exception):
    """The layer cannot be applied safely (one line naming the entry)."""


Parts = tuple[str, ...]


def safe_parts(name: str) -> Parts:
    """The components of a member name; LayerError for an absolute name or ``..``."""
    if name.startswith("/") or "\x00" in name:
        raise LayerError(f"entry {name!r} has an absolute name")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise LayerError(f"entry {name!r} has a '..' component")
    return parts


def _open_dir(root_fd: int, parts: Iterable[str], *, create: bool) -> int | None:
    """An fd of ``root/parts``, never following a symlink; missing directories are created
    (0755) when ``create``, else None. LayerError for a component that is a symlink or not a
    directory (writing below it would leave the tree or mean something else)."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    return None
                os.mkdir(part, 0o755, dir_fd=fd)
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise LayerError(f"'{part}' is a symlink or not a directory") from None
                raise
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(dir_fd: int, name: str) -> None:
    st = _lstat(dir_fd, name)
    if st is None:
        return
    if stat_mod.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


class _Applier:
    def __init__(self, root_fd: int, tar: tarfile.TarFile) -> None:
        self.root_fd = root_fd
        self.tar = tar
        self.is_root = os.geteuid() == 0
        #: every path this layer created: an opaque marker keeps them
        self.added: set[Parts] = set()
        self.opaque: list[Parts] = []
        self.directories: list[tuple[Parts, tarfile.TarInfo]] = []

    def apply(self, member: tarfile.TarInfo) -> None:
        parts = safe_parts(member.name)
        if not parts:
            if member.isdir():
                self.directories.append((parts, member))
                return
            raise LayerError("a non-directory entry for the root itself")
        name = parts[-1]
        if name == OPAQUE:
            self.opaque.append(parts[:-1])
            return
        if name.startswith(WHITEOUT):
            self._whiteout(parts[:-1], name[len(WHITEOUT) :])
            return
        dir_fd = _open_dir(self.root_fd, parts[:-1], create=True)
        assert dir_fd is not None
        try:
            for depth in range(1, len(parts)):
                self.added.add(parts[:depth])
            if self._create(member, dir_fd, name, parts):
                self.added.add(parts)
        finally:
            os.close(dir_fd)

    def _whiteout(self, parent: Parts, name: str) -> None:
        if not name or name in (".", ".."):
            raise LayerError(f"bad whiteout for {name!r}")
        dir_fd = _open_dir(self.root_fd, parent, create=False)
        if dir_fd is None:
            return  # nothing below to hide
        try:
            _remove(dir_fd, name)
        finally:
            os.close(dir_fd)

    def _create(self, member: tarfile.TarInfo, dir_fd: int, name: str, parts: Parts) -> bool:
        """Create the entry; False for one that is not created (a device node)."""
        if member.isdir():
            st = _lstat(dir_fd, name)
            if st is None or not stat_mod.S_ISDIR(st.st_mode):
                _remove(dir_fd, name)
                os.mkdir(name, 0o700, dir_fd=dir_fd)
            self.directories.append((parts, member))
            return True
        if member.ischr() or member.isblk():
            return False
        _remove(dir_fd, name)
        if member.isreg():
            self._file(member, dir_fd, name)
        elif member.issym():
            os.symlink(member.linkname, name, dir_fd=dir_fd)
            self._owner(dir_fd, name, member)
            self._mtime(dir_fd, name, member)
        elif member.islnk():
            self._hardlink(member, dir_fd, name)
        elif member.isfifo():
            os.mkfifo(name, 0o600, dir_fd=dir_fd)
            self._owner(dir_fd, name, member)
            os.chmod(name, member.mode & 0o7777, dir_fd=dir_fd)
            self._mtime(dir_fd, name, member)
        else:
            raise LayerError(f"entry {member.name!r} has an unknown type {member.type!r}")
        return True

    def _file(self, member: tarfile.TarInfo, dir_fd: int, name: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
        try:
            source = self.tar.extractfile(member)
            if source is not None:
                while chunk := source.read(CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
            if self.is_root:
                os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, member.mode & 0o7777)  # after chown, which clears set-id bits
            ns = int(member.mtime * 1_000_000_000)
            os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)

    def _hardlink(self, member: tarfile.TarInfo, dir_fd: int, name: str) -> None:
        target = safe_parts(member.linkname)
        if not target:
            raise LayerError(f"hard link {member.name!r} to the root")
        source_dir = _open_dir(self.root_fd, target[:-1], create=False)
        if source_dir is None:
            raise LayerError(f"hard link {member.name!r}: {member.linkname!r} does not exist")
        try:
            st = _lstat(source_dir, target[-1])
            if st is None or stat_mod.S_ISDIR(st.st_mode):
                raise LayerError(f"hard link {member.name!r}: bad target {member.linkname!r}")
            os.link(
                target[-1], name, src_dir_fd=source_dir, dst_dir_fd=dir_fd, follow_symlinks=False
            )
        finally:
            os.close(source_dir)

    def _owner(self, dir_fd: int, name: str, member: tarfile.TarInfo) -> None:
        if self.is_root:
            os.chown(name, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)

    @staticmethod
    def _mtime(dir_fd: int, name: str, member: tarfile.TarInfo) -> None:
        ns = int(member.mtime * 1_000_000_000)
        try:
            os.utime(name, ns=(ns, ns), dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            pass  # a time the file system cannot hold is not worth failing the image

    def finish(self) -> None:
        for parent in self.opaque:
            self._make_opaque(parent)
        for parts, member in sorted(self.directories, key=lambda item: len(item[0]), reverse=True):
            fd = _open_dir(self.root_fd, parts, create=False)
            if fd is None:
                continue  # removed again by a later entry
            try:
                if self.is_root:
                    os.fchown(fd, member.uid, member.gid)
                os.fchmod(fd, member.mode & 0o7777)
                ns = int(member.mtime * 1_000_000_000)
                os.utime(fd, ns=(ns, ns))
            finally:
                os.close(fd)

    def _make_opaque(self, parent: Parts) -> None:
        """Remove what lower layers put below ``parent``, keeping this layer's entries."""
        dir_fd = _open_dir(self.root_fd, parent, create=True)
        assert dir_fd is not None
        try:
            for name in os.listdir(dir_fd):
                path = (*parent, name)
                if path not in self.added:
                    _remove(dir_fd, name)
                elif (st := _lstat(dir_fd, name)) is not None and stat_mod.S_ISDIR(st.st_mode):
                    self._make_opaque(path)  # a directory this layer merged into
        finally:
            os.close(dir_fd)
        self.added.add(parent)


def apply_layer(root: str, stream: IO[bytes]) -> None:
    """Apply the layer read from ``stream`` (tar; gzip, bzip2 or xz detected) to ``root``.

    Raises LayerError for an unsafe or malformed entry, tarfile.TarError for a damaged
    archive; ``root`` is then half-applied (callers unpack into a scratch directory)."""
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        with tarfile.open(fileobj=stream, mode="r|*", bufsize=256 << 10) as tar:
            applier = _Applier(root_fd, tar)
            while (member := tar.next()) is not None:
                tar.members.clear()  # type: ignore[attr-defined]  # stream mode keeps every TarInfo otherwise
                try:
                    applier.apply(member)
                except LayerError as exc:
                    if member.name in str(exc):
                        raise
                    raise LayerError(f"entry {member.name!r}: {exc}") from None
            applier.finish()
    finally:
        os.close(root_fd)
