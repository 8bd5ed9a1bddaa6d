"""The exec helper: trinit's vmexec, run as a fresh Python process for every container process.

Usage (spawned by :func:`trinit.exec.launch`, never imported by the daemon's event loop)::

    python -I -S <bootstrap> run --bundle-path DIR [--cgroup-root /sys/fs/cgroup]
    python -I -S <bootstrap> exec --process-path FILE|--process-json JSON --parent-pid PID
        [--cgroup-hierarchy MOUNT [--cgroup-hierarchy-root ROOT]]

Protocol (docs/protocol.md §5.5 and §6): fd 3 is the sync pipe (we write the container pid as a
native int32, then in terminal mode the PTY master fd number), fd 4 is the ack pipe (we read
exactly ``AckPid``, then ``AckConsole``), fd 5 is the error pipe (on failure we write one
line of UTF-8 naming the stage that failed, e.g. ``mount /proc: [Errno 2] ...``, and exit 1).
Every fd is CLOEXEC before execve, so the error pipe reads EOF exactly when the workload runs.

``run`` enters the namespaces of ``linux.namespaces``, forks, and the parent reports the
child's pid and exits. The child (the container init) waits for ``AckPid`` (so trinit has
registered the pid before the workload can exit), builds the root filesystem, pivots into
it, and runs the common tail: rlimits, capabilities, user, no_new_privs, PATH lookup, cwd,
execve. ``exec`` joins the init's namespaces through a pidfd instead.

Deviations from vminitd's vmexec, on purpose:
* ``/dev/ptmx`` is bind-mounted from ``/dev/pts/ptmx`` instead of being replaced by a symlink,
  so a devtmpfs ``/dev`` (shared machine-wide) is never modified.
* ``run`` refuses to set up a root without a new (or joined) mount namespace: pivot_root in
  trinit's own namespace would move trinit's root too.
* capabilities 32..40 are granted (all 64 bits of each set are passed to capset).
* stdio fds that are ``/dev/null`` are not chowned to the container user (like runc), since
  that node is shared with the VM.

Warm start (``zygote_entry``, parent side in ``trinit.exec._zygote``): the same helper code,
spawned once ahead of time with only a control socket (SOCK_SEQPACKET) as fd 3, serving as a
*fork server*. It does all its imports, says so (one byte) and then serves requests: a
message of NUL-separated fields ``argc, argv_tail..., KEY=VALUE...`` carrying the 6 fds for
0..5 (SCM_RIGHTS). For each it forks the helper as its *sibling* (``clone3`` with
``CLONE_PARENT``: trinit is the helper's parent, as for a spawned helper; on a kernel
without ``clone3`` an intermediate child forks it and exits), answers the helper's pid (4
bytes) and goes on; the helper puts the fds on 0..5, closes every other fd and runs
:func:`main` exactly as a freshly spawned helper would, with the request's environment (the
server makes it its own before forking, when it changed). EOF makes
the server exit 0; a malformed request is answered ``ZYGOTE_REFUSED`` and skipped. Most
``run`` requests skip the helper: the server forks the container's init itself
(:class:`DirectInit`).

Imports are the stdlib and the tiny sibling modules only: Python start-up is most of the
cost of starting a container process. Every import happens at module load: after pivot_root
the interpreter's own files are out of reach, so a lazy import would fail.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import stat
import sys

from trinit import _linux as sc
from trinit._cgrouppath import directory_of
from trinit.exec import _idmap, _userns
from trinit.exec import _selfexec as selfexec
from trinit.exec._devices import create_devices
from trinit.exec._mountopts import parse_options, statfs_mount_flags
from trinit.exec._rootpath import mkdir_all, open_in_root

TYPE_CHECKING = False  # typing, json and signal cost 15 ms of imports: see decode_json
if TYPE_CHECKING:
    import signal
    from typing import Any, NoReturn
else:
    import _signal as signal

SYNC_FD = 3
ACK_FD = 4
ERROR_FD = 5

ACK_PID = b"AckPid"
ACK_CONSOLE = b"AckConsole"

DEFAULT_SEARCH_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"

NAMESPACE_FLAGS: dict[str, int] = {
    "pid": sc.CLONE_NEWPID,
    "mount": sc.CLONE_NEWNS,
    "uts": sc.CLONE_NEWUTS,
    "ipc": sc.CLONE_NEWIPC,
    "user": sc.CLONE_NEWUSER,
    "cgroup": sc.CLONE_NEWCGROUP,
    "network": 0,  # ignored, as in vminitd: containers share the VM network namespace
}

EXEC_NAMESPACES = sc.CLONE_NEWCGROUP | sc.CLONE_NEWPID | sc.CLONE_NEWUTS | sc.CLONE_NEWNS

RLIMITS: dict[str, int] = {
    "RLIMIT_CPU": 0,
    "RLIMIT_FSIZE": 1,
    "RLIMIT_DATA": 2,
    "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5,
    "RLIMIT_NPROC": 6,
    "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8,
    "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10,
    "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12,
    "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14,
    "RLIMIT_RTTIME": 15,
}

CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip
CAP_INDEX = {name: index for index, name in enumerate(CAPABILITIES)}
CAP_SETPCAP = CAP_INDEX["CAP_SETPCAP"]

DEV_SYMLINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("rtc", "/dev/rtc0"),
)


class ChildError(Exception):
    """A failure whose text goes to the error pipe as-is."""


class _Stage:
    """Turn an OSError/ValueError inside the block into ``ChildError("<stage>: <error>")``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, (OSError, ValueError, TypeError, KeyError)):
            raise ChildError(f"{self.name}: {exc}") from None


# --- pipes -----------------------------------------------------------------------------------


def _write_int(value: int) -> None:
    data = value.to_bytes(4, sys.byteorder, signed=True)
    with _Stage("write to the sync pipe"):
        if os.write(SYNC_FD, data) != len(data):
            raise OSError(errno.EIO, "short write")


def _wait_ack(expected: bytes) -> None:
    with _Stage(f"read {expected.decode()}"):
        data = os.read(ACK_FD, len(expected))
    if data != expected:
        raise ChildError(f"read {expected.decode()}: got {data!r} from the ack pipe")


def _report(text: str) -> None:
    data = text.encode("utf-8", "replace")
    try:
        while data:
            data = data[os.write(ERROR_FD, data) :]
    except OSError:
        pass


# --- loading ---------------------------------------------------------------------------------


