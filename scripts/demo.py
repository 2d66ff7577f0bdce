"""The whole flow on one machine: chart rendered with the documented flags, its pods run as the
kubelet would (devkit.podrunner), against a local PostgreSQL and a local S3 server.

Run through scripts/demo.sh (which installs what is missing first). Starts and stops
everything itself; nothing is left running.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import shutil
import sys
import tempfile
import time

from devkit import helm as helms, release
from devkit.corpus import fingerprint
from devkit.motoserver import MotoServer
from devkit.pgserver import start_server
from devkit.podrunner import PodResult

PREFIX = "prod/enclave-manager"
DB = "malbork"

SAMPLE = """
CREATE TABLE wards (id serial PRIMARY KEY, name text NOT NULL UNIQUE, built int);
CREATE TABLE enclaves (
    id bigserial PRIMARY KEY,
    ward_id int NOT NULL REFERENCES wards(id),
    name text NOT NULL,
    measurement bytea NOT NULL,
    attested_at timestamptz NOT NULL,
    status text NOT NULL CHECK (status IN ('running', 'sealed', 'retired'))
);
CREATE INDEX enclaves_ward_idx ON enclaves (ward_id);
INSERT INTO wards (name, built) VALUES ('High Castle', 1280), ('Middle Castle', 1320), ('Lower Castle', 1400);
INSERT INTO enclaves (ward_id, name, measurement, attested_at, status)
SELECT 1 + g % 3, 'enclave-' || g, sha256(g::text::bytea), timestamptz '2026-01-01' + g * interval '1 minute',
       (ARRAY['running', 'sealed', 'retired'])[1 + g % 3]
