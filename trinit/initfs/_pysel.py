"""Which Python modules go into the initfs, found by asking the interpreter itself.

Theory of operation. A probe interpreter (the one being packaged, started ``-I -S`` with
only the standard library, the site-packages directories and trinit's source root on its
path) imports the *roots* (every trinit module the guest runs, plus any extra names) and
reports ``sys.modules``. That is exactly the module-level import closure. Imports made later,
inside functions, are found statically: every ``import``/``from`` statement in trinit's own
files and in the third-party packages the closure reached is read with ``ast``, and the
names that belong to the standard library are imported by a second probe, which again
reports its closure. Third-party packages are included whole (they load submodules lazily);
standard-library modules are included one by one, so unused ones (tkinter, test, idlelib,
distutils, ...) stay out. ``encodings`` is always included whole: codecs are looked up by
name at run time.

Build-time only; the probe is a child process, so the builder's own imports do not leak in.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass, field

NEVER = frozenset({
    "tkinter", "turtle", "turtledemo", "idlelib", "test", "lib2to3", "ensurepip", "venv",
    "distutils", "pydoc_data", "_pytest", "pytest", "pip", "setuptools", "_distutils_hack",
    "antigravity", "this", "__phello__",
})  # fmt: skip
"""Top-level names never followed from static scans."""

_PROBE = r"""
import importlib, json, sys
config = json.loads(sys.argv[1])
sys.path[:] = config["path"]
failed = []
for name in config["names"]:
    try:
        importlib.import_module(name)
    except BaseException as exc:  # an optional or platform-specific import
        failed.append(f"{name}: {type(exc).__name__}")
found = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}
print(json.dumps({"modules": found, "failed": failed}))
"""


@dataclass
class Selection:
    stdlib_files: set[str] = field(default_factory=set)  # absolute .py/.so paths
    packages: set[str] = field(default_factory=set)  # absolute dirs or .py/.so files
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PythonLayout:
    """Where this interpreter's pieces live on the build machine."""

    executable: str
    stdlib: str
    dynload: str
    site_packages: tuple[str, ...]
    trinit_root: str  # the directory that contains the ``trinit`` package

    @classmethod
    def current(cls) -> PythonLayout:
        import trinit

        paths = sysconfig.get_paths()
        site = tuple(dict.fromkeys(p for p in (paths["purelib"], paths["platlib"]) if p))
        stdlib = paths["stdlib"]
        return cls(
            executable=os.path.realpath(sys.executable),
            stdlib=stdlib,
            dynload=os.path.join(stdlib, "lib-dynload"),
            site_packages=site,
            trinit_root=os.path.dirname(os.path.dirname(os.path.abspath(trinit.__file__))),
        )

    @property
    def search_path(self) -> list[str]:
        return [self.trinit_root, self.stdlib, self.dynload, *self.site_packages]


HOST_SIDE = ("trinit.host", "trinit.cli", "trinit.initfs", "trinit._proto.sandbox_pb2_grpc")
"""trinit modules the guest never runs (they need grpcio or are build tools)."""


def trinit_modules(layout: PythonLayout, skip: Iterable[str] = HOST_SIDE) -> list[str]:
    """Every module of the trinit package except those under the prefixes in ``skip``."""
    root = os.path.join(layout.trinit_root, "trinit")
    names = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = os.path.relpath(directory, layout.trinit_root).replace(os.sep, ".")
        for name in files:
            if name.endswith(".py"):
                stem = name[:-3]
                names.append(rel if stem == "__init__" else f"{rel}.{stem}")
    return sorted(n for n in names if not any(n == s or n.startswith(s + ".") for s in skip))


def select(layout: PythonLayout, roots: list[str]) -> Selection:
    """The stdlib files and third-party packages the ``roots`` need."""
    own = sorted(_third_party_names(layout, roots))
    first = _probe(layout, [*roots, *own])
    packages = _third_party(layout, first["modules"])
    scanned = _static_stdlib_names(packages | _root_files(layout, roots))
    second = _probe(layout, [*roots, *own, *sorted(scanned)])
    failed = second["failed"]
    assert isinstance(failed, list)
    selection = Selection(failed=[f for f in failed if f.split(":")[0] in roots])
    selection.packages = packages | _third_party(layout, second["modules"])
    loaded = second["modules"]
    assert isinstance(loaded, dict)
    for path in loaded.values():
        if path and _under(path, layout.stdlib) and not _in_site(layout, path):
            selection.stdlib_files.add(path)
    encodings = os.path.join(layout.stdlib, "encodings")
    selection.stdlib_files.update(
        os.path.join(encodings, n) for n in os.listdir(encodings) if n.endswith(".py")
    )
    return selection


def _root_files(layout: PythonLayout, roots: list[str]) -> set[str]:
    """Source files of the roots that live in trinit's tree (scanned for lazy imports)."""
    files = set()
    for name in roots:
        base = os.path.join(layout.trinit_root, *name.split("."))
        for candidate in (base + ".py", os.path.join(base, "__init__.py")):
            if os.path.isfile(candidate):
                files.add(candidate)
    return files


def _third_party_names(layout: PythonLayout, roots: list[str]) -> set[str]:
    """Third-party top-level names the roots import lazily (e.g. pyroute2 on first use)."""
    names: set[str] = set()
    for path in _root_files(layout, roots):
        names.update(n.split(".")[0] for n in _imports(path))
    return {
        n for n in names
        if n not in sys.stdlib_module_names and n not in NEVER and n != "trinit"
        and any(os.path.exists(os.path.join(site, n)) or
                os.path.exists(os.path.join(site, n + ".py")) for site in layout.site_packages)
    }  # fmt: skip


def _probe(layout: PythonLayout, names: list[str]) -> dict[str, object]:
    config = json.dumps({"path": layout.search_path, "names": names})
    result = subprocess.run(
        [layout.executable, "-I", "-S", "-c", _PROBE, config],
        capture_output=True, text=True, check=True, cwd="/",
    )  # fmt: skip
    data: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


def _under(path: str, directory: str) -> bool:
    return os.path.abspath(path).startswith(directory.rstrip("/") + "/")


def _in_site(layout: PythonLayout, path: str) -> bool:
    return any(_under(path, site) for site in layout.site_packages)


def _third_party(layout: PythonLayout, modules: object) -> set[str]:
    """Top-level packages (dirs) or single-file modules under site-packages that were loaded."""
    assert isinstance(modules, dict)
    found: set[str] = set()
    path: str | None
    for path in modules.values():
        if not path:
            continue
        for site in layout.site_packages:
            if _under(path, site):
                top = os.path.relpath(path, site).split(os.sep)[0]
                if top.split(".")[0] in NEVER or top.startswith("__editable__"):
                    continue
                found.add(os.path.join(site, top))
    return found


def _static_stdlib_names(tops: Iterable[str]) -> set[str]:
    """Standard-library module names imported anywhere in the files under ``tops``."""
    names: set[str] = set()
    for top in tops:
        files = [top] if top.endswith(".py") else [
            os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs if f.endswith(".py")
        ]  # fmt: skip
        for path in files:
            names.update(_imports(path))
    return {
        n for n in names
        if n.split(".")[0] in sys.stdlib_module_names and n.split(".")[0] not in NEVER
    }  # fmt: skip


def _imports(path: str) -> set[str]:
    try:
        with open(path, "rb") as file:
            tree = ast.parse(file.read(), path)
    except (SyntaxError, ValueError):
        return set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found
