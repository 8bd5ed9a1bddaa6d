"""`trinit image`: the architecture table, the ELF resolver, the vminit tree and its packers.

No VM here (tests/vm/test_vminit.py boots the ext4 image; tests/vm/test_aarch64.py the
aarch64 one). The tree is staged once for this machine's architecture and packed three ways.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from trinit import _arch, _linux
from trinit.initfs import _elf, _elfdeps, _ext4, _image, _loader, _oci

HOST = _arch.get(os.uname().machine)


def test_one_table_per_architecture() -> None:
    assert _linux.SYSCALL_NUMBERS == {n: a.syscalls for n, a in _arch.ARCHES.items()}
    for name, arch in _arch.ARCHES.items():
        assert arch.name == name and _arch.get(arch.debian) is arch and _arch.get(arch.oci) is arch
        assert arch.multiarch.startswith(name)
        assert arch.wheel_platform.endswith(name)
    assert _arch.ARCHES["aarch64"].elf_machine == 183 and _arch.ARCHES["x86_64"].elf_machine == 62
    with pytest.raises(KeyError, match="riscv64"):
        _arch.get("riscv64")


def test_elf_reader_agrees_with_the_loader() -> None:
    """For files this machine can run, the resolver finds what ``ld.so --list`` finds."""
    resolver = _elfdeps.Resolver("/", HOST)
    dynload = os.path.join(sysconfig_stdlib(), "lib-dynload")
    ssl = next(p for p in os.listdir(dynload) if p.startswith("_ssl."))
    for path in (os.path.realpath(sys.executable), os.path.join(dynload, ssl)):
        assert sorted(resolver.closure(path)) == sorted(_elf.needed_libraries(path)), path
    info = _elfdeps.read(os.path.realpath(sys.executable))
    assert info is not None and info.machine == HOST.elf_machine
    assert info.interpreter == HOST.loader
    assert _elfdeps.read(__file__) is None


def test_resolver_refuses_another_architectures_files() -> None:
    other = next(a for a in _arch.ARCHES.values() if a is not HOST)
    with pytest.raises(ValueError, match="ELF machine"):
        _elfdeps.Resolver("/", other).closure(os.path.realpath(sys.executable))


def test_links_are_followed_inside_the_root(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/real.so").write_bytes(b"x")
    os.symlink("/lib/real.so", tmp_path / "lib/absolute.so")  # absolute: inside the root
    os.symlink("../lib/real.so", tmp_path / "lib/relative.so")
    resolver = _elfdeps.Resolver(str(tmp_path), HOST)
    for name in ("/lib/absolute.so", "/lib/relative.so"):
        assert resolver.host_path(name) == str(tmp_path / "lib/real.so")
    with pytest.raises(FileNotFoundError):
        resolver.host_path("/lib/missing.so")


def sysconfig_stdlib() -> str:
    import sysconfig

    return sysconfig.get_paths()["stdlib"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_image.Tree]:
    root = tmp_path_factory.mktemp("image") / "root"
    yield _image.stage(str(root), _image.ImageOptions())
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def small(tmp_path: Path) -> _image.Tree:
    """A few entries in the vminit layout: what the packers see, without the 36 MiB."""
    tree = _image.Tree(str(tmp_path / "small"), HOST, devices=list(_image.DEVICES))
    for directory in _image.DIRECTORIES:
        os.makedirs(tree.path(directory))
    tree.add("launcher", _image.LAUNCHER, b"#!/usr/lib/trinit/bin/python3.11 -IS\n", 0o755)
    tree.add("stdlib", f"{_image.PREFIX}/lib/python3.11/os.pyc", os.urandom(4096))
    tree.symlink("/lib64/ld-linux-x86-64.so.2", "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    return tree


def test_tree_has_the_vminit_layout(tree: _image.Tree) -> None:
    for directory in _image.DIRECTORIES:
        assert os.path.isdir(tree.path(directory)), directory
    launcher = Path(tree.path(_image.LAUNCHER))
    assert launcher.read_text().startswith(f"#!{_image.PREFIX}/bin/python3.11 -IS\n")
    assert os.access(launcher, os.X_OK)
    assert os.path.isfile(tree.path(f"{_image.PREFIX}/lib/python3.11/os.pyc"))
    assert os.path.isfile(tree.path(f"{_image.PREFIX}/lib/python3.11/site-packages/trinit/"
                                    "_pid1.pyc"))  # fmt: skip
    assert os.path.isfile(tree.path(HOST.loader))
    assert not os.path.exists(tree.path("/etc/trinit/modules"))  # no module loading at all


def test_ext4_image_holds_the_tree(small: _image.Tree, tmp_path: Path) -> None:
    if shutil.which("debugfs") is None:
        pytest.fail("debugfs missing: apt-get install e2fsprogs (scripts/setup.sh)")
    output = str(tmp_path / "vminit.ext4")
    _ext4.pack_ext4(small, output)

    def debugfs(request: str) -> str:
        return subprocess.run(["debugfs", "-R", request, output], capture_output=True,
                              text=True, check=True).stdout  # fmt: skip

    assert debugfs(f"cat {_image.LAUNCHER}") == Path(small.path(_image.LAUNCHER)).read_text()
    listing = debugfs("ls /")
    for directory in _image.DIRECTORIES:
        assert f" {directory} " in f" {listing} ".replace("\n", " "), directory
    assert not os.path.exists(output + ".partial")


def test_oci_layout_names_the_architecture(small: _image.Tree, tmp_path: Path) -> None:
    output = tmp_path / "layout"
    digests = _oci.pack_oci(small, str(output))

    def blob(digest: str) -> bytes:
        data = (output / "blobs/sha256" / digest.split(":")[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        return data

    assert json.loads((output / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((output / "index.json").read_text())
    [entry] = index["manifests"]
    assert entry["platform"] == {"architecture": HOST.oci, "os": "linux"}
    manifest = json.loads(blob(entry["digest"]))
    assert manifest["config"]["digest"] == digests["config"]
    config = json.loads(blob(manifest["config"]["digest"]))
    assert config["architecture"] == HOST.oci and config["os"] == "linux"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == _oci.LAYER
    raw = gzip.decompress(blob(layer["digest"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(raw).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["sbin/vminitd"].mode & 0o111
    assert members["lib64/ld-linux-x86-64.so.2"].issym()
    assert members["dev/console"].ischr() and members["dev/console"].devmajor == 5
    assert all(m.uid == 0 and m.mtime == 0 for m in members.values())
    again = _oci.pack_oci(small, str(tmp_path / "again.tar"))
    assert again == digests  # reproducible


def read_cpio(path: str) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, data) of a gzip newc archive."""
    data = gzip.decompress(Path(path).read_bytes())
    entries: dict[str, tuple[int, bytes]] = {}
    offset = 0
    while True:
        header = data[offset : offset + 110]
        assert header[:6] == b"070701"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_at = offset + 110
        name = data[name_at : name_at + namesize - 1].decode()
        data_at = name_at + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, data[data_at : data_at + size])
        offset = data_at + size + (-size % 4)


