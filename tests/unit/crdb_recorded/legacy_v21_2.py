"""A v21.2 server: no SHOW CREATE ALL SCHEMAS / TYPES (those are 22.1+), so schemas come
from information_schema.schemata and types from crdb_internal.create_type_statements
(the table crdb_internal.show_create_all_types itself reads, per the CockroachDB source
pkg/sql/sem/builtins/show_create_all_types_builtin.go).
https://www.cockroachlabs.com/docs/v21.2/show-create (ALL TABLES only)
"""

VERSION = "CockroachDB CCL v21.2.17 (x86_64-unknown-linux-gnu, built 2022/10/17 17:03:42, go1.16.6)"
TIMESTAMP = "1695846521000000000.0000000000"

# information_schema.schemata, user schemas only: (schema_name,).
SCHEMATA = [("sc1",)]

# crdb_internal.create_type_statements.create_statement (no trailing semicolon there).
TYPE_STATEMENTS = [
    ("CREATE TYPE public.mood AS ENUM ('happy', 'sad')",),
    ("CREATE TYPE sc1.status AS ENUM ('open', 'closed', 'inactive')",),
]

OLD_VERSION = "CockroachDB CCL v20.2.19 (x86_64-unknown-linux-gnu, built 2022/01/24 19:34:15, go1.13.14)"
