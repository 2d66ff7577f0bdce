"""Optional push of a run's figures to a Prometheus Pushgateway (ENCLAVE_BACKUP_PUSHGATEWAY_URL).

One group per command and database (job `enclave-backup`). Pushes add to the group
(POST), so a failed run updates the exit code and run time but keeps the time of the
last success. A Pushgateway that cannot be reached never fails the run: it is logged.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from . import log
from .config import Config

JOB = "enclave-backup"
TIMEOUT_SECONDS = 10.0


def push(config: Config, command: str, exit_code: int, duration_s: float,
         figures: dict[str, float] | None = None) -> bool:
    """Push `enclave_backup_*` gauges; `figures` only on success (stored_bytes, rows...)."""
    if not config.pushgateway_url:
        return False
    # Imported here: most runs push nothing, and every run's start-up counts.
    from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

    registry = CollectorRegistry()
    now = time.time()

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(f"enclave_backup_{name}", doc, registry=registry).set(value)

    gauge("last_run_timestamp_seconds", "When the last run ended (Unix time).", now)
    gauge("last_exit_code", "Exit code of the last run (0 success, 2-5: docs/program.md).", exit_code)
    gauge("last_duration_seconds", "Run time of the last run in seconds.", duration_s)
    if exit_code == 0:
        gauge("last_success_timestamp_seconds", "When the last successful run ended (Unix time).", now)
        for name, value in (figures or {}).items():
            gauge(f"last_{name}", f"{name.replace('_', ' ')} of the last successful run.", value)
    try:
        pushadd_to_gateway(config.pushgateway_url, job=JOB, registry=registry, timeout=TIMEOUT_SECONDS,
                           grouping_key={"command": command, "database": config.database})
    except Exception as exc:  # noqa: BLE001 - urllib raises many kinds; metrics must not fail a backup
        # Host only: a URL may carry user:password.
        log.get().warning("could not push metrics to the Pushgateway",
                          host=urlsplit(config.pushgateway_url).hostname,
                          error=log.scrub(f"{type(exc).__name__}: {exc}"))
        return False
    return True
