"""Local images: an OCI image layout or a docker-archive, unpacked into a cache by digest.

Accepted inputs (nothing is fetched from a network):

* an OCI image layout directory (``skopeo copy ... oci:DIR``; ``index.json`` + ``blobs/``),
* a docker-archive directory or tarball (``docker save``: ``manifest.json``; recent
  docker saves carry an OCI layout too, which is then preferred),
* a tarball of an OCI layout.

Every blob read is checked against its descriptor (size and digest) before it is used; a
docker-archive's layers are checked against the config's ``rootfs.diff_ids`` and its config
against a digest-shaped file name. Layers are applied in order into a scratch directory
next to the cache entry (``_layer.apply_layer``: whiteouts, safe extraction), which is
renamed into place only when complete, so a failed or interrupted unpack leaves nothing a
later run would trust. The cache key is the config digest, which pins every layer: a second
run of the same image reads three small JSON blobs and unpacks nothing.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from ._errors import CliError
from ._layer import LayerError, apply_layer

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_DIGEST = re.compile(r"^(sha256|sha512):([a-f0-9]{64}|[a-f0-9]{128})$")
_HEX64 = re.compile(r"[a-f0-9]{64}")
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


class Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class ImageConfig:
    """The run defaults an image carries (``config.config`` of the image config)."""

    env: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    workdir: str = ""
    user: str = ""

    @classmethod
    def parse(cls, config: dict[str, Any]) -> ImageConfig:
        run = config.get("config") or {}

        def strings(key: str) -> list[str]:
            value = run.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise CliError(f"image: config.{key} is not a list of strings")
            return value

        return cls(
            env=strings("Env"),
            entrypoint=strings("Entrypoint"),
            cmd=strings("Cmd"),
            workdir=str(run.get("WorkingDir") or ""),
            user=str(run.get("User") or ""),
        )


@dataclass(frozen=True)
class Image:
    digest: str  #: the config digest, ``sha256:...``: the image id
    rootfs: str  #: the unpacked tree in the cache (used read-only)
    config: ImageConfig
    cached: bool  #: True when this call found it unpacked already


def cache_root() -> str:
    """``$TRINIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/trinit``, else /var/cache/trinit for
    root and ~/.cache/trinit for others."""
    explicit = os.environ.get("TRINIT_CACHE_DIR")
    if explicit:
        return explicit
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return os.path.join(xdg, "trinit")
    if os.geteuid() == 0:
        return "/var/cache/trinit"
    return os.path.join(os.path.expanduser("~"), ".cache", "trinit")


# ------------------------------------------------------------------ reading the source


@dataclass(frozen=True)
class _Layer:
    path: str
    #: what the bytes of the file must hash to (OCI) or None
    digest: str | None
    size: int | None
    #: what the uncompressed tar must hash to (docker-archive) or None
    diff_id: str | None
    label: str


def _hasher(digest: str, what: str) -> tuple[Any, str]:
    match = _DIGEST.match(digest)
    if match is None:
        raise CliError(f"image: {what}: unsupported or malformed digest {digest!r}")
    return hashlib.new(match.group(1)), match.group(2)


def _check_digest(stream: Reader, digest: str, size: int | None, what: str) -> int:
    hasher, expected = _hasher(digest, what)
    total = 0
    while chunk := stream.read(1 << 20):
        hasher.update(chunk)
        total += len(chunk)
    if size is not None and total != size:
        raise CliError(f"image: {what}: size {total} does not match its descriptor ({size})")
    if hasher.hexdigest() != expected:
        name = digest.partition(":")[0]
        raise CliError(
            f"image: {what}: digest mismatch: expected {digest}, got {name}:{hasher.hexdigest()}"
        )
    return total


def _open(path: str, what: str) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise CliError(f"image: cannot read {what}: {exc.strerror or exc}") from None


def _load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise CliError(f"image: {what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError(f"image: {what} is not a JSON object")
    return value


class _Source:
    """A directory holding an OCI layout and/or a docker-archive."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def path(self, relative: str) -> str:
        parts = [p for p in relative.split("/") if p not in ("", ".")]
        if relative.startswith("/") or ".." in parts:
            raise CliError(f"image: bad path {relative!r} in the image metadata")
        return os.path.join(self.directory, *parts)

    def blob_path(self, descriptor: dict[str, Any], what: str) -> str:
        digest = str(descriptor.get("digest", ""))
        match = _DIGEST.match(digest)
        if match is None:
            raise CliError(f"image: {what}: unsupported or malformed digest {digest!r}")
        return self.path(f"blobs/{match.group(1)}/{match.group(2)}")

    def blob(self, descriptor: dict[str, Any], what: str) -> bytes:
        """A small blob, checked against its descriptor."""
        with _open(self.blob_path(descriptor, what), what) as file:
            data = file.read()
        _check_digest(io.BytesIO(data), descriptor["digest"], _size(descriptor), what)
        return data

    def read_json(self, relative: str) -> Any:
        with _open(self.path(relative), relative) as file:
            data = file.read()
        try:
            return json.loads(data)
        except ValueError as exc:
            raise CliError(f"image: {relative} is not valid JSON: {exc}") from None

    def manifest(self) -> tuple[bytes, str, list[_Layer]]:
        """(config bytes, config digest, layers), from the OCI index if there is one."""
        if os.path.exists(self.path("index.json")):
            return self._oci()
        if os.path.exists(self.path("manifest.json")):
            return self._docker()
        raise CliError(
            f"image: {self.directory} is neither an OCI layout (index.json) nor a "
            "docker-archive (manifest.json)"
        )

    def _oci(self) -> tuple[bytes, str, list[_Layer]]:
        index = self.read_json("index.json")
        descriptor = _choose(index, "index.json")
        while descriptor.get("mediaType") in INDEX_TYPES:
            nested = _load_json(self.blob(descriptor, "image index"), "image index")
            descriptor = _choose(nested, f"image index {descriptor.get('digest')}")
        manifest = _load_json(self.blob(descriptor, "manifest"), "manifest")
        config_descriptor = manifest.get("config")
        if not isinstance(config_descriptor, dict):
            raise CliError("image: the manifest has no config")
        config = self.blob(config_descriptor, "config")
        layers = []
        for number, layer in enumerate(manifest.get("layers") or [], 1):
            media = str(layer.get("mediaType", ""))
            label = f"layer {number} ({layer.get('digest')})"
            if "zstd" in media:
                raise CliError(f"image: {label}: zstd-compressed layers are not supported")
            layers.append(
                _Layer(self.blob_path(layer, label), layer["digest"], _size(layer), None, label)
            )
        return config, str(config_descriptor["digest"]), layers

    def _docker(self) -> tuple[bytes, str, list[_Layer]]:
        entries = self.read_json("manifest.json")
        if not isinstance(entries, list) or len(entries) != 1:
            raise CliError("image: manifest.json must describe exactly one image")
        entry = entries[0]
        config_name = str(entry.get("Config", ""))
        with _open(self.path(config_name), config_name) as file:
            config = file.read()
        names = _HEX64.findall(config_name)
        digest = f"sha256:{names[-1]}" if names else None
        if digest is not None:
            _check_digest(io.BytesIO(config), digest, None, "config")
        else:
            digest = f"sha256:{hashlib.sha256(config).hexdigest()}"
        diff_ids = (_load_json(config, "config").get("rootfs") or {}).get("diff_ids") or []
        paths = entry.get("Layers") or []
        if len(paths) != len(diff_ids):
            raise CliError("image: manifest.json and the config disagree on the layer count")
        layers = [
            _Layer(self.path(str(path)), None, None, str(diff), f"layer {n} ({diff})")
            for n, (path, diff) in enumerate(zip(paths, diff_ids, strict=True), 1)
        ]
        return config, digest, layers


