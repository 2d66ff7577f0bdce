"""The kit's own helpers that the tests and the benchmark measure with."""

from __future__ import annotations

import subprocess
import sys
import time

from devkit.environ import scrubbed
from devkit.procstats import poll_peak

MiB = 1 << 20


def test_poll_peak_measures_the_process_until_it_exits():
    child = "import time; block = bytearray(64 << 20); time.sleep(1)"
    popen = subprocess.Popen([sys.executable, "-c", child])
    peak = poll_peak(popen, interval=0.01)
    assert popen.returncode == 0
    assert peak > 64 * MiB


def test_poll_peak_returns_at_the_deadline_with_the_process_still_running():
    popen = subprocess.Popen(["sleep", "60"])
    try:
        peak = poll_peak(popen, time.perf_counter() + 0.5)
        assert popen.poll() is None and peak > 0
    finally:
        popen.kill()
        popen.wait()


def test_scrubbed_drops_the_program_settings_and_keeps_the_rest():
    env = {"PGHOST": "db", "PGPASSWORD": "secret", "AWS_PROFILE": "prod", "ENCLAVE_BACKUP_BUCKET": "b",
           "PATH": "/usr/bin", "HOME": "/root", "PAGER": "less"}
    assert scrubbed(env) == {"PATH": "/usr/bin", "HOME": "/root", "PAGER": "less"}
