"""Memory of a process tree, for the memory tests and the benchmark."""

from __future__ import annotations

import subprocess
import time

import psutil


def tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of `proc` and all its descendants (pg_dump, compressors, ...)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def poll_peak(popen: subprocess.Popen, deadline: float | None = None, interval: float = 0.02) -> int:
    """The highest RSS of `popen`'s whole process tree, sampled every `interval` s, until it
    exits or `deadline` (time.perf_counter()) passes; then popen.returncode tells which.

    The caller drains its pipes meanwhile (a full pipe would stall the process).
    """
    proc = psutil.Process(popen.pid)
    peak = 0
    while popen.poll() is None and (deadline is None or time.perf_counter() < deadline):
        try:
            peak = max(peak, tree_rss(proc))
        except psutil.NoSuchProcess:
            break
        time.sleep(interval)
    return peak
