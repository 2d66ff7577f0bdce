"""The wall clock, always in UTC: key names, markers and cut-offs all read it here."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
