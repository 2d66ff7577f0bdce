#!/usr/bin/env python3
"""Compare our backup and restore with `pg_dump | psql` on PostgreSQL's own regression database.

Fetches the `src/test/regress` tree of the Debian source package of the installed server
(postgresql-15), builds its `regress.so`, and builds a `regression` database by running every
test of `parallel_schedule` in order (one session each, errors expected: the tests provoke
them). Then makes three copies of it and compares their `pg_dump` output:

  reference   pg_dump regression | psql                          (what pg_dump itself gives)
  restored    enclave-backup backup, then enclave-backup restore  (the live database swapped)
  by hand     the backup object, gunzip | psql -v ON_ERROR_STOP=1 into an empty database

Prints the differences and exits 1 if the schema or data of any copy differ from the
reference. Slow (a few minutes): a separate command, not part of the test run.

    scripts/regress-compare.sh [--keep DIR]
"""

from __future__ import annotations

import argparse
import difflib
import glob
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devkit.environ import scrubbed
from devkit.motoserver import MotoServer
from devkit.paths import CLI
from devkit.pgserver import start_server
from devkit.signingkeys import make_signing_keys

SOURCE_PACKAGE = "postgresql-15"
DEV_PACKAGE = "postgresql-server-dev-15"
DEBIAN = "http://deb.debian.org/debian"
BUCKET = "regress"
# pg_regress sets these for the database it tests in (pg_regress.c, create_database()).
REGRESS_SETTINGS = ("lc_messages TO 'C'", "lc_monetary TO 'C'", "lc_numeric TO 'C'", "lc_time TO 'C'",
                    "bytea_output TO 'hex'", "timezone_abbreviations TO 'Default'")
# Lines of a pg_dump script that differ between any two runs, whatever the data.
VOLATILE = re.compile(r"^(\\restrict |\\unrestrict |-- Dumped (from|by) )")


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def apt(work: Path, *args: str) -> None:
    """apt-get with a private deb-src list, so the machine's own configuration is left alone."""
    sources = work / "apt.sources"
    sources.write_text(f"Types: deb deb-src\nURIs: {DEBIAN}\nSuites: bookworm bookworm-updates\n"
                       "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    state = work / "apt"
    (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (state / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "-qq", "-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
                    "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::Cache={state / 'cache'}", *args],
                   cwd=work, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fetch_regress_tree(work: Path) -> Path:
    """src/test/regress of the server's source package, with regress.so built beside it."""
    found = glob.glob(str(work / "postgresql-15.*" / "src" / "test" / "regress"))
    if found and (work / "lib" / "regress.so").exists():
        return Path(found[0])
    say(f"fetching the {SOURCE_PACKAGE} source package and {DEV_PACKAGE} headers from Debian")
    apt(work, "update")
    apt(work, "source", "--download-only", SOURCE_PACKAGE)
    apt(work, "download", DEV_PACKAGE)
    tarball = next(work.glob("postgresql-15_*.orig.tar.bz2"))
    top = subprocess.run(["tar", "tjf", str(tarball)], capture_output=True, text=True, check=True).stdout.split("/")[0]
    subprocess.run(["tar", "xjf", str(tarball), f"{top}/src/test/regress"], cwd=work, check=True)
    subprocess.run(["dpkg-deb", "-x", str(next(work.glob(f"{DEV_PACKAGE}_*.deb"))), str(work / "dev")], check=True)
    regress = work / top / "src" / "test" / "regress"
    include = next((work / "dev" / "usr" / "include" / "postgresql").glob("15/server"))
    (work / "lib").mkdir(exist_ok=True)
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", f"-I{include}", f"-I{include.parent.parent / 'internal'}",
                    str(regress / "regress.c"), "-o", str(work / "lib" / "regress.so")], check=True)
    return regress


def schedule(regress: Path) -> list[str]:
    tests = []
    for line in (regress / "parallel_schedule").read_text().splitlines():
        if line.startswith("test:"):
            tests.extend(line.split(":", 1)[1].split())
    return tests


def build_regression_database(pg, regress: Path, libdir: Path, database: str) -> None:
    pg.create_database(database)
    with pg.connect() as conn:
        for setting in REGRESS_SETTINGS:
            conn.execute(f'ALTER DATABASE "{database}" SET {setting}')
    # The server reads the test data files and regress.so as its own user.
    for path in (regress, libdir):
        subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)
        for parent in path.parents:
            os.chmod(parent, os.stat(parent).st_mode | 0o005)
    env = {**os.environ, **pg.env(database), "PGTZ": "America/Los_Angeles", "PGDATESTYLE": "Postgres, MDY",
           "PG_ABS_SRCDIR": str(regress), "PG_ABS_BUILDDIR": str(regress), "PG_LIBDIR": str(libdir),
           "PG_DLSUFFIX": ".so", "PGOPTIONS": "-c statement_timeout=120s"}
    tests = schedule(regress)
    say(f"building the regression database: {len(tests)} tests of parallel_schedule, one after another")
    started = time.monotonic()
    for test in tests:
        subprocess.run([pg.bin("psql"), "-X", "-a", "-q", "-f", str(regress / "sql" / f"{test}.sql")],
                       env=env, cwd=regress, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with pg.connect(database) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'p') "
                              "AND relnamespace <> 'pg_catalog'::regnamespace "
                              "AND relnamespace <> 'information_schema'::regnamespace").fetchone()[0]
    say(f"  built in {time.monotonic() - started:.0f} s: {tables} tables")