def _size(descriptor: dict[str, Any]) -> int | None:
    size = descriptor.get("size")
    return int(size) if isinstance(size, int) else None


def _choose(index: Any, what: str) -> dict[str, Any]:
    """The one manifest of an index, or the one for this machine's platform."""
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not manifests:
        raise CliError(f"image: {what} lists no manifests")
    if len(manifests) == 1:
        return dict(manifests[0])
    arch = _ARCH.get(platform.machine(), platform.machine())
    matching = [
        m
        for m in manifests
        if (m.get("platform") or {}).get("os") == "linux"
        and (m.get("platform") or {}).get("architecture") == arch
    ]
    if len(matching) != 1:
        raise CliError(f"image: {what} has {len(manifests)} manifests and not one for linux/{arch}")
    return dict(matching[0])


@contextlib.contextmanager
def _opened(path: str, scratch: str) -> Iterator[_Source]:
    """A directory as is; a tarball extracted (data filter: no links out, no devices) into
    a scratch directory that is removed afterwards."""
    if os.path.isdir(path):
        yield _Source(path)
        return
    if not os.path.isfile(path):
        raise CliError(f"image: {path}: no such file or directory")
    directory = tempfile.mkdtemp(prefix="archive-", dir=scratch)
    try:
        try:
            with tarfile.open(path, mode="r:*") as tar:
                tar.extractall(directory, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise CliError(f"image: cannot read the archive {path}: {exc}") from None
        yield _Source(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# ------------------------------------------------------------------ unpacking


class _Tee:
    """A reader that hashes what passes through it."""

    def __init__(self, stream: IO[bytes], hasher: Any) -> None:
        self._stream = stream
        self._hasher = hasher

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._hasher.update(data)
        return data


def _verify_layer(layer: _Layer) -> None:
    """Check a layer file before anything of it is unpacked."""
    with _open(layer.path, layer.label) as file:
        if layer.digest is not None:
            _check_digest(file, layer.digest, layer.size, layer.label)
            return
        assert layer.diff_id is not None
        magic = file.read(2)
        file.seek(0)
        stream: Reader = gzip.GzipFile(fileobj=file) if magic == b"\x1f\x8b" else file
        try:
            _check_digest(stream, layer.diff_id, None, layer.label)
        except (OSError, EOFError) as exc:
            raise CliError(f"image: {layer.label}: {exc}") from None


def _unpack(layers: list[_Layer], rootfs: str) -> None:
    for layer in layers:
        _verify_layer(layer)
    for layer in layers:
        with _open(layer.path, layer.label) as file:
            try:
                apply_layer(rootfs, file)
            except LayerError as exc:
                raise CliError(f"image: {layer.label}: {exc}") from None
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise CliError(f"image: {layer.label}: cannot unpack: {exc}") from None


def prepare(path: str, cache: str | None = None) -> Image:
    """The image at ``path`` unpacked (from the cache when it was before)."""
    images = os.path.join(cache or cache_root(), "images")
    try:
        os.makedirs(images, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise CliError(f"image: cannot create the cache {images}: {exc.strerror}") from None
    with _opened(path, images) as source:
        config_bytes, digest, layers = source.manifest()
        config = ImageConfig.parse(_load_json(config_bytes, "config"))
        entry = os.path.join(images, digest.replace(":", "-"))
        rootfs = os.path.join(entry, "rootfs")
        if os.path.isdir(rootfs):
            return Image(digest, rootfs, config, cached=True)
        scratch = tempfile.mkdtemp(prefix="unpack-", dir=images)
        try:
            os.chmod(scratch, 0o755)
            os.mkdir(os.path.join(scratch, "rootfs"), 0o755)
            _unpack(layers, os.path.join(scratch, "rootfs"))
            with open(os.path.join(scratch, "config.json"), "wb") as file:
                file.write(config_bytes)
            try:
                os.rename(scratch, entry)
            except OSError:
                if not os.path.isdir(rootfs):  # not a concurrent run that finished first
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return Image(digest, rootfs, config, cached=False)
