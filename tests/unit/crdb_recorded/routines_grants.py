"""Routines, triggers, grants and owners of the database `malbork`, in the shapes CockroachDB's tests show.

Sources (file @ commit in cockroachdb/cockroach unless noted):
- crdb_internal.create_function_statements (function_id, create_statement; no trailing `;`,
  names inside bodies qualified with the database): logic test udf @
  000903db347290e372723df4bad48b35cb37a622 (subtest create_function_statements, and
  `SHOW CREATE FUNCTION f`, whose body reads `SELECT a FROM test.public.t;`; here the
  database is called malbork instead of test). Its pg_proc OID is 100000 + function_id
  (same test: proc_f is function_id 118 and pg_proc oid 100118).
- crdb_internal.create_procedure_statements (procedure_id, create_statement) and the filter
  `database_name = $1`: pkg/sql/sem/builtins/show_create_all_routines_builtin.go @
  131139f46c11438d6610320cd924b62d480e3127, which SHOW CREATE ALL ROUTINES reads; the
  procedure text is from logic test show_create_all_routines @ 4785b75402a3592ebfd51970bc6eaf1f01f66935.
- A table DEFAULT calling a function, as SHOW CREATE prints it (`DEFAULT public.f1()`):
  logic test udf_in_column_defaults @ 013891ff333ce8d07813f4484a6944369127aedb.
- crdb_internal.create_trigger_statements (create_statement, database_name, table_id,
  trigger_id): pkg/sql/sem/builtins/show_create_all_triggers_builtin.go @
  45340d640f0d502c24a9c165c9990b357de43b50 (what SHOW CREATE ALL TRIGGERS reads); the
  statement as logic test show_create_all_triggers @ 1e8af83343b36270f6da067e9775cf928d888846
  and, qualified with the database as SHOW CREATE TRIGGER prints it, cockroachdb/docs
  src/current/v25.3/show-create.md @ d30090e02576f6d3178e1ff010c8ee7351387e1c.
- schema_privileges (table_catalog, table_schema, grantee, privilege_type), table_privileges
  (+ table_name, views and sequences included), type_privileges (type_catalog, type_schema,
  type_name, ...): the columns SHOW GRANTS reads, pkg/sql/delegate/show_grants.go @
  6f0855cca2a7f6623eb4af87644e92d374ca808e and @ 0116efa235b0dfd0e4fb375171b1e140e0cf9605.
- information_schema.role_routine_grants (specific_name `<name>_<oid>`, grantee,
  privilege_type; admin and root hold ALL, public EXECUTE by default): logic test
  udf_privileges @ 00751c3dc774b48327fe8e41268e57932c9ae73b.
- GRANT ... ON SCHEMA/TABLE/TYPE, and ON SEQUENCE from 22.2: cockroachdb/docs
  src/current/v22.2/grant.md @ 39514c33e9f864a37eea738f67c41c8c91620896; GRANT EXECUTE ON
  FUNCTION by name alone: udf_privileges (above).
- Owners: `pg_get_userbyid(nspowner) FROM pg_namespace` (alter_schema_owner),
  `pg_get_userbyid(typowner) FROM pg_type` (alter_type_owner), relations by pg_class relkind,
  pg_proc.proowner (udf, as above); ALTER TABLE/VIEW/MATERIALIZED VIEW/SEQUENCE/TYPE/SCHEMA
  ... OWNER TO: logic tests alter_table_owner, alter_view_owner, alter_sequence_owner,
  alter_type_owner, alter_schema_owner @ 0267c9568fc6a69ad5a223e778b95dbc4a2ce049 (the new
  owner needs CREATE on the parent schema, so owners follow the grants).
"""

# A function no table reads (called by a table DEFAULT, so it goes before the tables).
F1 = """CREATE FUNCTION public.f1()
    RETURNS INT8
    VOLATILE
    NOT LEAKPROOF
    CALLED ON NULL INPUT
    LANGUAGE SQL
    AS $$
    SELECT 1;
$$"""