class _ScanContext:
    """The settings ``json.loads`` passes to its C scanner (plain dicts, strict strings)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> object:
        raise ValueError(f"invalid JSON constant {name}")


def decode_json(data: bytes) -> object:
    """``json.loads`` for UTF-8 input without importing json (its ``re`` import costs ~9 ms).

    Uses the same C scanner as the json module; falls back to json if it is unavailable.
    """
    text = data.decode("utf-8")
    try:
        import _json

        scan = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]
    except (ImportError, AttributeError):  # pragma: no cover - CPython always has _json
        import json

        return json.loads(text)
    whitespace = " \t\n\r"
    start = len(text) - len(text.lstrip(whitespace))
    try:
        value, end = scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"invalid JSON at offset {exc.value}") from None
    if text[end:].strip(whitespace):
        raise ValueError(f"extra data after JSON at offset {end}")
    return value


def _load_json(path: str, what: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            value = decode_json(file.read())
    except (OSError, ValueError) as exc:
        raise ChildError(f"failed to load {what} at {path}: {exc}") from None
    if not isinstance(value, dict):
        raise ChildError(f"failed to load {what} at {path}: not a JSON object")
    return value


def _inline_json(text: str, what: str) -> dict[str, Any]:
    """A JSON object given on the command line (``exec --process-json``)."""
    try:
        value = decode_json(text.encode("utf-8", "surrogateescape"))
    except ValueError as exc:
        raise ChildError(f"failed to decode {what}: {exc}") from None
    if not isinstance(value, dict):
        raise ChildError(f"failed to decode {what}: not a JSON object")
    return value


# --- namespaces and cgroup (parent side) ----------------------------------------------------


def _enter_namespaces(spec: dict[str, Any], made: int = 0) -> tuple[bool, int]:
    """Join namespaces by path, unshare the rest, except those in ``made`` (CLONE_NEW*
    flags of namespaces the caller was born in: the direct init's PID namespace).

    Returns (whether a cgroup namespace is still to be made, the CLONE_NEW* flags of every
    namespace entered: unshared, joined or made)."""
    linux = spec.get("linux")
    joined = 0
    if linux is None:
        flags = sc.CLONE_NEWPID | sc.CLONE_NEWNS | sc.CLONE_NEWUTS
    else:
        flags = 0
        # the user namespace first (runc's order): it is to own the others
        for entry in sorted(linux.get("namespaces") or [], key=_userns.first):
            kind = entry.get("type", "")
            if kind not in NAMESPACE_FLAGS:
                raise ChildError(f"namespaces: unknown namespace type {kind!r}")
            flag = NAMESPACE_FLAGS[kind]
            if not flag:
                continue
            path = entry.get("path") or ""
            if path:
                with _Stage(f"join {kind} namespace {path}"):
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        sc.setns(fd, flag)
                    finally:
                        os.close(fd)
                joined |= flag
            elif flag == sc.CLONE_NEWUSER:
                with _Stage("user namespace"):
                    _userns.enter_new(linux)
                joined |= flag
            else:
                flags |= flag
            if flag == sc.CLONE_NEWUSER:
                with _Stage("user namespace"):
                    _userns.become_root()
    new_cgroup = bool(flags & sc.CLONE_NEWCGROUP)
    flags &= ~(sc.CLONE_NEWCGROUP | made)
    if not (flags | joined) & sc.CLONE_NEWNS:
        raise ChildError("namespaces: the spec must create or join a mount namespace")
    with _Stage("unshare namespaces"):
        sc.unshare(flags)
    return new_cgroup, flags | joined | made


class CgroupTarget:
    """The container cgroup a new init is placed in: its directory and its ``cgroup.procs``.

    Both are opened before the helper enters the namespaces: inside a user namespace it is
    no longer the VM's root, and the kernel checks a migration against the credentials (and
    cgroup namespace) of the file's opener. The directory lets the init be *born* there
    (:func:`fork_into`) when it is a cgroup2 one; ``cgroup.procs`` is the fallback
    (:func:`_apply_cgroup`).
    """

    __slots__ = ("cgroup2", "directory_fd", "procs_fd")

    def __init__(self, directory_fd: int, procs_fd: int) -> None:
        self.directory_fd = directory_fd
        self.procs_fd = procs_fd
        try:
            self.cgroup2 = sc.fstatfs_type(directory_fd) == sc.CGROUP2_SUPER_MAGIC
        except OSError:
            self.cgroup2 = False

    def close(self) -> None:
        os.close(self.directory_fd)
        os.close(self.procs_fd)


def _open_cgroup(spec: dict[str, Any], cgroup_root: str) -> CgroupTarget | None:
    """The container's cgroup (docs/protocol.md §6.1 step 4), or None when
    ``linux.cgroupsPath`` is empty or its directory does not exist under ``cgroup_root``
    (cgroup management is off, e.g. no cgroup2 hierarchy)."""
    linux = spec.get("linux") or {}
    relative = (linux.get("cgroupsPath") or "").strip("/")
    if not relative:
        return None
    return _open_cgroup_directory(os.path.join(cgroup_root, relative))


def _open_cgroup_directory(directory: str) -> CgroupTarget | None:
    """:class:`CgroupTarget` for ``directory``, or None if it is not a directory."""
    if not os.path.isdir(directory):
        return None
    with _Stage("cgroup cgroup.procs"):
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            procs_fd = os.open("cgroup.procs", os.O_WRONLY | os.O_CLOEXEC, dir_fd=directory_fd)
        except BaseException:
            os.close(directory_fd)
            raise
    return CgroupTarget(directory_fd, procs_fd)


def fork_into(target: CgroupTarget | None, entered: int = 0) -> tuple[int, bool]:
    """Fork the container init: ``(pid or 0, born in its cgroup)``.

    ``entered``: the CLONE_NEW* flags of the namespaces the helper has entered. The child
    is born in ``target`` (``clone3`` with ``CLONE_INTO_CGROUP``), which spares the ~10 ms
    a later move into the cgroup waits for, when that cannot fail for a reason a move would
    not share: the directory is cgroup2 and no user namespace changed the credentials the
    kernel checks. Otherwise a plain fork, and the caller moves the child with
    :func:`_apply_cgroup`.

    A failed ``clone3`` is not retried with ``fork`` after a new PID namespace was made:
    the kernel had given the failed child that namespace's pid 1, and once the first
    child of a PID namespace fails, the namespace refuses every later fork (ENOMEM).
    """
    if target is not None and target.cgroup2 and not entered & sc.CLONE_NEWUSER:
        try:
            return sc.fork_into_cgroup(target.directory_fd), True
        except OSError as exc:
            if entered & sc.CLONE_NEWPID:
                raise ChildError(f"fork into the container cgroup: {exc}") from None
    return os.fork(), False


def _apply_cgroup(child_pid: int, target: CgroupTarget | None) -> None:
    """Move ``child_pid`` into its container cgroup before it is released.

    See docs/protocol.md §6.1 step 4. The daemon (``trinit.cgroup``) has already created the
    cgroup and written its limits; only the placement happens here, so the init is inside
    before it can run anything.
    """
    if target is not None:
        with _Stage("cgroup cgroup.procs"):
            os.write(target.procs_fd, str(child_pid).encode())


def _set_oom_score_adj(process: dict[str, Any]) -> None:
    """Write ``process.oomScoreAdj`` (0 when absent) to our oom_score_adj before forking.

    The value is inherited across fork and execve, and trinit itself runs at -1000 in a VM:
    without this every container process would be as unkillable by the OOM killer as PID 1.
    Written here, in the VM's /proc and while the helper still has CAP_SYS_RESOURCE, the
    container cannot lower it again without that capability (oom_score_adj_min).
    """
    value = process.get("oomScoreAdj")
    value = 0 if value is None else value
    if not isinstance(value, int) or isinstance(value, bool) or not -1000 <= value <= 1000:
        raise ChildError(f"oomScoreAdj: {value!r} is not an integer in -1000..1000")
    with _Stage("write /proc/self/oom_score_adj"):
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)


# --- root filesystem (container init only) --------------------------------------------------


def _resolve_create(root_fd: int, destination: str, want_file: bool) -> int:
    """An fd naming ``destination`` inside the root (a mount target through
    ``/proc/self/fd``), creating it (dir or file) if missing: an O_PATH fd, or the fd of
    the empty file this call made (made ``O_EXCL | O_NOFOLLOW`` in its parent's fd, so it
    is that file; a second lookup would cost two syscalls per bind-mounted device)."""
    relpath = destination.strip("/")
    try:
        return open_in_root(root_fd, relpath)
    except FileNotFoundError:
        pass
    parent, _, name = relpath.rpartition("/")
    parent_fd = mkdir_all(root_fd, parent)
    try:
        if want_file:
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(name, flags, 0o644, dir_fd=parent_fd)
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    except FileExistsError:
        pass
    finally:
        os.close(parent_fd)
    return open_in_root(root_fd, relpath)


def _bind_remount(target: str, flags: int) -> None:
    """Bind-remount ``target`` with ``flags``, retrying with its locked statfs flags added
    (a mount inherited from a less privileged namespace may not drop them)."""
    flags |= sc.MS_BIND | sc.MS_REMOUNT
    try:
        sc.mount(None, target, None, flags, None)
    except OSError:
        sc.mount(None, target, None, flags | statfs_mount_flags(os.statvfs(target).f_flag), None)


def _remount_readonly(target: str, flags: int) -> None:
    """Bind-remount ``target`` read-only (root.readonly, readonlyPaths)."""
    _bind_remount(target, flags | sc.MS_RDONLY)


def _mount_one(root_fd: int, entry: dict[str, Any], tree: int | None = None) -> None:
    destination = entry["destination"]
    source = entry.get("source") or ""
    fstype = entry.get("type") or None
    opts = parse_options(list(entry.get("options") or []))
    is_bind = bool(opts.flags & sc.MS_BIND)
    want_file = is_bind and not os.path.isdir(source)
    fd = _resolve_create(root_fd, destination, want_file)
    try:
        if tree is not None:
            _idmap.attach(tree, fd)
        elif not opts.skip_main_call:
            sc.mount(source, f"/proc/self/fd/{fd}", fstype, opts.flags, opts.data or None)
    finally:
        os.close(fd)
    if not (opts.bind_remount_flags or opts.propagation):
        return
    # The fd above names the directory under the new mount; reopen to get its top.
    fd = open_in_root(root_fd, destination.strip("/"))
    try:
        target = f"/proc/self/fd/{fd}"
        if opts.bind_remount_flags:
            _bind_remount(target, opts.bind_remount_flags)
        if opts.propagation:
            sc.mount(None, target, None, opts.propagation, None)
    finally:
        os.close(fd)


def _setup_dev(root_fd: int) -> None:
    with _Stage("setup /dev/ptmx"):
        try:
            pts_fd = open_in_root(root_fd, "dev/pts/ptmx")
        except FileNotFoundError:
            pts_fd = -1  # no devpts in this container: leave /dev/ptmx alone
        if pts_fd >= 0:
            try:
                ptmx_fd = _resolve_create(root_fd, "dev/ptmx", want_file=True)
                try:
                    sc.mount(
                        f"/proc/self/fd/{pts_fd}", f"/proc/self/fd/{ptmx_fd}", None,
                        sc.MS_BIND, None,
                    )  # fmt: skip
                finally:
                    os.close(ptmx_fd)
            finally:
                os.close(pts_fd)
    with _Stage("setup /dev symlinks"):
        dev_fd = mkdir_all(root_fd, "dev")
        try:
            for name, target in DEV_SYMLINKS:
                try:
                    os.symlink(target, name, dir_fd=dev_fd)
                except FileExistsError:
                    pass
        finally:
            os.close(dev_fd)


def _pivot_root(rootfs: str) -> None:
    with _Stage("pivot_root"):
        old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        new_root = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fchdir(new_root)
            sc.pivot_root(".", ".")
            os.fchdir(old_root)
            sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC, None)
            sc.umount2(".", sc.MNT_DETACH)
            os.chdir("/")
        finally:
            os.close(old_root)
            os.close(new_root)


def _swap_dev_null(vm_null_rdev: int | None) -> None:
    """Replace stdio fds that are the VM's /dev/null by the container's own /dev/null."""
    if vm_null_rdev is None:
        return
    try:
        null_fd = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    try:
        for fd in (0, 1, 2):
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == vm_null_rdev:
                with _Stage(f"replace fd {fd} with /dev/null"):
                    os.dup2(null_fd, fd)
    finally:
        os.close(null_fd)


def _setup_root(spec: dict[str, Any], rootfs: str, trees: dict[int, int]) -> None:
    try:
        vm_null_rdev: int | None = os.stat("/dev/null").st_rdev
    except OSError:
        vm_null_rdev = None
    with _Stage("make / a slave mount"):
        sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC, None)
    with _Stage(f"bind rootfs {rootfs}"):
        sc.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC, None)
        root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, entry in enumerate(spec.get("mounts") or []):
            with _Stage(f"mount {entry.get('destination')}"):
                _mount_one(root_fd, entry, trees.get(index))
        with _Stage("linux.devices"):
            create_devices(root_fd, (spec.get("linux") or {}).get("devices") or [])
        _setup_dev(root_fd)
    finally:
        os.close(root_fd)
    _pivot_root(rootfs)
    if (spec.get("root") or {}).get("readonly"):
        with _Stage("remount / read-only"):
            _remount_readonly("/", 0)
    _swap_dev_null(vm_null_rdev)


def console_size(process: dict[str, Any]) -> tuple[int, int] | None:
    """``process.consoleSize`` as (rows, columns) truncated to uint16, as ResizeProcess does;
    None when absent or not two integers (the daemon validated it at create already)."""
    size = process.get("consoleSize")
    if not isinstance(size, dict):
        return None
    rows, cols = size.get("height"), size.get("width")
    if type(rows) is not int or type(cols) is not int:
        return None
    return rows & 0xFFFF, cols & 0xFFFF


def _winsize(rows: int, cols: int) -> bytes:
    """``struct winsize`` (four native unsigned shorts) without importing ``struct``."""
    order = sys.byteorder
    return rows.to_bytes(2, order) + cols.to_bytes(2, order) + bytes(4)


def _setup_terminal(console: bool, size: tuple[int, int] | None) -> None:
    """Open a PTY in the container, make its slave our stdio, hand the master to trinit.

    ``size`` (from ``consoleSize``) is set before the master is handed over, so the program
    sees it from its first byte and a resize trinit queued before start (applied on the
    master before ``AckConsole``) overrides it. vmexec ignores ``consoleSize``: 0x0.
    """
    with _Stage("open /dev/ptmx"):
        master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    with _Stage("unlock pty"):
        sc.unlockpt(master)
        slave_path = sc.ptsname(master)
    with _Stage(f"open {slave_path}"):
        slave = os.open(slave_path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        if slave > 2:
            os.close(slave)
    if size is not None:
        with _Stage("set the console size"):
            fcntl.ioctl(0, sc.TIOCSWINSZ, _winsize(*size))
    _write_int(master)
    _wait_ack(ACK_CONSOLE)
    with _Stage("set controlling terminal"):
        fcntl.ioctl(0, sc.TIOCSCTTY, 0)
    if console:
        with _Stage("bind /dev/console"):
            if not os.path.lexists("/dev/console"):
                flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
                os.close(os.open("/dev/console", flags, 0o600))
            sc.mount(slave_path, "/dev/console", None, sc.MS_BIND, None)
    os.close(master)


def _apply_sysctls(sysctls: dict[str, str]) -> None:
    for key, value in sysctls.items():
        with _Stage(f"sysctl {key}"):
            fd = os.open("/proc/sys/" + key.replace(".", "/"), os.O_WRONLY | os.O_CLOEXEC)
            try:
                data = value.encode()
                if os.write(fd, data) != len(data):
                    raise OSError(errno.EIO, "short write")
            finally:
                os.close(fd)


def _mask_paths(paths: list[str]) -> None:
    for path in paths:
        with _Stage(f"mask {path}"):
            try:
                mode = os.stat(path).st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(mode):
                flags = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
                sc.mount("tmpfs", path, "tmpfs", flags, None)
            else:
                sc.mount("/dev/null", path, None, sc.MS_BIND, None)


def _readonly_paths(paths: list[str]) -> None:
    for path in paths:
        with _Stage(f"readonly {path}"):
            if not os.path.exists(path):
                continue
            sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC, None)
            _remount_readonly(path, 0)


def _cloexec_above_stdio() -> None:
    try:
        sc.close_range(3, 0xFFFFFFFF, sc.CLOSE_RANGE_CLOEXEC)
        return
    except OSError:
        pass  # kernel < 5.11
    try:
        fds: list[int] = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


# --- common tail -----------------------------------------------------------------------------


def _set_rlimits(rlimits: list[dict[str, Any]]) -> None:
    def value(raw: int) -> int:
        return resource.RLIM_INFINITY if raw < 0 or raw >= 1 << 63 else raw

    for entry in rlimits:
        kind = entry.get("type", "")
        if kind not in RLIMITS:
            raise ChildError(f"setrlimit: unknown rlimit type {kind!r}")
        with _Stage(f"setrlimit {kind}"):
            resource.setrlimit(RLIMITS[kind], (value(entry["soft"]), value(entry["hard"])))


def cap_mask(names: list[str] | None) -> int:
    """A capability bit mask; names are case-insensitive, CAP_ optional, unknown ignored."""
    mask = 0
    for name in names or []:
        key = name.upper()
        if not key.startswith("CAP_"):
            key = "CAP_" + key
        index = CAP_INDEX.get(key)
        if index is not None:
            mask |= 1 << index
    return mask


def _probe_last_cap() -> int:
    """The kernel's highest capability: the last one ``PR_CAPBSET_READ`` does not refuse."""
    last = -1
    for cap in range(64):
        try:
            sc.prctl(sc.PR_CAPBSET_READ, cap)
        except OSError:
            break
        last = cap
    return last


