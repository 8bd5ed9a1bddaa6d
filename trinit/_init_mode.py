"""``trinit init``: a tiny init for one container process (vminitd's ``/.cz-init``).

Theory of operation (docs/protocol.md §8.3), a checklist in the manner of tini's ``main``:

1. parse ``[-p|--process-group] [--] CMD ARGS...``;
2. become a child subreaper unless already PID 1, so orphans re-parent to us;
3. block every signal: from here on signals are only *received* with ``sigtimedwait``,
   never delivered to handlers (this also makes a PID-namespace init receive signals that
   the kernel would drop for an init with default dispositions);
4. resolve CMD on PATH (falling back to the literal string) and fork + exec it in a new
   process group, with default dispositions and an empty signal mask;
5. make that group the foreground group of the terminal on fd 0 (ENOTTY/ENXIO ignored;
   SIGTTOU is blocked, so this also works from a background group);
6. loop: wait up to 100 ms for a signal; forward it (to ``-pgid`` with ``-p``) unless it is
   SIGCHLD or a synchronous fault signal; reap every exited child with ``WNOHANG``; when the
   direct child is gone, exit with its code, or 128 + the signal that killed it.

The race tini avoids by calling ``tcsetpgrp`` in the forked child: our child runs no
terminal code before exec, so it may touch the terminal before step 5 and stop with
SIGTTIN/SIGTTOU (bash does this on purpose until it is in the foreground). Step 6 therefore
also asks for stop reports of the direct child and continues it with SIGCONT when it was
stopped by SIGTTIN/SIGTTOU while its group owns the terminal.

This runs inside containers, where start-up time matters: stdlib only, and nothing heavier
than ``os``, ``_signal`` and ``sys`` unless subreaping or a raw signal reset needs
``trinit._linux`` (ctypes). It also runs *in-process* in the exec helper when a container's
process is trinit's own entry point (``trinit.exec._selfexec``): the helper imports this
module before pivot_root, so at import time it must stay as cheap as the helper's own
imports (``_signal``, not ``signal`` with its enums; ``typing`` only for the type checker).
"""

from __future__ import annotations

import errno
import os
import sys

TYPE_CHECKING = False  # typing and signal (enum) cost ~15 ms of imports in the exec helper
if TYPE_CHECKING:
    import signal
    from typing import NoReturn
else:
    import _signal as signal

_USAGE = "usage: trinit init [-p|--process-group] [--] COMMAND [ARG...]"

# Not forwarded: SIGCHLD is ours; the others are synchronous faults meant for this process.
NOT_FORWARDED = frozenset(
    {
        signal.SIGCHLD,
        signal.SIGFPE,
        signal.SIGILL,
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGABRT,
        signal.SIGTRAP,
        signal.SIGSYS,
    }
)
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_WAIT_TIMEOUT = 0.1


def main(argv: list[str]) -> NoReturn:
    """Run ``trinit init`` with ``argv`` (the arguments after ``init``); never returns.

    Exits with the child's exit code or 128 + signal; 2 on a usage error; 127 if the
    command does not exist, 126 if it cannot be executed.
    """
    process_group, command = _parse_args(argv)
    if os.getpid() != 1:
        _become_subreaper()
    all_signals: set[int] = set(signal.valid_signals())
    signal.pthread_sigmask(signal.SIG_BLOCK, all_signals)
    child = _spawn(command)
    _make_foreground(child)
    sys.exit(_supervise(child, process_group, all_signals))


def _parse_args(argv: list[str]) -> tuple[bool, list[str]]:
    process_group = False
    for index, arg in enumerate(argv):
        if arg == "--":
            command = argv[index + 1 :]
            break
        if arg in ("-p", "--process-group"):
            process_group = True
        elif arg in ("-h", "--help"):
            print(_USAGE)
            sys.exit(0)
        elif arg.startswith("-"):
            _fail(f"unknown option {arg!r}\n{_USAGE}", 2)
        else:
            command = argv[index:]
            break
    else:
        command = []
    if not command:
        _fail(f"missing command\n{_USAGE}", 2)
    return process_group, command


def _become_subreaper() -> None:
    from trinit._linux import set_child_subreaper  # only needed off PID 1

    try:
        set_child_subreaper()
    except OSError as exc:
        _warn(f"cannot become a child subreaper: {exc.strerror}")


def resolve(name: str) -> str:
    """``name`` found on PATH (executable regular file), else ``name`` itself."""
    if "/" in name:
        return name
    for directory in os.environ.get("PATH", _DEFAULT_PATH).split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return name


def _spawn(command: list[str]) -> int:
    """fork + exec the command in a new process group, dispositions default, mask empty.

    Not ``posix_spawn``: glibc's leaves its internal signals 32 and 33 *ignored* in the
    child, and an ignored disposition survives execve into the workload. The forked child
    runs only the few lines below (this process is single-threaded), then execs.
    """
    path = resolve(command[0])
    pid = os.fork()
    if pid != 0:
        return pid
    try:  # the child: never returns
        os.setpgid(0, 0)
        for signum in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
            try:
                signal.signal(signum, signal.SIG_DFL)
            except (OSError, ValueError):
                _reset_raw(signum)  # glibc refuses its internal signals
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        os.execve(path, command, os.environ)
    except OSError as exc:
        code = 127 if exc.errno == errno.ENOENT else 126
        os.write(2, f"init: cannot run {command[0]!r}: {exc.strerror}\n".encode())
        os._exit(code)
    os._exit(126)


def _reset_raw(signum: int) -> None:
    """SIG_DFL through the raw rt_sigaction syscall; best effort, as the exec that follows
    matters more than one disposition (an unknown architecture or a refusal is ignored)."""
    from trinit._linux import reset_signal

    try:
        reset_signal(signum)
    except OSError:
        pass


def _make_foreground(child: int) -> None:
    try:
        os.tcsetpgrp(0, child)
    except OSError as exc:
        if exc.errno not in (errno.ENOTTY, errno.ENXIO, errno.EBADF):
            _warn(f"cannot make the child the terminal's foreground group: {exc.strerror}")


def _supervise(child: int, process_group: bool, all_signals: set[int]) -> int:
    target = -child if process_group else child
    while True:
        info = signal.sigtimedwait(all_signals, _WAIT_TIMEOUT)
        if info is not None and info.si_signo not in NOT_FORWARDED:
            try:
                os.kill(target, info.si_signo)
            except ProcessLookupError:
                pass
        code = _reap_all(child)
        if code is not None:
            return code


def _reap_all(child: int) -> int | None:
    """waitpid(-1, WNOHANG) until nothing is left; the direct child's exit code if it ended."""
    code = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG | os.WUNTRACED)
        except ChildProcessError:
            return code
        if pid == 0:
            return code
        if pid != child:
            continue
        if os.WIFSTOPPED(status):
            _continue_if_foreground(child, os.WSTOPSIG(status))
        else:
            code = exit_code(status)


def _continue_if_foreground(child: int, stop_signal: int) -> None:
    if stop_signal not in (signal.SIGTTIN, signal.SIGTTOU):
        return
    try:
        if os.tcgetpgrp(0) == child:
            os.killpg(child, signal.SIGCONT)
    except OSError:
        pass


def exit_code(status: int) -> int:
    """docs/protocol.md §5.6: the exit status, 128 + signal when signalled, else the raw one."""
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return status


def _warn(message: str) -> None:
    print(f"trinit init: {message}", file=sys.stderr, flush=True)


def _fail(message: str, code: int) -> NoReturn:
    _warn(message)
    sys.exit(code)
