"""Catalog answers of a CockroachDB database `malbork`, in the shapes CockroachDB documents.

Sources of the shapes (one row per statement, each ending in `;`, FKs as separate ALTERs
after all CREATEs with the "-- Validate foreign key constraints" comment row, hidden
`rowid INT8 NOT VISIBLE NOT NULL DEFAULT unique_rowid()`, computed `AS (...) STORED`,
`CREATE SCHEMA public;` listed by SHOW CREATE ALL SCHEMAS, enums as `CREATE TYPE s.n AS ENUM`,
user-defined types in columns written `db.schema.type`, a fresh sequence reading
last_value 0 / is_called true):
- https://www.cockroachlabs.com/docs/v23.1/show-create
- https://github.com/cockroachdb/cockroach/blob/master/pkg/sql/logictest/testdata/logic_test/show_create_all_tables
- https://github.com/cockroachdb/cockroach/blob/master/pkg/sql/logictest/testdata/logic_test/show_create_all_types
- https://github.com/cockroachdb/cockroach/blob/master/pkg/sql/logictest/testdata/logic_test/show_create_all_schemas
- https://github.com/cockroachdb/cockroach/blob/master/pkg/sql/logictest/testdata/logic_test/sequences
- https://www.cockroachlabs.com/docs/v22.2/information-schema (columns.is_hidden,
  is_generated, generation_expression, crdb_sql_type; tables.table_type; sequences)
The table `docs` holds the values of pkg/sql/copy/testdata/copy_to_text and
pkg/sql/logictest/testdata/logic_test/json (see data_rows.py for their commits).
"""

DATABASE = "malbork"

# SHOW CREATE ALL SCHEMAS (22.1+): column create_statement.
SHOW_CREATE_ALL_SCHEMAS = [
    "CREATE SCHEMA public;",
    "CREATE SCHEMA sc1;",
]

# SHOW CREATE ALL TYPES (22.1+): a type may live in a user-defined schema.
SHOW_CREATE_ALL_TYPES = [
    "CREATE TYPE public.mood AS ENUM ('happy', 'sad');",
    "CREATE TYPE sc1.status AS ENUM ('open', 'closed', 'inactive');",
]

ODD_TABLE_CREATE = '''CREATE TABLE sc1."Odd ""Name"" x" (
    id INT8 NOT NULL,
    "Mixed Case" STRING NULL,
    "it's" STRING NULL,
    secret STRING NOT VISIBLE NULL,
    state malbork.sc1.status NULL,
    payload BYTES NULL,
    ratio FLOAT8 NULL,
    CONSTRAINT "Odd ""Name"" x_pkey" PRIMARY KEY (id ASC)
);
COMMENT ON TABLE sc1."Odd ""Name"" x" IS e'has \\' quotes';'''

# SHOW CREATE ALL TABLES (21.1+): CREATEs in dependency order, then FK ALTERs.
SHOW_CREATE_ALL_TABLES = [
    '''CREATE TABLE public.parent (
    x INT8 NULL,
    y INT8 NULL,
    z INT8 NULL,
    rowid INT8 NOT VISIBLE NOT NULL DEFAULT unique_rowid(),
    CONSTRAINT parent_pkey PRIMARY KEY (rowid ASC),
    UNIQUE INDEX parent_x_y_z_key (x ASC, y ASC, z ASC),
    UNIQUE INDEX parent_x_key (x ASC),
    FAMILY f1 (x, y, z, rowid)
);''',
    '''CREATE TABLE public.full_test (
    x INT8 NULL,
    y INT8 NULL,
    z INT8 NULL,
    rowid INT8 NOT VISIBLE NOT NULL DEFAULT unique_rowid(),
    CONSTRAINT full_test_pkey PRIMARY KEY (rowid ASC),
    UNIQUE INDEX full_test_x_key (x ASC),
    FAMILY f1 (x, y, z, rowid)
);''',
    '''CREATE TABLE public.t (
    a INT8 NOT NULL,
    b INT8 NULL AS (a + 1:::INT8) STORED,
    c INT8 NULL AS (a * 2:::INT8) VIRTUAL,
    CONSTRAINT t_pkey PRIMARY KEY (a ASC),
    FAMILY f1 (a, b)
);''',
    ODD_TABLE_CREATE,
    '''CREATE TABLE public.docs (
    id INT8 NOT NULL,
    t STRING NULL,
    j JSONB NULL,
    b BYTES NULL,
    CONSTRAINT docs_pkey PRIMARY KEY (id ASC)
);''',
    "CREATE SEQUENCE public.s MINVALUE 1 MAXVALUE 9223372036854775807 INCREMENT 1 START 1;",
    "CREATE SEQUENCE public.unused MINVALUE 1 MAXVALUE 9223372036854775807 INCREMENT 1 START 1;",
    '''CREATE TABLE public.s_tbl (
    id INT8 NOT NULL DEFAULT nextval('public.s'::REGCLASS),
    v INT8 NULL,
    CONSTRAINT s_tbl_pkey PRIMARY KEY (id ASC),
    FAMILY f1 (id, v)
);''',
    '''CREATE VIEW public.vx (
    "?column?"
) AS SELECT 1;''',
    "CREATE MATERIALIZED VIEW public.mv (x) AS SELECT x FROM malbork.public.parent;",
    "ALTER TABLE public.full_test ADD CONSTRAINT full_test_x_y_z_fkey FOREIGN KEY (x, y, z) "
    "REFERENCES public.parent(x, y, z) MATCH FULL ON DELETE CASCADE ON UPDATE CASCADE;",
    "ALTER TABLE public.full_test ADD CONSTRAINT test_fk FOREIGN KEY (x) REFERENCES public.parent(x) "
    "ON DELETE CASCADE;",
    "-- Validate foreign key constraints. These can fail if there was unvalidated data during the "
    "SHOW CREATE ALL TABLES",
    "ALTER TABLE public.full_test VALIDATE CONSTRAINT full_test_x_y_z_fkey;",
    "ALTER TABLE public.full_test VALIDATE CONSTRAINT test_fk;",
]

