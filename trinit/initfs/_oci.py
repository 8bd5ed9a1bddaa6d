"""Pack a staged image as an OCI image layout: one gzip layer, a config, a manifest, an index.

This is the shape Apple's ``InitImage.create`` ingests (an image whose single layer is the
init filesystem): the config names the architecture (OCI/Go spelling: ``amd64``,
``arm64``) and ``os: linux``, and its entrypoint is ``/sbin/vminitd``. The layer is a tar
with owner root and mtime 0 and gzip with mtime 0, so the same tree gives the same digests.
Device nodes go into the tar as headers (no privileges needed; ``walk`` never lists nodes
that were created in the staging directory).

``output`` is a directory (created; must not exist or be empty), or, when it ends in
``.tar``, a tar archive of that directory (what ``docker load``/``skopeo`` accept as
``oci-archive:``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile

from ._image import LAUNCHER, Tree, walk

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def layer_tar(tree: Tree) -> bytes:
    """The uncompressed layer: every entry of the tree, parents first, owner 0:0, mtime 0."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, kind, st in walk(tree.root):
            info = tarfile.TarInfo(rel)
            info.mode = st.st_mode & 0o7777
            info.mtime = 0
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(os.path.join(tree.root, rel))
                tar.addfile(info)
            else:
                info.size = st.st_size
                with open(os.path.join(tree.root, rel), "rb") as file:
                    tar.addfile(info, file)
        for name, major, minor, mode in tree.devices:
            info = tarfile.TarInfo(name)
            info.type = tarfile.CHRTYPE
            info.devmajor, info.devminor, info.mode, info.mtime = major, minor, mode, 0
            tar.addfile(info)
    return buffer.getvalue()


def pack_oci(tree: Tree, output: str, *, ref: str = "latest") -> dict[str, str]:
    """Write the OCI layout of ``tree``; returns the digests (layer, config, manifest)."""
    raw = layer_tar(tree)
    layer = gzip.compress(raw, compresslevel=9, mtime=0)
    config = _json({
        "architecture": tree.arch.oci,
        "os": "linux",
        "config": {"Entrypoint": [LAUNCHER]},
        "rootfs": {"type": "layers", "diff_ids": [_digest(raw)]},
        "history": [{"created_by": "trinit image build", "comment": "vminit filesystem"}],
    })  # fmt: skip
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": LAYER, "digest": _digest(layer), "size": len(layer)}],
    })  # fmt: skip
    index = _json({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{
            "mediaType": MANIFEST, "digest": _digest(manifest), "size": len(manifest),
            "platform": {"architecture": tree.arch.oci, "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": ref},
        }],
    })  # fmt: skip
    archive = output.endswith(".tar")
    target = tempfile.mkdtemp(prefix=".oci-", dir=os.path.dirname(os.path.abspath(output)))
    try:
        blobs = os.path.join(target, "blobs", "sha256")
        os.makedirs(blobs)
        for blob in (layer, config, manifest):
            with open(os.path.join(blobs, _digest(blob).split(":")[1]), "wb") as file:
                file.write(blob)
        with open(os.path.join(target, "oci-layout"), "wb") as file:
            file.write(_json({"imageLayoutVersion": "1.0.0"}))
        with open(os.path.join(target, "index.json"), "wb") as file:
            file.write(index)
        if archive:
            partial = output + ".partial"
            with tarfile.open(partial, "w") as tar:
                for name in ("oci-layout", "index.json", "blobs"):
                    tar.add(os.path.join(target, name), name, filter=_normalise)
            os.replace(partial, output)
        else:
            if os.path.isdir(output) and not os.listdir(output):
                os.rmdir(output)
            os.rename(target, output)
    finally:
        shutil.rmtree(target, ignore_errors=True)
        if archive and os.path.exists(output + ".partial"):
            os.unlink(output + ".partial")
    return {"layer": _digest(layer), "config": _digest(config), "manifest": _digest(manifest)}


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