# A function whose body reads a table and whose argument is a user-defined type.
F_READS_TABLE = """CREATE FUNCTION public.f(IN a malbork.public.mood)
    RETURNS INT8
    IMMUTABLE
    NOT LEAKPROOF
    CALLED ON NULL INPUT
    LANGUAGE SQL
    AS $$
    SELECT x FROM malbork.public.parent;
$$"""

TRIGGER_FUNC = """CREATE FUNCTION public.trigger_func()
  RETURNS TRIGGER
  VOLATILE
  NOT LEAKPROOF
  CALLED ON NULL INPUT
  LANGUAGE plpgsql
  SECURITY INVOKER
  AS $$
  BEGIN
  RAISE NOTICE 'Row inserted: %', NEW;
  RETURN NEW;
  END;
$$"""

PROCEDURE = """CREATE PROCEDURE public.double_triple(
  INOUT double INT8,
  OUT triple INT8
)
  LANGUAGE plpgsql
  SECURITY INVOKER
  AS $$
    BEGIN
      double := double * 2;
      triple := double * 3;
    END;
  $$"""

# (function_id, create_statement); (procedure_id, create_statement).
FUNCTION_STATEMENTS = [(120, F1), (121, F_READS_TABLE), (124, TRIGGER_FUNC)]
PROCEDURE_STATEMENTS = [(122, PROCEDURE)]

TABLE_CALLING_F1 = """CREATE TABLE public.t1 (
    a INT8 NOT NULL,
    b INT8 NULL DEFAULT public.f1(),
    CONSTRAINT t1_pkey PRIMARY KEY (a ASC)
);"""

# (create_statement,)
TRIGGER_STATEMENTS = [
    ("CREATE TRIGGER t1_trigger AFTER INSERT ON malbork.public.parent FOR EACH ROW "
     "EXECUTE FUNCTION malbork.public.trigger_func()",),
]

# (table_schema, grantee, privilege_type)
SCHEMA_PRIVILEGES = [
    ("public", "admin", "ALL"), ("public", "public", "CREATE"), ("public", "public", "USAGE"),
    ("public", "root", "ALL"), ("sc1", "admin", "ALL"), ("sc1", "app_owner", "CREATE"),
    ("sc1", "app_reader", "USAGE"), ("sc1", "root", "ALL"),
]
ODD = 'Odd "Name" x'
# (table_schema, table_name, grantee, privilege_type)
TABLE_PRIVILEGES = [
    ("public", "parent", "admin", "ALL"), ("public", "parent", "app_reader", "SELECT"),
    ("public", "parent", "root", "ALL"), ("public", "s", "app_writer", "USAGE"),
    ("public", "vx", "app_reader", "SELECT"), ("sc1", ODD, "app_writer", "INSERT"),
]
# (type_schema, type_name, grantee, privilege_type)
TYPE_PRIVILEGES = [
    ("public", "mood", "admin", "ALL"), ("public", "mood", "public", "USAGE"),
    ("sc1", "status", "app_reader", "USAGE"),
]
# (specific_name, grantee, privilege_type)
ROUTINE_GRANTS = [
    ("double_triple_100122", "app_writer", "EXECUTE"), ("double_triple_100122", "root", "ALL"),
    ("f_100121", "admin", "ALL"), ("f_100121", "app_reader", "EXECUTE"), ("f_100121", "public", "EXECUTE"),
]
# (nspname, owner)
SCHEMA_OWNERS = [("sc1", "app_owner")]
# (nspname, typname, owner): enum array types and table row types are listed too.
TYPE_OWNERS = [
    ("public", "_mood", "root"), ("public", "mood", "root"), ("public", "parent", "root"),
    ("sc1", "_status", "app_owner"), ("sc1", "status", "app_owner"),
]
# (nspname, relname, relkind, owner)
RELATION_OWNERS = [
    ("public", "mv", "m", "root"), ("public", "parent", "r", "app_owner"), ("public", "s", "S", "app_owner"),
    ("public", "vx", "v", "root"), ("sc1", ODD, "r", "app_owner"),
]
# (pg_proc oid, owner)
ROUTINE_OWNERS = [(100120, "root"), (100121, "app_owner"), (100122, "root"), (100124, "root")]
