"""The command-line grammar of ``trinit run|exec|ps|stats|kill|rm`` and its value parsers.

Usage errors exit 125 (docker's convention for the runtime's own errors), not argparse's 2,
so a script can tell "trinit refused" from a command that exited 2.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
from typing import NoReturn

from ._errors import EXIT_TRINIT

CONNECT_HELP = (
    "agent to use: unix:DIR (its unix transport directory) or vsock:CID[:PORT] "
    "(default: $TRINIT_CONNECT)"
)

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_TRINIT, f"{self.prog}: error: {message}\n")


def memory_bytes(text: str) -> int:
    """``N`` bytes, or with a K/M/G/T suffix (powers of 1024, as docker's ``--memory``)."""
    match = _SIZE.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: use N, NK, NM or NG")
    value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: must be positive")
    return value


def cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid cpus {text!r}: use a number such as 1.5"
        ) from None
    if not 0 < value <= 4096:
        raise argparse.ArgumentTypeError(f"invalid cpus {text!r}: must be above 0")
    return value


def env_entry(text: str) -> str:
    """``K=V`` as given; a bare ``K`` takes this program's value of K (as docker's ``-e``)."""
    key, sep, _ = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"invalid environment entry {text!r}: use KEY=VALUE")
    if sep:
        return text
    value = os.environ.get(key)
    if value is None:
        raise argparse.ArgumentTypeError(f"-e {key}: not set here; use {key}=VALUE")
    return f"{key}={value}"


def user_spec(text: str) -> str:
    """``UID[:GID]`` or names (resolved by the agent against the container's /etc/passwd)."""
    user, _, group = text.partition(":")
    if not user or ":" in group or (text.endswith(":") and not group):
        raise argparse.ArgumentTypeError(f"invalid user {text!r}: use UID[:GID] or NAME[:GROUP]")
    return text


def signal_number(text: str) -> int:
    """A signal by number (``9``) or name (``KILL``, ``SIGKILL``)."""
    if text.isdigit():
        number = int(text)
        if not 0 < number < 65:
            raise argparse.ArgumentTypeError(f"invalid signal {text!r}")
        return number
    name = text.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown signal {text!r}") from None


def connect_target(text: str) -> str:
    if text.startswith("unix:") and len(text) > 5:
        return text
    if text.startswith("vsock:"):
        parts = text[6:].split(":")
        if 1 <= len(parts) <= 2 and all(part.isdigit() for part in parts):
            return text
    raise argparse.ArgumentTypeError(f"invalid agent {text!r}: use unix:DIR or vsock:CID[:PORT]")


def _connect_option(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get("TRINIT_CONNECT") or None
    parser.add_argument(
        "--connect", metavar="AGENT", type=connect_target, default=default, help=CONNECT_HELP
    )


def _process_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-t", "--tty", action="store_true", help="a terminal: raw mode here, stdin forwarded"
    )
    parser.add_argument(
        "-i", "--interactive", action="store_true", help="forward stdin (without a terminal)"
    )
    parser.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        type=env_entry,
        metavar="K=V",
        help="set an environment variable (repeatable; K alone copies it from here)",
    )
    parser.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside")
    parser.add_argument(
        "-u", "--user", type=user_spec, metavar="UID[:GID]", help="user (ids or names) inside"
    )


def build_parser() -> Parser:
    parser = Parser(
        prog="trinit",
        description="run and manage containers with a trinit agent",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = sub.add_parser(
        "run",
        help="run a command in a new container",
        description="Run CMD in a new container. Without --connect an agent is started for "
        "this command alone (as root, in fresh namespaces) and stopped when it ends. The exit "
        "status is CMD's own; 125: trinit failed, 126: CMD cannot be invoked, 127: CMD not "
        "found.",
        usage="trinit run [options] (--rootfs DIR | --image PATH) [--] [CMD [ARG...]]",
    )
    _connect_option(run)
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--rootfs", metavar="DIR", help="root filesystem directory (bound as is)")
    source.add_argument(
        "--image",
        metavar="PATH",
        help="an OCI image layout directory, or a docker-archive (docker save) tarball or "
        "directory: unpacked (digests verified) into a cache, then used read-only under a "
        "fresh writable layer; its Env, Entrypoint/Cmd, WorkingDir and User are the defaults",
    )
    _process_options(run)
    run.add_argument("--memory", type=memory_bytes, metavar="N", help="memory limit (K/M/G)")
    run.add_argument("--cpus", type=cpus, metavar="N", help="CPU limit (quota of N CPUs)")
    run.add_argument("--name", metavar="ID", help="container id (default: generated)")
    run.add_argument(
        "--rm",
        action="store_true",
        help="delete the container when CMD ends (always so without --connect)",
    )
    run.add_argument(
        "-d",
        "--detach",
        action="store_true",
        help="start CMD and print the container id without waiting (needs --connect)",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="with -d: print the container's metadata (id, pid, rootfs, image) as JSON",
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help="command and args")

    exec_ = sub.add_parser(
        "exec",
        help="run a command in a running container",
        description="Run CMD in the running container ID (exit status as for run).",
        usage="trinit exec [options] ID [--] CMD [ARG...]",
    )
    _connect_option(exec_)
    _process_options(exec_)
    exec_.add_argument("id", metavar="ID", help="container id")
    exec_.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help="command and args")

    ps = sub.add_parser(
        "ps",
        help="list containers",
        description="List the agent's containers: id, state (running, or exited with its "
        "status) and process count.",
    )
    _connect_option(ps)
    ps.add_argument("--json", action="store_true", help="a JSON array instead of a table")

    stats = sub.add_parser(
        "stats",
        help="show container resource usage",
        description="Resource usage from each container's cgroup (all containers by "
        "default). Fields a machine's cgroup hierarchy lacks are left out.",
    )
    _connect_option(stats)
    stats.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    stats.add_argument("ids", nargs="*", metavar="ID", help="containers (default: all)")

    kill = sub.add_parser(
        "kill",
        help="signal a container's init process",
        description="Send SIG (default KILL) to the init process of container ID. An init "
        "ignores signals it has no handler for, except KILL and STOP.",
    )
    _connect_option(kill)
    kill.add_argument("id", metavar="ID", help="container id")
    kill.add_argument(
        "signal", nargs="?", type=signal_number, default=int(signal.SIGKILL), metavar="SIG"
    )

    rm = sub.add_parser(
        "rm",
        help="delete containers",
        description="Delete containers: their processes are killed, their mounts, bundle "
        "and cgroup removed.",
    )
    _connect_option(rm)
    rm.add_argument("ids", nargs="+", metavar="ID", help="container ids")
    return parser


def command_args(values: list[str]) -> list[str]:
    """The CMD part of a REMAINDER argument, without a leading ``--``."""
    return values[1:] if values[:1] == ["--"] else values
