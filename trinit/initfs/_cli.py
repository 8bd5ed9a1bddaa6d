"""``trinit initfs build``: the command line of the initfs builder."""

from __future__ import annotations

import argparse
import os
import sys

from ._build import PHASES, InitfsOptions, build_initfs, parse_pairs


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="trinit initfs", description="build a bootable initramfs with trinit as PID 1"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="assemble initfs.cpio.gz from this installation")
    build.add_argument("-o", "--output", default="initfs.cpio.gz")
    group = build.add_mutually_exclusive_group()
    group.add_argument("--modules-dir", help="e.g. /lib/modules/6.1.0-27-amd64")
    group.add_argument("--kernel-release", help="shorthand for --modules-dir /lib/modules/R")
    group.add_argument(
        "--no-modules",
        action="store_true",
        help="no kernel modules, on purpose: only for a guest kernel with vsock built in",
    )
    build.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="NAME",
        help="another kernel module to load at boot (after the API listens)",
    )
    build.add_argument(
        "--python-module",
        action="append",
        default=[],
        metavar="NAME",
        help="another Python module to include, with what it imports",
    )
    build.add_argument(
        "--file", action="append", default=[], metavar="SRC:DEST", help="copy a file into the image"
    )
    build.add_argument(
        "--binary",
        action="append",
        default=[],
        metavar="SRC[:DEST]",
        help="copy an executable and the shared libraries it needs",
    )
    build.add_argument(
        "--agent-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="argument for `trinit agent` (e.g. --agent-arg=--log-level=debug)",
    )
    build.add_argument(
        "--preinit", metavar="FILE", help="Python file run inside PID 1 before the agent (tests)"
    )
    build.add_argument("--no-strip", action="store_true", help="keep symbols in ELF files")
    build.add_argument(
        "--optimize",
        type=int,
        default=0,
        choices=(0, 1, 2),
        help="bytecode optimisation level (2 drops docstrings and asserts)",
    )
    ns = parser.parse_args(argv)
    modules_dir = ns.modules_dir
    if ns.kernel_release:
        modules_dir = os.path.join("/lib/modules", ns.kernel_release)
    options = InitfsOptions(
        output=ns.output,
        modules_dir=modules_dir,
        no_modules=ns.no_modules,
        extra_kernel_modules=ns.module,
        python_modules=ns.python_module,
        files=parse_pairs(ns.file, default_same=False),
        binaries=parse_pairs(ns.binary, default_same=True),
        agent_args=ns.agent_arg,
        preinit=ns.preinit,
        strip=not ns.no_strip,
        optimize=ns.optimize,
    )
    progress = _TerminalProgress() if sys.stderr.isatty() else None
    try:
        report = build_initfs(options, progress)
    except (OSError, ValueError) as exc:
        print(f"trinit initfs: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(report.describe())


class _TerminalProgress:
    """One stderr line per build phase, numbered; only on a terminal (a log or a CI capture
    gets the report alone)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, name: str) -> None:
        self.count += 1
        print(f"trinit initfs: [{self.count}/{len(PHASES)}] {name}", file=sys.stderr, flush=True)
