"""ConfigureDns and ConfigureHosts: render ``resolv.conf`` and ``hosts`` and install them
atomically under ``<location>/etc``.

Rendering is pure (:func:`render_resolv_conf`, :func:`render_hosts`) and byte-exact with
vminitd. Installation is :func:`trinit.system._etc.install_etc_file`: atomic, and never
through a symlink the image planted (``location`` is a container rootfs).
"""

from __future__ import annotations

from trinit._proto import sandbox_pb2 as pb
from trinit.errors import Internal, InvalidArgument

from ._common import has_nul, os_reason, run_blocking
from ._etc import install_etc_file


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


async def _write(op: str, location: str, name: str, data: bytes) -> None:
    if has_nul(location):
        raise InvalidArgument(f"{op}: {location!r}: NUL byte in location")
    try:
        await run_blocking(lambda: install_etc_file(location, name, data))
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
