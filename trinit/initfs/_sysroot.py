"""A *cross root*: what an image for another architecture is built from, fetched from Debian
and PyPI with their ordinary clients (``apt-get download``, ``dpkg -x``, ``pip download``).

Layout of the directory :func:`make_cross_root` fills::

    root/            Debian's packages for the target unpacked with ``dpkg -x`` (never
                     installed): the interpreter (python3.11-minimal), its standard library
                     (libpython3.11-minimal, libpython3.11-stdlib), the libraries those
                     link, busybox-static, and the kernel (linux-image-<arch>) with its
                     modules, indexed with ``depmod -b``
    site-packages/   the target's wheels for packages with compiled code (protobuf's upb
                     extension by default; grpcio for test images), unpacked
    debs/, wheels/   the downloads (kept: a second run downloads nothing)
    cross-root.json  architecture, kernel release, packages

Nothing is executed from the foreign packages; which libraries an image needs is found by
reading their ELF files (``_elfdeps``). ``apt-get download PKG:ARCH`` needs the
architecture enabled once (``dpkg --add-architecture arm64 && apt-get update``), which
``scripts/aarch64-deps.sh`` does.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Sequence

from trinit._arch import Arch

PYTHON_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
    "libc6", "libssl3", "libffi8", "zlib1g", "libexpat1", "libbz2-1.0", "liblzma5",
    "libuuid1", "libcrypt1", "libgcc-s1", "libstdc++6", "libsqlite3-0", "libncursesw6",
    "libtinfo6", "libreadline8",
)  # fmt: skip
"""The interpreter and every library its standard-library extensions may link (the image
takes only what the ELF files of the selected modules actually need)."""
TOOL_PACKAGES = ("busybox-static",)
"""The loader's busybox, and the test images' container rootfs."""
DEFAULT_WHEELS = ("protobuf",)
"""Guest packages with compiled code (the rest of trinit's dependencies are pure Python)."""


def kernel_package(arch: Arch) -> str:
    """The versioned kernel package the ``linux-image-<arch>`` metapackage points at."""
    result = subprocess.run(
        ["apt-cache", "depends", "--important", f"linux-image-{arch.debian}:{arch.debian}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for line in result.stdout.splitlines():
        match = re.match(r"\s*Depends:\s*(linux-image-[0-9][^:\s]*)", line)
        if match:
            return match.group(1)
    raise RuntimeError(
        f"linux-image-{arch.debian}:{arch.debian} is unknown to apt: run "
        f"`dpkg --add-architecture {arch.debian} && apt-get update` (scripts/aarch64-deps.sh)"
    )


def _download(names: Sequence[str], arch: Arch, debs: str) -> list[str]:
    os.makedirs(debs, exist_ok=True)
    missing = [
        f"{name}:{arch.debian}"
        for name in names
        if not glob.glob(os.path.join(debs, f"{name}_*_{arch.debian}.deb"))
    ]
    if missing:
        result = subprocess.run(["apt-get", "download", "-q", *missing], cwd=debs,
                                capture_output=True, text=True)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"apt-get download: {result.stderr.strip()}")
    files = []
    for name in names:
        found = sorted(glob.glob(os.path.join(debs, f"{name}_*_{arch.debian}.deb")))
        if not found:
            raise FileNotFoundError(f"apt-get download {name}:{arch.debian} left no .deb")
        files.append(found[-1])
    return files


def _wheel_requirement(name: str) -> str:
    """``name==version``: the version installed here unless the caller pinned one."""
    if "==" in name:
        return name
    return f"{name}=={importlib.metadata.version(name)}"


def _download_wheels(requirements: Sequence[str], arch: Arch, wheels: str) -> list[str]:
    os.makedirs(wheels, exist_ok=True)
    version = f"{sys.version_info.major}{sys.version_info.minor}"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
         "--no-deps", "--only-binary=:all:", "--platform", arch.wheel_platform,
         "--python-version", version, "--implementation", "cp", "--abi", f"cp{version}",
         "-d", wheels, *requirements],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    files = []
    for requirement in requirements:
        name, _, pinned = requirement.partition("==")
        stem = name.replace("-", "_")
        found = [w for w in glob.glob(os.path.join(wheels, f"{stem}-{pinned}-*.whl"))
                 if arch.name in w or w.endswith("-none-any.whl")]  # fmt: skip
        if not found:
            raise FileNotFoundError(f"no {arch.name} wheel for {requirement} in {wheels}")
        files.append(sorted(found)[-1])
    return files


def make_cross_root(
    arch: Arch, output: str, *, wheels: Sequence[str] = (), packages: Sequence[str] = ()
) -> dict[str, object]:
    """Fill ``output`` (see the module docstring); returns what cross-root.json records."""
    output = os.path.abspath(output)
    kernel = kernel_package(arch)
    names = [*PYTHON_PACKAGES, *TOOL_PACKAGES, kernel, *packages]
    root = os.path.join(output, "root")
    os.makedirs(root, exist_ok=True)
    for deb in _download(names, arch, os.path.join(output, "debs")):
        subprocess.run(["dpkg", "-x", deb, root], check=True)
    release = kernel[len("linux-image-") :]
    subprocess.run(["depmod", "-b", root, release], check=True)
    requirements = [_wheel_requirement(n) for n in dict.fromkeys([*DEFAULT_WHEELS, *wheels])]
    site = os.path.join(output, "site-packages")
    os.makedirs(site, exist_ok=True)
    for wheel in _download_wheels(requirements, arch, os.path.join(output, "wheels")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    record: dict[str, object] = {
        "arch": arch.name, "kernel_release": release, "debian_packages": names,
        "wheels": requirements,
    }  # fmt: skip
    with open(os.path.join(output, "cross-root.json"), "w", encoding="utf-8") as file:
        json.dump(record, file, indent=2)
    return record


def kernel_release(cross_root: str) -> str:
    """The kernel release a cross root holds (from cross-root.json)."""
    with open(os.path.join(cross_root, "cross-root.json"), encoding="utf-8") as file:
        release = json.load(file)["kernel_release"]
    assert isinstance(release, str)
    return release
