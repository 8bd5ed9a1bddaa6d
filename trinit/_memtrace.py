"""Developer switch: allocation growth sites of a running agent (``TRINIT_TRACEMALLOC``).

With ``TRINIT_TRACEMALLOC=N`` in its environment the agent starts :mod:`tracemalloc` with
N frames per allocation and, on every SIGUSR2, logs (at warning, so it shows at any log
level) the 15 source lines whose live allocations grew most since the previous SIGUSR2 (the
first one logs the largest). ``bench/soak.py --tracemalloc N`` uses it to find where the
agent's memory grows over thousands of operations. Off by default: tracing costs CPU and
memory on every allocation, which a production agent must not pay.
"""

from __future__ import annotations

import logging
import os
import signal

import trio

log = logging.getLogger("trinit.memtrace")

ENV = "TRINIT_TRACEMALLOC"
TOP = 15


def frames_wanted() -> int:
    """The number of frames asked for in the environment; 0 when the switch is off."""
    try:
        return max(0, int(os.environ.get(ENV, "0")))
    except ValueError:
        return 0


async def run(frames: int) -> None:
    """Trace allocations and log growth on each SIGUSR2 until cancelled."""
    import tracemalloc

    tracemalloc.start(frames)
    log.warning(f"tracemalloc on ({frames} frames): SIGUSR2 logs the growth")
    previous: tracemalloc.Snapshot | None = None
    with trio.open_signal_receiver(signal.SIGUSR2) as signals:
        async for _ in signals:
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            current, peak = tracemalloc.get_traced_memory()
            lines = [f"traced {current / 1024:.0f} KiB now, peak {peak / 1024:.0f} KiB"]
            if previous is None:
                lines += [str(stat) for stat in snapshot.statistics("lineno")[:TOP]]
            else:
                lines += [str(stat) for stat in snapshot.compare_to(previous, "lineno")[:TOP]]
            previous = snapshot
            log.warning("tracemalloc:\n  " + "\n  ".join(lines))