_LAST_CAP = _probe_last_cap()
"""Probed once at import (a constant of the running kernel): the fork server does it for
every helper it forks, instead of ~40 prctl calls in each."""


def _last_cap() -> int:
    return _LAST_CAP


def _drop_bounding(bounding: int) -> None:
    effective = sc.capget()[0]
    if not effective & (1 << CAP_SETPCAP):
        return
    for cap in range(_last_cap() + 1):
        if bounding & (1 << cap):
            continue
        try:
            sc.prctl(sc.PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise


def _chown_stdio(uid: int) -> None:
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if st.st_uid == uid:
            continue
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3):
            continue  # /dev/null is shared with the VM: never chown it
        try:
            os.fchown(fd, uid, -1)
        except OSError as exc:
            # As runc: in a user namespace the pipe's owner (the VM's root) or its group
            # may be unmapped (EPERM, EINVAL); leave such stdio alone rather than fail.
            if exc.errno not in (errno.EPERM, errno.EINVAL, errno.EROFS):
                raise


def find_executable(arg0: str, cwd: str, env: list[str]) -> str:
    """Resolve ``arg0`` as docs/protocol.md §6.3 step 7 says; ChildError if not found."""
    if arg0.startswith("/"):
        if os.path.exists(arg0):
            return arg0
    elif "/" in arg0:
        candidate = os.path.normpath(os.path.join(cwd, arg0))
        if os.path.exists(candidate):
            return candidate
    else:
        search = next((item[5:] for item in env if item.startswith("PATH=")), None)
        if search is None:
            search = os.environ.get("PATH") or DEFAULT_SEARCH_PATH
        for directory in search.split(":"):
            candidate = os.path.join(directory or ".", arg0)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    raise ChildError(f"failed to find target executable {arg0}")


