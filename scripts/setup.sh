#!/usr/bin/env bash
# Install everything trinit and its tests need on a Debian machine (run as root); idempotent.
#
#   scripts/setup.sh          development: the test tools too, trinit editable in .venv
#   scripts/setup.sh --user   just trinit and the host library (pip install '.[host]', not
#                             editable, no dev tools) in .venv, plus the Debian packages the
#                             local agent and examples/hello.py use (unshare, busybox)
#
# TRINIT_VENV=DIR puts the venv elsewhere (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=dev
case "${1:-}" in
    "") ;;
    --user) mode=user ;;
    *) echo "usage: scripts/setup.sh [--user]" >&2; exit 2 ;;
esac
venv_dir="${TRINIT_VENV:-.venv}"
need=()
# e2fsprogs: mkfs.ext4 -d builds the vminit ext4 image (`trinit image build`), debugfs reads it
commands="busybox:busybox-static unshare:util-linux mkfs.ext4:e2fsprogs debugfs:e2fsprogs"
[ "$mode" = dev ] && commands="$commands socat:socat ip:iproute2 runc:runc tini-static:tini"  # tini: the baseline of bench/init_uss.py
for cmd_pkg in $commands; do
    command -v "${cmd_pkg%%:*}" >/dev/null 2>&1 || need+=("${cmd_pkg#*:}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "$mode" = user ]; then
    if [ ${#need[@]} -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    [ -x "$venv_dir/bin/python" ] || python3 -m venv "$venv_dir"
    "$venv_dir/bin/pip" install -q --disable-pip-version-check -c constraints.txt '.[host]'
    exit 0
fi
# the kernel's syscall tables, which tests/test_linux.py checks trinit._linux against:
# aarch64 uses the generic one; x86_64's comes natively on x86_64, else from the cross package
[ -f /usr/include/asm-generic/unistd.h ] || need+=(linux-libc-dev)
if [ ! -f /usr/include/x86_64-linux-gnu/asm/unistd_64.h ] &&
    [ ! -f /usr/x86_64-linux-gnu/include/asm/unistd_64.h ]; then
    if [ "$(uname -m)" = x86_64 ]; then need+=(linux-libc-dev); else need+=(linux-libc-dev-amd64-cross); fi
fi
# gcc and static libc: the seccomp tests' syscall probe; the uapi headers of x86_64, arm64 and
# armhf: scripts/gen_syscall_tables.py and the test that checks its table against them
command -v gcc >/dev/null 2>&1 || need+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] || need+=(libc6-dev)
for hdr_pkg in /usr/include/asm-generic/unistd.h:linux-libc-dev \
    /usr/aarch64-linux-gnu/include/asm/unistd.h:linux-libc-dev-arm64-cross \
    /usr/arm-linux-gnueabihf/include/asm/unistd.h:linux-libc-dev-armhf-cross; do
    [ -e "${hdr_pkg%%:*}" ] || need+=("${hdr_pkg#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -x "$venv_dir/bin/python" ] || python3 -m venv "$venv_dir"
# compat mode: a plain path entry, not setuptools' import-hook finder (17 ms off every
# Python start here: the agent, and each exec helper it spawns)
# constraints.txt: the exact versions the suite is tested with (a venv left from an earlier
# session is brought to them too; tests/test_packaging.py fails if it was not)
"$venv_dir/bin/pip" install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' \
    --config-settings editable_mode=compat
# bytecode for the source tree: the environment may set PYTHONDONTWRITEBYTECODE, and then every
# agent and exec-helper start would compile trinit from source again
"$venv_dir/bin/python" -m compileall -q trinit >/dev/null
