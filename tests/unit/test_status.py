"""status: duration parsing and the verdict over controlled times (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from enclave_backup.errors import ConfigError
from enclave_backup.status import build, parse_duration
from enclave_backup.verification import Record

NOW = datetime(2026, 5, 1, 12, tzinfo=timezone.utc)


@dataclass(frozen=True)
class B:
    key: str
    started: datetime
    size: int = 1000


@pytest.mark.parametrize("text, seconds", [
    ("3600", 3600), ("90m", 5400), ("36h", 129600), ("2d", 172800), ("1d12h", 129600), ("1w", 604800),
    (" 2D ", 172800), ("1h30m15s", 5415),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1.5h", "h", "2d-1h", "-5"])
def test_bad_durations_are_usage_errors(text):
    with pytest.raises(ConfigError, match="is not a duration"):
        parse_duration(text)


def test_status_is_ok_within_max_age_and_not_past_it():
    backups = [B("k2", NOW - timedelta(hours=25)), B("k1", NOW - timedelta(hours=49))]
    assert build("malbork", "s3://b/", backups, {}, NOW, 26 * 3600).exit_code == 0
    late = build("malbork", "s3://b/", backups, {}, NOW, 24 * 3600)
    assert late.exit_code == 1 and "90000s old" in late.problem
    assert late.as_dict()["newest"] == {"key": "k2", "started": backups[0].started.isoformat(),
                                        "age_seconds": 90000, "size": 1000}


def test_no_backup_is_a_problem_only_with_max_age():
    assert build("malbork", "s3://b/", [], {}, NOW, None).exit_code == 0
    assert build("malbork", "s3://b/", [], {}, NOW, 60).problem == "no complete backup exists"


def test_last_verification_is_the_newest_record_of_any_backup():
    backups = [B("k2", NOW - timedelta(hours=1)), B("k1", NOW - timedelta(hours=30))]
    records = {"k1": Record("k1", "2026-05-01T10:00:00Z", False, 5, "sha256 differs"),
               "k2": Record("k2", "2026-05-01T09:00:00Z", True)}
    status = build("malbork", "s3://b/", backups, records, NOW, None)
    assert status.verification == {"key": "k1", "verified_at": "2026-05-01T10:00:00Z", "passed": False,
                                   "error": "sha256 differs"}
    assert status.exit_code == 0  # a failed verification alerts through its own Job and metric