ODD = 'Odd "Name" x'

# information_schema.tables: (table_schema, table_name, table_type).
RELATIONS = [
    ("public", "docs", "BASE TABLE"),
    ("public", "full_test", "BASE TABLE"),
    ("public", "mv", "VIEW"),
    ("public", "parent", "BASE TABLE"),
    ("public", "s", "SEQUENCE"),
    ("public", "s_tbl", "BASE TABLE"),
    ("public", "t", "BASE TABLE"),
    ("public", "unused", "SEQUENCE"),
    ("public", "vx", "VIEW"),
    ("sc1", ODD, "BASE TABLE"),
]

# pg_catalog.pg_class relkind = 'm': (nspname, relname).
MATVIEWS = [("public", "mv")]


def _col(schema, table, name, sql_type, hidden="NO", generated="NO", expression="", default=None):
    return (schema, table, name, sql_type, hidden, generated, expression, default)


# information_schema.columns: (table_schema, table_name, column_name, crdb_sql_type,
# is_hidden, is_generated, generation_expression, column_default).
COLUMNS = [
    _col("public", "docs", "id", "INT8"),
    _col("public", "docs", "t", "STRING"),
    _col("public", "docs", "j", "JSONB"),
    _col("public", "docs", "b", "BYTES"),
    _col("public", "full_test", "x", "INT8"),
    _col("public", "full_test", "y", "INT8"),
    _col("public", "full_test", "z", "INT8"),
    _col("public", "full_test", "rowid", "INT8", hidden="YES", default="unique_rowid()"),
    _col("public", "mv", "x", "INT8"),
    _col("public", "parent", "x", "INT8"),
    _col("public", "parent", "y", "INT8"),
    _col("public", "parent", "z", "INT8"),
    _col("public", "parent", "rowid", "INT8", hidden="YES", default="unique_rowid()"),
    _col("public", "s_tbl", "id", "INT8", default="nextval('public.s'::REGCLASS)"),
    _col("public", "s_tbl", "v", "INT8"),
    _col("public", "t", "a", "INT8"),
    _col("public", "t", "b", "INT8", generated="YES", expression="a + 1:::INT8"),
    _col("public", "t", "c", "INT8", generated="YES", expression="a * 2:::INT8"),
    _col("public", "vx", "?column?", "INT8"),
    _col("sc1", ODD, "id", "INT8"),
    _col("sc1", ODD, "Mixed Case", "STRING"),
    _col("sc1", ODD, "it's", "STRING"),
    _col("sc1", ODD, "secret", "STRING", hidden="YES"),
    _col("sc1", ODD, "state", "malbork.sc1.status"),
    _col("sc1", ODD, "payload", "BYTES"),
    _col("sc1", ODD, "ratio", "FLOAT8"),
]

# information_schema.sequences: (sequence_schema, sequence_name, minimum_value, maximum_value).
SEQUENCES = [
    ("public", "s", "1", "9223372036854775807"),
    ("public", "unused", "1", "9223372036854775807"),
]

# SELECT last_value, is_called FROM <sequence>: `unused` was never called, so it reads
# START - INCREMENT = 0, as `SELECT * FROM select_test` does in the sequences logic test.
SEQUENCE_VALUES = {
    '"public"."s"': (42, True),
    '"public"."unused"': (0, True),
}

# SHOW ZONE CONFIGURATION FROM DATABASE malbork: (raw_config_sql,), the shape of
# https://www.cockroachlabs.com/docs/v24.1/show-zone-configurations with 24.1's default
# GC window of 4 hours (https://www.cockroachlabs.com/docs/v24.1/configure-replication-zones).
ZONE_CONFIG = [("""ALTER DATABASE malbork CONFIGURE ZONE USING
\trange_min_bytes = 134217728,
\trange_max_bytes = 536870912,
\tgc.ttlseconds = 14400,
\tnum_replicas = 3,
\tconstraints = '[]',
\tlease_preferences = '[]'""",)]
