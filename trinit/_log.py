"""Logging in vminitd's console format (docs/protocol.md §8.2 step 2).

One line per event on stderr, which is the VM console (hvc0) when trinit is PID 1:
``2026-11-28T10:00:00.123Z info trinit: container=abc, pid=42 started process``.
Structured fields are passed as ``extra={"fields": {...}}`` and printed sorted. Levels are
vminitd's (trace, debug, info, notice, warning, error, critical); trace and notice are added
to the stdlib levels.

Lines are written by a thread of their own from a bounded queue (``trinit._logwriter``): a
slow or stuck console never blocks the event loop; what does not fit is dropped and counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from trinit._logwriter import QueuedFdHandler

TRACE = 5
NOTICE = 25
logging.addLevelName(TRACE, "trace")
logging.addLevelName(NOTICE, "notice")

LEVELS: Mapping[str, int] = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": NOTICE,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_NAMES = {v: k for k, v in LEVELS.items()}


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        millis = int(record.msecs)
        level = _NAMES.get(record.levelno, record.levelname.lower())
        fields: Mapping[str, Any] = getattr(record, "fields", None) or {}
        kv = ", ".join(f"{k}: {fields[k]}" for k in sorted(fields))
        message = record.getMessage()
        # tracebacks: at debug, and for errors (a container's fault boundary logs its one)
        if record.exc_info and (record.levelno <= logging.DEBUG or record.levelno >= logging.ERROR):
            message += "\n" + self.formatException(record.exc_info)
        head = f"{stamp}.{millis:03d}Z {level} trinit:"
        return f"{head} {kv} {message}" if kv else f"{head} {message}"


def setup(level_name: str) -> None:
    """Route every ``trinit.*`` logger to stderr (fd 2, through the writer thread) in the
    console format; unknown levels -> info."""
    level = LEVELS.get(level_name.lower(), logging.INFO)
    handler = QueuedFdHandler(2)
    handler.setFormatter(ConsoleFormatter())
    root = logging.getLogger("trinit")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def fields(**kv: Any) -> dict[str, Any]:
    """``log.info("msg", extra=fields(container=cid))`` helper."""
    return {"fields": kv}
