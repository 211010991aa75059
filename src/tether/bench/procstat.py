"""CPU time of another process, with nanosecond resolution (Linux ``/proc/<pid>/task/*/schedstat``)."""

from __future__ import annotations

from pathlib import Path


def process_cpu_ns(pid: int) -> int:
    """Total on-CPU time of every thread of ``pid`` so far, in nanoseconds.

    ``schedstat``'s first field is the time the thread ran, in ns; summing over ``task/`` covers the event loop,
    the store's worker thread and any other thread. Threads that already exited are not counted, so measure
    deltas over intervals in which the thread set is stable.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total