def dump(pg, database: str, path: Path) -> list[str]:
    out = subprocess.run([pg.bin("pg_dump"), "--no-sync", "-d", database], env={**os.environ, **pg.env(database)},
                         capture_output=True, check=True).stdout
    lines = [l for l in out.decode("utf-8", "surrogateescape").splitlines() if not VOLATILE.match(l)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")
    return lines


def replay(pg, database: str, script: bytes, stop_on_error: bool) -> int:
    """psql of `script` into a new empty database; returns the number of errors psql reported."""
    pg.create_database(database)
    args = [pg.bin("psql"), "-X", "-q", "-d", database] + (["-v", "ON_ERROR_STOP=1"] if stop_on_error else [])
    result = subprocess.run(args, input=script, env={**os.environ, **pg.env(database)}, capture_output=True)
    errors = result.stderr.decode(errors="replace").count("ERROR:")
    if stop_on_error and result.returncode != 0:
        raise SystemExit(f"psql -v ON_ERROR_STOP=1 failed replaying into {database}:\n"
                         f"{result.stderr.decode(errors='replace')[-2000:]}")
    return errors


def run_cli(env: dict[str, str], *args: str) -> None:
    result = subprocess.run([CLI, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"enclave-backup {' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}")


def rows_sorted(lines: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The dump with each table's COPY rows sorted, and each table's rows as pg_dump wrote them."""
    out, block, table, blocks = [], None, "", {}
    for line in lines:
        if block is None:
            out.append(line)
            if line.startswith("COPY ") and line.endswith("FROM stdin;"):
                block, table = [], line[5:line.index(" (") if " (" in line else -12]
        elif line == "\\.":
            blocks[table] = block
            out += sorted(block) + [line]
            block = None
        else:
            block.append(line)
    return out, blocks


def compare(name: str, reference: list[str], other: list[str], out: Path) -> bool:
    """Same schema and rows as the reference. pg_dump writes rows in storage order, which a load over
    several connections (restore.jobs) changes: a table whose rows only come in another order counts
    as the same, and is named."""
    ref_sorted, ref_blocks = rows_sorted(reference)
    other_sorted, other_blocks = rows_sorted(other)
    diff = list(difflib.unified_diff(ref_sorted, other_sorted, "reference", name, lineterm="", n=2))
    (out / f"{name}.diff").write_text("\n".join(diff) + "\n")
    if diff:
        say(f"  {name}: {sum(1 for l in diff if l[:1] in '+-') - 2} lines differ from pg_dump | psql "
            f"(see {out / (name + '.diff')}):")
        print("\n".join(diff[:60]))
        return False
    moved = [t for t, rows in other_blocks.items() if rows != ref_blocks.get(t)]
    order = (f"; in {len(moved)} tables the same rows are stored in another order ({', '.join(moved[:6])}"
             f"{', ...' if len(moved) > 6 else ''}: loaded over several connections)") if moved else ""
    say(f"  {name}: schema and data identical to pg_dump | psql ({len(reference)} lines of pg_dump output){order}")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", metavar="DIR", help="work directory to keep (sources, dumps, diffs)")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="regress-compare-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # the server runs as `postgres` and must reach its directory inside
    regress = fetch_regress_tree(work)
    pg = start_server(str(work / "pg"))
    moto = MotoServer().start()
    try:
        build_regression_database(pg, regress, work / "lib", "regression")
        out = work / "dumps"
        out.mkdir(exist_ok=True)

        original = subprocess.run([pg.bin("pg_dump"), "--no-sync", "-d", "regression"],
                                  env={**os.environ, **pg.env("regression")}, capture_output=True, check=True).stdout
        errors = replay(pg, "reference", original, stop_on_error=False)
        say(f"reference: pg_dump regression | psql ({errors} errors reported by psql)")
        reference = dump(pg, "reference", out / "reference.sql")

        moto.client().create_bucket(Bucket=BUCKET)
        env = {**scrubbed(), **pg.env("regression"), **moto.env(), "ENCLAVE_BACKUP_BUCKET": BUCKET,
               "ENCLAVE_BACKUP_PROGRESS_SECONDS": "60", **make_signing_keys(work / "signing").env()}
        say("enclave-backup backup of the regression database")
        run_cli(env, "backup")
        key = next(o["Key"] for o in moto.client().list_objects_v2(Bucket=BUCKET)["Contents"]
                   if o["Key"].endswith(".sql.gz"))
        script = gzip.decompress(moto.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())
        replay(pg, "byhand", script, stop_on_error=True)
        say("enclave-backup restore --object latest (swaps the live database, keeps the previous one)")
        run_cli(env, "restore", "--object", "latest")

        same = [compare("restored", reference, dump(pg, "regression", out / "restored.sql"), out),
                compare("by-hand", reference, dump(pg, "byhand", out / "by-hand.sql"), out)]
        return 0 if all(same) else 1
    finally:
        moto.stop()
        pg.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
