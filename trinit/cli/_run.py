"""``trinit run`` and ``trinit exec``: the host call sequences of docs/protocol.md §10,
attached to this program's stdio (:func:`trinit.host.attach`).

Order matters for cleanup: everything mounted into the agent for a container is undone
(DeleteProcess, or Umount when the container was never created) unless the container is
meant to stay (``--connect`` without ``--rm``); the embedded agent takes everything with it
anyway.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
from typing import Any

import grpc

from trinit._proto import sandbox_pb2 as pb
from trinit.host import Host, Process, busybox_spec, fd_sink

from . import _image
from ._args import command_args
from ._errors import CliError, rpc_text, start_failure
from ._session import Session, require_connect, session
from ._spec import ProcessOptions, command, container_spec, process_spec


def bundle(container_id: str) -> str:
    return f"/run/container/{container_id}"


def exists(host: Host, container_id: str) -> bool:
    """Whether the agent has this container (ContainerStatistics answers NOT_FOUND)."""
    request = pb.ContainerStatisticsRequest(
        container_ids=[container_id], categories=[pb.STAT_CATEGORY_UNSPECIFIED]
    )
    try:
        host.stub.ContainerStatistics(request)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return True


def _options(ns: argparse.Namespace) -> ProcessOptions:
    return ProcessOptions(env=ns.env, workdir=ns.workdir, user=ns.user, terminal=ns.tty)


def _mount_image(host: Host, container_id: str, lower: str) -> str:
    """The image tree read-only under a fresh tmpfs writable layer (the host's
    writable-layer sequence, docs/protocol.md §10 step 3): the cache is never written."""
    base = bundle(container_id)
    host.stub.Mount(
        pb.MountRequest(type="", source=lower, destination=f"{base}/lower", options=["bind", "ro"])
    )
    host.stub.Mount(
        pb.MountRequest(type="tmpfs", source="tmpfs", destination=f"{base}/upper", options=[])
    )
    for part in ("diff", "work"):
        host.stub.Mkdir(pb.MkdirRequest(path=f"{base}/upper/{part}", all=True, perms=0o755))
    options = f"lowerdir={base}/lower,upperdir={base}/upper/diff,workdir={base}/upper/work"
    root = f"{base}/rootfs"
    host.stub.Mount(
        pb.MountRequest(type="overlay", source="overlay", destination=root, options=[options])
    )
    return root


def _unmount(host: Host, container_id: str) -> None:
    """Undo the rootfs mounts of a container that was never created (best effort)."""
    for part in ("rootfs", "upper", "lower"):
        with contextlib.suppress(grpc.RpcError):
            host.stub.Umount(pb.UmountRequest(path=f"{bundle(container_id)}/{part}"))


def _rootfs_source(ns: argparse.Namespace, sess: Session) -> tuple[str, _image.Image | None]:
    if ns.image is not None:
        if not sess.local:
            raise CliError("--image needs an agent on this machine (embedded or unix:DIR)")
        return "", _image.prepare(ns.image)
    rootfs = str(ns.rootfs)
    if sess.local:
        rootfs = os.path.abspath(rootfs)
        if not os.path.isdir(rootfs):
            raise CliError(f"--rootfs {ns.rootfs}: not a directory")
    return rootfs, None


def _output_ports(proc: Process, detach: bool, terminal: bool) -> None:
    """Output straight to this program's stdout and stderr (none when detached; a
    terminal has only stdout)."""
    proc.stdout = not detach
    proc.stderr = not detach and not terminal
    proc.stdout_sink = fd_sink(sys.stdout.fileno())
    proc.stderr_sink = fd_sink(sys.stderr.fileno())


def run(ns: argparse.Namespace) -> int:
    if ns.detach and not ns.connect:
        raise CliError("-d needs --connect: the embedded agent ends with this command")
    if ns.detach and (ns.tty or ns.interactive):
        raise CliError("-d cannot be combined with -t or -i")
    given = command_args(ns.cmd)
    if ns.rootfs is not None and not given:
        raise CliError("no command given: trinit run --rootfs DIR -- CMD [ARG...]")
    name = ns.name or f"trinit-{secrets.token_hex(4)}"
    with session(ns.connect) as sess:
        host = sess.host
        if exists(host, name):
            raise CliError(f"container {name} already exists")
        source, image = _rootfs_source(ns, sess)
        config = image.config if image is not None else None
        args = _spec_command(given, config)
        created = False
        keep = not (sess.embedded or ns.rm)
        try:
            root = (
                _mount_image(host, name, image.rootfs)
                if image is not None
                else host.mount_rootfs(name, source)
            )
            spec = container_spec(
                root, args, _options(ns), name=name, image=config, memory=ns.memory, cpus=ns.cpus
            )
            proc = host.process(name, spec, stdin=ns.interactive or ns.tty)
            _output_ports(proc, ns.detach, ns.tty)
            _create(proc)
            created = True
            if ns.detach:
                pid = _start(proc)
                _print_started(ns, name, pid, source, image)
                return 0
            return _attach(proc)
        finally:
            if not created:
                _unmount(host, name)
            elif not keep:
                with contextlib.suppress(grpc.RpcError):
                    host.stub.DeleteProcess(pb.DeleteProcessRequest(id=name, containerID=name))


def _spec_command(given: list[str], config: _image.ImageConfig | None) -> list[str]:
    args = command(given, config)
    if not args:
        raise CliError("no command given and the image has neither Entrypoint nor Cmd")
    return args


def _create(proc: Process) -> None:
    try:
        proc.create()
    except grpc.RpcError as exc:
        proc.close()
        raise CliError(rpc_text(exc)) from None


def _start(proc: Process) -> int:
    try:
        return proc.start()
    except grpc.RpcError as exc:
        raise start_failure(exc) from None
    finally:
        proc.close()


def _attach(proc: Process) -> int:
    """The session; a failed start becomes 126/127 (the process was created already, so
    an RPC error here is the start's, or the agent going away: 125)."""
    try:
        return proc.attach()
    except grpc.RpcError as exc:
        if proc.pid is None:
            raise start_failure(exc) from None
        raise CliError(rpc_text(exc)) from None
    finally:
        proc.close()


def _print_started(
    ns: argparse.Namespace, name: str, pid: int, rootfs: str, image: _image.Image | None
) -> None:
    if not ns.json:
        print(name)
        return
    meta: dict[str, Any] = {"id": name, "pid": pid}
    if image is not None:
        meta["image"] = image.digest
        meta["image_cached"] = image.cached
    else:
        meta["rootfs"] = rootfs
    print(json.dumps(meta))


# ------------------------------------------------------------------ exec


def _container_process(host: Host, container_id: str) -> dict[str, Any]:
    """The container's own (altered) process spec, so an exec inherits its environment
    and user as with docker; an empty dict if it cannot be read."""
    try:
        data, _ = host.copy_out(f"{bundle(container_id)}/config.json")
        process = json.loads(data).get("process")
    except (grpc.RpcError, RuntimeError, OSError, ValueError, AttributeError):
        return {}
    return process if isinstance(process, dict) else {}


def exec_(ns: argparse.Namespace) -> int:
    target = require_connect(ns.connect, "exec")
    args = command_args(ns.cmd)
    if not args:
        raise CliError("no command given: trinit exec ID -- CMD [ARG...]")
    with session(target) as sess:
        host = sess.host
        if not exists(host, ns.id):
            raise CliError(f"no such container: {ns.id}")
        root = f"{bundle(ns.id)}/rootfs"
        spec = busybox_spec(root, args)
        inherited = _container_process(host, ns.id)
        base = {**spec["process"], **inherited}
        options = _options(ns)
        if not ns.user and inherited.get("user"):
            user = inherited["user"]
            options = ProcessOptions(
                options.env, options.workdir, f"{user.get('uid', 0)}:{user.get('gid', 0)}", ns.tty
            )
        if not ns.workdir and inherited.get("cwd"):
            options = ProcessOptions(options.env, inherited["cwd"], options.user, ns.tty)
        spec["process"] = process_spec(base, args, options, None)
        exec_id = f"exec-{secrets.token_hex(4)}"
        proc = host.process(ns.id, spec, process_id=exec_id, stdin=ns.interactive or ns.tty)
        _output_ports(proc, False, ns.tty)
        _create(proc)
        try:
            return _attach(proc)
        finally:
            with contextlib.suppress(grpc.RpcError):
                proc.delete()