_GLIBC_INTERNAL_SIGNALS = (32, 33)


def _restore_signals() -> None:
    """Default dispositions for every signal (including glibc's 32 and 33), empty mask.

    Only what is not at its default is reset (one raw call each, instead of ~60). Python's
    own table (``signal.getsignal``) knows every other disposition here: this process
    descends from a spawn that set them all to default (``trinit.exec._launch``), and only
    Python has changed any since (SIGPIPE, SIGXFSZ, SIGINT). glibc's 32 and 33 are
    invisible to it and may come ignored from the spawn (``sc.reset_signal``): always reset.
    """
    for signum in range(1, 65):
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        if signum not in _GLIBC_INTERNAL_SIGNALS:
            try:
                if signal.getsignal(signum) == signal.SIG_DFL:
                    continue
            except ValueError:
                pass  # not one Python knows: reset it
        try:
            sc.reset_signal(signum)
        except OSError:
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _env_mapping(env: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        if key:
            mapping[key] = value
    return mapping


def _set_umask(user: dict[str, Any]) -> None:
    """``process.user.umask``, else 0022 (runc's default; vminitd ignores the field, and its
    processes inherit PID 1's 0022), so a workload never inherits the agent's own umask."""
    value = user.get("umask")
    value = 0o022 if value is None else value
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ChildError(f"umask: {value!r} is not a non-negative integer")
    os.umask(value & 0o777)


def _load_seccomp(spec: dict[str, Any]) -> Any:
    """Compile ``linux.seccomp`` (None without one) while the package is still reachable."""
    seccomp = (spec.get("linux") or {}).get("seccomp")
    if seccomp is None:
        return None
    from trinit.exec import _seccomp  # before pivot_root: only specs with seccomp pay for it

    with _Stage("compile seccomp profile"):
        return _seccomp.compile_filter(seccomp)


def _install_seccomp(seccomp: Any) -> None:
    with _Stage("install seccomp filter"):
        sc.seccomp_set_mode_filter(seccomp.program, seccomp.flags)


def _common_tail(process: dict[str, Any], seccomp: Any = None) -> NoReturn:
    _set_umask(process.get("user") or {})
    _set_rlimits(process.get("rlimits") or [])
    if seccomp is not None and not process.get("noNewPrivileges"):
        _install_seccomp(seccomp)  # needs CAP_SYS_ADMIN without no_new_privs, as in runc
    caps = process.get("capabilities") or {}
    with _Stage("drop bounding capabilities"):
        _drop_bounding(cap_mask(caps.get("bounding")))
    with _Stage("set keepcaps"):
        sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    user = process.get("user") or {}
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    with _Stage("chown stdio"):
        _chown_stdio(uid)
    gids = [int(g) for g in user.get("additionalGids") or []]
    if gids:
        with _Stage("setgroups"):
            os.setgroups(gids)
    with _Stage(f"setgid {gid}"):
        os.setgid(gid)
    with _Stage(f"setuid {uid}"):
        os.setuid(uid)
    with _Stage("clear keepcaps"):
        sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    with _Stage("capset"):
        sc.capset(
            cap_mask(caps.get("effective")),
            cap_mask(caps.get("permitted")),
            cap_mask(caps.get("inheritable")),
        )
    with _Stage("clear ambient capabilities"):
        sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    ambient = cap_mask(caps.get("ambient"))
    for cap in range(len(CAPABILITIES)):
        if ambient & (1 << cap):
            try:
                sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, cap)
            except OSError:
                pass
    if process.get("noNewPrivileges"):
        with _Stage("set no_new_privs"):
            sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)

    args = [str(arg) for arg in process.get("args") or []]
    if not args:
        raise ChildError("process args cannot be empty")
    env = [str(item) for item in process.get("env") or []]
    cwd = process.get("cwd") or "/"
    executable = find_executable(args[0], cwd, env)
    with _Stage(f"create cwd {cwd}"):
        os.makedirs(cwd, 0o755, exist_ok=True)
    with _Stage(f"chdir {cwd}"):
        os.chdir(cwd)
    _restore_signals()
    if seccomp is not None and process.get("noNewPrivileges"):
        _install_seccomp(seccomp)  # as late as possible: fewest calls the profile must allow
    if selfexec.is_entry_point(executable, ENTRY_POINT[0]):  # trinit's own: no Python there
        if selfexec.mode_of(args) is None:
            raise ChildError(f"failed to exec {args}: only init and pause run in a container")
        selfexec.run(args, _env_mapping(env))
    try:
        os.execve(executable, args, _env_mapping(env))
    except OSError as exc:
        raise ChildError(f"failed to exec {args}: {exc}") from None


