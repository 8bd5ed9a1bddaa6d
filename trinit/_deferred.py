"""Modules the agent's libraries import but the agent does not use, loaded on first use.

Why: every agent start pays for what its libraries import at their own import time, and
some of it the agent never touches. trio imports :mod:`ssl` (libssl and the 3.5 MiB
resident libcrypto) for its TLS streams and :mod:`hmac` for DTLS cookies; protobuf's
``descriptor_pool`` and ``builder`` import the pure-Python message implementation
(``python_message``, which pulls in ``text_format``, ``pickle``, ``datetime`` and
``calendar``) even when the C implementation (upb) makes every message. Deferring them
took the agent's start from 155 to 142 ms and its idle RSS from 31.4 to 25.3 MiB in one
interleaved run (docs/benchmarks.md, "Agent start"). trio also
asks :func:`ctypes.util.find_library` for libpthread at import, which spawns
``/sbin/ldconfig -p``: a child process of PID 1 before its reaper runs.

:func:`defer` puts a stand-in module in :data:`sys.modules` for each name. ``import ssl``
and ``from google.protobuf.internal import python_message`` then bind the stand-in without
running the real module; the first attribute looked up on it (``ssl.SSLContext``) imports
the real module and answers from it, then and on every later lookup. Nothing changes for a
caller except when the import's time is paid. The stand-in carries the real module's
``__spec__`` (found, not run), so the import system sees an initialised module.

Only the agent's entry point calls this, before it imports trio; a library user of
``trinit`` gets its imports untouched. Standard library only.
"""

from __future__ import annotations

import ctypes.util
import importlib
import importlib.util
import logging
import os
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

AGENT_DEFERRED = ("ssl", "hmac", "google.protobuf.internal.python_message")
"""What the agent defers: none of it is on a path the agent runs (it serves plaintext
gRPC over vsock or a unix socket, and its messages are upb's)."""

_LOCK = threading.Lock()


class DeferredModule(types.ModuleType):
    """Stands in for a module until one of its attributes is first needed."""

    def __getattr__(self, name: str) -> Any:
        # Only called for names the stand-in lacks: everything but the module's dunders.
        return getattr(_load(self), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(_load(self), name, value)

    def __dir__(self) -> list[str]:
        return dir(_load(self))


def _load(stand_in: DeferredModule) -> types.ModuleType:
    """The real module, imported on the first call.

    No lock of ours is held while importing: two threads that both find the stand-in gone
    meet in the import system's own per-module lock, and one of them imports. (A lock held
    across the import could deadlock with a thread that holds another module's import lock
    and needs this stand-in.)
    """
    real: types.ModuleType | None = stand_in.__dict__.get("_deferred_real")
    if real is not None:
        return real
    name = stand_in.__name__
    with _LOCK:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
    real = importlib.import_module(name)
    stand_in.__dict__["_deferred_real"] = real
    logging.getLogger("trinit.agent").debug(f"deferred module {name} loaded on first use")
    return real


def defer(names: tuple[str, ...] = AGENT_DEFERRED) -> list[str]:
    """Put a stand-in in :data:`sys.modules` for each of ``names`` not imported yet; returns
    the names deferred. A name whose module cannot be found is skipped."""
    deferred = []
    for name in names:
        if name in sys.modules:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = importlib.import_module(parent_name) if parent_name else None
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        stand_in = DeferredModule(name)
        # ModuleType's own attributes, set past __setattr__ (which would load the module)
        stand_in.__dict__.update(__spec__=spec, __loader__=spec.loader, __file__=spec.origin)
        sys.modules[name] = stand_in
        if parent is not None:
            setattr(parent, child, stand_in)
        deferred.append(name)
    return deferred


def is_loaded(name: str) -> bool:
    """Whether ``name`` has really been imported (not only deferred)."""
    module = sys.modules.get(name)
    if isinstance(module, DeferredModule):
        return "_deferred_real" in module.__dict__
    return module is not None


def _glibc_has_pthread() -> bool:
    """glibc >= 2.34 carries the pthread functions in libc.so.6 itself."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return False
    parts = version.split()
    if len(parts) != 2 or parts[0] != "glibc":
        return False
    try:
        major, minor = (int(p) for p in parts[1].split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 34)


@contextmanager
def libpthread_known() -> Iterator[None]:
    """While importing trio: answer ``find_library("pthread")`` without ``ldconfig``.

    On glibc >= 2.34 the answer is libc.so.6, which the process has mapped already; elsewhere
    (musl, older glibc) the real lookup runs as before.
    """
    if not _glibc_has_pthread():
        yield
        return
    real = ctypes.util.find_library

    def find_library(name: str) -> str | None:
        return "libc.so.6" if name == "pthread" else real(name)

    ctypes.util.find_library = find_library
    try:
        yield
    finally:
        ctypes.util.find_library = real
