#!/usr/bin/env bash
# Install everything trinit and its tests need on a Debian machine (run as root); idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
# e2fsprogs: mkfs.ext4 -d builds the vminit ext4 image (`trinit image build`), debugfs reads it
for cmd_pkg in busybox:busybox-static socat:socat unshare:util-linux ip:iproute2 runc:runc \
    mkfs.ext4:e2fsprogs debugfs:e2fsprogs; do
    command -v "${cmd_pkg%%:*}" >/dev/null 2>&1 || need+=("${cmd_pkg#*:}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# the kernel's syscall tables, which tests/test_linux.py checks trinit._linux against:
# aarch64 uses the generic one; x86_64's comes natively on x86_64, else from the cross package
[ -f /usr/include/asm-generic/unistd.h ] || need+=(linux-libc-dev)
if [ ! -f /usr/include/x86_64-linux-gnu/asm/unistd_64.h ] &&
    [ ! -f /usr/x86_64-linux-gnu/include/asm/unistd_64.h ]; then
    if [ "$(uname -m)" = x86_64 ]; then need+=(linux-libc-dev); else need+=(linux-libc-dev-amd64-cross); fi
fi
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
# compat mode: a plain path entry, not setuptools' import-hook finder (17 ms off every
# Python start here: the agent, and each exec helper it spawns)
# constraints.txt: the exact versions the suite is tested with (a venv left from an earlier
# session is brought to them too; tests/test_packaging.py fails if it was not)
.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' \
    --config-settings editable_mode=compat
# bytecode for the source tree: the environment may set PYTHONDONTWRITEBYTECODE, and then every
# agent and exec-helper start would compile trinit from source again
.venv/bin/python -m compileall -q trinit >/dev/null
