"""Atomic installation of one file in a container rootfs's ``etc`` directory.

Used for ``resolv.conf`` and ``hosts`` (ConfigureDns/ConfigureHosts) and for
``etc/hostname`` (CreateProcess with ``spec.hostname``). The rootfs's contents are the
image's, so nothing here follows a symlink the image could have planted: ``<root>/etc`` is
opened with ``O_NOFOLLOW`` (a symlinked ``etc`` is refused with ELOOP rather than followed
into the VM's own files), the temporary file is created ``O_EXCL | O_NOFOLLOW`` under a
random name, and the final rename replaces a symlink *at* the target instead of writing
through it. A reader of the file sees either the old or the new contents, never a part.

A file that already holds exactly the bytes, mode and owner to be written is left as it
is: replacing an existing file by rename makes ext4 flush it at once (``auto_da_alloc``),
0.4 ms of every CreateProcess that names the hostname the rootfs already has. Finding that
out looks the target up ``O_PATH | O_NOFOLLOW`` (which never opens a device, waits on a
FIFO or follows a link), opens it only once ``fstat`` shows a regular file, and reads it
only when its size is that of the new contents.

Blocking (filesystem syscalls): call it from a worker thread.
"""

from __future__ import annotations

import errno
import os
import stat

from trinit.exec import open_regular_at

__all__ = ["install_etc_file"]


def install_etc_file(root: str, name: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``<root>/etc/<name>`` atomically with ``mode``; creates ``etc`` if missing.

    Raises ``OSError`` (ELOOP when ``etc`` is a symlink); the target is then unchanged and
    no temporary file is left behind.
    """
    etc = os.path.join(root, "etc")
    os.makedirs(etc, 0o755, exist_ok=True)
    try:
        dir_fd = os.open(etc, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(etc):
            raise OSError(errno.ELOOP, "is a symlink, not followed", etc) from exc
        raise
    try:
        if _holds(dir_fd, name, data, mode):
            return
        temp = f".{name}.trinit-{os.urandom(6).hex()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, mode, dir_fd=dir_fd)
        try:
            try:
                os.fchmod(fd, mode)  # the umask must not narrow it
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
    finally:
        os.close(dir_fd)


def _holds(dir_fd: int, name: str, data: bytes, mode: int) -> bool:
    """Whether ``name`` in ``dir_fd`` is a regular file of ours with ``mode`` and exactly
    ``data``. Never follows a link at ``name``, opens a device or blocks on a FIFO
    (:func:`trinit.exec.open_regular_at`)."""
    try:
        fd = open_regular_at(dir_fd, name, os.O_RDONLY)
    except OSError:
        return False
    if fd is None:
        return False
    try:
        st = os.fstat(fd)
        if (
            stat.S_IMODE(st.st_mode) != mode
            or st.st_size != len(data)
            or (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid())
        ):
            return False
        return os.read(fd, len(data) + 1) == data
    except OSError:
        return False
    finally:
        os.close(fd)
