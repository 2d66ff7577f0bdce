"""A shared database big enough to span many upload parts."""

from __future__ import annotations

import uuid

import pytest

from devkit.corpus import add_bulk
from devkit.pgserver import start_server

BULK_ROWS = 250_000  # about 110 MB of SQL text: 22 parts of 5 MiB, a second or two of dumping


@pytest.fixture(scope="session")
def bulk_db(pg):
    name = f"bulk_{uuid.uuid4().hex[:8]}"
    pg.create_database(name)
    with pg.connect(name) as conn:
        add_bulk(conn, BULK_ROWS, width=400)
    return name


@pytest.fixture
def bulk_env(cli_env, pg, bulk_db):
    return {**cli_env, **pg.env(bulk_db), "ENCLAVE_BACKUP_PROGRESS_SECONDS": "0.05",
            "ENCLAVE_BACKUP_COMPRESSION": "none", "ENCLAVE_BACKUP_PART_SIZE_MIB": "5"}


@pytest.fixture(scope="session")
def servers():
    """A PostgreSQL server of a given major (14-18), started when first asked for."""
    started = {}

    def get(major: int):
        if major not in started:
            started[major] = start_server(major=major)
        return started[major]

    yield get
    for server in started.values():
        server.remove()
