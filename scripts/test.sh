#!/usr/bin/env bash
# The whole test suite (as root): sets up what is missing, then runs pytest.
#
# The default suite (everything but the opt-in markers vm_aarch64 and vm_virtiofs) stays
# under 15 minutes on 2 cores. Under CI (CI=true) the aarch64 leg follows it: the same VM
# scenarios on an aarch64 guest under TCG (`scripts/aarch64-deps.sh`, then
# `pytest -m vm_aarch64`; about 2.5 minutes, plus the cross root's first download).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/vm-deps.sh   # QEMU and Debian's kernel for the VM tests (tests/vm)
if [ "${CI:-}" = true ] && [ $# -eq 0 ]; then
    .venv/bin/python -m pytest -q
    ./scripts/aarch64-deps.sh
    exec .venv/bin/python -m pytest -q -m vm_aarch64
fi
exec .venv/bin/python -m pytest -q "$@"