# --- commands --------------------------------------------------------------------------------


def _run_container_init(
    spec: dict[str, Any],
    bundle: str,
    new_cgroup_ns: bool,
    trees: dict[int, int],
    acked: bool = False,
) -> NoReturn:
    if not acked:
        _wait_ack(ACK_PID)
    if new_cgroup_ns:
        with _Stage("unshare cgroup namespace"):
            sc.unshare(sc.CLONE_NEWCGROUP)
    with _Stage("setsid"):
        os.setsid()
    seccomp = _load_seccomp(spec)
    rootfs = os.path.join(bundle, spec["root"]["path"])  # an absolute path wins
    _setup_root(spec, os.path.abspath(rootfs), trees)
    process = spec.get("process") or {}
    if process.get("terminal"):
        _setup_terminal(console=True, size=console_size(process))
    hostname = spec.get("hostname")
    if hostname:
        with _Stage("sethostname"):
            sc.sethostname(hostname)
    domainname = spec.get("domainname")
    if domainname:
        with _Stage("setdomainname"):
            sc.setdomainname(domainname)
    linux = spec.get("linux") or {}
    _apply_sysctls(linux.get("sysctl") or {})
    _mask_paths(linux.get("maskedPaths") or [])
    _readonly_paths(linux.get("readonlyPaths") or [])
    _cloexec_above_stdio()
    _common_tail(process, seccomp)


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _load_bundle(bundle: str) -> dict[str, Any]:
    spec = _load_json(os.path.join(bundle, "config.json"), "OCI bundle")
    if not isinstance(spec.get("root"), dict) or not isinstance(spec.get("process"), dict):
        raise ChildError(f"failed to load OCI bundle at {bundle}: missing process or root")
    return spec


