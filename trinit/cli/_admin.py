"""``trinit ps``, ``stats``, ``kill`` and ``rm`` against a running agent.

The SandboxContext API has no "list containers" RPC: ContainerStatistics with no ids
answers for every container (docs/protocol.md §4.21), and with only the UNSPECIFIED
category it carries just the ids. A container's state comes from WaitProcess on its init
with a short deadline: an answer is an exit status, the deadline passing means it has not
exited (running, or created and not started yet).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.message import Message

from trinit._proto import sandbox_pb2 as pb
from trinit.host import Host

from ._errors import EXIT_TRINIT, CliError, rpc_text
from ._session import require_connect, session

#: how long ps lets WaitProcess answer for an exited init before calling it running
STATE_PROBE_SECONDS = 1.0

ALL_CATEGORIES = [
    pb.STAT_CATEGORY_PROCESS,
    pb.STAT_CATEGORY_MEMORY,
    pb.STAT_CATEGORY_CPU,
    pb.STAT_CATEGORY_BLOCK_IO,
    pb.STAT_CATEGORY_NETWORK,
    pb.STAT_CATEGORY_MEMORY_EVENTS,
]


def message_dict(message: Message) -> dict[str, Any]:
    """A message as a dict of the fields that are set, integers kept as integers (the
    protobuf JSON mapping would turn uint64 into strings, which scripts then must parse)."""
    result: dict[str, Any] = {}
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None:
            if descriptor.is_repeated:
                result[descriptor.name] = [message_dict(item) for item in value]
            else:
                result[descriptor.name] = message_dict(value)
        elif descriptor.is_repeated:
            result[descriptor.name] = list(value)
        else:
            result[descriptor.name] = value
    return result


def _statistics(host: Host, ids: list[str], categories: Sequence[Any]) -> list[Any]:
    request = pb.ContainerStatisticsRequest(container_ids=ids, categories=categories)
    try:
        return list(host.stub.ContainerStatistics(request).containers)
    except grpc.RpcError as exc:
        raise CliError(rpc_text(exc)) from None


def _state(host: Host, container_id: str) -> dict[str, Any]:
    request = pb.WaitProcessRequest(id=container_id, containerID=container_id)
    try:
        reply = host.stub.WaitProcess(request, timeout=STATE_PROBE_SECONDS)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return {"state": "running"}
        return {"state": "unknown"}
    return {"state": "exited", "exit_code": int(reply.exitCode)}


def ps(ns: argparse.Namespace) -> int:
    with session(require_connect(ns.connect, "ps")) as sess:
        stats = _statistics(sess.host, [], [pb.STAT_CATEGORY_PROCESS])
        ids = sorted(entry.container_id for entry in stats)
        with ThreadPoolExecutor(max_workers=min(16, len(ids) or 1)) as pool:
            states = dict(zip(ids, pool.map(lambda cid: _state(sess.host, cid), ids), strict=True))
    rows = []
    for entry in sorted(stats, key=lambda item: item.container_id):
        row: dict[str, Any] = {"id": entry.container_id, **states[entry.container_id]}
        if entry.HasField("process"):
            row["pids"] = entry.process.current
        rows.append(row)
    if ns.json:
        print(json.dumps(rows))
        return 0
    table = [["ID", "STATE", "PIDS"]]
    for row in rows:
        state = row["state"] + (f" ({row['exit_code']})" if "exit_code" in row else "")
        table.append([row["id"], state, str(row.get("pids", "-"))])
    _print_table(table)
    return 0


UNLIMITED = (1 << 64) - 1  # how the agent reports "max" (docs/protocol.md §7.3)


def _size(value: int) -> str:
    if value >= UNLIMITED:
        return "max"
    if value < 1024:
        return f"{value}B"
    amount = float(value)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        amount /= 1024
        if amount < 1024 or unit == "TiB":
            break
    return f"{amount:.1f}{unit}"


def stats(ns: argparse.Namespace) -> int:
    with session(require_connect(ns.connect, "stats")) as sess:
        entries = _statistics(sess.host, list(ns.ids), ALL_CATEGORIES)
    entries.sort(key=lambda item: item.container_id)
    if ns.json:
        print(json.dumps([message_dict(entry) for entry in entries]))
        return 0
    table = [["ID", "CPU", "MEM USAGE / LIMIT", "PIDS", "BLOCK I/O"]]
    for entry in entries:
        cpu = f"{entry.cpu.usage_usec / 1e6:.2f}s" if entry.HasField("cpu") else "-"
        memory = (
            f"{_size(entry.memory.usage_bytes)} / {_size(entry.memory.limit_bytes)}"
            if entry.HasField("memory")
            else "-"
        )
        pids = str(entry.process.current) if entry.HasField("process") else "-"
        read = sum(device.read_bytes for device in entry.block_io.devices)
        written = sum(device.write_bytes for device in entry.block_io.devices)
        table.append([entry.container_id, cpu, memory, pids, f"{_size(read)} / {_size(written)}"])
    _print_table(table)
    return 0


def kill(ns: argparse.Namespace) -> int:
    with session(require_connect(ns.connect, "kill")) as sess:
        request = pb.KillProcessRequest(id=ns.id, containerID=ns.id, signal=ns.signal)
        try:
            sess.host.stub.KillProcess(request)
        except grpc.RpcError as exc:
            raise CliError(f"{ns.id}: {rpc_text(exc)}") from None
    return 0


def rm(ns: argparse.Namespace) -> int:
    failed = False
    with session(require_connect(ns.connect, "rm")) as sess:
        for container_id in ns.ids:
            request = pb.DeleteProcessRequest(id=container_id, containerID=container_id)
            try:
                sess.host.stub.DeleteProcess(request)
            except grpc.RpcError as exc:
                print(f"trinit: {container_id}: {rpc_text(exc)}", file=sys.stderr)
                failed = True
                continue
            print(container_id)
    return EXIT_TRINIT if failed else 0


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
