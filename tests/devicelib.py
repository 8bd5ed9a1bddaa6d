"""Shell probes for device tests: run inside a busybox container, print ``key=result`` lines.

The nodes are made in the container's own tmpfs ``/dev`` (the busybox spec's), never in a
devtmpfs, and no byte is read or written through them: the probes only open and close.
Results are ``ok`` or the errno's name as busybox's message shows it (EPERM, ENXIO, ...).
"""

from __future__ import annotations

PROBE_FUNCTIONS = r"""
name_of() {
  case "$1" in
    *"Operation not permitted"*) echo EPERM;;
    *"No such device or address"*) echo ENXIO;;
    *"No such device"*) echo ENODEV;;
    *"Permission denied"*) echo EACCES;;
    *"No such file"*) echo ENOENT;;
    *"File exists"*) echo EEXIST;;
    *) echo "other:$1";;
  esac
}
try() {
  key=$1; shift
  if out=$("$@" 2>&1); then echo "$key=ok"; else echo "$key=$(name_of "$out")"; fi
}
open_r() { sh -c ': < "$1"' sh "$1"; }
open_rw() { sh -c ': <> "$1"' sh "$1"; }
"""


def probe_script(*steps: str) -> str:
    """The probe functions followed by ``steps`` (shell lines using ``try``)."""
    return PROBE_FUNCTIONS + "\n".join(steps) + "\n"


def parse(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


UNGRANTED_BLOCK = probe_script(
    "try mknod mknod /dev/blk b 7 0",
    "try open_r open_r /dev/blk",
    "try open_rw open_rw /dev/blk",
    "try mknod_sda mknod /dev/sda b 8 0",
    "try open_sda open_r /dev/sda",
    "try open_null open_rw /dev/null",
    "try open_ptmx open_rw /dev/ptmx",
)

GRANTED_LOOP0 = probe_script(
    "try mknod mknod /dev/blk b 7 0",
    "try open_rw open_rw /dev/blk",
    "try mknod_other mknod /dev/blk1 b 7 1",
    "try open_other open_r /dev/blk1",
)

# Docker's shape: deny all, then grant b 7:0 read only.
READ_ONLY_LOOP0_RULES = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "b", "major": 7, "minor": 0, "access": "r"},
]
GRANTED_LOOP0_RULES = [{"allow": True, "type": "b", "major": 7, "minor": 0, "access": "rw"}]

READ_ONLY_LOOP0 = probe_script(
    "try mknod mknod /dev/blk b 7 0",
    "try open_r open_r /dev/blk",
    "try open_rw open_rw /dev/blk",
)

LINUX_DEVICES = [
    {"path": "/dev/loopx", "type": "b", "major": 7, "minor": 0, "fileMode": 0o640,
     "uid": 1, "gid": 5},
    {"path": "/dev/sub/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600,
     "uid": 65534, "gid": 65534},
    {"path": "/dev/fifo", "type": "p", "fileMode": 0o620},
    {"path": "/dev/unbuffered", "type": "u", "major": 1, "minor": 5},
]  # fmt: skip

STAT_DEVICES = probe_script(
    "for f in /dev/loopx /dev/sub/mynull /dev/fifo /dev/unbuffered; do",
    '  echo "$f=$(stat -c "%F %t:%T %a %u:%g" $f)"',
    "done",
    "try write_mynull sh -c 'echo hi > /dev/sub/mynull'",
    "try open_loopx open_r /dev/loopx",
)

EXPECTED_STAT = {
    "/dev/loopx": "block special file 7:0 640 1:5",
    "/dev/sub/mynull": "character special file 1:3 600 65534:65534",
    "/dev/fifo": "fifo 0:0 620 0:0",
    "/dev/unbuffered": "character special file 1:5 666 0:0",
}
