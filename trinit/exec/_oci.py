"""Decode and alter the OCI runtime spec of a CreateProcess request (docs/protocol.md §5.2, §9).

Owns no state. :func:`decode_spec` turns the request's ``configuration`` bytes into a dict;
:func:`alter_spec` validates the shapes trinit relies on and applies vminitd's alterations
(cgroupsPath and cwd defaults, user resolution, PATH/HOME/TERM, additionalGids). Every key
received is kept (the spec is copied, only values are edited or added), so the resulting
config.json round-trips whatever the host sent.

Deviation from vminitd, on purpose: a spec without a ``linux`` object does not crash trinit.
It gets an explicit ``linux`` object with the defaults the exec helper would use anyway
(namespaces pid, mount and uts; cgroupsPath ``/container/<id>``), so config.json says what
happens.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from trinit.errors import Internal, InvalidArgument
from trinit.exec._user import resolve_user

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_NAMESPACES = ("pid", "mount", "uts")


def decode_spec(data: bytes) -> dict[str, Any]:
    """Decode a JSON OCI spec; bad JSON -> Internal, a non-object -> InvalidArgument."""
    try:
        spec = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Internal(f"failed to decode configuration: {exc}") from None
    if not isinstance(spec, dict):
        raise InvalidArgument("configuration must be a JSON object")
    return spec


def _require(value: object, kind: type | tuple[type, ...], where: str) -> None:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise InvalidArgument(f"invalid spec: {where} must be {_article(name)}")


def _article(name: str) -> str:
    names = {
        "dict": "an object",
        "list": "an array",
        "str": "a string",
        "int": "an integer",
        "bool": "a boolean",
    }
    return names.get(name, name)


def _str_list(value: object, where: str) -> list[str]:
    _require(value, list, where)
    assert isinstance(value, list)
    for item in value:
        _require(item, str, f"{where}[]")
    return value


def _validate(spec: dict[str, Any]) -> None:
    process = spec.get("process")
    if process is None:
        raise InvalidArgument("invalid spec: process is missing")
    _require(process, dict, "process")
    root = spec.get("root")
    if root is None:
        raise InvalidArgument("invalid spec: root is missing")
    _require(root, dict, "root")
    _require(root.get("path"), str, "root.path")
    if "readonly" in root:
        _require(root["readonly"], bool, "root.readonly")

    for key in ("args", "env"):
        if key in process:
            _str_list(process[key], f"process.{key}")
    if "cwd" in process:
        _require(process["cwd"], str, "process.cwd")
    if "terminal" in process:
        _require(process["terminal"], bool, "process.terminal")
    if process.get("consoleSize") is not None:  # applied by the exec helper
        _require(process["consoleSize"], dict, "process.consoleSize")
        for key in ("height", "width"):
            _require(process["consoleSize"].get(key), int, f"process.consoleSize.{key}")
    user = process.get("user")
    if user is not None:
        _require(user, dict, "process.user")
        for key in ("uid", "gid"):
            if key in user:
                _require(user[key], int, f"process.user.{key}")
        if "username" in user:
            _require(user["username"], str, "process.user.username")
        if "additionalGids" in user:
            _require(user["additionalGids"], list, "process.user.additionalGids")
            for gid in user["additionalGids"]:
                _require(gid, int, "process.user.additionalGids[]")
    if "rlimits" in process:
        _require(process["rlimits"], list, "process.rlimits")
        for rlimit in process["rlimits"]:
            _require(rlimit, dict, "process.rlimits[]")
            _require(rlimit.get("type"), str, "process.rlimits[].type")
            for key in ("soft", "hard"):
                _require(rlimit.get(key), int, f"process.rlimits[].{key}")
    caps = process.get("capabilities")
    if caps is not None:
        _require(caps, dict, "process.capabilities")
        for name, value in caps.items():
            if value is not None:
                _str_list(value, f"process.capabilities.{name}")

    if "hostname" in spec and spec["hostname"] is not None:
        _require(spec["hostname"], str, "hostname")
    if "mounts" in spec and spec["mounts"] is not None:
        _require(spec["mounts"], list, "mounts")
        for mount in spec["mounts"]:
            _require(mount, dict, "mounts[]")
            _require(mount.get("destination"), str, "mounts[].destination")
            for key in ("type", "source"):
                if mount.get(key) is not None:
                    _require(mount[key], str, f"mounts[].{key}")
            if mount.get("options") is not None:
                _str_list(mount["options"], "mounts[].options")

    linux = spec.get("linux")
    if linux is not None:
        _require(linux, dict, "linux")
        if linux.get("cgroupsPath") is not None:
            _require(linux["cgroupsPath"], str, "linux.cgroupsPath")
        if linux.get("namespaces") is not None:
            _require(linux["namespaces"], list, "linux.namespaces")
            for ns in linux["namespaces"]:
                _require(ns, dict, "linux.namespaces[]")
                _require(ns.get("type"), str, "linux.namespaces[].type")
                if ns.get("path") is not None:
                    _require(ns["path"], str, "linux.namespaces[].path")
        for key in ("maskedPaths", "readonlyPaths"):
            if linux.get(key) is not None:
                _str_list(linux[key], f"linux.{key}")
        if linux.get("sysctl") is not None:
            _require(linux["sysctl"], dict, "linux.sysctl")
            for value in linux["sysctl"].values():
                _require(value, str, "linux.sysctl values")
        if linux.get("seccomp") is not None:
            # imported here: only specs with a profile pay for the compiler and its syscall
            # tables (~0.4 MiB of the agent's memory, ~4 ms); Apple's hosts send none
            from trinit.exec._seccomp import SeccompError, compile_filter

            try:  # the helper compiles it again; refusing here fails CreateProcess, not Start
                compile_filter(linux["seccomp"])
            except SeccompError as exc:
                raise InvalidArgument(f"invalid spec: {exc}") from None


def _dedupe(values: list[int]) -> list[int]:
    seen: set[int] = set()
    result: list[int] = []
    for value in values:
        if value not in seen:
            seen.add(value)
            result.append(value)
    return result


def alter_spec(spec: dict[str, Any], request_id: str, *, owned: bool = False) -> dict[str, Any]:
    """A validated copy of ``spec`` with vminitd's alterations applied (docs/protocol.md §5.2).

    Raises InvalidArgument for a missing ``process``/``root`` or a wrong JSON shape, and
    Internal when the user or group cannot be resolved. ``spec`` itself is not modified,
    unless ``owned``: a caller that gives the spec away (CreateProcess's, decoded from the
    request a moment before) has it altered in place and returned, since a deep copy of a
    typical spec costs ~0.1 ms of every create.
    """
    _require(spec, dict, "configuration")
    _validate(spec)
    if not owned:
        spec = copy.deepcopy(spec)

    linux = spec.get("linux")
    if linux is None:
        linux = spec["linux"] = {
            "namespaces": [{"type": ns, "path": ""} for ns in DEFAULT_NAMESPACES]
        }
    if not linux.get("cgroupsPath"):
        linux["cgroupsPath"] = f"/container/{request_id}"

    process = spec["process"]
    if not process.get("cwd"):
        process["cwd"] = "/"

    user = process.get("user")
    if user is None:
        user = process["user"] = {"uid": 0, "gid": 0}
    username = user.get("username") or ""
    user_string = username or f"{user.get('uid', 0)}:{user.get('gid', 0)}"
    resolved = resolve_user(spec["root"]["path"], user_string)
    user["uid"] = resolved.uid
    user["gid"] = resolved.gid
    gids = list(user.get("additionalGids") or [])
    gids.extend(resolved.additional_gids)
    gids.append(resolved.gid)
    user["additionalGids"] = _dedupe(gids)

    env = process.get("env")
    if env is None:
        env = process["env"] = []
    if not any(item.startswith("PATH=") for item in env):
        env.append(DEFAULT_PATH)
    if not any(item.startswith("HOME=") for item in env):
        env.append(f"HOME={resolved.home}")
    if process.get("terminal") and not any(item.startswith("TERM=") for item in env):
        env.append("TERM=xterm")
    return spec
