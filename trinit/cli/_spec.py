"""The OCI spec a CLI run sends: ``trinit.host.busybox_spec``'s safe skeleton plus the
command line, on top of an image's defaults.

The skeleton is the one the tests use on a development machine (tmpfs /dev with single
bound device nodes, a new devpts, no sysfs or devtmpfs: README "Hazards"), so a CLI run is
as safe on this machine as in a VM. Precedence, as docker's: command line over image
config over built-in default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trinit.host import busybox_spec

from ._image import ImageConfig

#: cpu.max period the host uses (docs/protocol.md §7.1): quota = cpus x period
CPU_PERIOD = 100_000


@dataclass(frozen=True)
class ProcessOptions:
    env: Sequence[str] = ()
    workdir: str | None = None
    user: str | None = None
    terminal: bool = False


def merge_env(base: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """``base`` with each ``K=V`` of ``overrides`` replacing the entry for K (or appended)."""
    merged: dict[str, str] = {}
    for item in [*base, *overrides]:
        merged[item.partition("=")[0]] = item
    return list(merged.values())


def user_field(user: str | None) -> dict[str, Any]:
    """process.user: ``username`` carries the whole string for the agent to resolve
    against the container's /etc/passwd and /etc/group (docs/protocol.md §5.2 step 3), so a
    bare uid gets its passwd group, as with docker; numeric ids are filled in too."""
    if not user:
        return {"uid": 0, "gid": 0}
    name, _, group = user.partition(":")
    field: dict[str, Any] = {
        "uid": int(name) if name.isdigit() else 0,
        "gid": int(group) if group.isdigit() else 0,
        "username": user,
    }
    return field


def command(given: Sequence[str], image: ImageConfig | None) -> list[str]:
    """Entrypoint + (the given command, else the image's Cmd)."""
    if image is None:
        return list(given)
    return [*image.entrypoint, *(given or image.cmd)]


def process_spec(
    base: dict[str, Any], args: Sequence[str], options: ProcessOptions, image: ImageConfig | None
) -> dict[str, Any]:
    """``base`` (a spec's ``process``) with the command line and image defaults applied."""
    process = dict(base)
    default_env = image.env if image is not None and image.env else process.get("env", [])
    process["args"] = list(args)
    process["env"] = merge_env(default_env, options.env)
    process["cwd"] = options.workdir or (image.workdir if image is not None else "") or "/"
    process["user"] = user_field(options.user or (image.user if image is not None else None))
    process["terminal"] = options.terminal
    return process


def container_spec(
    root: str,
    args: Sequence[str],
    options: ProcessOptions,
    *,
    name: str,
    image: ImageConfig | None = None,
    memory: int | None = None,
    cpus: float | None = None,
) -> dict[str, Any]:
    spec = busybox_spec(root, list(args), hostname=name)
    spec["process"] = process_spec(spec["process"], args, options, image)
    resources = spec["linux"]["resources"]
    if memory is not None:
        resources["memory"] = {"limit": memory}
    if cpus is not None:
        resources["cpu"] = {"quota": round(cpus * CPU_PERIOD), "period": CPU_PERIOD}
    return spec
