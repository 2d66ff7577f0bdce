"""Memory of a process tree, for the memory test and the benchmark."""

from __future__ import annotations

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