def command_run(bundle: str, cgroup_root: str) -> int:
    spec = _load_bundle(bundle)
    _set_oom_score_adj(spec["process"])
    with _Stage("idmapped mounts"):
        trees = _idmap.detach_all(spec.get("mounts") or [])
    cgroup = _open_cgroup(spec, cgroup_root)
    new_cgroup_ns, entered = _enter_namespaces(spec)
    with _Stage("fork"):
        pid, placed = fork_into(cgroup, entered)
    if pid == 0:
        _guarded(lambda: _run_container_init(spec, bundle, new_cgroup_ns, trees))
    try:
        if not placed:
            _apply_cgroup(pid, cgroup)
        _write_int(pid)
    except BaseException:
        _kill_quietly(pid)  # it waits for AckPid and holds the pipes: never leave it
        raise
    finally:
        if cgroup is not None:
            cgroup.close()
    return 0


def _exec_process(process: dict[str, Any], seccomp: Any, cgroup_ns_of: int | None) -> NoReturn:
    if cgroup_ns_of is not None:  # left out of the parent's setns: see command_exec
        with _Stage("join the cgroup namespace"):
            sc.setns(cgroup_ns_of, sc.CLONE_NEWCGROUP)
    _wait_ack(ACK_PID)
    with _Stage("setsid"):
        os.setsid()
    if process.get("terminal"):
        _setup_terminal(console=False, size=console_size(process))
    _cloexec_above_stdio()
    _common_tail(process, seccomp)


def command_exec(
    process: dict[str, Any],
    parent_pid: int,
    bundle: str | None = None,
    hierarchy: tuple[str, str] | None = None,
) -> int:
    """Start an exec (``process``, the OCI process) in the namespaces of ``parent_pid`` (the
    container's init).

    ``hierarchy``: (mount point, its root within the hierarchy) of the cgroup2 mount the
    agent manages containers on (``--cgroup-hierarchy``, ``--cgroup-hierarchy-root``). The
    exec goes to the init's *current* cgroup (the init may have moved into a cgroup of its
    own making), read from ``/proc/<init>/cgroup`` after the pidfd is open: the ``setns``
    through that pidfd fails if the init died, so the cgroup read was the init's. When it
    is cgroup2 and no user namespace is joined, the exec is born there (:func:`fork_into`):
    that spares the ~10 ms wait of a ``cgroup.procs`` write. The helper then joins the
    init's cgroup namespace only in the child, after the fork: inside that namespace (with
    ``nsdelegate``) the kernel would refuse a child born outside the helper's own cgroup.
    Otherwise the helper moves the child there through the ``cgroup.procs`` it opened as the
    VM's root, before it reports the pid, as ``run`` does: the agent has nothing to look up,
    check or move.
    """
    # an exec gets its container's filter (config.json), as in runc
    config = _load_json(os.path.join(bundle, "config.json"), "OCI bundle") if bundle else {}
    seccomp = _load_seccomp(config)
    _set_oom_score_adj(process)
    with _Stage(f"pidfd_open {parent_pid}"):
        pidfd = sc.pidfd_open(parent_pid)
    cgroup = None
    try:
        if hierarchy is not None:
            cgroup = _open_init_cgroup(parent_pid, hierarchy)
        user = _userns.exec_flag(parent_pid)
        born_in_cgroup = cgroup is not None and cgroup.cgroup2 and not user
        flags = EXEC_NAMESPACES | user
        if born_in_cgroup:
            flags &= ~sc.CLONE_NEWCGROUP
        with _Stage(f"join the namespaces of {parent_pid}"):
            sc.setns(pidfd, flags)
        with _Stage("fork"):
            pid, placed = fork_into(cgroup if born_in_cgroup else None)
        if pid == 0:
            ns_of = pidfd if born_in_cgroup else None
            _guarded(lambda: _exec_process(process, seccomp, ns_of))
        try:
            if not placed:
                _apply_cgroup(pid, cgroup)  # it waits for AckPid: nothing ran outside yet
            _write_int(pid)
        except BaseException:
            _kill_quietly(pid)
            raise
    finally:
        os.close(pidfd)
        if cgroup is not None:
            cgroup.close()
    return 0


def _open_init_cgroup(init_pid: int, hierarchy: tuple[str, str]) -> CgroupTarget | None:
    """The init's current cgroup, or None when it has none on this hierarchy (no cgroup v2
    line, or one outside our cgroup namespace): the exec then stays where it is born, as
    the init's is not a cgroup trinit manages."""
    try:
        with open(f"/proc/{init_pid}/cgroup", "rb") as file:
            text = file.read(1 << 16).decode("utf-8", "surrogateescape")
    except OSError:
        return None  # gone: the setns through its pidfd reports that
    try:
        directory = directory_of(text, *hierarchy)
    except ValueError:
        return None
    return _open_cgroup_directory(directory)


# --- entry -----------------------------------------------------------------------------------


def _parse_args(argv: list[str]) -> tuple[str, dict[str, str]]:
    if not argv or argv[0] not in ("run", "exec"):
        raise ChildError(
            "usage: run --bundle-path DIR | exec --process-path F|--process-json J --parent-pid P"
        )
    command, options = argv[0], {}
    rest = argv[1:]
    if len(rest) % 2:
        raise ChildError(f"{command}: options need a value")
    for name, value in zip(rest[::2], rest[1::2], strict=True):
        if not name.startswith("--"):
            raise ChildError(f"{command}: unexpected argument {name!r}")
        options[name[2:]] = value
    required = ("bundle-path",) if command == "run" else ("parent-pid",)
    for name in required:
        if name not in options:
            raise ChildError(f"{command}: --{name} is required")
    if command == "exec" and ("process-path" in options) == ("process-json" in options):
        raise ChildError("exec: one of --process-path and --process-json is required")
    return command, options


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ChildError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _guarded(body: Any) -> NoReturn:
    """Run ``body`` in a forked child: never return into the parent's code path."""
    try:
        body()
    except BaseException as exc:
        _report(_describe(exc))
        os._exit(1)
    os._exit(1)  # body always execs or raises


ENTRY_POINT: list[selfexec.Identity | None] = [None]
"""The identity of trinit's entry point file (``--entry-point``), stat'ed in the VM's mount
namespace before entering the container's; see ``trinit.exec._selfexec``."""


def main(argv: list[str]) -> int:
    """Run one helper command; on failure report on fd 5 and return 1."""
    try:
        command, options = _parse_args(argv)
        ENTRY_POINT[0] = selfexec.identity(options.pop("entry-point", ""))
        if command == "run":
            return command_run(options["bundle-path"], options.get("cgroup-root", "/sys/fs/cgroup"))
        try:
            parent_pid = int(options["parent-pid"])
        except ValueError:
            raise ChildError("exec: --parent-pid must be an integer") from None
        if "process-path" in options:
            process = _load_json(options["process-path"], "process")
        else:
            process = _inline_json(options["process-json"], "process")
        hierarchy = None
        if "cgroup-hierarchy" in options:
            hierarchy = (options["cgroup-hierarchy"], options.get("cgroup-hierarchy-root", "/"))
        return command_exec(process, parent_pid, options.get("bundle-path"), hierarchy)
    except BaseException as exc:
        _report(_describe(exc))
        return 1


