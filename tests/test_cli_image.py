"""``trinit run --image``: OCI layouts and docker-archives made here by hand (no network),
whiteouts, digests, the cache; and the layer extraction's safety on its own."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentlib import busybox_rootfs
from clilib import no_traceback, trinit

from trinit.cli._layer import LayerError, apply_layer

SCRIPT = 'echo "$GREETING"; pwd; id -u; ls /opq; cat /etc/keep; ls /etc/gone 2>&1; cat /data/f'


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(
    entries: list[tuple[str, bytes | None, dict[str, object]]], base: str | None = None
) -> bytes:
    """A tar: optionally a whole directory first, then (name, data or None for a dir, attrs)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if base is not None:
            tar.add(base, arcname=".")
        for name, data, attrs in entries:
            info = tarfile.TarInfo(name)
            if data is None and not attrs.get("type"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            else:
                info.size, info.mode = len(data or b""), 0o644
            for key, value in attrs.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data or b"") if info.isreg() else None)
    return out.getvalue()


def _layers() -> list[bytes]:
    lower = _tar(
        [
            ("etc/keep", b"lower\n", {}),
            ("etc/gone", b"bye\n", {}),
            ("opq", None, {}),
            ("opq/old", b"old\n", {}),
            ("opq/sub", None, {}),
            ("opq/sub/deep", b"deep\n", {}),
            ("data", None, {}),
            ("data/f", b"v1\n", {}),
        ],
        base=busybox_rootfs(),
    )
    upper = _tar(
        [
            ("opq/new", b"new\n", {}),  # before the marker: it must survive it anyway
            ("opq/.wh..wh..opq", b"", {}),
            ("etc/.wh.gone", b"", {}),
            ("data/f", b"v2\n", {}),
            ("home/app", None, {"uid": 1, "gid": 1}),
        ]
    )
    return [lower, upper]


CONFIG: dict[str, object] = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hello"],
        "Cmd": ["sh", "-c", SCRIPT],
        "WorkingDir": "/home/app",
        "User": "1",
    },
}
EXPECTED = [
    "hello",
    "/home/app",
    "1",
    "new",
    "lower",
    "ls: /etc/gone: No such file or directory",
    "v2",
]


def _blob(layout: Path, data: bytes) -> str:
    digest = _sha(data)
    path = layout / "blobs" / "sha256" / digest.split(":")[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def make_oci_layout(layout: Path, config: dict[str, object] = CONFIG) -> Path:
    layers = []
    for raw in _layers():
        packed = gzip.compress(raw, mtime=0)
        layers.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": _blob(layout, packed),
                "size": len(packed),
            }
        )
    config_bytes = json.dumps(
        {**config, "rootfs": {"type": "layers", "diff_ids": [_sha(raw) for raw in _layers()]}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _blob(layout, config_bytes),
                "size": len(config_bytes),
            },
            "layers": layers,
        }
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": _blob(layout, manifest),
                "size": len(manifest),
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return layout


