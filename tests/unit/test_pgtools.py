"""Which pg_dump runs against which server."""

import pytest

from enclave_backup.errors import DatabaseError
from enclave_backup.engines.postgresql.tools import choose

FOUND = [(15, "/usr/lib/postgresql/15/bin/pg_dump"), (18, "/opt/pg18/pg_dump"), (17, "/opt/pg17/pg_dump")]


@pytest.mark.parametrize("server, picked", [(15, "/usr/lib/postgresql/15/bin/pg_dump"), (17, "/opt/pg17/pg_dump"),
                                            (16, "/opt/pg17/pg_dump"), (14, "/usr/lib/postgresql/15/bin/pg_dump")])
def test_the_servers_own_major_else_the_oldest_newer_one(server, picked):
    # pg_dump 17+ writes SET transaction_timeout, which older servers reject: the nearest major wins.
    assert choose(server, FOUND) == picked


def test_a_server_newer_than_every_pg_dump_is_refused_with_what_to_do():
    with pytest.raises(DatabaseError, match="PostgreSQL 19 but the newest pg_dump here is 18"):
        choose(19, FOUND)