def entry() -> NoReturn:
    """Process entry point: exit with :func:`main`'s status without interpreter teardown."""
    os._exit(main(sys.argv[1:]))


# --- the fork server's direct init ---------------------------------------------------------


class DirectInit:
    """A ``run`` the fork server serves by forking the container's init itself: straight
    into a new PID namespace (of which it is pid 1) and into its cgroup, as trinit's child.

    Why: a helper forked for ``run`` would only make the namespaces and fork the init, then
    exit; the init would fault in again every page the helper had copied, and trinit would
    reap two processes. Born directly, the init does what the helper did in between (the
    other namespaces, its oom_score_adj) itself, and the server reports its pid.

    Only where that changes nothing the container can see: the spec makes a new PID
    namespace (not one joined by path) and no user namespace (a PID namespace must be made
    after the user namespace that is to own it), has no idmapped mount (that set-up forks
    a process and names it by a pid of trinit's PID namespace), and its cgroup, if any, is
    cgroup2. Any other spec, or one that fails to load, goes to a helper as before, which
    reports the failure. The new PID namespace is empty until the init runs: nothing else
    can see the init while it still holds the server's fds, which it closes first.
    """

    __slots__ = ("bundle", "cgroup", "entry_point", "spec")

    def __init__(
        self, spec: dict[str, Any], bundle: str, cgroup: CgroupTarget | None, entry_point: str
    ) -> None:
        self.spec = spec
        self.bundle = bundle
        self.cgroup = cgroup
        self.entry_point = entry_point

    @classmethod
    def plan(cls, argv_tail: list[str]) -> DirectInit | None:
        """The plan for this request, or None when a helper must serve it."""
        try:
            command, options = _parse_args(argv_tail)
            if command != "run":
                return None
            bundle = options["bundle-path"]
            spec = _load_bundle(bundle)
        except ChildError:
            return None
        linux = spec.get("linux")
        if not isinstance(linux, dict):
            return None
        paths: dict[str, str] = {}
        for entry in linux.get("namespaces") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
                return None
            paths[entry["type"]] = entry.get("path") or ""
        if paths.get("pid", "path") or "user" in paths:
            return None
        mounts = spec.get("mounts") or []
        if not isinstance(mounts, list) or any(
            not isinstance(entry, dict) or _idmap.is_idmapped(entry) for entry in mounts
        ):
            return None  # idmapping forks a process and finds it in /proc by its pid
        try:
            cgroup = _open_cgroup(spec, options.get("cgroup-root", "/sys/fs/cgroup"))
        except ChildError:
            return None
        if cgroup is not None and not cgroup.cgroup2:
            cgroup.close()
            return None
        return cls(spec, bundle, cgroup, options.get("entry-point", ""))

    def fork(self, own_pid_ns: int) -> tuple[int, bool]:
        """Fork the init: ``(pid, 0 in the init or -1 if not forked; whether this process's
        children are in its own PID namespace again)``. The caller must stop forking if the
        second is False."""
        try:
            sc.unshare(sc.CLONE_NEWPID)  # for our next child only
        except OSError:
            return -1, True
        try:
            pid = sc.fork_sibling(None if self.cgroup is None else self.cgroup.directory_fd)
        except OSError:
            pid = -1  # that namespace is spoilt (its pid 1 failed): it is dropped below
        if pid == 0:
            return 0, True  # the init: never touch the namespace of its own children
        try:
            sc.setns(own_pid_ns, sc.CLONE_NEWPID)
        except OSError:
            return pid, False
        return pid, True

    def close(self) -> None:
        if self.cgroup is not None:
            self.cgroup.close()

    def run(self) -> NoReturn:
        """In the init: what the helper would have done after forking it, then the rest."""
        _wait_ack(ACK_PID)  # first: trinit knows the pid, so failures from here are reported
        spec = self.spec
        _set_oom_score_adj(spec["process"])
        with _Stage("idmapped mounts"):
            trees = _idmap.detach_all(spec.get("mounts") or [])
        new_cgroup_ns, _ = _enter_namespaces(spec, made=sc.CLONE_NEWPID)
        _run_container_init(spec, self.bundle, new_cgroup_ns, trees, acked=True)


def _become_direct_init(control: Any, plan: DirectInit, fds: list[int]) -> NoReturn:
    """In the init the fork server forked: take the launch's fds and start the container."""
    control.detach()  # fd 3 is about to become the sync pipe
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _adopt_fds(fds)  # also closes the server's other fds (its PID namespace, the cgroup)
    except OSError:
        os._exit(1)
    try:
        ENTRY_POINT[0] = selfexec.identity(plan.entry_point)
        plan.run()
    except BaseException as exc:
        _report(_describe(exc))
    os._exit(1)


def _serve_direct_init(control: Any, plan: DirectInit, own_pid_ns: int, fds: list[int]) -> bool:
    """Serve a request with :class:`DirectInit` (in the fork server). False if it could not
    fork (the caller forks a helper instead). Exits the server once this request is
    answered if its own PID namespace could not be restored."""
    try:
        pid, restored = plan.fork(own_pid_ns)
        if pid == 0:
            _become_direct_init(control, plan, fds)
    finally:
        plan.close()  # (the init never gets here: it execs or exits)
    if pid < 0:
        if restored:
            return False
        _close_all(fds)
        _answer(control, ZYGOTE_REFUSED)
        os._exit(0)
    try:  # as a helper would report it; the server knows it, the init does not
        os.write(fds[SYNC_FD], pid.to_bytes(4, sys.byteorder, signed=True))
    except OSError:
        pass  # trinit gave up on this launch: the init reads EOF for its ack and exits
    _close_all(fds)
    _answer(control, pid.to_bytes(4, sys.byteorder, signed=True))
    if not restored:
        os._exit(0)  # a later child would be born in that namespace: trinit starts another
    return True


def _answer(control: Any, data: bytes) -> None:
    try:
        control.send(data)
    except OSError:
        os._exit(0)


ZYGOTE_CONTROL_FD = 3
ZYGOTE_MAX_REQUEST = 1 << 20
ZYGOTE_FD_COUNT = 6  # stdio 0..2, sync, ack, error
ZYGOTE_REFUSED = b"\x00"  # this request was not served; the fork server goes on
ZYGOTE_READY = b"\x02"
# An accepted request is answered with the helper's pid: 4 bytes, native int32.


