"""ConfigureDns and ConfigureHosts: render ``resolv.conf`` and ``hosts`` and install them
atomically under ``<location>/etc``.

Rendering is pure (:func:`render_resolv_conf`, :func:`render_hosts`) and byte-exact with
vminitd. Installation writes a temporary file in the same directory and renames it over the
target, so a reader never sees a partial file. ``<location>/etc`` itself is opened without
following a symlink: ``location`` is a container rootfs whose contents the image controls,
and its ``etc`` must not redirect the write into the VM's own files. A symlink *at*
``etc/resolv.conf`` is replaced, not followed (rename(2) replaces the link itself).
"""

from __future__ import annotations

import errno
import os
import secrets

from trinit._proto import sandbox_pb2 as pb
from trinit.errors import Internal, InvalidArgument

from ._common import has_nul, os_reason, run_blocking


def _check_fields(op: str, values: list[str]) -> None:
    """A newline or NUL inside a value would forge extra lines; refuse it."""
    for value in values:
        if any(ch in value for ch in "\n\r\x00"):
            raise InvalidArgument(f"{op}: value {value!r} holds a line break or NUL")


def render_resolv_conf(request: pb.ConfigureDnsRequest) -> bytes:
    """nameserver lines, then ``domain``, ``search`` and ``options``; each line ends in
    ``\\n``; an empty request renders an empty file."""
    lines = [f"nameserver {ns}" for ns in request.nameservers]
    if request.HasField("domain"):
        lines.append(f"domain {request.domain}")
    if request.searchDomains:
        lines.append("search " + " ".join(request.searchDomains))
    if request.options:
        lines.append("options " + " ".join(request.options))
    return "".join(f"{line}\n" for line in lines).encode()


def render_hosts(request: pb.ConfigureHostsRequest) -> bytes:
    """Optional ``# <comment>`` line, then ``<ip> <name>...[ # <comment> ]`` per entry
    (vminitd's trailing space kept), lines joined by ``\\n``, ending in ``\\n``."""
    lines: list[str] = []
    if request.HasField("comment"):
        lines.append(f"# {request.comment}")
    for entry in request.entries:
        line = entry.ipAddress + "".join(f" {name}" for name in entry.hostnames)
        if entry.HasField("comment"):
            line += f" # {entry.comment} "
        lines.append(line)
    return ("\n".join(lines) + "\n").encode()


def _install(location: str, name: str, data: bytes) -> None:
    etc = os.path.join(location, "etc")
    os.makedirs(etc, 0o755, exist_ok=True)
    try:
        dir_fd = os.open(etc, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(etc):
            raise OSError(errno.ELOOP, "is a symlink, not followed", etc) from exc
        raise
    try:
        temp = f".{name}.trinit-{secrets.token_hex(6)}"
        fd = os.open(
            temp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
            dir_fd=dir_fd,
        )
        try:
            try:
                os.fchmod(fd, 0o644)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(temp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
    finally:
        os.close(dir_fd)


async def _write(op: str, location: str, name: str, data: bytes) -> None:
    if has_nul(location):
        raise InvalidArgument(f"{op}: {location!r}: NUL byte in location")
    try:
        await run_blocking(lambda: _install(location, name, data))
    except OSError as exc:
        raise Internal(f"{op}: {os_reason(exc)}") from None


async def configure_dns(request: pb.ConfigureDnsRequest) -> pb.ConfigureDnsResponse:
    """Write ``<location>/etc/resolv.conf`` atomically (mode 0644).

    Raises ``Internal("configureDns: <reason>")``, or ``InvalidArgument`` for a value with a
    line break. Cancellation waits for the write; the file is either old or new.
    """
    values = [*request.nameservers, request.domain, *request.searchDomains, *request.options]
    _check_fields("configureDns", values)
    data = render_resolv_conf(request)
    await _write("configureDns", request.location, "resolv.conf", data)
    return pb.ConfigureDnsResponse()


async def configure_hosts(request: pb.ConfigureHostsRequest) -> pb.ConfigureHostsResponse:
    """Write ``<location>/etc/hosts`` atomically (mode 0644).

    Raises ``Internal("configureHosts: <reason>")``, or ``InvalidArgument`` for a value with
    a line break. Cancellation waits for the write; the file is either old or new.
    """
    values = [request.comment]
    for entry in request.entries:
        values += [entry.ipAddress, *entry.hostnames, entry.comment]
    _check_fields("configureHosts", values)
    data = render_hosts(request)
    await _write("configureHosts", request.location, "hosts", data)
    return pb.ConfigureHostsResponse()
