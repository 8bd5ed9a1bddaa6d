"""Command line: ``trinit agent|init|pause|initfs`` and the container commands
``run|exec|ps|stats|kill|rm`` (trinit.cli) (also ``python -m trinit``).

``trinit agent [--transport vsock|unix:DIR] [--port N] [--host-cid N] [--allow-local-vsock]
[--log-level L]`` is the default. Invoked through a file named ``.cz-init`` it runs init mode
directly (docs/protocol.md §8.1).

Developer switch: ``TRINIT_PROFILE=FILE`` runs the agent under cProfile and writes FILE when
it stops (``bench/rpc.py --profile``); see :func:`_run_agent`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, NoReturn

from trinit import API_PACKAGE, __version__

if TYPE_CHECKING:
    from trinit._agent import AgentConfig

VMADDR_PORT_ANY = 0xFFFFFFFF
"""vsock's wildcard port: not a port an agent can listen on (nor can a unix agent, which
mirrors vsock port numbers in its socket names)."""

LOG_LEVELS = ("trace", "debug", "info", "notice", "warning", "error", "critical")


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (``trinit agent: error: ... (see trinit agent -h)``),
    status 2: a usage dump buries the one thing that is wrong."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


#: the container commands of trinit.cli (docs/cli.md), named here so that the agent's own
#: start does not import them
_CLI_COMMANDS = {
    "run": "run a command in a new container (trinit run -h)",
    "exec": "run a command in a running container",
    "ps": "list an agent's containers",
    "stats": "show containers' resource usage",
    "kill": "signal a container",
    "rm": "delete containers",
}


def _transport(value: str) -> str:
    if value == "vsock" or (value.startswith("unix:") and len(value) > 5):
        return value
    raise argparse.ArgumentTypeError(f"unknown transport {value!r}: use vsock or unix:DIR")


def _port(value: str) -> int:
    try:
        port = int(value, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port < VMADDR_PORT_ANY:
        raise argparse.ArgumentTypeError(f"{port} is out of range (0 to {VMADDR_PORT_ANY - 1})")
    return port


def _agent_parser(sub: argparse._SubParsersAction[_OneLineParser]) -> None:
    agent = sub.add_parser("agent", help="serve the SandboxContext API (default)")
    agent.add_argument(
        "--transport", default="vsock", type=_transport, help="vsock (default) or unix:DIR"
    )
    agent.add_argument("--port", type=_port, default=1024, help="API port (default 1024)")
    agent.add_argument("--host-cid", type=int, default=2, help="host CID to dial (default 2)")
    agent.add_argument(
        "--allow-local-vsock",
        action="store_true",
        help="also accept vsock connections from inside the guest (CID 1 or its own CID); "
        "for tests that drive the agent from the guest only: containers could reach the API",
    )
    agent.add_argument(
        "--log-level",
        default="info",
        type=str.lower,
        choices=LOG_LEVELS,
        metavar="LEVEL",
        help="trace|debug|info|notice|warning|error|critical (default info)",
    )
    agent.add_argument(
        "--cgroup-root",
        default="/sys/fs/cgroup",
        help="cgroup2 hierarchy for container cgroups (default /sys/fs/cgroup)",
    )
    agent.add_argument(
        "--stop-grace",
        type=float,
        default=2.0,
        help="on shutdown, seconds between SIGTERM and SIGKILL for running processes",
    )
    agent.add_argument(
        "--dial-retry",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="keep retrying a host port that is not accepting connections yet (default 2)",
    )
    agent.add_argument(
        "--entry-point",
        default="/sbin/vminitd",
        metavar="PATH",
        help="trinit's entry point as the host binds it into containers (/.cz-init, pause): "
        "a container program that is this file runs init/pause mode without Python in the "
        "container (default /sbin/vminitd)",
    )
    agent.add_argument(
        "--drain-grace",
        type=float,
        default=2.0,
        help="seconds to keep draining stdio held open by descendants after exit",
    )


#: inode of the initial PID namespace (PROC_PID_INIT_INO); fixed by the kernel
_INIT_PID_NS_INO = 0xEFFFFFFC


def is_vm_init() -> bool:
    """True when trinit is the VM's (the kernel's) PID 1, not PID 1 of a child PID namespace
    (as under ``unshare`` in tests): only then does it run the boot sequence.
    ``TRINIT_BOOT=1|0`` overrides."""
    forced = os.environ.get("TRINIT_BOOT")
    if forced is not None:
        return forced == "1"
    if os.getpid() != 1:
        return False
    try:
        return os.stat("/proc/self/ns/pid").st_ino == _INIT_PID_NS_INO
    except OSError:
        return True  # /proc not mounted yet: early boot of a real init


def _run_agent(config: AgentConfig) -> None:
    """``trio.run(run_agent, config)``; with ``TRINIT_PROFILE=FILE`` in the environment, under
    cProfile, written to FILE when the agent stops.

    A developer switch for ``bench/rpc.py --profile``: profiling the real agent started the
    way a host starts it (fresh namespaces, its own process) shows where an RPC's time goes,
    which a profile of an in-process server does not. Not for production: it slows every
    call and the file is written only on an orderly stop (SIGTERM).
    """
    import trio

    from trinit._agent import run_agent

    profile_path = os.environ.get("TRINIT_PROFILE")
    if not profile_path:
        trio.run(run_agent, config)
        return
    import cProfile

    profiler = cProfile.Profile()
    try:
        profiler.runcall(lambda: trio.run(run_agent, config))
    finally:
        profiler.dump_stats(profile_path)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    if os.path.basename(argv[0]) == ".cz-init":
        from trinit._init_mode import main as init_main

        init_main(argv[1:])
    args = argv[1:]
    if args and args[0] == "init":
        from trinit._init_mode import main as init_main

        init_main(args[1:])
    if args and args[0] == "pause" and not {"-h", "--help"} & set(args[1:]):
        from trinit._pause_mode import main as pause_main

        pause_main(args[1:])
    if args and args[0] == "initfs":
        from trinit.initfs import main as initfs_main

        initfs_main(args[1:])
        return
    if args and args[0] == "image":
        from trinit.initfs import image_main

        image_main(args[1:])
        return
    if args and args[0] in _CLI_COMMANDS:
        try:
            from trinit.cli import main as cli_main
        except ImportError as exc:  # host-side: grpcio comes with the "host" extra
            print(f"trinit: {args[0]} needs trinit[host] installed: {exc}", file=sys.stderr)
            sys.exit(125)
        sys.exit(cli_main(args))
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help", "--version")):
        args = ["agent", *args]
    parser = _OneLineParser(prog="trinit", description="guest init daemon for lightweight VMs")
    parser.add_argument(
        "--version", action="version", version=f"trinit {__version__} (API {API_PACKAGE})"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _agent_parser(sub)
    sub.add_parser("init", help="tiny init for containers (vminitd's /.cz-init)")
    pause = sub.add_parser(
        "pause",
        help="pause process for pods",
        description="the do-nothing init of a pod's pause container: reaps children, "
        "exits 0 on SIGINT or SIGTERM",
    )
    pause.add_argument("--log-level", default="info", metavar="LEVEL", help="default info")
    sub.add_parser("initfs", help="build a bootable initramfs (trinit initfs build -h)")
    sub.add_parser("image", help="build the vminit image and its loader (trinit image -h)")
    for name, text in _CLI_COMMANDS.items():
        sub.add_parser(name, help=text)
    try:
        ns = parser.parse_args(args)
    except SystemExit:
        if args[0] == "agent" and is_vm_init():  # PID 1 must not exit: that panics the VM
            from trinit._pid1 import die

            die("bad agent arguments on the kernel command line")
        raise
    if ns.command == "agent":
        from trinit._deferred import defer, libpthread_known

        defer()  # what the agent's libraries import but it never uses (trinit._deferred)
        with libpthread_known():  # trio's import would spawn ldconfig otherwise
            from trinit._agent import AgentConfig, StartupError
        from trinit._log import setup

        setup(ns.log_level)
        config = AgentConfig(
            ns.transport,
            ns.port,
            ns.host_cid,
            ns.drain_grace,
            ns.cgroup_root,
            ns.stop_grace,
            allow_local_vsock=ns.allow_local_vsock,
            dial_retry=ns.dial_retry,
            entry_point=ns.entry_point,
        )
        if is_vm_init():
            from trinit._pid1 import run_as_pid1

            run_as_pid1(config)  # the VM's init: never returns
        try:
            _run_agent(config)
        except StartupError as exc:
            print(f"trinit: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
