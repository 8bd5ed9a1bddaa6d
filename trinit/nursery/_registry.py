"""ContainerRegistry: container id -> Container, and the process operations on them.

Created once in the agent's ``main`` (tests build their own) and handed the root nursery:
every container runs as a task of that nursery. The registry implements the process RPCs'
semantics (docs/protocol.md §3, §4, §5); the RPC layer only translates messages.

Concurrency: creating an id reserves it first, so two CreateProcess calls for the same id
cannot both succeed; everything else is serialised per container, never globally.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import trio

from trinit import errors
from trinit._log import fields
from trinit.exec import add_root, alter_spec, decode_spec, remove_root
from trinit.system import install_etc_file

from ._backend import ProcessBackend
from ._container import BUNDLE_ROOT, CgroupHooks, Container, write_json
from ._process import Dial, ManagedProcess, StdioPorts
from ._reaper import Reaper
from ._runc import RuncBackend

INLINE_PROCESS_LIMIT = 64 << 10
"""An exec's process (JSON) up to this size goes to the helper as an argument; a larger one
as a file in the bundle (``execs/<id>/process.json``). The file costs a worker-thread trip
to write it and one to remove it (~0.25 ms each); the limit keeps one argument under the
kernel's 128 KiB cap (MAX_ARG_STRLEN) when the helper is spawned instead of forked."""

log = logging.getLogger("trinit.registry")