def decode_request(data: bytes) -> tuple[list[str], dict[str, str]]:
    """``argc, argv..., KEY=VALUE...`` (NUL-separated) -> (argv_tail, environment)."""
    fields = [os.fsdecode(field) for field in data.split(b"\0")]
    argc = int(fields[0])
    if argc < 1 or len(fields) < 1 + argc:
        raise ValueError("request shorter than its argc")
    environment: dict[str, str] = {}
    for item in fields[1 + argc :]:
        key, sep, value = item.partition("=")
        if not key or not sep:
            raise ValueError(f"bad environment entry {item!r}")
        environment[key] = value
    return fields[1 : 1 + argc], environment


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _receive_request(control: Any) -> tuple[list[str], dict[str, str], list[int]] | None:
    """Block for the next request on the control socket.

    None: EOF or a broken socket (trinit closed its end or died): the server exits. A
    malformed request is answered with :data:`ZYGOTE_REFUSED` here and skipped (its fds
    closed), so the launcher spawns a fresh helper and the server stays usable.
    """
    import _socket  # imported by zygote_entry before anything else: no cost here

    while True:
        fds: list[int] = []
        try:
            data, ancillary, flags, _ = control.recvmsg(
                ZYGOTE_MAX_REQUEST,
                _socket.CMSG_SPACE(4 * ZYGOTE_FD_COUNT),
                _socket.MSG_CMSG_CLOEXEC,
            )
        except InterruptedError:
            continue
        except OSError:
            return None
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                fds += [
                    int.from_bytes(payload[i : i + 4], sys.byteorder, signed=True)
                    for i in range(0, usable, 4)
                ]
        if not data and not fds:
            return None  # EOF
        truncated = flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC)
        try:
            if truncated or len(fds) != ZYGOTE_FD_COUNT:
                raise ValueError("truncated request")
            argv_tail, environment = decode_request(data)
        except ValueError:
            _close_all(fds)
            try:
                control.send(ZYGOTE_REFUSED)
            except OSError:
                return None
            continue
        return argv_tail, environment, fds


def _adopt_fds(fds: list[int]) -> None:
    """Make ``fds`` our 0..5 (inheritable, like posix_spawn's dup2) and close every other fd."""
    first_free = ZYGOTE_FD_COUNT
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, first_free) for fd in fds]
    for target, fd in enumerate(high):
        os.dup2(fd, target)  # also closes the control socket on fd 3
    try:
        sc.close_range(first_free, 0xFFFFFFFF, 0)
    except OSError:  # kernel < 5.9
        os.closerange(first_free, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def _take_environment(environment: dict[str, str]) -> None:
    """Make ``os.environ`` (and the C environment under it) equal ``environment``, changing
    only what differs (each change is a ``putenv`` or ``unsetenv``)."""
    for key in [key for key in os.environ if key not in environment]:
        del os.environ[key]
    for key, value in environment.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _become_helper(control: Any, argv_tail: list[str], fds: list[int]) -> NoReturn:
    """In the forked helper: take this launch's fds and run it like a fresh helper."""
    control.detach()  # fd 3 is about to become the sync pipe: never close it through this
    # ignored while serving (see ZYGOTE_BOOTSTRAP); from here on like a freshly spawned helper
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _adopt_fds(fds)
    except OSError:
        os._exit(1)  # unreachable in practice; the launcher sees EOF on the sync pipe
    sys.argv[1:] = argv_tail
    os._exit(main(argv_tail))


def _serve_in_fork(control: Any, argv_tail: list[str], fds: list[int]) -> NoReturn:
    """In the intermediate child (kernels without ``clone3``): fork the helper, answer its
    pid, exit.

    Exiting right away orphans the helper, so the kernel re-parents it to trinit (PID 1 or
    a child subreaper): trinit's reaper then sees it exactly as it sees a freshly spawned
    helper, and the fork server never has a long-lived child of its own.
    """
    try:
        helper = os.fork()
    except OSError:
        try:
            control.send(ZYGOTE_REFUSED)
        finally:
            os._exit(0)
    if helper == 0:
        _become_helper(control, argv_tail, fds)
    try:
        control.send(helper.to_bytes(4, sys.byteorder, signed=True))
    finally:
        os._exit(0)


def zygote_entry() -> NoReturn:
    """Fork-server entry point: import once, then fork one helper per request on fd 3.

    Each helper is this process's sibling (:func:`trinit._linux.fork_sibling`), so trinit
    is its parent and reaper; this process waits for nothing (only on kernels without
    ``clone3``, for the intermediate child of :func:`_serve_in_fork`).

    Every helper is forked from this process, so the pages the imports filled stay shared
    (copy-on-write) between it and every helper and container init forked from it; a
    helper's unique memory is only what it writes. ``gc.freeze()`` keeps the collector of a
    forked process from writing to (and so copying) every imported object.

    Exits 0 on EOF (the pool closed or trinit died). A request that cannot be served is
    answered with :data:`ZYGOTE_REFUSED` and the server goes on; the launcher spawns a
    fresh helper for it.
    """
    import _json  # noqa: F401  (decode_json's scanner: loaded once here, not per helper)
    import _socket
    import gc

    control = _socket.socket(fileno=ZYGOTE_CONTROL_FD)
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    current_environment = dict(os.environ)
    gc.collect()
    gc.freeze()
    try:
        control.send(ZYGOTE_READY)
    except OSError:
        os._exit(0)
    while True:
        request = _receive_request(control)
        if request is None:
            os._exit(0)
        argv_tail, environment, fds = request
        if environment != current_environment:
            # here, not in each child: the children inherit it, and it rarely changes
            # (Setenv), while a forked child writing ~35 variables took ~0.5 ms
            _take_environment(environment)
            current_environment = environment
        plan = DirectInit.plan(argv_tail)
        if plan is not None and _serve_direct_init(control, plan, own_pid_ns, fds):
            continue
        try:
            helper = sc.fork_sibling()
        except OSError:
            helper = -1  # (a kernel before 5.3): the double fork below
        if helper == 0:
            _become_helper(control, argv_tail, fds)
        if helper > 0:
            _close_all(fds)
            _answer(control, helper.to_bytes(4, sys.byteorder, signed=True))
            continue
        try:
            middle = os.fork()
        except OSError:
            middle = -1
        if middle == 0:
            _serve_in_fork(control, argv_tail, fds)
        _close_all(fds)
        if middle < 0:
            _answer(control, ZYGOTE_REFUSED)
            continue
        # Our own child, gone as soon as it has answered: the only waitpid in this process.
        while True:
            try:
                os.waitpid(middle, 0)
            except InterruptedError:
                continue
            except ChildProcessError:
                pass
            break


if __name__ == "__main__":
    entry()
