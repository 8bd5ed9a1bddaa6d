"""Dispatch and the error boundary: every failure becomes one line and an exit status."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import grpc

from ._admin import kill, ps, rm, stats
from ._args import build_parser
from ._errors import EXIT_TRINIT, CliError, rpc_text
from ._run import exec_, run

_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": run,
    "exec": exec_,
    "ps": ps,
    "stats": stats,
    "kill": kill,
    "rm": rm,
}
COMMANDS = tuple(_HANDLERS)


def main(argv: list[str]) -> int:
    """Run one command (``argv`` starts with its name); returns the exit status."""
    try:
        ns = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (125)
        return exc.code if isinstance(exc.code, int) else EXIT_TRINIT
    try:
        return _HANDLERS[ns.command](ns)
    except CliError as exc:
        _report(str(exc))
        return exc.code
    except grpc.RpcError as exc:
        _report(rpc_text(exc))
        return EXIT_TRINIT
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug or an unforeseen failure: still one line
        if os.environ.get("TRINIT_DEBUG"):
            raise
        _report(f"{type(exc).__name__}: {exc} (TRINIT_DEBUG=1 shows the traceback)")
        return EXIT_TRINIT


def _report(message: str) -> None:
    sys.stdout.flush()
    print(f"trinit: {message}", file=sys.stderr)
