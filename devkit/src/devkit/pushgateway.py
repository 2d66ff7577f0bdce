"""Prometheus' Pushgateway (Debian prometheus-pushgateway) on loopback, in memory."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from .net import free_port

BINARY = "prometheus-pushgateway"


@dataclass
class Pushgateway:
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Pushgateway":
        # No --persistence.file: metrics live in memory and go with the process.
        self.proc = subprocess.Popen([BINARY, f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/-/ready", timeout=1)
                return self
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("prometheus-pushgateway did not start")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def samples(self, prefix: str = "enclave_backup_") -> dict[tuple[str, frozenset], float]:
        """(metric name, labels) -> value of every pushed sample whose name starts with `prefix`."""
        text = urllib.request.urlopen(self.url + "/metrics", timeout=5).read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name.startswith(prefix):
                    out[(s.name, frozenset(s.labels.items()))] = s.value
        return out
