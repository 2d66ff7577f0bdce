"""SIGTERM during an S3 request to a store that accepts and never answers: the call ends at once
with Terminated. botocore wraps what an attempt raises in HTTPClientError and retries it, which
would hold a stopping pod for every attempt's read timeout. A real socket and a real signal."""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

from enclave_backup import cli
from enclave_backup.config import Config
from enclave_backup.errors import Terminated
from enclave_backup.s3 import Storage


@pytest.fixture
def silent_store():
    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return
    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for conn in held:
        conn.close()


@pytest.mark.parametrize("call", ["delete", "get_bytes", "head"])
def test_a_stop_inside_a_stalled_request_is_not_retried_away(monkeypatch, silent_store, call):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x" * 40)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", silent_store)
    storage = Storage(Config(bucket="bkt", s3_read_timeout=20, s3_max_attempts=5))
    previous = signal.signal(signal.SIGALRM, cli._on_sigterm)  # the program's own handler, on a timer
    started = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(Terminated):
            getattr(storage, call)("k")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < 5  # not one of the read timeouts, let alone five