def make_docker_archive(path: Path) -> Path:
    """A ``docker save`` tarball (the classic layout: <id>/layer.tar, <config digest>.json)."""
    layers = _layers()
    config = json.dumps(
        {**CONFIG, "rootfs": {"type": "layers", "diff_ids": [_sha(raw) for raw in layers]}}
    ).encode()
    config_name = _sha(config).split(":")[1] + ".json"
    files = {config_name: config}
    names = []
    for number, raw in enumerate(layers):
        names.append(f"layer{number}/layer.tar")
        files[names[-1]] = raw
    files["manifest.json"] = json.dumps(
        [{"Config": config_name, "RepoTags": ["test:latest"], "Layers": names}]
    ).encode()
    path.write_bytes(_tar([(name, data, {}) for name, data in files.items()]))
    return path


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory for layouts and the image cache, removed afterwards (cache included)."""
    path = Path(tempfile.mkdtemp(prefix="trinit-img-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _run(scratch: Path, *args: str):  # type: ignore[no-untyped-def]
    return trinit("run", *args, env={"TRINIT_CACHE_DIR": str(scratch / "cache")})


def _cache_entries(scratch: Path) -> list[str]:
    images = scratch / "cache" / "images"
    return sorted(os.listdir(images)) if images.exists() else []


def test_oci_layout_defaults_whiteouts_and_overrides(scratch: Path) -> None:
    layout = make_oci_layout(scratch / "layout")
    result = _run(scratch, "--image", str(layout))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == EXPECTED
    overridden = _run(
        scratch, "--image", str(layout), "-e", "GREETING=bye", "-w", "/", "-u", "0", "--",
        "sh", "-c", 'echo "$GREETING $(pwd) $(id -u)"; ls /opq/sub 2>&1',
    )  # fmt: skip
    assert overridden.stdout.splitlines() == [
        "bye / 0",
        "ls: /opq/sub: No such file or directory",  # opaque: the lower subdirectory is gone
    ], overridden.stderr


def test_cache_is_used_and_never_written_by_containers(scratch: Path) -> None:
    layout = make_oci_layout(scratch / "layout")
    first = _run(scratch, "--image", str(layout), "-u", "0", "--", "sh", "-c", "echo x > /written")
    assert first.returncode == 0, first.stderr
    (entry,) = _cache_entries(scratch)  # only the finished entry: no scratch left behind
    rootfs = scratch / "cache" / "images" / entry / "rootfs"
    assert entry.startswith("sha256-") and (rootfs / "etc" / "keep").exists()
    assert not (rootfs / "written").exists()  # writes went to the container's own layer
    # planted in the cache: a second run sees it, so it used the tree, not a new unpack
    (rootfs / "marker").write_text("from the cache\n")
    second = _run(scratch, "--image", str(layout), "--", "cat", "/marker")
    assert (second.returncode, second.stdout) == (0, "from the cache\n"), second.stderr
    assert _cache_entries(scratch) == [entry]


def test_tampered_blob_fails_with_a_digest_error(scratch: Path) -> None:
    layout = make_oci_layout(scratch / "layout")
    manifest_digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest[7:]).read_bytes())
    layer = layout / "blobs" / "sha256" / manifest["layers"][1]["digest"][7:]
    data = bytearray(layer.read_bytes())
    data[-5] ^= 0xFF  # same size, different bytes
    layer.write_bytes(bytes(data))
    result = _run(scratch, "--image", str(layout), "--", "true")
    assert result.returncode == 125
    assert no_traceback(result) and len(result.stderr.splitlines()) == 1
    assert "digest mismatch" in result.stderr and manifest["layers"][1]["digest"] in result.stderr
    assert _cache_entries(scratch) == []  # nothing half-unpacked is kept


def test_docker_archive_tarball(scratch: Path) -> None:
    archive = make_docker_archive(scratch / "image.tar")
    result = _run(scratch, "--image", str(archive))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == EXPECTED


def test_not_an_image(scratch: Path) -> None:
    (scratch / "empty").mkdir()
    result = _run(scratch, "--image", str(scratch / "empty"), "--", "true")
    assert result.returncode == 125 and "neither an OCI layout" in result.stderr


# ------------------------------------------------------------------ layer safety


def _apply(root: Path, *layers: bytes) -> None:
    for layer in layers:
        apply_layer(str(root), io.BytesIO(layer))


@pytest.mark.parametrize(
    "entry",
    [
        ("../escape", b"x", {}),
        ("/abs", b"x", {}),
        ("a/../../escape", b"x", {}),
        ("link", None, {"type": tarfile.LNKTYPE, "linkname": "../outside"}),
    ],
)
def test_layer_entries_that_leave_the_root_fail(scratch: Path, entry) -> None:  # type: ignore[no-untyped-def]
    root = scratch / "root"
    root.mkdir()
    with pytest.raises(LayerError):
        _apply(root, _tar([entry]))
    assert not (scratch / "escape").exists() and not (scratch / "abs").exists()


def test_layer_never_writes_through_a_symlink(scratch: Path) -> None:
    root, outside = scratch / "root", scratch / "outside"
    root.mkdir()
    outside.mkdir()
    lower = _tar([("esc", None, {"type": tarfile.SYMTYPE, "linkname": str(outside)})])
    _apply(root, lower)
    assert os.readlink(root / "esc") == str(outside)  # symlinks are kept as data
    with pytest.raises(LayerError, match="symlink"):
        _apply(root, _tar([("esc/planted", b"x", {})]))
    with pytest.raises(LayerError, match="symlink"):
        _apply(root, _tar([("esc/.wh.victim", b"", {})]))
    assert os.listdir(outside) == []
    # a directory entry replaces the link instead of following it
    _apply(root, _tar([("esc", None, {}), ("esc/inside", b"ok", {})]))
    assert (root / "esc").is_dir() and not (root / "esc").is_symlink()
    assert os.listdir(outside) == []


def test_layer_skips_device_nodes_and_keeps_hard_links_inside(scratch: Path) -> None:
    root = scratch / "root"
    root.mkdir()
    _apply(
        root,
        _tar(
            [
                ("disk", None, {"type": tarfile.BLKTYPE, "devmajor": 8, "devminor": 0}),
                ("file", b"data", {"mode": 0o4755}),
                ("hard", None, {"type": tarfile.LNKTYPE, "linkname": "file"}),
            ]
        ),
    )
    assert not (root / "disk").exists()
    assert (root / "hard").read_bytes() == b"data"
    assert os.stat(root / "hard").st_ino == os.stat(root / "file").st_ino
    assert os.stat(root / "file").st_mode & 0o7777 == 0o4755
