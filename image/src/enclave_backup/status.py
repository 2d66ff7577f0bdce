"""`enclave-backup status`: the newest complete backup, its age and size, the last verification."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from .errors import ConfigError
from .verification import Record

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> int:
    """Seconds in `90m`, `36h`, `1d12h`, `2w` or a plain number of seconds."""
    raw = text.strip().lower()
    if raw.isdigit():
        return int(raw)
    if not raw or _DURATION.sub("", raw):
        raise ConfigError(f"--max-age {text!r} is not a duration: use e.g. 36h, 2d, 1d12h, 90m or seconds")
    return sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(raw))


@dataclass
class Status:
    database: str
    location: str
    newest: dict | None  # key, started, age_seconds, size
    verification: dict | None  # key, verified_at, passed, error (the newest verification of any backup)
    backups: int
    max_age_seconds: int | None
    problem: str = ""  # why the exit code is not 0

    @property
    def exit_code(self) -> int:
        return 1 if self.problem else 0

    def as_dict(self) -> dict:
        return {"database": self.database, "location": self.location, "backups": self.backups,
                "newest": self.newest, "last_verification": self.verification,
                "max_age_seconds": self.max_age_seconds, "ok": not self.problem, "problem": self.problem}


def build(database: str, location: str, backups: list, records: dict[str, Record], now: datetime,
          max_age_seconds: int | None) -> Status:
    """Pure: `backups` newest first (catalog.Backup), `records` by backup key."""
    newest = None
    problem = ""
    if backups:
        b = backups[0]
        # The age by the order `latest` uses: a start dated ahead of the store's clock is no younger.
        age = int((now - getattr(b, "order_time", b.started)).total_seconds())
        newest = {"key": b.key, "started": b.started.isoformat(), "age_seconds": age, "size": b.size}
        if max_age_seconds is not None and age > max_age_seconds:
            problem = f"the newest backup is {age}s old, more than --max-age {max_age_seconds}s"
    elif max_age_seconds is not None:
        problem = "no complete backup exists"
    verified = sorted(records.values(), key=lambda r: r.verified_at, reverse=True)
    verification = None
    if verified:
        r = verified[0]
        verification = {"key": r.key, "verified_at": r.verified_at, "passed": r.passed, "error": r.error}
    return Status(database, location, newest, verification, len(backups), max_age_seconds, problem)


def render(status: Status, human_size, human_age) -> str:
    lines = [f"database:          {status.database} in {status.location} ({status.backups} complete backups)"]
    n = status.newest
    if n:
        lines.append(f"newest backup:     {n['key']}")
        lines.append(f"  started:         {n['started']} ({human_age(n['age_seconds'])} ago), {human_size(n['size'])}")
    else:
        lines.append("newest backup:     none")
    v = status.verification
    if v:
        lines.append(f"last verification: {'passed' if v['passed'] else 'FAILED'} at {v['verified_at']} ({v['key']})")
        if v["error"]:
            lines.append(f"  error:           {v['error']}")
    else:
        lines.append("last verification: never")
    lines.append(f"status:            {'PROBLEM: ' + status.problem if status.problem else 'ok'}")
    return "\n".join(lines)
