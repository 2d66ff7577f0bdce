"""Load-step benchmark of a CockroachDB-format script: INSERT batches on one connection or several.

No CockroachDB runs on these machines, so the script (written by the dump's own insertbatch) is
replayed into PostgreSQL through a loopback proxy that holds every answer back `--delay-ms`: the
round trip a distributed commit costs each batch. Each configuration runs `--runs` times, in
alternating order, into a fresh database; the median wall time is reported.

    scripts/bench-inserts.sh [--rows 60000] [--runs 3] [--delay-ms 0,5,20] [--jobs 1,2,4]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "image" / "src"), str(REPO / "devkit" / "src")]

from devkit.pgserver import PgServer  # noqa: E402
from devkit.proxy import Proxy  # noqa: E402
from enclave_backup import db, replay  # noqa: E402
from enclave_backup.config import Config  # noqa: E402
from enclave_backup.engines.cockroachdb.insertbatch import Target, write_batches  # noqa: E402
from enclave_backup.engines.cockroachdb.swap import HoldBack  # noqa: E402
from enclave_backup.manifest import Manifest  # noqa: E402

SCHEMA = """CREATE TABLE public.accounts (id INT8 PRIMARY KEY, name TEXT, balance NUMERIC, created TIMESTAMPTZ);
CREATE TABLE public.events (id INT8 PRIMARY KEY, account INT8, kind TEXT, payload TEXT);
CREATE TABLE public.lines (order_id INT8, line INT8, sku TEXT, qty INT8, PRIMARY KEY (order_id, line));
"""


def script(rows: int) -> bytes:
    out = io.BytesIO()
    out.write(b"-- enclave-backup dump\n-- engine: cockroachdb\n" + SCHEMA.encode())
    tables = [
        (Target('"public"."accounts"', '"id", "name", "balance", "created"', ("INT8", "TEXT", "NUMERIC", "TIMESTAMPTZ")),
         lambda i: (str(i), f"customer {i:07d}", f"{i * 7 % 100000}.{i % 100:02d}", "2024-05-01 10:00:00+00")),
        (Target('"public"."events"', '"id", "account", "kind", "payload"', ("INT8", "INT8", "TEXT", "TEXT")),
         lambda i: (str(i), str(i % 5000), ("login", "view", "edit")[i % 3], "x" * (40 + i % 60))),
        (Target('"public"."lines"', '"order_id", "line", "sku", "qty"', ("INT8", "INT8", "TEXT", "INT8")),
         lambda i: (str(i // 4), str(i % 4), f"SKU-{i % 977:04d}", str(1 + i % 9))),
    ]
    for target, row in tables:
        write_batches((row(i) for i in range(rows)), target, out.write)
    return out.getvalue()


class MemoryStorage:
    """The object as Storage hands it out, from memory: what is measured is the load, not S3."""
    bucket = "bench"

    def __init__(self, data: bytes):
        self.data = data

    def open_read(self, key):
        reader = io.BytesIO(self.data)
        reader.bucket = self.bucket
        return contextlib.closing(reader)

    def put_bytes(self, key, data, content_type):
        pass

    def delete(self, key):
        pass


def load_once(pg: PgServer, proxy: Proxy, data: bytes, jobs: int) -> tuple[float, int, int]:
    pg.create_database("target")
    os.environ.update({**pg.env("target"), "PGPORT": str(proxy.port)})
    manifest = Manifest(key="k", database="target", engine="cockroachdb", server_version="v24.1.0",
                        started_at="", finished_at="", compression="none", stored_size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(), uncompressed_size=len(data))
    config = Config(bucket="bench", restore_jobs=jobs, progress_interval=3600)
    opener = db.opener(config)
    started = time.perf_counter()
    with db.Connections(opener("postgres"), "postgres", opener) as conns:
        loaded = replay.load(config, conns, MemoryStorage(data), "k", manifest, "target", defer=HoldBack())
    return time.perf_counter() - started, loaded.rows, loaded.connections


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=60000, help="rows per table, three tables (default 60000)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--delay-ms", default="0,5,20", help="answer delays to measure, comma-separated (default 0,5,20)")
    p.add_argument("--jobs", default="1,2,4", help="restore.jobs values to measure (default 1,2,4)")
    p.add_argument("--out", default=str(REPO / "bench-results"))
    args = p.parse_args()
    delays = [float(d) for d in args.delay_ms.split(",")]
    jobs = [int(j) for j in args.jobs.split(",")]
    data = script(args.rows)
    batches = data.count(b"\nINSERT INTO ")
    print(f"{len(data) / 1e6:.1f} MB of SQL, {batches} INSERT batches, {3 * args.rows} rows", flush=True)
    root = Path(tempfile.mkdtemp(prefix="enclave-bench-inserts-"))
    root.chmod(0o755)
    pg = PgServer(root / "pg")
    results = []
    try:
        pg.init().start()
        for delay in delays:
            proxy = Proxy(pg.port, reply_delay=delay / 1000).start()
            samples: dict[int, list[float]] = {j: [] for j in jobs}
            for r in range(args.runs):
                for j in (jobs if r % 2 == 0 else list(reversed(jobs))):
                    wall, rows, connections = load_once(pg, proxy, data, j)
                    assert rows == 3 * args.rows, rows
                    samples[j].append(wall)
                    print(f"  delay {delay:g} ms, jobs {j}: {wall:6.2f} s ({connections} connections)", flush=True)
            proxy.cut()
            base = statistics.median(samples[jobs[0]])
            for j in jobs:
                median = statistics.median(samples[j])
                results.append({"delay_ms": delay, "jobs": j, "wall_s_median": round(median, 2),
                                "samples": [round(s, 3) for s in samples[j]],
                                "rows_per_s": round(3 * args.rows / median), "speedup": round(base / median, 2)})
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("\n| answer delay | jobs | load s (median) | rows/s | vs jobs " + str(jobs[0]) + " |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['delay_ms']:g} ms | {r['jobs']} | {r['wall_s_median']} | {r['rows_per_s']} | {r['speedup']}x |")
    report = {"when": datetime.now(timezone.utc).isoformat(), "args": vars(args), "cpus": os.cpu_count(),
              "sql_bytes": len(data), "batches": batches, "results": results}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"inserts-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
