"""What a fresh machine installs is what the code needs, at the versions the artefacts need.

A venv kept from an earlier session can hide a missing pin or an undeclared import, so these
checks do not trust the venv they run in: the declared dependencies are compared with what
the source imports, the committed generated code's version stamps with the pins, the venv
with ``constraints.txt``, and one test installs trinit into a brand-new venv and imports it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "trinit"
# Modules that may use the `host` extra (the host library and its grpcio stubs).
HOST_SIDE = ("trinit/host/", "trinit/cli/", "trinit/_proto/sandbox_pb2_grpc.py")


def _project() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        data: dict[str, object] = tomllib.load(file)["project"]
    return data


def _requirements(group: str | None) -> dict[str, Requirement]:
    project = _project()
    if group is None:
        raw = project["dependencies"]
    else:
        extras = project["optional-dependencies"]
        assert isinstance(extras, dict)
        raw = extras[group]
    assert isinstance(raw, list)
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in raw}


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def _third_party_imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in ``path`` that is not stdlib or trinit."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "trinit"}


def _distribution_of(module: str) -> str:
    found = importlib.metadata.packages_distributions().get(module)
    assert found, f"no installed distribution provides {module!r}"
    return canonicalize_name(found[0])


def test_every_import_is_declared_and_every_dependency_used() -> None:
    runtime = set(_requirements(None))
    host = set(_requirements("host"))
    used: set[str] = set()
    missing: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        allowed = runtime | host if rel.startswith(HOST_SIDE) else runtime
        for module in _third_party_imports(path):
            dist = _distribution_of(module)
            used.add(dist)
            if dist not in allowed:
                missing.append(f"{rel} imports {module} ({dist})")
    assert missing == [], "undeclared dependencies: " + "; ".join(missing)
    assert runtime - used == set(), f"declared but never imported: {sorted(runtime - used)}"
    assert host - used == set(), f"host extra declared but never imported: {sorted(host - used)}"


def test_generated_code_stamps_match_the_pins() -> None:
    """The gencode refuses a runtime older than the one it was made for (protobuf: also a
    different major), so the declared ranges must start at the stamps."""
    pb2 = (PACKAGE / "_proto" / "sandbox_pb2.py").read_text()
    match = re.search(r"^# Protobuf Python Version: (\S+)$", pb2, re.M)
    assert match is not None
    protobuf_gencode = Version(match.group(1))
    grpc_stub = (PACKAGE / "_proto" / "sandbox_pb2_grpc.py").read_text()
    match = re.search(r"^GRPC_GENERATED_VERSION = '(\S+)'$", grpc_stub, re.M)
    assert match is not None
    grpc_gencode = match.group(1)

    protobuf = _requirements(None)["protobuf"].specifier
    assert protobuf == SpecifierSet(f">={protobuf_gencode},<{protobuf_gencode.major + 1}")
    for group in ("host", "dev"):
        grpcio = _requirements(group)["grpcio"].specifier
        assert f">={grpc_gencode}" in {str(s) for s in grpcio}, (group, grpcio)
    pins = _constraints()
    assert pins["grpcio-tools"] == grpc_gencode, "constraints.txt pins another generator"
    assert Version(pins["protobuf"]) in protobuf


def test_constraints_cover_and_satisfy_the_declared_ranges() -> None:
    pins = _constraints()
    for group in (None, "host", "dev"):
        for name, requirement in _requirements(group).items():
            assert name in pins, f"{name} is declared but not pinned in constraints.txt"
            assert Version(pins[name]) in requirement.specifier, (name, pins[name])


def test_this_venv_matches_the_constraints() -> None:
    """A venv from an earlier session with other versions would test something else:
    scripts/setup.sh brings it to constraints.txt."""
    wrong = []
    for name, pinned in _constraints().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            wrong.append(f"{name} is not installed")
            continue
        if Version(installed) != Version(pinned):
            wrong.append(f"{name} {installed} (constraints.txt: {pinned})")
    assert wrong == [], "run ./scripts/setup.sh: " + "; ".join(wrong)


def test_fresh_venv_installs_and_imports_every_module(tmp_path: Path) -> None:
    """``pip install .`` into an empty venv (no dev tools, no host extra), then import every
    agent-side module and run the entry point, from outside the source tree."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-c", str(ROOT / "constraints.txt"), str(ROOT)],
        check=True, cwd=tmp_path, capture_output=True,
    )  # fmt: skip
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.as_posix().startswith(HOST_SIDE) or path.name == "__main__.py":
            continue
        parts = rel.with_suffix("").parts
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    script = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
    result = subprocess.run(
        [str(python), "-c", script, *modules], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    version = subprocess.run(
        [str(env_dir / "bin" / "trinit"), "--version"], cwd=tmp_path, capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    assert version.stdout.startswith("trinit ")
    # what a type checker and a licence scanner look at in the installed distribution
    probe = (
        "import importlib.metadata as m, importlib.resources as r\n"
        "d = m.distribution('trinit')\n"
        "print(d.metadata['License-Expression'] or d.metadata['License'])\n"
        "print(r.files('trinit').joinpath('py.typed').is_file())\n"
        "print(sorted(p.name for p in d.files or () if p.name.startswith('LICENSE')))\n"
    )
    shipped = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert shipped == ["Apache-2.0", "True", "['LICENSE']"], shipped


def test_setup_user_installs_trinit_and_the_host_library_without_dev_tools(
    tmp_path: Path,
) -> None:
    """``scripts/setup.sh --user``: trinit (not editable) and grpcio in the venv, no pytest."""
    env_dir = tmp_path / "venv"
    subprocess.run(
        [str(ROOT / "scripts" / "setup.sh"), "--user"],
        check=True, cwd=tmp_path, capture_output=True,
        env={**os.environ, "TRINIT_VENV": str(env_dir)},
    )  # fmt: skip
    probe = (
        "import importlib.util as u, trinit, trinit.host\n"
        "print(trinit.__file__.startswith(sys.prefix), u.find_spec('pytest') is None)\n"
    )
    out = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import sys\n" + probe],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out.split() == ["True", "True"], out
    assert (env_dir / "bin" / "trinit").exists()
