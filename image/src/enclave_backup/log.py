"""structlog JSON logging on stdout, with secret values scrubbed from every event."""

from __future__ import annotations

import os
import sys
from typing import Any

import structlog

SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PGPASSWORD")
REDACTED = "[redacted]"


def secret_values(env=None) -> list[str]:
    env = os.environ if env is None else env
    # Longest first so a secret containing another is replaced whole.
    return sorted({env[k] for k in SECRET_ENV if env.get(k)}, key=len, reverse=True)


def scrub(text: str, secrets: list[str] | None = None) -> str:
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, REDACTED)
    return text


def _scrub_event(_logger, _name, event: dict[str, Any]) -> dict[str, Any]:
    secrets = secret_values()
    if not secrets:
        return event
    return {k: scrub(v, secrets) if isinstance(v, str) else v for k, v in event.items()}


def configure(stream=None) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub_event,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )


def get(name: str | None = None):
    return structlog.get_logger(name)
