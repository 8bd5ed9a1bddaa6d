"""Lazy package exports (PEP 562): a package's public names load their module on first use.

Why: the agent must answer its first RPC fast, and most of what ``trinit.system`` and
``trinit.cgroup`` hold (netlink, archives, statistics) is not needed until the host asks for
it. Type checkers still see the real names through each package's ``TYPE_CHECKING`` imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` serving ``name -> ".module"`` from ``exports``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        importlib.import_module(package).__dict__[name] = value
        return value

    return __getattr__
