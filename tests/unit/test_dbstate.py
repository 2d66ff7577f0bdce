"""Database-level state as SQL: settings with list values, privileges, comment."""

from enclave_backup.engines.postgresql.state import apply_sql, split_list, summary

STATE = {"encoding": "UTF8", "collate": "C", "ctype": "C", "owner": "app owner", "connection_limit": 5,
         "acl": [{"grantee": None, "privilege": "CONNECT", "grantable": False},
                 {"grantee": "reader", "privilege": "CREATE", "grantable": True}],
         "settings": [{"role": None, "name": "search_path", "value": '"$user", app, "Odd, name"'},
                      {"role": None, "name": "DateStyle", "value": "SQL, DMY"},
                      {"role": "reader", "name": "statement_timeout", "value": "5s"}],
         "comment": "it's ours"}


def test_list_settings_are_split_like_postgres_stores_them():
    assert split_list('"$user", app, "Odd, name"') == ["$user", "app", "Odd, name"]
    assert split_list("") == []


def test_apply_sql():
    assert apply_sql("db", STATE) == [
        'ALTER DATABASE "db" CONNECTION LIMIT 5',
        'ALTER DATABASE "db" SET "search_path" TO \'$user\', \'app\', \'Odd, name\'',
        'ALTER DATABASE "db" SET "DateStyle" TO \'SQL, DMY\'',  # one value, not a list
        'ALTER ROLE "reader" IN DATABASE "db" SET "statement_timeout" TO \'5s\'',
        'REVOKE ALL ON DATABASE "db" FROM PUBLIC',
        'REVOKE ALL ON DATABASE "db" FROM "app owner"',
        'GRANT CONNECT ON DATABASE "db" TO PUBLIC',
        'GRANT CREATE ON DATABASE "db" TO "reader" WITH GRANT OPTION',
        'COMMENT ON DATABASE "db" IS \'it\'\'s ours\'',
    ]


def test_default_privileges_stay_default_and_values_stay_out_of_logs():
    assert not any("GRANT" in s or "REVOKE" in s for s in apply_sql("db", {**STATE, "acl": None}))
    logged = summary(STATE)
    assert logged["settings"] == ["DateStyle", "search_path", "statement_timeout (role reader)"]
    assert "5s" not in str(logged)
