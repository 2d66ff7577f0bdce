"""`enclave-backup` command line: backup, restore, list, check."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from datetime import datetime, timezone

from . import __version__, config as config_mod, log
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
    seconds = int((now - started).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def cmd_backup(config, _args) -> int:
    from .backup import run_backup
    run_backup(config)
    return 0


def cmd_list(config, args) -> int:
    from .catalog import complete_backups
    from .s3 import Storage
    backups = complete_backups(Storage(config), config.key_prefix, config.database)
    now = datetime.now(timezone.utc)
    if args.json:
        print(json.dumps([{"key": b.key, "database": b.database, "installation": b.installation,
                           "started": b.started.isoformat(), "size": b.size,
                           "age_seconds": int((now - b.started).total_seconds()),
                           "clock_skew_seconds": round(b.clock_skew_seconds), "clocks_disagree": b.clocks_disagree}
                          for b in backups], indent=2))
        return 0
    if not backups:
        print(f"no complete backups of {config.database!r} by installation {config.installation!r} "
              f"in s3://{config.bucket}/{config.key_prefix}")
        return 0
    rows = [(b.key, _human_size(b.size), _human_age(b.started, now)) for b in backups]
    width = max(len(r[0]) for r in rows)
    print(f"{'KEY':<{width}}  {'SIZE':>10}  AGE")
    for (key, size, age), b in zip(rows, backups):
        note = ""
        if b.started > now:
            note = "  (started in the future: the writer's clock is ahead)"
        elif b.clocks_disagree:
            note = f"  (clocks disagree: the store's clock was {-b.clock_skew_seconds:.0f}s behind the writer's)"
        print(f"{key:<{width}}  {size:>10}  {age}{note}")
    return 0


def cmd_restore(config, args) -> int:
    from .restore import run_restore
    run_restore(config, args.object, force=args.force or config.restore_force)
    return 0


def cmd_check(config, _args) -> int:
    from .s3 import Storage
    storage = Storage(config)
    storage.check_bucket()
    found = sum(1 for _ in zip(range(1), storage.list(config.key_prefix)))
    log.get().info("bucket reachable", bucket=config.bucket, prefix=config.key_prefix,
                   objects_under_prefix=bool(found))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="enclave-backup", description=__doc__)
    p.add_argument("--version", action="version", version=f"enclave-backup {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("backup", help="dump the database and upload it").set_defaults(run=cmd_backup)
    ls = sub.add_parser("list", help="list complete backups, newest first")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(run=cmd_list)
    rs = sub.add_parser("restore", help="restore a backup into the database, keeping the current one")
    rs.add_argument("--object", required=True, help="object key of the backup, or 'latest'")
    rs.add_argument("--force", action="store_true", help="restore even if this backup was already restored")
    rs.set_defaults(run=cmd_restore)
    sub.add_parser("check", help="check that the bucket is reachable with the credentials").set_defaults(run=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
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
