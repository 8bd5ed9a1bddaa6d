#!/usr/bin/env bash
# The whole test suite (as root): sets up what is missing, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/vm-deps.sh   # QEMU and Debian's kernel for the VM tests (tests/vm)
exec .venv/bin/python -m pytest -q "$@"
