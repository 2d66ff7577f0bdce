"""The replay screen behind the signature: a script that reaches outside the database is refused
even when its manifest is signed by a trusted key (the backup pod's key leaked, or an unsigned
old backup let in with ENCLAVE_BACKUP_ALLOW_UNVERIFIED). Real PostgreSQL, moto S3 in auth mode."""

from __future__ import annotations

import uuid

import pytest

from devkit.corpus import build_corpus, fingerprint
from tests.conftest import backup, plant_statement, run_cli

ATTACKS = {
    "copy-to-program": "COPY (SELECT 1) TO PROGRAM 'touch {marker}';",
    "do-block": "DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {marker}'''; END $$;",
    "select-riding-on-setval": "SELECT pg_catalog.setval('public.everything_id_seq', 1, true), "
                               "pg_catalog.lo_export(pg_catalog.lo_from_bytea(0, 'x'), '{marker}');",
    "superuser-role": "CREATE ROLE intruder_{tag} SUPERUSER LOGIN PASSWORD 'x';",
    "check-writing-a-file": "ALTER TABLE public.child ADD CONSTRAINT c CHECK "
                            "(pg_catalog.lo_export(pg_catalog.lo_from_bytea(0, 'x'), '{marker}') > 0);",
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_signed_script_that_reaches_outside_the_database_is_refused(pg, moto, bucket, dbname, cli_env,
                                                                       signing_keys, tmp_path, attack):
    with pg.connect(dbname) as conn:
        build_corpus(conn)
    key = backup(cli_env)
    with pg.connect(dbname) as conn:
        conn.execute("INSERT INTO public.child VALUES (40, 2)")  # the live data the backup does not hold
        before = fingerprint(conn)
    databases = set(pg.databases())
    tmp_path.chmod(0o777)  # the server's OS user could write here: only the refusal keeps the file away
    tag = uuid.uuid4().hex[:6]
    marker = tmp_path / f"owned-{tag}"
    plant_statement(moto.client(), bucket, key, ATTACKS[attack].format(marker=marker, tag=tag),
                    signing_keys=signing_keys)

    for command in ("verify", "restore"):
        result = run_cli(cli_env, command, "--object", key)
        assert result.returncode == 5, result.stdout + result.stderr
        error = result.event(f"{command} failed")["error"]
        assert "refused to run" in error and "Nothing of it ran on the live database" in error, error
        assert not marker.exists()
        assert set(pg.databases()) == databases  # the scratch database is gone
        with pg.connect(dbname) as conn:
            assert fingerprint(conn) == before
            assert conn.execute("SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname = %s",
                                (f"intruder_{tag}",)).fetchone() == (0,)


def test_an_unsigned_old_backup_let_in_by_the_override_is_screened_too(pg, moto, bucket, dbname, cli_env, tmp_path):
    with pg.connect(dbname) as conn:
        build_corpus(conn)
        before = fingerprint(conn)
    unsigned_env = {k: v for k, v in cli_env.items() if k != "ENCLAVE_BACKUP_SIGNING_KEY_FILE"}
    key = backup(unsigned_env)
    tmp_path.chmod(0o777)
    marker = tmp_path / "owned"
    plant_statement(moto.client(), bucket, key, ATTACKS["copy-to-program"].format(marker=marker))

    result = run_cli({**cli_env, "ENCLAVE_BACKUP_ALLOW_UNVERIFIED": "true"}, "restore", "--object", key)
    assert result.returncode == 5, result.stdout + result.stderr
    assert "COPY (SELECT 1) TO PROGRAM" in result.event("restore failed")["error"]
    assert not marker.exists()
    with pg.connect(dbname) as conn:
        assert fingerprint(conn) == before
