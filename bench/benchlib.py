"""What more than one benchmark needs to know about a running agent's processes."""

from __future__ import annotations

from pathlib import Path


def fork_servers(pid: int) -> list[int]:
    """The agent's exec fork server(s) (``trinit.exec._zygote``): its children running
    ``zygote_entry``. Every exec helper is forked from one, so a benchmark that follows the
    helpers (strace, CPU accounting) must include it."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                if b"zygote_entry" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
            except OSError:
                pass
    return found
