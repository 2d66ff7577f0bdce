"""PostgreSQL database-level state that lives outside the database's own schema.

pg_dump without --create leaves out the database's privileges, `ALTER DATABASE ... SET`
settings, connection limit and comment. A backup records them in its manifest and a restore
puts them on the new database before it replaces the live one: the live database's state
when there is one, else the backup's.
"""

from __future__ import annotations

import psycopg

from ...db import quote_ident, quote_literal, split_quoted

# Where a restored database records which backup it came from (see swap.marker).
MARKER_SETTING = "enclave_backup.restored_from"

# Settings whose values are lists: ALTER ... SET takes them as separate literals.
_LIST_SETTINGS = {"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries",
                  "shared_preload_libraries"}

_DATABASE = """
SELECT d.oid, pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, {provider}, {locale}, {rules},
       pg_get_userbyid(d.datdba), d.datconnlimit, d.datacl IS NULL, shobj_description(d.oid, 'pg_database')
FROM pg_database d WHERE d.datname = coalesce(%s, current_database())
"""
# Locale providers other than libc came with 15 (icu) and 17 (builtin); columns moved with them.
_LOCALE_COLUMNS = [(170000, "d.datlocprovider::text", "d.datlocale", "d.daticurules"),
                   (160000, "d.datlocprovider::text", "d.daticulocale", "d.daticurules"),
                   (150000, "d.datlocprovider::text", "d.daticulocale", "NULL"),
                   (0, "'c'", "NULL", "NULL")]
_ACL = """
SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, a.is_grantable
FROM pg_database d, aclexplode(d.datacl) a WHERE d.oid = %s ORDER BY 1 NULLS FIRST, 2
"""
_SETTINGS = """
SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, unnest(s.setconfig)
FROM pg_db_role_setting s WHERE s.setdatabase = %s ORDER BY 1 NULLS FIRST
"""


def read_database_state(conn: psycopg.Connection, name: str | None = None) -> dict | None:
    """The state of database `name` (default: the connected one), or None if it does not exist."""
    _, provider, locale, rules = next(c for c in _LOCALE_COLUMNS if conn.info.server_version >= c[0])
    row = conn.execute(_DATABASE.format(provider=provider, locale=locale, rules=rules), (name,)).fetchone()
    if row is None:
        return None
    oid, encoding, collate, ctype, provider, locale, rules, owner, limit, default_acl, comment = row
    settings = []
    for role, item in conn.execute(_SETTINGS, (oid,)).fetchall():
        key, _, value = item.partition("=")
        if key != MARKER_SETTING:
            settings.append({"role": role, "name": key, "value": value})
    acl = None if default_acl else [{"grantee": grantee, "privilege": privilege, "grantable": grantable}
                                    for grantee, privilege, grantable in conn.execute(_ACL, (oid,)).fetchall()]
    return {"encoding": encoding, "collate": collate, "ctype": ctype, "locale_provider": provider,
            "locale": locale, "icu_rules": rules, "owner": owner,
            "connection_limit": limit, "acl": acl, "settings": settings, "comment": comment}


def create_options(state: dict) -> str:
    """CREATE DATABASE options giving the encoding and locale of `state`."""
    out = (f" ENCODING {quote_literal(state['encoding'])} LC_COLLATE {quote_literal(state['collate'])}"
           f" LC_CTYPE {quote_literal(state['ctype'])}")
    provider = {"i": "icu", "b": "builtin"}.get(state.get("locale_provider") or "c")
    if provider:
        out += f" LOCALE_PROVIDER {provider} {provider.upper()}_LOCALE {quote_literal(state['locale'])}"
    if state.get("icu_rules"):
        out += f" ICU_RULES {quote_literal(state['icu_rules'])}"
    return out


def apply_sql(name: str, state: dict) -> list[str]:
    """Statements that give database `name` this state (owner, encoding and locale are set at CREATE)."""
    return [sql for _, sql in apply_steps(name, state)]


def apply_steps(name: str, state: dict) -> list[tuple[str, str]]:
    """apply_sql's statements, each with what it carries over, for a log line (no setting values)."""
    db = quote_ident(name)
    out = [("connection limit", f"ALTER DATABASE {db} CONNECTION LIMIT {int(state.get('connection_limit', -1))}")]
    for setting in state.get("settings") or []:
        target = f"ALTER DATABASE {db}" if setting["role"] is None else \
            f"ALTER ROLE {quote_ident(setting['role'])} IN DATABASE {db}"
        what = setting["name"] + (f" (role {setting['role']})" if setting["role"] else "")
        out.append((what, f"{target} SET {quote_ident(setting['name'])} TO "
                          f"{_setting_value(setting['name'], setting['value'])}"))
    if state.get("acl") is not None:
        # An explicit ACL replaces the defaults (PUBLIC: CONNECT, TEMPORARY; owner: all).
        out.append(("grants", f"REVOKE ALL ON DATABASE {db} FROM PUBLIC"))
        out.append(("grants", f"REVOKE ALL ON DATABASE {db} FROM {quote_ident(state['owner'])}"))
        for item in state["acl"]:
            grantee = "PUBLIC" if item["grantee"] is None else quote_ident(item["grantee"])
            grant = " WITH GRANT OPTION" if item["grantable"] else ""
            out.append((f"grant {item['privilege']} to {item['grantee'] or 'PUBLIC'}",
                        f"GRANT {item['privilege']} ON DATABASE {db} TO {grantee}{grant}"))
    if state.get("comment") is not None:
        out.append(("comment", f"COMMENT ON DATABASE {db} IS {quote_literal(state['comment'])}"))
    return out


def summary(state: dict) -> dict:
    """What a log line says was carried over (setting names, not their values)."""
    return {"owner": state.get("owner"), "connection_limit": state.get("connection_limit"),
            "settings": sorted(f"{s['name']}" + (f" (role {s['role']})" if s["role"] else "")
                               for s in state.get("settings") or []),
            "grants": None if state.get("acl") is None else len(state["acl"]),
            "comment": state.get("comment") is not None}


def _setting_value(name: str, value: str) -> str:
    if name.lower() in _LIST_SETTINGS:
        return ", ".join(quote_literal(item) for item in split_list(value))
    return quote_literal(value)


def split_list(value: str) -> list[str]:
    """Elements of a stored list setting (`"$user", public`), with double quotes undone."""
    return [item.strip() for item in split_quoted(value, ",") if item.strip()]
