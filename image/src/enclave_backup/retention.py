"""Which backups retention keeps and which it deletes, and why. Pure: no I/O, no clock.

Rules as in restic and k8up: the newest KeepLast, everything younger than KeepDays, and
the newest backup of each of the last KeepDaily days, KeepWeekly ISO weeks and
KeepMonthly months that hold a backup (calendar in UTC). A backup is kept when any
rule keeps it; with no rule set every backup is kept. The newest backup and any backup
a reader holds are always kept, and so is every backup a kept native incremental restores from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Mapping, Protocol


class Dated(Protocol):
    key: str
    started: datetime  # the writer's clock; catalog.Backup adds order_time (see order_time below)


def order_time(backup: Dated) -> datetime:
    """When a backup counts as made: catalog.Backup.order_time (the store's clock where the writer's
    disagreed with it), else its start."""
    return getattr(backup, "order_time", backup.started)


def newest_first(backups: Iterable[Dated]) -> list:
    """The one order of backups: `latest` is the first, and retention's "newest" is the same one."""
    return sorted(backups, key=lambda b: (order_time(b), b.started, b.key), reverse=True)


@dataclass(frozen=True)
class Rules:
    keep_last: int = 0
    keep_days: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    @classmethod
    def from_config(cls, config) -> "Rules":
        return cls(config.keep_last, config.keep_days, config.keep_daily, config.keep_weekly, config.keep_monthly)

    @property
    def active(self) -> bool:
        return any(n > 0 for n in self._values())

    def _values(self) -> tuple[int, ...]:
        return (self.keep_last, self.keep_days, self.keep_daily, self.keep_weekly, self.keep_monthly)

    def describe(self) -> str:
        names = ("KeepLast", "KeepDays", "KeepDaily", "KeepWeekly", "KeepMonthly")
        return ", ".join(f"{n}={v}" for n, v in zip(names, self._values()) if v > 0) or "none (keep all)"


@dataclass(frozen=True)
class Decision:
    key: str
    started: datetime
    keep: bool
    reasons: tuple[str, ...]  # the rules that keep it, or, for a deletion, the rules it falls outside
    ordered_at: datetime | None = None  # order_time when it is the store's clock's (the clocks disagreed)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


_GENERATIONS: tuple[tuple[str, str, Callable[[datetime], object]], ...] = (
    ("keep_daily", "KeepDaily", lambda t: _utc(t).date()),
    ("keep_weekly", "KeepWeekly", lambda t: _utc(t).isocalendar()[:2]),
    ("keep_monthly", "KeepMonthly", lambda t: (_utc(t).year, _utc(t).month)),
)
_PERIOD = {"keep_daily": "day", "keep_weekly": "week", "keep_monthly": "month"}


def decide(backups: Iterable[Dated], rules: Rules, now: datetime,
           protected: Mapping[str, str] | None = None) -> list[Decision]:
    """One decision per backup, newest first. `protected`: key -> why it must stay (e.g. being read).

    Order, age and calendar period are all order_time's: a backup dated ahead of the store's
    clock is neither newest nor young for ever."""
    ordered = newest_first(backups)
    protected = protected or {}
    reasons: dict[str, list[str]] = {b.key: [] for b in ordered}
    if not ordered:
        return []
    if not rules.active:
        for b in ordered:
            reasons[b.key].append("no retention rule set")
    reasons[ordered[0].key].append("newest complete backup")
    for key, why in protected.items():
        if key in reasons:
            reasons[key].append(why)
    if rules.keep_last:
        for b in ordered[:rules.keep_last]:
            reasons[b.key].append(f"among the newest {rules.keep_last} (KeepLast)")
    if rules.keep_days:
        cutoff = now - timedelta(days=rules.keep_days)
        for b in ordered:
            if order_time(b) > cutoff:
                reasons[b.key].append(f"younger than {rules.keep_days} days (KeepDays)")
    for field, name, bucket_of in _GENERATIONS:
        count = getattr(rules, field)
        if not count:
            continue
        seen: set = set()
        for b in ordered:  # newest first: the first backup met in a period is its newest
            bucket = bucket_of(order_time(b))
            if bucket in seen:
                continue
            if len(seen) == count:
                break
            seen.add(bucket)
            reasons[b.key].append(f"newest of its {_PERIOD[field]}, one of the last {count} ({name})")
    outside = _outside(rules)
    return [Decision(b.key, b.started, bool(reasons[b.key]), tuple(reasons[b.key]) or outside,
                     order_time(b) if getattr(b, "ordered_by_store_clock", False) else None) for b in ordered]


def _outside(rules: Rules) -> tuple[str, ...]:
    found = []
    if rules.keep_last:
        found.append(f"not among the newest {rules.keep_last} (KeepLast)")
    if rules.keep_days:
        found.append(f"older than {rules.keep_days} days (KeepDays)")
    for field, name, _ in _GENERATIONS:
        if getattr(rules, field):
            found.append(f"not the newest of one of the last {getattr(rules, field)} {_PERIOD[field]}s ({name})")
    return tuple(found)


@dataclass(frozen=True)
class Link:
    """A native backup's place in its incremental chain: the chain (collection and full backup's
    folder) and when the backup ends."""
    chain: tuple[str, str]
    end: datetime


def keep_chains(decisions: list[Decision], links: Mapping[str, Link]) -> list[Decision]:
    """`decisions` with every backup a kept one needs kept too: an incremental restores from its full
    backup and every incremental of its chain before it, so those are kept with it."""
    needed: dict[tuple[str, str], datetime] = {}
    for d in decisions:
        if d.keep and d.key in links:
            link = links[d.key]
            needed[link.chain] = max(needed.get(link.chain, link.end), link.end)
    adjusted = []
    for d in decisions:
        link = links.get(d.key)
        if not d.keep and link and link.chain in needed and link.end <= needed[link.chain]:
            d = Decision(d.key, d.started, True, ("a kept incremental backup of its chain restores from it",),
                         d.ordered_at)
        adjusted.append(d)
    return adjusted


def chains_gone(decisions: list[Decision], links: Mapping[str, Link]) -> set[tuple[str, str]]:
    """The chains none of whose backups is kept: their data can go once their pointers are gone."""
    kept = {links[d.key].chain for d in decisions if d.keep and d.key in links}
    return {links[d.key].chain for d in decisions if d.key in links} - kept