FROM generate_series(1, 50000) g;
"""
DAMAGE = ["DELETE FROM enclaves WHERE status = 'running'", "DROP TABLE wards CASCADE"]

BOLD, DIM, GREEN, RED, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") \
    if sys.stdout.isatty() else ("",) * 5


class Steps:
    def __init__(self):
        self.done: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def __call__(self, title: str):
        print(f"\n{BOLD}==> {title}{RESET}", flush=True)
        t0 = time.monotonic()
        yield
        self.done.append((title, time.monotonic() - t0))


def say(text: str = "") -> None:
    print(f"    {text}", flush=True)


def pod_log(line: str) -> None:
    """A JSON log line of the pod, shortened: event and its fields, no timestamp."""
    try:
        event = json.loads(line)
    except ValueError:
        print(f"    {DIM}| {line}{RESET}", flush=True)
        return
    name = event.pop("event", "")
    for k in ("timestamp", "level"):
        event.pop(k, None)
    fields = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("tables_detail",))
    if len(fields) > 160:
        fields = fields[:157] + "..."
    print(f"    {DIM}| {name}  {fields}{RESET}", flush=True)


def counts(pg) -> str:
    with pg.connect(DB) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()]
        return ", ".join(f"{t}: {conn.execute(f'SELECT count(*) FROM {t}').fetchone()[0]} rows" for t in tables) \
            or "no tables"


def checked(result: PodResult) -> PodResult:
    if result.exit_code != 0:
        raise SystemExit(f"{RED}pod {result.workload.pod_name} ended {result.reason} "
                         f"(exit {result.exit_code}) {result.message}{RESET}")
    say(f"{GREEN}pod {result.workload.pod_name}: {result.reason}, exit 0, {result.seconds:.1f} s{RESET}")
    return result


def run(helm: str) -> None:
    steps = Steps()
    t_start = time.monotonic()
    pg = s3 = None
    try:
        with steps("Start a local PostgreSQL with a sample malbork database"):
            pg = start_server(tempfile.mkdtemp(prefix="enclave-demo-pg-"))
            pg.create_database(DB)
            with pg.connect(DB) as conn:
                conn.execute(SAMPLE)
            say(f"PostgreSQL 127.0.0.1:{pg.port}, database {DB}: {counts(pg)}")
            say(f"the chart reaches it as {release.DB_SERVICE}.svc.cluster.local:{release.DB_PORT} "
                "(enclaveos-chart.externalDatabase.*)")
            with pg.connect(DB) as conn:   # closed: the restore waits for clients to leave
                original = fingerprint(conn)

        with steps("Start a local S3 server (moto, signatures checked) and create the bucket"):
            s3 = MotoServer().start()
            s3.client().create_bucket(Bucket=release.BUCKET)
            say(f"endpoint {s3.endpoint}, bucket {release.BUCKET}")
            say(f"kubectl create secret generic {release.CREDENTIALS} "
                f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key} --from-literal=AWS_SECRET_ACCESS_KEY=****")
            say("openssl genpkey -algorithm ed25519 -out private.pem && openssl pkey -in private.pem -pubout "
                f"-out public.pem && kubectl create secret generic {release.SIGNING_SECRET} "
                "--from-file=private.pem --from-file=public.pem")
            secrets = release.user_secrets(s3.access_key, s3.secret_key, pg.password)

        def render(*extra: str):
            cmd = release.helm_command(helm, s3.endpoint, PREFIX, *extra)
            shown = [helm, *cmd[1:3], "charts/data-shield", *cmd[4:]]
            say(f"{DIM}$ {release.shell_line(shown)}{RESET}")
            objects = release.render(helm, s3.endpoint, PREFIX, *extra)
            say("rendered: " + ", ".join(f"{o['kind']}/{o['metadata']['name']}" for o in objects))
            return release.runner(objects, secrets, pg.port)

        with steps(f"Render the chart with the documented flags ({helm})"):
            runner = render()

        with steps("Run the backup CronJob's pod"):
            backup = checked(runner.run(runner.cronjob(), echo=pod_log))
            done = backup.event("backup complete")
            key = done["key"]
            say(f"backup: s3://{release.BUCKET}/{key} ({done['stored_bytes']} bytes, {done['rows']} rows)")

        with steps("List backups (enclave-backup list, in the helm test pod's container)"):
            wl = copy.deepcopy(runner.test_pod())
            wl.pod_spec["containers"][0]["args"] = ["list"]
            listing = checked(runner.run(wl))
            for line in listing.stdout.splitlines():
                say(line)

        with steps("Damage the database"):
            with pg.connect(DB) as conn:
                for statement in DAMAGE:
                    say(f"{DIM}{statement};{RESET}")
                    conn.execute(statement)
            say(f"now: {counts(pg)}")

        with steps("Render with enclaveos-chart.restore.fromObject=<that key>, run the restore hook Job"):
            runner = render(f"enclaveos-chart.restore.fromObject={key}")
            restore = checked(runner.run(runner.hook_job(), echo=pod_log))
            summary = restore.event("restore complete")

        with steps("Check that the data is back"):
            with pg.connect(DB) as conn:
                same = fingerprint(conn) == original
            say(f"now: {counts(pg)}")
            if not same:
                raise SystemExit(f"{RED}the restored database differs from the backed-up one{RESET}")
            say(f"{GREEN}every table, row and sequence equals the state at backup time{RESET}")
            say(f"the damaged database is kept as {summary.get('previous_database')}")
    finally:
        if s3:
            s3.stop()
        if pg:
            pg.stop()
            shutil.rmtree(pg.root, ignore_errors=True)

    print(f"\n{BOLD}Summary{RESET}")
    for title, seconds in steps.done:
        say(f"{seconds:6.1f} s  {title}")
    say(f"{time.monotonic() - t_start:6.1f} s  total")
    say(f"ran: {helm} template, the CronJob's pod (enclave-backup backup), the helm test pod's container "
        "(enclave-backup list), the restore hook Job's pod (enclave-backup restore)")
    say(f"backup: s3://{release.BUCKET}/{key} (+ .manifest.json), sha256 {done['sha256'][:16]}...")
    say("PostgreSQL and the S3 server are stopped; nothing is left running.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--helm", choices=helms.HELMS, default="helm4", help="Helm major to render with")
    args = p.parse_args()
    helms.ensure_installed()
    run(args.helm)


if __name__ == "__main__":
    main()
