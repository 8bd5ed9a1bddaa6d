"""pyroute2's ``IPRoute`` and ``NetlinkError`` without running pyroute2's package ``__init__``.

Why: the first network RPC (and the first statistics call that finds an ``eth*``
interface) imports pyroute2. Its package ``__init__`` imports every API it offers (NDB,
IPDB, conntrack, nftables, wireguard, nl80211, plan9...): about half of the 90-140 ms the
import takes, and none of it is used here. The rtnetlink socket trinit uses lives in
``pyroute2.iproute``, which imports what it needs by itself.

:func:`load` puts the package module in :data:`sys.modules` *uninitialised* (made from its
spec, with its ``__path__``, but its ``__init__`` not run), then imports the two
submodules. The package module carries a PEP 562 ``__getattr__``: the first lookup of a
name it lacks (``from pyroute2 import NDB``, ``pyroute2.__version__``) runs the real
``__init__`` in it, once, and answers from it. Nothing changes for another user of
pyroute2 but when that time is paid.

If pyroute2 was imported the ordinary way (perhaps still running its ``__init__`` in
another thread), or its layout differs from the one this relies on (no
``pyroute2.iproute.IPRoute``), the ordinary ``from pyroute2 import IPRoute`` is used.
One race is left to the caller: an ordinary ``import pyroute2`` in another thread at the
moment of the first :func:`load` can meet a submodule the other is half-way through (the
import system hands out a partly initialised module rather than deadlock), and fail with
ImportError. The agent imports pyroute2 only through :func:`load`.

Standard library only (pyroute2 itself is imported on call).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyroute2.iproute import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

__all__ = ["load", "package_initialised"]

_LOCK = threading.RLock()
"""Held over the whole of :func:`load` and over a deferred ``__init__``: one thread sets the
package up at a time, and a re-entrant lookup from inside that thread's imports passes."""
_INITIALISED = "_trinit_initialised"


def load() -> tuple[type[IPRoute], type[NetlinkError]]:
    """``(IPRoute, NetlinkError)``; call it in a worker thread (it may import for ~50 ms)."""
    with _LOCK:
        _install_uninitialised_package()
        if not package_initialised():
            try:
                from pyroute2.iproute import IPRoute
                from pyroute2.netlink.exceptions import NetlinkError
            except ImportError:
                pass  # another layout: the package's own way, below
            else:
                return IPRoute, NetlinkError
    # Imported by someone else (maybe still running its __init__ in another thread: this
    # import waits for it, where a submodule import would take the half-made package).
    from pyroute2 import IPRoute, NetlinkError

    return IPRoute, NetlinkError


def package_initialised() -> bool:
    """Whether pyroute2's package ``__init__`` has run (for tests)."""
    module = sys.modules.get("pyroute2")
    if module is None:
        return False
    return module.__dict__.get(_INITIALISED, True) is not False


def _install_uninitialised_package() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not installed: the import in load() reports it
    package = importlib.util.module_from_spec(spec)
    package.__dict__[_INITIALISED] = False
    package.__dict__["__getattr__"] = _lookup_for(package, spec)
    sys.modules["pyroute2"] = package


def _lookup_for(package: types.ModuleType, spec: importlib.machinery.ModuleSpec) -> Any:
    """The uninitialised package's PEP 562 ``__getattr__`` (called only for names it lacks).

    A submodule's name imports that submodule: ``from pyroute2 import config`` inside
    pyroute2 asks for it this way, and must not cost the whole ``__init__``. Any other name
    (``NDB``, ``__version__``, ``__all__``) runs the real ``__init__`` first."""

    def __getattr__(name: str) -> Any:
        if not name.startswith("__"):
            qualified = f"{spec.name}.{name}"
            if importlib.util.find_spec(qualified) is not None:
                return importlib.import_module(qualified)
        with _LOCK:
            if package.__dict__.get(_INITIALISED) is False:
                package.__dict__[_INITIALISED] = True
                del package.__dict__["__getattr__"]
                assert spec.loader is not None
                try:
                    spec.loader.exec_module(package)
                except BaseException:
                    package.__dict__[_INITIALISED] = False
                    package.__dict__["__getattr__"] = __getattr__
                    raise
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {spec.name!r} has no attribute {name!r}") from None

    return __getattr__
