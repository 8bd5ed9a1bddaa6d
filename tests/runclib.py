"""The same OCI spec through runc and through trinit: what the process observes must match.

runc (Debian's package; ``scripts/setup.sh`` installs it) is the reference for container
isolation: devices, seccomp, user namespaces, capabilities. :func:`run_with_runc` runs a
spec as ``runc run`` in a throwaway bundle (its own state root, its own network namespace
added so nothing touches this machine's network) and returns what the process printed and
its exit status; :func:`compare` runs the same spec through a trinit agent and through runc.

Only observations are compared (what the command prints, its exit status), never internal
state. A command should print lines like ``key=value`` that describe what it saw.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

import pytest
from agentlib import Container, busybox_rootfs
from rootfs import test_spec

RUNC = shutil.which("runc")
_ids = itertools.count(1)


@dataclass(frozen=True)
class Observed:
    exit_code: int
    stdout: str


def require_runc() -> str:
    if RUNC is None:
        pytest.fail("runc is not installed: run ./scripts/setup.sh")
    return RUNC


def run_with_runc(spec: dict[str, Any], *, timeout: float = 60) -> Observed:
    """``runc run`` of ``spec`` (its ``root.path`` as given) in a fresh bundle; cleaned up."""
    runc = require_runc()
    spec = copy.deepcopy(spec)
    spec["process"]["terminal"] = False
    namespaces = spec.setdefault("linux", {}).setdefault("namespaces", [])
    if not any(ns.get("type") == "network" for ns in namespaces):
        namespaces.append({"type": "network"})  # never the machine's network
    container_id = f"trinit-parity-{os.getpid()}-{next(_ids)}"
    spec["linux"]["cgroupsPath"] = f"/{container_id}"
    bundle = tempfile.mkdtemp(prefix="trinit-runc-", dir="/tmp")
    state = os.path.join(bundle, "state")
    try:
        with open(os.path.join(bundle, "config.json"), "w") as file:
            json.dump(spec, file)
        result = subprocess.run(
            [runc, "--root", state, "run", "--bundle", bundle, container_id],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return Observed(result.returncode, result.stdout)
    finally:
        subprocess.run(
            [runc, "--root", state, "delete", "--force", container_id], capture_output=True
        )
        shutil.rmtree(bundle, ignore_errors=True)


def run_with_trinit(agent: Any, args: list[str], **overrides: Any) -> Observed:
    result = Container(agent.host).run(args, **overrides)
    return Observed(result.exit_code, result.stdout.decode(errors="replace"))


def compare(agent: Any, args: list[str], **overrides: Any) -> tuple[Observed, Observed]:
    """(trinit's observation, runc's) for the same spec; the caller asserts what matters."""
    trinit = run_with_trinit(agent, args, **overrides)
    runc = run_with_runc(test_spec(busybox_rootfs(), args, **overrides))
    return trinit, runc
