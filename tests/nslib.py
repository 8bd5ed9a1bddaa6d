"""Running a snippet in a private mount namespace, so its mounts never reach the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_in_private_mount_ns(script: str, *args: str) -> Any:
    """Run ``python -c script args...`` under ``unshare --mount``; its stdout is JSON."""
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