def test_cpio_format_links_init_to_the_launcher(small: _image.Tree, tmp_path: Path) -> None:
    output = str(tmp_path / "vminit.cpio.gz")
    _image.pack_cpio(small, output)
    entries = read_cpio(output)
    assert entries["init"][1] == b"sbin/vminitd"
    assert entries["sbin/vminitd"][1].startswith(b"#!/usr/lib/trinit/bin/python3.11")
    assert entries["dev/console"][0] >> 12 == 0o02  # a character device


def test_loader_loads_dependencies_first(tmp_path: Path) -> None:
    found = sorted(glob.glob("/lib/modules/*/modules.dep"))
    busybox = shutil.which("busybox")
    if busybox is None or not found:
        pytest.fail("needs busybox-static and Debian's kernel modules (scripts/vm-deps.sh)")
    modules_dir = os.path.dirname(found[-1])
    output = str(tmp_path / "loader.cpio.gz")
    try:
        report = _loader.build_loader(output, HOST, busybox, modules_dir)
    except FileNotFoundError as exc:  # a development kernel may lack virtiofs etc.
        pytest.fail(f"this kernel lacks a boot module: {exc}")
    entries = read_cpio(output)
    assert entries["init"][1] == _loader.SCRIPT.encode()
    order = entries["etc/loader/modules"][1].decode().split()
    names = [os.path.basename(p).split(".")[0] for p in order]
    assert names == report.modules
    if "ext4" in names and "jbd2" in names:
        assert names.index("jbd2") < names.index("ext4")
    for path in order:
        assert path.lstrip("/") in entries


def test_loader_script_parses() -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox missing (scripts/setup.sh)")
    subprocess.run([busybox, "sh", "-n", "-c", _loader.SCRIPT], check=True)


def test_loader_refuses_a_dynamic_busybox(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dynamically linked"):
        _loader.build_loader(str(tmp_path / "l.cpio.gz"), HOST, os.path.realpath(sys.executable),
                             str(tmp_path))  # fmt: skip
