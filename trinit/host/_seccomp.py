"""The containerd/Docker default seccomp profile, resolved into an OCI ``linux.seccomp``.

``seccomp_default.json`` (package data) is Docker's ``profiles/seccomp/default.json`` as
data: an allow-list with ``includes``/``excludes`` conditions on the architecture, the
capabilities and the kernel version. Docker and containerd resolve those conditions on the
host for each container; :func:`default_seccomp` does the same, so the agent only ever sees
a plain OCI profile and applies exactly what the spec asks.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from typing import Any

from ._rootfs import DEFAULT_CAPABILITIES

# os.uname().machine -> the Go architecture names Docker's profile uses
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_SCMP_NATIVE = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64"}


def _load() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("seccomp_default.json").read_text()
    profile: dict[str, Any] = json.loads(text)
    return profile


def default_seccomp(
    capabilities: list[str] | None = None, machine: str | None = None
) -> dict[str, Any]:
    """Docker's default profile for a container with ``capabilities`` (its bounding set;
    default: the host library's default set) on ``machine`` (``os.uname().machine`` of the
    VM, default this machine's: x86_64 or aarch64). Returns a new ``linux.seccomp`` dict.

    As in Docker, a rule is kept when every capability in ``includes.caps`` is held, the
    architecture is in ``includes.arches`` (if given), and nothing in ``excludes`` matches;
    ``includes.minKernel`` (4.8) is always met by a kernel trinit runs on.
    """
    arch = _GO_ARCH.get(machine or os.uname().machine)
    if arch is None:
        raise ValueError(f"no default seccomp profile for machine {machine!r}")
    caps = {
        _cap_name(name) for name in (DEFAULT_CAPABILITIES if capabilities is None else capabilities)
    }
    profile = _load()
    native = _SCMP_NATIVE[arch]
    architectures: list[str] = []
    for entry in profile["archMap"]:
        if entry["architecture"] == native:
            architectures = [native, *(entry["subArchitectures"] or [])]
    syscalls: list[dict[str, Any]] = []
    for rule in profile["syscalls"]:
        includes = rule.get("includes") or {}
        excludes = rule.get("excludes") or {}
        if includes.get("arches") and arch not in includes["arches"]:
            continue
        if not all(cap in caps for cap in includes.get("caps") or []):
            continue
        if arch in (excludes.get("arches") or []):
            continue
        if any(cap in caps for cap in excludes.get("caps") or []):
            continue
        kept = {"names": list(rule["names"]), "action": rule["action"]}
        for key in ("args", "errnoRet"):
            if key in rule:
                kept[key] = rule[key]
        syscalls.append(kept)
    return {
        "defaultAction": profile["defaultAction"],
        "defaultErrnoRet": profile["defaultErrnoRet"],
        "architectures": architectures,
        "syscalls": syscalls,
    }


def _cap_name(name: str) -> str:
    name = name.upper()
    return name if name.startswith("CAP_") else "CAP_" + name
