"""Fixtures of the end-to-end tier: Helm binaries, a PostgreSQL server, and two S3 servers."""

from __future__ import annotations

import tempfile
import time

import pytest

from devkit import helm as helms
from devkit.motoserver import MotoServer
from devkit.pgserver import start_server
from devkit.release import BUCKET
from devkit.rgw import RgwServer

STARTUP_SECONDS: dict[str, float] = {}


@pytest.fixture(scope="session", autouse=True)
def _helm_installed():
    helms.ensure_installed()


@pytest.fixture(scope="session")
def e2e_pg():
    # Its own server: restores rename and drop databases named malbork*.
    server = start_server(tempfile.mkdtemp(prefix="enclave-e2e-pg-"))
    yield server
    server.remove()


def _start(name, factory):
    t0 = time.monotonic()
    server = factory().start()
    STARTUP_SECONDS[name] = round(time.monotonic() - t0, 1)
    server.client().create_bucket(Bucket=BUCKET)
    return server


@pytest.fixture(scope="session")
def moto_store():
    server = _start("moto", MotoServer)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rgw_store():
    server = _start("rgw", RgwServer)
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["moto", "rgw"])
def store(request):
    """The S3 server: moto in auth mode, then Ceph RGW (tests are grouped per server)."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture(params=helms.HELMS)
def helm(request) -> str:
    return request.param
