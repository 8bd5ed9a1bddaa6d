"""The code stays ruff- and mypy-clean: checked by the suite, so CI enforces it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> None:
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


def test_ruff_check() -> None:
    _run(str(BIN / "ruff"), "check", ".")


def test_ruff_format() -> None:
    _run(str(BIN / "ruff"), "format", "--check", "trinit", "tests", "bench", "scripts", "examples")


def test_mypy_strict() -> None:
    _run(str(BIN / "mypy"), "trinit", "tests", "bench", "scripts", "examples")


# ------------------------------------------------------------------ package boundaries
PACKAGE = ROOT / "trinit"
EXEMPT = ("trinit._proto",)  # generated code


def _module_name(path: Path) -> tuple[str, bool]:
    """(dotted module name, is a package ``__init__``) of a file under ``trinit/``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _owner(module: str) -> str:
    """The package whose private business ``module`` is.

    The first ``_private`` component below a subpackage (``trinit.exec._launch``) makes the
    module private to that subpackage (``trinit.exec``). A top-level ``trinit._x`` belongs to
    ``trinit`` as a whole: it is shared infrastructure every package may use.
    """
    parts = module.split(".")
    for index in range(2, len(parts)):
        if parts[index].startswith("_") and not parts[index].startswith("__"):
            return ".".join(parts[:index])
    return ".".join(parts[:-1]) if len(parts) > 2 else "trinit"


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _boundary_violations() -> list[str]:
    found: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer, is_package = _module_name(path)
        if not importer.startswith(EXEMPT):
            found += _violations_in(importer, is_package, path.read_text(encoding="utf-8"))
    return found


def _violations_in(importer: str, is_package: bool, source: str) -> list[str]:
    found: list[str] = []
    here = importer if is_package else importer.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        targets: list[tuple[str, list[str]]] = []
        if isinstance(node, ast.Import):
            targets = [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here.split(".")
            if node.level:
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            targets = [(target, [alias.name for alias in node.names])]
        else:
            continue
        for target, names in targets:
            if not _inside(target, "trinit") or target.startswith(EXEMPT):
                continue
            where = f"{importer}:{node.lineno}"
            owner = _owner(target)
            if not _inside(importer, owner):
                found.append(f"{where}: imports {target}, private to {owner}")
                continue
            # A module's private names are its package's; a package's are its own.
            name_owner = target if _is_package(target) else owner
            for name in names:
                if name.startswith("_") and not _inside(importer, name_owner):
                    found.append(f"{where}: imports {target}.{name}, private to {name_owner}")
    return found


def _is_package(module: str) -> bool:
    return (ROOT / module.replace(".", "/") / "__init__.py").exists()


def test_no_package_reaches_into_another_packages_private_names() -> None:
    """No module imports another package's private modules or private names.

    Rules (generated ``trinit._proto`` exempt, as importer and as target):
    * ``trinit.X._y`` (any ``_private`` module below a subpackage) may be imported only by
      modules inside ``trinit.X``; everyone else uses what ``trinit.X`` exports in its
      ``__init__`` (``from trinit.X import Name``).
    * ``from trinit.X import _name`` (a private module or name of a package or of one of its
      modules) likewise only from inside ``trinit.X``.
    * Top-level private modules of ``trinit`` itself (``trinit._linux``, ``trinit._log``,
      ``trinit._lazy``, ``trinit._pid1``, ``trinit._proto``...) are shared infrastructure of
      the whole package and may be imported anywhere in it.
    Tests are not checked: they may import internals to test them.
    """
    assert _boundary_violations() == []


def test_the_boundary_check_itself() -> None:
    def check(importer: str, source: str) -> bool:
        return _violations_in(importer, False, source) == []

    assert not check("trinit.nursery._x", "from trinit.cgroup import _write_limit")
    assert not check("trinit.nursery._x", "from trinit.exec import _launch")
    assert not check("trinit.system._mount", "import trinit.exec._launch")
    assert not check("trinit.system._mount", "from trinit.exec._mountopts import parse_options")
    assert not check("trinit.system._mount", "from ..exec._mountopts import parse_options")
    assert not check("trinit._server", "from trinit.nursery._process import Dial")
    assert check("trinit.exec._zygote", "from trinit.exec._launch import launch_via")
    assert check("trinit.exec._zygote", "from trinit.exec import _linux_free_name_is_ours")
    assert check("trinit.exec._zygote", "from . import _launch")
    assert check("trinit.system._mount", "from trinit.exec import parse_mount_options")
    assert check("trinit.exec._child", "from trinit import _linux")
    assert check("trinit.cgroup._monitor", "from trinit._proto import sandbox_pb2")
    assert check("trinit._agent", "from trinit._pid1 import Boot")
