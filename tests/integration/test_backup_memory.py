"""Peak memory of a backup stays bounded: it streams, it never holds the dump."""

from __future__ import annotations

import threading
import time

import psutil
import pytest

from tests.conftest import CliResult, spawn_cli
from tests.support.procstats import tree_rss

MiB = 1 << 20
# Stated in the README: with 5 MiB parts and 2 uploads in flight the whole process tree
# (enclave-backup and pg_dump) stays under this, for a dump 20x the part size.
PEAK_RSS_BOUND = 160 * MiB


def run_measured(env: dict) -> tuple[CliResult, int]:
    popen = spawn_cli(env, "backup")
    proc = psutil.Process(popen.pid)
    peak = 0
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(popen.stdout.read()), daemon=True)
    reader.start()
    while popen.poll() is None:
        try:
            peak = max(peak, tree_rss(proc))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    reader.join()
    return CliResult(popen.returncode, "".join(out), popen.stderr.read()), peak


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_peak_rss_is_bounded(bulk_env, compression):
    result, peak = run_measured({**bulk_env, "ENCLAVE_BACKUP_COMPRESSION": compression,
                                 "ENCLAVE_BACKUP_PROGRESS_SECONDS": "5"})
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.event("backup complete")
    assert summary["sql_bytes"] > 20 * 5 * MiB  # the dump is many times the part size
    print(f"{compression}: peak RSS {peak / MiB:.0f} MiB for {summary['sql_bytes'] / MiB:.0f} MiB of SQL")
    assert peak < PEAK_RSS_BOUND, f"peak RSS {peak / MiB:.0f} MiB"