class ContainerRegistry:
    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        reaper: Reaper,
        backend: ProcessBackend,
        dial: Dial,
        cgroups: CgroupHooks | None = None,
        bundle_root: str = BUNDLE_ROOT,
        drain_grace: float = 2.0,
    ) -> None:
        self._nursery = nursery
        self._reaper = reaper
        self._backend = backend
        self._dial = dial
        self._cgroups = cgroups or CgroupHooks()
        self._bundle_root = Path(bundle_root)
        self._drain_grace = drain_grace
        self._containers: dict[str, Container] = {}
        self._reserved: set[str] = set()
        self._runc: dict[str, RuncBackend] = {}  # containers whose init an OCI runtime made

    # --------------------------------------------------------------- lookup
    def container(self, container_id: str) -> Container:
        found = self._containers.get(container_id)
        if found is None:
            raise errors.ContainerNotFound(container_id)
        return found

    def lookup(self, process_id: str, container_id: str | None) -> tuple[Container, ManagedProcess]:
        if container_id is None:
            raise errors.InvalidArgument("processes in the root of the vm not implemented")
        container = self.container(container_id)
        return container, container.process(process_id)

    def containers(self) -> list[Container]:
        return list(self._containers.values())

    # --------------------------------------------------------------- create
    async def create_process(
        self,
        process_id: str,
        container_id: str | None,
        configuration: bytes,
        ports: StdioPorts,
        runtime: str | None = None,
    ) -> None:
        """``runtime`` (``ociRuntimePath``): start the container's init with that OCI runtime
        (runc mode, ``trinit.nursery._runc``); ignored for execs, as vminitd does."""
        if container_id is None:
            raise errors.InvalidArgument("processes in the root of the vm not implemented")
        if (
            process_id == container_id
            and container_id not in self._containers
            and container_id not in self._reserved
            and _valid_id(container_id)
        ):
            # A new container whose ids pass every check below: reserve the id now and do
            # the spec and the bundle in one worker thread (see _create_container).
            await self._create_reserved(container_id, configuration, ports, runtime)
            return
        # alter_spec reads the image's etc/passwd and etc/group: never on the event loop
        # (and an exec's process as JSON for its helper, also off the loop: ~0.1 ms per
        # 10 KiB; computed for the rare init that gets here too)
        spec, encoded = await trio.to_thread.run_sync(_altered_exec_spec, configuration, process_id)
        process = spec["process"]
        terminal = bool(process.get("terminal", False))
        existing = self._containers.get(container_id)
        if existing is not None:
            if process_id == container_id:
                # vminitd stored an exec that could never be addressed; refuse it instead.
                raise errors.AlreadyExists(f"container {container_id} already exists")
            await self._create_exec(existing, process_id, process, encoded, terminal, ports)
            return
        if process_id != container_id:
            if container_id in self._reserved:
                raise errors.FailedPrecondition(f"container {container_id} is being created")
            raise errors.InvalidArgument("init process id must match container id")
        if container_id in self._reserved:
            raise errors.AlreadyExists(f"container {container_id} already exists")
        _check_id(container_id)
        # (the container existed or its id was reserved a moment ago, and no longer is)
        await self._create_reserved(container_id, configuration, ports, runtime)

    async def _create_reserved(
        self, container_id: str, configuration: bytes, ports: StdioPorts, runtime: str | None
    ) -> None:
        self._reserved.add(container_id)
        try:
            await self._create_container(container_id, configuration, ports, runtime or None)
        finally:
            self._reserved.discard(container_id)

    async def _create_exec(
        self,
        container: Container,
        exec_id: str,
        process: dict[str, Any],
        encoded: str,
        terminal: bool,
        ports: StdioPorts,
    ) -> None:
        """``encoded``: ``process`` as JSON (ASCII: json.dumps escapes the rest)."""
        _check_id(exec_id)
        async with container.lock:
            if exec_id in container.execs:
                raise errors.AlreadyExists(
                    f"exec {exec_id} already exists in container {container.container_id}"
                )
            if len(encoded) <= INLINE_PROCESS_LIMIT:
                helper_args = ["exec", "--process-json", encoded]
            else:
                path = container.bundle / "execs" / exec_id / "process.json"
                await trio.to_thread.run_sync(write_json, path, process)
                container.exec_files.add(exec_id)
                helper_args = ["exec", "--process-path", str(path)]
            if (container.spec.get("linux") or {}).get("seccomp") is not None:
                # the helper reads the container's config.json only for its profile
                helper_args += ["--bundle-path", str(container.bundle)]
            proc = self._new_process(exec_id, container.container_id, helper_args, terminal)
            await proc.open_stdio(self._dial, ports)
            try:
                await container.adopt(proc)
            except BaseException:
                await proc.discard()
                raise
        log.info("created exec", extra=fields(container=container.container_id, process=exec_id))

    async def _create_container(
        self,
        container_id: str,
        configuration: bytes,
        ports: StdioPorts,
        runtime: str | None,
    ) -> None:
        """Create a new container whose id is reserved. The spec (which reads the image's
        etc/passwd and etc/group), the OCI runtime's check, the bundle and the cgroup are
        blocking work done in one worker thread, in that order, so their errors come in
        the order the steps had when each was a trip of its own; a trip to a thread and
        back costs ~0.25 ms of the create."""
        bundle = self._bundle_root / container_id
        runc = None if runtime is None else RuncBackend(runtime, container_id, bundle, self._reaper)

        def prepare() -> dict[str, Any]:
            spec = _altered_spec(configuration, container_id)
            if runtime and not _is_executable(runtime):
                raise errors.FailedPrecondition(f"OCI runtime {runtime} does not exist in the VM")
            prepare_bundle(spec)
            self._cgroups.prepare(container_id, spec)
            return spec

        def prepare_bundle(spec: dict[str, Any]) -> None:
            hostname = spec.get("hostname") or ""
            root_path = spec["root"]["path"]
            if not os.path.isdir(root_path):
                # vminitd would mkdir -p <root.path>/etc for the hostname and fail at start:
                # creating directories on the VM for a rootfs that is not there helps nobody
                raise errors.InvalidArgument(f"root.path {root_path} is not a directory")
            if hostname:
                try:
                    install_etc_file(root_path, "hostname", hostname.encode())
                except OSError as exc:
                    reason = errors.describe(exc)
                    raise errors.Internal(f"failed to write etc/hostname: {reason}") from None
            (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
            if runc is not None:  # runc reads the same file: its cgroupsPath, see _runc
                cgroup_dir = self._cgroups.directory(spec)
                write_json(bundle / "config.json", runc.bundle_spec(spec, cgroup_dir))
            else:
                write_json(bundle / "config.json", spec)

        spec = await trio.to_thread.run_sync(prepare)
        terminal = bool(spec["process"].get("terminal", False))
        root_path = spec["root"]["path"]
        helper_args = ["run", "--bundle-path", str(bundle), *self._cgroups.helper_args()]
        init = self._new_process(container_id, container_id, helper_args, terminal, runc)
        try:
            await init.open_stdio(self._dial, ports)
            container = Container(container_id, spec, bundle, init, self._cgroups)
            await self._nursery.start(container.run)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._cgroups.remove(container_id, spec)
            raise
        if runc is not None:
            self._runc[container_id] = runc
        self._containers[container_id] = container
        # host file RPCs on paths under this root resolve inside it from now on
        add_root(root_path)
        log.info("created container", extra=fields(container=container_id))

    def _new_process(
        self,
        pid_id: str,
        container_id: str,
        args: list[str],
        terminal: bool,
        backend: ProcessBackend | None = None,
    ) -> ManagedProcess:
        return ManagedProcess(
            pid_id,
            container_id,
            args,
            terminal=terminal,
            backend=backend or self._backend,
            reaper=self._reaper,
            drain_grace=self._drain_grace,
        )

    # ---------------------------------------------------------------- others
    async def start_process(self, process_id: str, container_id: str | None) -> int:
        container, proc = self.lookup(process_id, container_id)
        async with container.lock:
            if proc is container.init:
                return await container.start(proc)
            if container.init.pid is not None:
                proc.set_parent_pid(container.init.pid)
            container.begin_exec_start(process_id)  # the launch runs without the lock
        try:
            return await container.start(proc)
        finally:
            container.end_exec_start(process_id)

    async def delete_process(self, process_id: str, container_id: str | None) -> None:
        container, proc = self.lookup(process_id, container_id)
        if proc is container.init:
            async with container.lock:
                await container.exec_starts_done()
                await container.delete()
                await self._runc_delete(container)
                self._forget(container)
            log.info("deleted container", extra=fields(container=container.container_id))
        else:
            async with container.lock:
                await container.exec_start_done(process_id)
                await container.delete_exec(process_id)

    async def statistics(self, container_ids: list[str], categories: set[int]) -> list[Any]:
        """ContainerStatistics: unknown ids are NOT_FOUND (vminitd failed the whole call
        with INTERNAL); an empty id list means every container."""
        from ._cgroups import container_statistics

        chosen = (
            [self.container(cid) for cid in container_ids] if container_ids else self.containers()
        )
        pairs = [(c.container_id, c.spec) for c in chosen]
        return await trio.to_thread.run_sync(container_statistics, self._cgroups, pairs, categories)

    async def shutdown(self, stop_grace: float = 0.0) -> None:
        """Delete every container (agent shutdown): SIGTERM, ``stop_grace`` seconds, SIGKILL,
        all containers at once; errors are logged, not raised."""
        async with trio.open_nursery() as nursery:
            for container in list(self._containers.values()):
                nursery.start_soon(self._shutdown_one, container, stop_grace)

    async def _shutdown_one(self, container: Container, stop_grace: float) -> None:
        try:
            await container.delete(stop_grace)
            await self._runc_delete(container)
        except errors.TrinitError as exc:
            log.error(
                f"failed to delete container: {exc.message}",
                extra=fields(container=container.container_id),
            )
        self._forget(container)

    async def _runc_delete(self, container: Container) -> None:
        """runc mode: ``runc delete --force`` once the init is reaped and the bundle gone."""
        runc = self._runc.pop(container.container_id, None)
        if runc is not None:
            with trio.CancelScope(shield=True):
                await runc.delete()

    def _forget(self, container: Container) -> None:
        if self._containers.pop(container.container_id, None) is not None:
            remove_root(container.spec["root"]["path"])


def _altered_spec(configuration: bytes, process_id: str) -> dict[str, Any]:
    return alter_spec(decode_spec(configuration), process_id, owned=True)


def _altered_exec_spec(configuration: bytes, process_id: str) -> tuple[dict[str, Any], str]:
    """The altered spec and its ``process`` as JSON (what an exec's helper is given)."""
    spec = _altered_spec(configuration, process_id)
    return spec, json.dumps(spec["process"])


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _valid_id(value: str) -> bool:
    """Ids become path components of the bundle: none that would escape it."""
    return bool(value) and "/" not in value and value not in (".", "..") and "\0" not in value


def _check_id(value: str) -> None:
    if not _valid_id(value):
        raise errors.InvalidArgument(f"invalid id {value!r}")
