"""Pack a staged image as an ext4 filesystem image with ``mkfs.ext4 -d`` (e2fsprogs).

``mkfs.ext4 -d DIR`` copies a directory tree into the new filesystem itself, so no loop
device, mount or privilege is needed and nothing has to be cleaned up on the host if the
build fails. The device nodes the tree lists are created in the staging directory with
mknod(2) when this process may (root); otherwise the image has an empty /dev, which is
fine for both boot paths (Apple's kernel and the loader initrd mount devtmpfs on /dev
before init runs).

The filesystem has no journal (it is mounted read-only, a journal would only cost 4 MiB or
more) and no reserved blocks; its size is the tree's plus room for metadata.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from ._image import Tree

MIB = 1 << 20


def mkfs() -> str:
    """The mkfs.ext4 of this machine; FileNotFoundError naming the package otherwise."""
    for candidate in ("mkfs.ext4", "/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4"):
        found = shutil.which(candidate)
        if found:
            return found
    raise FileNotFoundError("mkfs.ext4 not found: apt-get install e2fsprogs")


def make_devices(tree: Tree) -> bool:
    """Create the tree's device nodes in the staging directory; False when not permitted."""
    for name, major, minor, mode in tree.devices:
        path = tree.path(name)
        if os.path.lexists(path):
            continue
        try:
            os.mknod(path, 0o020000 | mode, os.makedev(major, minor))
        except PermissionError:
            return False
    return True


def size_bytes(tree: Tree) -> int:
    """Room for the files (rounded up per 4 KiB block), inodes and slack."""
    blocks = 0
    entries = 0
    for directory, dirs, files in os.walk(tree.root):
        entries += len(dirs) + len(files)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                blocks += (os.path.getsize(path) + 4095) // 4096
    data = blocks * 4096
    return max(32 * MIB, (data * 5 // 4 + entries * 512 + 16 * MIB + MIB - 1) // MIB * MIB)


def pack_ext4(tree: Tree, output: str, *, label: str = "vminit") -> int:
    """Write the ext4 image of ``tree`` to ``output``; returns its size in bytes."""
    make_devices(tree)
    size = size_bytes(tree)
    partial = output + ".partial"
    try:
        with open(partial, "wb") as file:
            file.truncate(size)
        subprocess.run(
            [mkfs(), "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-L", label,
             "-O", "^has_journal", "-E", "root_owner=0:0", "-d", tree.root, partial],
            check=True, capture_output=True, text=True,
            env={**os.environ, "E2FSPROGS_FAKE_TIME": "1"},
        )  # fmt: skip
        os.replace(partial, output)
    except subprocess.CalledProcessError as exc:
        _remove(partial)
        raise OSError(f"mkfs.ext4 failed: {exc.stderr.strip() or exc.stdout.strip()}") from None
    except BaseException:
        _remove(partial)
        raise
    return size


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
