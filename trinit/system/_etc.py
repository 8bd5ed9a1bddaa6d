"""Atomic installation of one file in a container rootfs's ``etc`` directory.

Used for ``resolv.conf`` and ``hosts`` (ConfigureDns/ConfigureHosts) and for
``etc/hostname`` (CreateProcess with ``spec.hostname``). The rootfs's contents are the
image's, so nothing here follows a symlink the image could have planted: ``<root>/etc`` is
opened with ``O_NOFOLLOW`` (a symlinked ``etc`` is refused with ELOOP rather than followed
into the VM's own files), the temporary file is created ``O_EXCL | O_NOFOLLOW`` under a
random name, and the final rename replaces a symlink *at* the target instead of writing
through it. A reader of the file sees either the old or the new contents, never a part.

Blocking (filesystem syscalls): call it from a worker thread.
"""

from __future__ import annotations

import errno
import os

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
