"""Pure parsers for the cgroup v2 interface file formats.

Owns nothing and does no I/O: every function takes the text of one interface file and
returns plain Python values, so the mapping to statistics can be tested without a
cgroup filesystem.

The three formats (Documentation/admin-guide/cgroup-v2.rst, "Interface Files"):

* single value: ``"12345\\n"`` or ``"max\\n"`` (``max`` means "no limit");
* flat keyed: one ``"<key> <value>"`` pair per line (``memory.stat``, ``cpu.stat``,
  ``memory.events``);
* nested keyed: ``"<key> <subkey>=<value> <subkey>=<value> ..."`` per line (``io.stat``,
  whose keys are ``MAJ:MIN`` device numbers).

Invariants: ``max`` maps to :data:`UINT64_MAX`; every value returned fits a protobuf
uint64 (negative numbers clamp to 0); malformed lines or values are skipped rather than
raised, because a statistics read must never fail on a kernel adding a new key format.
"""

from __future__ import annotations

UINT64_MAX = 2**64 - 1


def parse_value(token: str) -> int | None:
    """One cgroup value: ``"max"`` -> UINT64_MAX, an integer -> itself (clamped to uint64).

    Returns None for anything else (so callers can skip it).
    """
    token = token.strip()
    if token == "max":
        return UINT64_MAX
    try:
        value = int(token)
    except ValueError:
        return None
    return min(max(value, 0), UINT64_MAX)


def parse_single(text: str) -> int | None:
    """A single-value file (``memory.current``, ``pids.max``...). None if empty/malformed."""
    return parse_value(text)


def parse_flat_keyed(text: str) -> dict[str, int]:
    """A flat keyed file: ``{"key": value}``; malformed lines are skipped."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 2:
            continue
        value = parse_value(fields[1])
        if value is not None:
            result[fields[0]] = value
    return result


def parse_nested_keyed(text: str) -> list[tuple[str, dict[str, int]]]:
    """A nested keyed file: ``[(key, {"subkey": value})]`` in file order."""
    result: list[tuple[str, dict[str, int]]] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        values: dict[str, int] = {}
        for pair in fields[1:]:
            name, sep, raw = pair.partition("=")
            if not sep:
                continue
            value = parse_value(raw)
            if value is not None:
                values[name] = value
        result.append((fields[0], values))
    return result


def parse_device(key: str) -> tuple[int, int] | None:
    """A ``MAJ:MIN`` device key from ``io.stat``, or None if malformed."""
    major, sep, minor = key.partition(":")
    if not sep:
        return None
    try:
        return int(major), int(minor)
    except ValueError:
        return None


def parse_controllers(text: str) -> list[str]:
    """A space-separated controller list (``cgroup.controllers``), in file order."""
    return text.split()


def parse_procs(text: str) -> list[int]:
    """``cgroup.procs``: one pid per line; malformed lines skipped."""
    pids: list[int] = []
    for line in text.splitlines():
        try:
            pids.append(int(line))
        except ValueError:
            continue
    return pids
