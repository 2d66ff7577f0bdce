"""Retention decisions over backups with controlled times (no I/O, no clock)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from enclave_backup.retention import Rules, decide

NOW = datetime(2026, 3, 31, 12, 0, tzinfo=timezone.utc)  # a Tuesday


@dataclass(frozen=True)
class B:
    key: str
    started: datetime


def daily(days: int, hour: int = 0, end: datetime = NOW) -> list[B]:
    """One backup a day at `hour`:00 UTC for `days` days up to `end`, newest first."""
    first = end.replace(hour=hour, minute=0)
    if first > end:
        first -= timedelta(days=1)
    return [B(f"malbork-{(first - timedelta(days=i)):%Y%m%dT%H%M%SZ}.sql.gz", first - timedelta(days=i))
            for i in range(days)]


def kept(decisions) -> list[str]:
    return [d.key for d in decisions if d.keep]


def test_no_rule_keeps_everything():
    backups = daily(40)
    decisions = decide(backups, Rules(), NOW)
    assert kept(decisions) == [b.key for b in backups]
    assert all("no retention rule set" in d.reasons for d in decisions)


def test_keep_last_keeps_exactly_the_newest_n():
    backups = daily(10)
    decisions = decide(list(reversed(backups)), Rules(keep_last=3), NOW)  # input order does not matter
    assert kept(decisions) == [b.key for b in backups[:3]]
    deleted = [d for d in decisions if not d.keep]
    assert len(deleted) == 7
    assert all(d.reasons == ("not among the newest 3 (KeepLast)",) for d in deleted)


def test_keep_days_keeps_what_is_younger_than_d_days():
    backups = daily(10, hour=0)  # 2026-03-31T00:00 back to 03-22
    decisions = decide(backups, Rules(keep_days=3), NOW)
    # cutoff 03-28T12:00: 03-29, 03-30 and 03-31 are younger; 03-28T00:00 is not
    assert kept(decisions) == [b.key for b in backups[:3]]
    assert all(d.reasons == ("older than 3 days (KeepDays)",) for d in decisions if not d.keep)


def test_keep_daily_keeps_the_newest_of_each_of_the_last_n_days():
    # four backups a day, every six hours, for five days
    backups = [B(f"k{i}", NOW - timedelta(hours=6 * i)) for i in range(20)]
    decisions = decide(backups, Rules(keep_daily=3), NOW)
    newest_per_day = {}
    for b in sorted(backups, key=lambda b: b.started, reverse=True):
        newest_per_day.setdefault(b.started.date(), b.key)
    assert kept(decisions) == list(newest_per_day.values())[:3]


def test_keep_weekly_uses_iso_weeks_and_keep_monthly_calendar_months():
    backups = daily(100)
    weekly = kept(decide(backups, Rules(keep_weekly=4), NOW))
    # Newest of each ISO week: today (Tue 03-31), then the Sundays 03-29, 03-22, 03-15.
    assert [k[8:16] for k in weekly] == ["20260331", "20260329", "20260322", "20260315"]
    monthly = kept(decide(backups, Rules(keep_monthly=3), NOW))
    assert [k[8:16] for k in monthly] == ["20260331", "20260228", "20260131"]


def test_rules_combine_as_a_union_and_each_keep_names_its_rules():
    backups = daily(60)
    decisions = {d.key: d for d in decide(backups, Rules(keep_last=2, keep_daily=5, keep_monthly=2), NOW)}
    keys = kept(decisions.values())
    assert keys == [b.key for b in backups[:5]] + ["malbork-20260228T000000Z.sql.gz"]
    newest = decisions[backups[0].key].reasons
    assert "newest complete backup" in newest and "among the newest 2 (KeepLast)" in newest
    assert any("KeepMonthly" in r for r in decisions["malbork-20260228T000000Z.sql.gz"].reasons)
    gone = decisions["malbork-20260227T000000Z.sql.gz"]
    assert not gone.keep and len(gone.reasons) == 3


def test_the_newest_backup_is_never_deleted_even_when_every_rule_would():
    backups = daily(5, end=NOW - timedelta(days=30))
    decisions = decide(backups, Rules(keep_days=1), NOW)
    assert kept(decisions) == [backups[0].key]
    assert decisions[0].reasons == ("newest complete backup",)


def test_protected_backups_are_kept_with_the_reason_given():
    backups = daily(6)
    decisions = {d.key: d for d in decide(backups, Rules(keep_last=1), NOW, {backups[4].key: "being read"})}
    assert decisions[backups[4].key].keep and decisions[backups[4].key].reasons == ("being read",)
    assert [k for k, d in decisions.items() if d.keep] == [backups[0].key, backups[4].key]


def test_a_sequence_of_runs_converges_to_what_the_rules_say():
    """Prune after each of 90 daily backups, as the CronJob does, with a clock that moves."""
    rules = Rules(keep_last=3, keep_weekly=2, keep_monthly=2)
    stored: list[B] = []
    start = datetime(2026, 1, 1, 0, 30, tzinfo=timezone.utc)
    for day in range(90):
        now = start + timedelta(days=day)
        stored.append(B(f"malbork-{now:%Y%m%dT%H%M%SZ}.sql.gz", now))
        stored = [b for b, d in zip(sorted(stored, key=lambda b: b.started, reverse=True),
                                    decide(stored, rules, now)) if d.keep]
    days = sorted((b.started.date().isoformat() for b in stored), reverse=True)
    # Last 3 (03-29 to 03-31); the newest of the last 2 ISO weeks are Tue 03-31 (week 14) and
    # Sun 03-29 (week 13), both among them; of the last 2 months 03-31 and 02-28.
    assert days == ["2026-03-31", "2026-03-30", "2026-03-29", "2026-02-28"]


@pytest.mark.parametrize("rules, text", [
    (Rules(), "none (keep all)"),
    (Rules(keep_last=7, keep_monthly=12), "KeepLast=7, KeepMonthly=12"),
])
def test_rules_describe_themselves(rules, text):
    assert rules.describe() == text
