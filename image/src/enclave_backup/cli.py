"""`enclave-backup` command line: backup, restore, list, check, prune, status, verify."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import signal
import sys
import time
from datetime import datetime, timezone

from . import __version__, config as config_mod, log, metrics
from .errors import BackupError, Terminated


def _on_sigterm(signum, _frame):
    signal.signal(signum, signal.SIG_IGN)  # one stop is enough: a second must not break the clean-up
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}")


def _human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _human_age(started: datetime, now: datetime) -> str:
    return _human_age_seconds(int((now - started).total_seconds()))


def _human_age_seconds(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _measured(config, command: str, run, figures=lambda result: {}):
    """Run `run()`, pushing its figures (or its exit code on failure) to the Pushgateway if one is set."""
    started = time.monotonic()
    try:
        result = run()
    except BaseException as exc:
        metrics.push(config, command, getattr(exc, "exit_code", 1), time.monotonic() - started)
        raise
    metrics.push(config, command, 0, time.monotonic() - started, figures(result))
    return result


def cmd_backup(config, args) -> int:
    from .backup import run_backup
    _measured(config, "backup", lambda: run_backup(config, incremental=args.incremental),
              lambda m: {"stored_bytes": m.stored_size, "sql_bytes": m.uncompressed_size,
                         "tables": len(m.tables), "rows": sum(m.tables.values())})
    if args.prune:
        from .prune import run_prune
        try:
            _measured(config, "prune", lambda: run_prune(config), lambda s: {"deleted": len(s.deleted)})
        except Terminated:
            raise  # a stop, not a failed prune: the Job ends as Kubernetes asked
        except BackupError as exc:
            # The backup is stored; failing the Job now would only make the CronJob run it again.
            log.get().error("prune after the backup failed; the backup itself succeeded and the next run "
                            "prunes again", error=log.scrub(str(exc)), exit_code=exc.exit_code)
    return 0


def cmd_prune(config, args) -> int:
    from .prune import run_prune
    if args.dry_run:
        run_prune(config, dry_run=True)
    else:
        _measured(config, "prune", lambda: run_prune(config), lambda s: {"deleted": len(s.deleted)})
    return 0


def cmd_verify(config, args) -> int:
    from .verify import run_verify
    _measured(config, "verify", lambda: run_verify(config, args.object),
              lambda r: {"tables": r.tables, "rows": r.rows})
    return 0


def cmd_status(config, args) -> int:
    from . import status as status_mod
    from .catalog import complete_backups
    from .s3 import Storage
    from .verification import read
    max_age = status_mod.parse_duration(args.max_age) if args.max_age else None
    storage = Storage(config)
    backups = complete_backups(storage, config.key_prefix, config.database)
    records = {b.key: r for b in backups if (r := read(storage, b.key))}
    status = status_mod.build(config.database, f"s3://{config.bucket}/{config.key_prefix}", backups, records,
                              datetime.now(timezone.utc), max_age)
    if args.json:
        print(json.dumps(status.as_dict(), indent=2))
    else:
        print(status_mod.render(status, _human_size, _human_age_seconds))
    return status.exit_code


def cmd_list(config, args) -> int:
    from .catalog import complete_backups
    from .s3 import Storage
    from .verification import read
    storage = Storage(config)
    backups = complete_backups(storage, config.key_prefix, config.database)
    verified = {b.key: read(storage, b.key) for b in backups}
    now = datetime.now(timezone.utc)
    if args.json:
        print(json.dumps([{"key": b.key, "database": b.database, "installation": b.installation,
                           "started": b.started.isoformat(), "size": b.size,
                           "age_seconds": int((now - b.started).total_seconds()),
                           "clock_skew_seconds": round(b.clock_skew_seconds), "clocks_disagree": b.clocks_disagree,
                           "verified_at": verified[b.key].verified_at if verified[b.key] else None,
                           "verified": verified[b.key].passed if verified[b.key] else None,
                           "method": "native" if b.native else "dump",
                           **({"native": {k: b.native.get(k) for k in ("type", "folder", "end_time",
                                                                      "revision_history")}} if b.native else {})}
                          for b in backups], indent=2))
        return 0
    if not backups:
        print(f"no complete backups of {config.database!r} by installation {config.installation!r} "
              f"in s3://{config.bucket}/{config.key_prefix}")
        return 0
    rows = [(b.key, _human_size(b.size), _human_age(b.started, now),
             verified[b.key].describe() if verified[b.key] else "not verified") for b in backups]
    width = max(len(r[0]) for r in rows)
    print(f"{'KEY':<{width}}  {'SIZE':>10}  {'AGE':<6}  VERIFIED")
    for (key, size, age, check), b in zip(rows, backups):
        note = ""
        if b.native:
            note = f"  (native {b.native.get('type')}{', revision history' if b.native.get('revision_history') else ''})"
        if b.started > now:
            note = "  (started in the future: the writer's clock is ahead)"
        elif b.clocks_disagree:
            note = f"  (clocks disagree: the store's clock was {-b.clock_skew_seconds:.0f}s behind the writer's)"
        print(f"{key:<{width}}  {size:>10}  {age:<6}  {check}{note}")
    return 0


def cmd_restore(config, args) -> int:
    from .restore import run_restore
    if args.force:  # the flag adds to ENCLAVE_BACKUP_RESTORE_FORCE; it cannot turn it off
        config = dataclasses.replace(config, restore_force=True)
    run_restore(config, args.object)
    return 0


def cmd_check(config, _args) -> int:
    from .s3 import Storage
    storage = Storage(config)
    storage.check_bucket()
    found = sum(1 for _ in zip(range(1), storage.list(config.key_prefix)))
    log.get().info("bucket reachable", bucket=config.bucket, prefix=config.key_prefix,
                   objects_under_prefix=bool(found))
    if config.method == "native":
        from .native_backup import probe
        probe(config)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="enclave-backup", description=__doc__,
                                epilog="Settings come from the environment: the libpq and AWS variables and "
                                       "ENCLAVE_BACKUP_* (docs/program.md lists them).")
    p.add_argument("--version", action="version", version=f"enclave-backup {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    bk = sub.add_parser("backup", help="back up the database: a dump, or CockroachDB's BACKUP with "
                        "ENCLAVE_BACKUP_METHOD=native")
    bk.add_argument("--prune", action="store_true",
                    help="then apply the retention rules (only if the backup succeeded)")
    bk.add_argument("--incremental", action="store_true",
                    help="native method: add an incremental backup to the newest backup's chain (a full "
                         "one if there is none yet, or the database was restored since)")
    bk.set_defaults(run=cmd_backup)
    ls = sub.add_parser("list", help="list complete backups, newest first")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(run=cmd_list)
    rs = sub.add_parser("restore", help="restore a backup into the database, keeping the current one")
    rs.add_argument("--object", required=True, help="object key of the backup, or 'latest'")
    rs.add_argument("--force", action="store_true", help="restore even if this backup was already restored")
    rs.set_defaults(run=cmd_restore)
    sub.add_parser("check", help="check that the bucket is reachable with the credentials (native method: "
                   "from the database's nodes too)").set_defaults(run=cmd_check)
    pr = sub.add_parser("prune", help="delete the backups the retention rules (ENCLAVE_BACKUP_KEEP_*) no longer keep")
    pr.add_argument("--dry-run", action="store_true", help="only list what would be deleted, and why")
    pr.set_defaults(run=cmd_prune)
    st = sub.add_parser("status", help="newest complete backup, its age and size, the last verification")
    st.add_argument("--max-age", metavar="DURATION", help="exit 1 when the newest backup is older (e.g. 36h, 2d)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(run=cmd_status)
    vf = sub.add_parser("verify", help="restore a backup into a scratch database, check it against its manifest, "
                                       "drop it")
    vf.add_argument("--object", default="latest", help="object key of the backup, or 'latest' (default)")
    vf.set_defaults(run=cmd_verify)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    finally:
        # At exit CPython's collections walk every object still alive (the S3 client's service model
        # among them): 0.15-0.25 s of every command. Nothing left needs collecting now.
        gc.freeze()


def _run(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    log.configure()
    logger = log.get()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        config = config_mod.load()
        return args.run(config, args)
    except Terminated as exc:
        logger.error(f"{args.command} failed", error=str(exc), exit_code=exc.exit_code)
        # Threads stuck in a stalled S3 request would hold the exit until their read timeout.
        sys.stdout.flush()
        os._exit(exc.exit_code)
    except BackupError as exc:
        logger.error(f"{args.command} failed", error=log.scrub(str(exc)), exit_code=exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        logger.error(f"{args.command} interrupted", exit_code=1)
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence must say something useful
        logger.error(f"{args.command} failed unexpectedly", error=log.scrub(f"{type(exc).__name__}: {exc}"),
                     exit_code=1)
        return 1


if __name__ == "__main__":
    sys.exit(main())
