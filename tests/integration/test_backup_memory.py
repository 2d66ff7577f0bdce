"""Peak memory of a backup stays bounded: it streams, it never holds the dump."""

from __future__ import annotations

import subprocess
import threading
import time

import psutil
import pytest

from devkit.paths import CLI
from devkit.procstats import poll_peak
from tests.conftest import CliResult

MiB = 1 << 20
# Stated in the README: with 5 MiB parts and 2 uploads in flight the whole process tree
# (enclave-backup and pg_dump) stays under this, for a dump 20x the part size.
PEAK_RSS_BOUND = 160 * MiB


def run_measured(env: dict, *args: str, prefix: tuple[str, ...] = ()) -> tuple[CliResult, int]:
    """The command's result and the peak RSS of its whole process tree (pg_dump included)."""
    popen = subprocess.Popen([*prefix, CLI, *(args or ("backup",))], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(popen.stdout.read()), daemon=True)
    reader.start()
    peak = poll_peak(popen, interval=0.01)
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


CHART_LIMIT = 512 * MiB  # Backup.Resources.limits.memory
HUGE_ROW = 92 * MiB  # one bytea value: pg_dump alone holds about 4x it (hex text, libpq buffers)


def _restore_measured(env: dict) -> tuple[CliResult, int]:
    result, peak = run_measured(env, "restore", "--object", "latest")
    assert result.returncode == 0, result.stdout + result.stderr
    return result, peak


def test_a_huge_row_backs_up_and_restores_inside_the_chart_limit(pg, cli_env, dbname):
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE blob (id int PRIMARY KEY, b bytea)")
        conn.execute("INSERT INTO blob SELECT 1, decode(repeat(md5('x'), %s), 'hex')", (HUGE_ROW // 16,))
        digest = conn.execute("SELECT md5(b) FROM blob").fetchone()
    backup, backup_peak = run_measured(cli_env)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    with pg.connect(dbname) as conn:
        conn.execute("DELETE FROM blob")
    _restored, restore_peak = _restore_measured(cli_env)
    with pg.connect(dbname) as conn:
        assert conn.execute("SELECT md5(b) FROM blob").fetchone() == digest
    print(f"92 MiB bytea row: backup peak {backup_peak / MiB:.0f} MiB, restore peak {restore_peak / MiB:.0f} MiB")
    assert backup_peak < CHART_LIMIT and restore_peak < CHART_LIMIT


def test_very_repetitive_text_restores_in_bounded_memory(pg, cli_env, dbname):
    """200 MB of one letter compress about 10,000:1; restore must not inflate it in one piece."""
    with pg.connect(dbname) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("INSERT INTO t SELECT repeat('a', 1000000) FROM generate_series(1, 200)")
    env = {**cli_env, "ENCLAVE_BACKUP_COMPRESSION": "zstd"}
    backup, backup_peak = run_measured(env)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    summary = backup.event("backup complete")
    assert summary["sql_bytes"] > 1000 * summary["stored_bytes"]
    _restored, restore_peak = _restore_measured(env)
    with pg.connect(dbname) as conn:
        assert conn.execute("SELECT count(*), sum(length(v)) FROM t").fetchone() == (200, 200_000_000)
    print(f"repetitive text, zstd: backup peak {backup_peak / MiB:.0f} MiB, restore peak {restore_peak / MiB:.0f} MiB")
    assert backup_peak < PEAK_RSS_BOUND and restore_peak < PEAK_RSS_BOUND


def test_compression_threads_follow_the_cpus_the_process_may_use(cli_env):
    result, _peak = run_measured({**cli_env, "ENCLAVE_BACKUP_COMPRESSION": "zstd"}, prefix=("taskset", "-c", "0"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.event("backup started")["compression_threads"] == 1



# age adds two 2 MiB buffers, a 1 MiB piece, pyrage (its module and 64 KiB chunk): encryption.py.
ENCRYPTION_ALLOWANCE = 20 * MiB  # measured: +4 (backup), +12 (verify, no compression)


def _own_and_tree_peaks(env: dict, *args: str) -> tuple[CliResult, int, int]:
    """Like run_measured, and the program's own peak too: pg_dump's RSS varies by tens of MiB from
    run to run (its libpq buffer), which would drown what encryption adds."""
    popen = subprocess.Popen([CLI, *(args or ("backup",))], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(popen.stdout.read()), daemon=True)
    reader.start()
    proc, own, tree = psutil.Process(popen.pid), 0, 0
    while popen.poll() is None:
        try:
            rss = proc.memory_info().rss
            own, tree = max(own, rss), max(tree, rss + sum(c.memory_info().rss for c in proc.children(True)))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.01)
    reader.join()
    return CliResult(popen.returncode, "".join(out), popen.stderr.read()), own, tree


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_encryption_keeps_the_backup_and_verify_bound(bulk_env, tmp_path, compression):
    from pyrage import x25519
    identity = x25519.Identity.generate()
    (tmp_path / "identity.txt").write_text(f"{identity}\n")
    env = {**bulk_env, "ENCLAVE_BACKUP_COMPRESSION": compression, "ENCLAVE_BACKUP_PROGRESS_SECONDS": "5",
           "ENCLAVE_BACKUP_ENCRYPTION_IDENTITY_FILE": str(tmp_path / "identity.txt")}
    own, tree = {}, {}
    for kind, extra in (("plain", {}), ("age", {"ENCLAVE_BACKUP_ENCRYPTION_RECIPIENTS": str(identity.to_public())})):
        made, own[kind, "backup"], tree[kind, "backup"] = _own_and_tree_peaks({**env, **extra})
        assert made.returncode == 0, made.stdout + made.stderr
        summary = made.event("backup complete")
        assert summary["key"].endswith(".age") == (kind == "age")
        assert summary["sql_bytes"] > 20 * 5 * MiB
        verified, own[kind, "verify"], tree[kind, "verify"] = _own_and_tree_peaks(env, "verify", "--object",
                                                                                  summary["key"])
        assert verified.returncode == 0, verified.stdout + verified.stderr
    print(f"{compression}: " + ", ".join(f"{k} {s} {own[k, s] / MiB:.0f} MiB (with pg_dump {tree[k, s] / MiB:.0f})"
                                         for k, s in own))
    assert tree["age", "backup"] < PEAK_RSS_BOUND
    for step in ("backup", "verify"):
        assert own["age", step] < own["plain", step] + ENCRYPTION_ALLOWANCE, own
