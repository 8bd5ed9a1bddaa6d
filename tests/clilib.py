"""Helpers for tests that drive ``trinit run|exec|ps|...`` as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

TRINIT = str(Path(sys.executable).parent / "trinit")


def trinit(
    *args: str, input: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion; stdout and stderr as text."""
    return subprocess.run(
        [TRINIT, *args],
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def trinit_json(*args: str) -> Any:
    result = trinit(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def no_traceback(result: subprocess.CompletedProcess[str]) -> bool:
    return "Traceback" not in result.stderr and "Traceback" not in result.stdout
