"""A CockroachDB cluster's answers to the native method's statements (BACKUP ... WITH detached, its
job in crdb_internal.jobs, SHOW BACKUP, external connections), as rules for devkit.wireserver.

The shapes, and where they come from (cockroachdb/cockroach unless said otherwise):
- `SELECT version()`: one STRING column `version`, "CockroachDB CCL v24.1.3 (...)"; `SELECT 1` one INT
  column `?column?` (an expression's column, as PostgreSQL names it).
- `cluster_logical_timestamp()` is a DECIMAL `<wall time in ns>.<logical, 10 digits>`; `::STRING`
  keeps that text; AS OF SYSTEM TIME takes it as a DECIMAL (docs@79e9a5d03f4b01203131e71af49a6f2eaae9ff63
  src/current/v24.1/as-of-system-time.md:49).
- BACKUP ... WITH detached returns one INT column `job_id` (pkg/jobs/resultcols.go
  DetachedJobExecutionResultHeader, and pkg/backup/backup_planning.go `resultsCh <-
  tree.Datums{tree.NewDInt(tree.DInt(jobID))}`, both at commit 03e24093c9b39f6fad45e4e2d972cdab3abe83ab).
  The same file resolves the targets AS OF the statement's time (`ResolveTargetsToDescriptors(ctx, p,
  endTime, ...)`, "failed to resolve targets specified in the BACKUP stmt") and names a full backup's
  folder `endTime.GoTime().Format(backupbase.DateBasedIntoFolderName)`, "/2006/01/02-150405.00"
  (pkg/backup/backupbase/constants.go commit 051090638ee981c80695768e5ac4b7a7ff9fa5d3; Go's ".00"
  truncates to hundredths); `INTO '<subdir>' IN` appends to that chain ("/" + TrimPrefix(subdir, "/")).
- Before 24.3, revision_history needs an Enterprise licence: `requireEnterprise(..., "revision_history")`
  in pkg/ccl/backupccl/backup_planning.go commit 00d9facdf0e45b69f4849b574feac0319df4fa4b, whose error
  reads "use of BACKUP with revision_history requires an enterprise license. see https://cockroachlabs.com/
  pricing?cluster=<id> for details on how to enable enterprise features", SQLSTATE XXC02
  (pgcode.CCLValidLicenseRequired).
- crdb_internal.jobs: status STRING, running_status STRING, fraction_completed FLOAT, error STRING;
  statuses pending, running, paused, failed, reverting, succeeded, canceled, cancel-requested,
  pause-requested, revert-failed (pkg/jobs/jobs.go commit 09ba9d5eaf9dbac1c562fb335f1fa516f1179c88;
  docs@79e9a5d03f4b01203131e71af49a6f2eaae9ff63 src/current/v26.1/show-jobs.md); job ids as in
  docs@79e9a5d03f4b01203131e71af49a6f2eaae9ff63 src/current/v24.3/backup.md (652471804772712449).
- SHOW BACKUP FROM '<folder>' IN '<collection>' lists every layer of the chain, one row per
  descriptor: database_name, parent_schema_name, object_name, object_type, backup_type (full |
  incremental), start_time (NULL for a full backup, else the previous layer's end), end_time (the
  layer's AS OF SYSTEM TIME), size_bytes, rows (NULL but for tables), is_full_cluster, regions
  (docs@79e9a5d03f4b01203131e71af49a6f2eaae9ff63 src/current/v24.3/show-backup.md, columns and the
  "full and incremental backups in a specific full backup subdirectory" example, whose rows give the
  objects and sizes below). start_time and end_time are TIMESTAMP before 23.2 (pkg/ccl/backupccl/show.go
  commit 918b1dbc23e254b970884df3c0402f76c368273d: types.Timestamp) and TIMESTAMPTZ from 23.2 on
  (cockroach PR #108290, "SHOW BACKUP's timestamp columns are now TIMESTAMPTZ"; pkg/backup/show.go
  commit 9876826a15fa6a21b3c10259f75c040af576d00b: types.TimestampTZ, MakeDTimestampTZ(timeutil.Unix(0,
  manifest.EndTime.WallTime), time.Nanosecond)); the text format carries microseconds (truncated).
  An expression column such as `coalesce(size_bytes, 0)` is named `coalesce`.
- CREATE EXTERNAL CONNECTION <name> AS '<url>' (22.2+), DROP EXTERNAL CONNECTION <name>, and
  'external://<name>' in BACKUP and SHOW BACKUP (docs@79e9a5d03f4b01203131e71af49a6f2eaae9ff63
  src/current/v24.3/create-external-connection.md, src/current/v25.2/drop-external-connection.md).
- s3:// URL parameters: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ENDPOINT,
  AWS_REGION, AUTH, ASSUME_ROLE, AWS_SERVER_ENC_MODE, AWS_SERVER_KMS_ID, S3_STORAGE_CLASS; anything
  else is refused with "unknown S3 query parameters: %s", and AUTH=specified (the default) without
  a key with "%s is set to '%s', but %s is not set" (pkg/cloud/amazon/s3_storage.go commit
  003d36c3d9a990ff753a363937d911050c637f8a). AWS_USE_PATH_STYLE is a no-op in 24.1.10+ and 24.2.8+
  and honoured from 24.3.3 (docs@79e9a5d03f4b01203131e71af49a6f2eaae9ff63
  src/current/_includes/releases/v24.1/v24.1.10.md, v24.2/v24.2.8.md, v24.3/v24.3.3.md).
- RESTORE DATABASE <db> FROM '<folder>' IN '<collection>' AS OF SYSTEM TIME <t> WITH detached,
  new_db_name = '<name>': a job id as BACKUP's (pkg/ccl/backupccl/restore_planning.go commit
  0074365049360928d248e96f8f347003847f871f, `resultsCh <- tree.Datums{tree.NewDInt(tree.DInt(jobID))}`);
  new_db_name restores the database under that name (docs@79e9a5d03f4b01203131e71af49a6f2eaae9ff63
  src/current/v24.1/restore.md:126). The time picks the layer that covers it (start < t <= end) and
  must equal that layer's end unless it has revision history (pkg/backup/backupinfo/manifest_handling.go
  commit 044ab078ce40acad2557f5e1a5c9098441dddc2d, ValidateEndTimeAndTruncate: "invalid RESTORE timestamp:
  restoring to arbitrary time requires that BACKUP for requested time be created with 'revision_history'
  option." + " nearest backup time is %s" / " nearest BACKUP times are %s or %s", times printed as Go's
  time.Time, e.g. "2022-05-24 15:26:39.136487236 +0000 UTC"; "invalid RESTORE timestamp: supplied
  backups do not cover requested time"). Without AS OF the chain's newest layer is restored. A backup
  of a newer release is refused at planning: "backup from version %s is newer than current version %s"
  (restore_planning.go, checkBackupManifestVersionCompatability). Both errors come from the statement
  itself (planning), before any job. A failed or canceled RESTORE job leaves no database behind (its
  descriptors are dropped); a succeeded one leaves `new_db_name`, without the backed-up database's
  comment (fixture).
- Databases: `SHOW DATABASES` columns database_name, owner, primary_region, secondary_region, regions,
  survival_goal, and `WITH COMMENT` adds `comment` (NULL unless COMMENT ON DATABASE set it); a new
  cluster has defaultdb, postgres and system (docs@79e9a5d03f4b01203131e71af49a6f2eaae9ff63
  src/current/v24.1/show-databases.md). Errors: `database %q does not exist` (3D000,
  sqlerrors.NewUndefinedDatabaseError) and `database %q already exists` (42P04,
  NewDatabaseAlreadyExistsError), pkg/sql/sqlerrors/errors.go commit 63bfb49f053b110c50fbbf67f16077593422e0b5;
  ALTER DATABASE ... RENAME TO onto a taken name: `the new database name %q already exists` (42P04,
  pkg/sql/database.go commit 0116efa235b0dfd0e4fb375171b1e140e0cf9605).
- The dependents of a database as the swap reads them: crdb_internal.create_statements (schema_name,
  descriptor_name, create_statement; pkg/sql/crdb_internal.go commit adc84745e4e107a73a1fd4b596c724a08165c34e),
  crdb_internal.create_function_statements / create_procedure_statements (function_id | procedure_id,
  create_statement; see routines_grants.py for their sources), `SHOW ROLES` (username, options,
  member_of; admin and root, docs@79e9a5d03f4b01203131e71af49a6f2eaae9ff63 src/current/v24.1/show-roles.md).
  This cluster's databases hold no views, routines or triggers: recorded empty answers. Sessions are
  not told apart by database: information_schema.tables and count(*) answer with the backed-up
  database's tables (`backup_rows`) in any database (fixture).
- What the nodes write (optional, `writer`): CREATE EXTERNAL CONNECTION checks the URI by writing
  `crdb_external_storage_location` there (docs@79e9a5d03f4b01203131e71af49a6f2eaae9ff63
  src/current/v24.1/create-external-connection.md:10); a full backup writes `<folder>/BACKUP_MANIFEST`
  and its data under `<folder>/data/`, an incremental `incrementals/<folder>/<YYYYMMDD>/<HHMMSS.ss>/`
  (pkg/backup/backupbase/constants.go commit 051090638ee981c80695768e5ac4b7a7ff9fa5d3; the file names
  inside a backup are the fixture's).
Messages this module makes up where no recording was found say so ("(fixture)").
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Callable, Iterable
from urllib.parse import parse_qsl, urlsplit

from devkit.wireserver import BOOL, FLOAT8, INT8, TEXT, TIMESTAMP, TIMESTAMPTZ, Done, Fail, Rows

VERSION = "CockroachDB CCL v24.1.3 (x86_64-pc-linux-gnu, built 2024/07/31 00:00:00, go1.22.5)"
DATABASE = "malbork"
FIRST_JOB_ID = 652471804772712449

# One layer's objects: (parent_schema_name, object_name, object_type, size_bytes, rows), the
# database's own row and its public schema first, as SHOW BACKUP lists them.
BACKUP_OBJECTS = [
    (None, DATABASE, "database", None, None),
    (None, "public", "schema", None, None),
    ("public", "users", "table", 25856, 281),
    ("public", "vehicles", "table", 99, 2),
]

# A job's polls: running, further along, done.
JOB_STATES = [("running", 0.25), ("running", 0.75), ("succeeded", 1.0)]

S3_PARAMS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT", "AWS_REGION",
             "AUTH", "ASSUME_ROLE", "AWS_SERVER_ENC_MODE", "AWS_SERVER_KMS_ID", "S3_STORAGE_CLASS"}

_LIT = r"'((?:[^']|'')*)'"
_IDENT = r'("(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_$]*)'
_BACKUP = re.compile(rf"^BACKUP DATABASE {_IDENT} INTO (?:{_LIT} IN )?{_LIT} AS OF SYSTEM TIME (\S+) WITH (.+)$",
                     re.S)
_SHOW = re.compile(rf"^SELECT (.+) FROM \[SHOW BACKUP (?:FROM )?{_LIT} IN {_LIT}( WITH check_files)?\]$", re.S)
_CREATE = re.compile(rf"^CREATE EXTERNAL CONNECTION {_IDENT} AS {_LIT}$", re.S)
_DROP = re.compile(rf"^DROP EXTERNAL CONNECTION {_IDENT}$")
_AOST = r"(\d+(?:\.\d+)?|'(?:[^']|'')*')"
_RESTORE = re.compile(rf"^RESTORE DATABASE {_IDENT} FROM {_LIT} IN {_LIT}(?: AS OF SYSTEM TIME {_AOST})? WITH (.+)$",
                      re.S)
_COMMENT = re.compile(rf"^COMMENT ON DATABASE {_IDENT} IS {_LIT}$", re.S)
_RENAME = re.compile(rf"^ALTER DATABASE {_IDENT} RENAME TO {_IDENT}$")
_DROP_DATABASE = re.compile(rf"^DROP DATABASE (IF EXISTS )?{_IDENT}( CASCADE)?$")
_CREATE_DATABASE = re.compile(rf"^CREATE DATABASE {_IDENT}$")
_COUNT = re.compile(rf"^SELECT count\(\*\) FROM {_IDENT}\.{_IDENT}\s*$")
DATABASES_SQL = "SELECT database_name FROM [SHOW DATABASES]"
COMMENT_SQL = re.compile(r"^SELECT comment FROM \[SHOW DATABASES WITH COMMENT\] WHERE database_name = \$1$")
NOW_SQL = re.compile(r"^SELECT cluster_logical_timestamp\(\)::STRING$")
# What the swap and the restore's clean-up read in a database (engine.py, dump.py), as sent.
VIEWS_SQL = ("SELECT schema_name, descriptor_name, create_statement FROM crdb_internal.create_statements "
             "WHERE database_name = current_database() AND descriptor_type = 'view' ORDER BY descriptor_id")
FUNCTIONS_SQL = ("SELECT function_id, create_statement FROM crdb_internal.create_function_statements "
                 "WHERE database_name = current_database() ORDER BY function_id")
PROCEDURES_SQL = ("SELECT procedure_id, create_statement FROM crdb_internal.create_procedure_statements "
                  "WHERE database_name = current_database() ORDER BY procedure_id")
TRIGGERS_SQL = ("SELECT create_statement FROM crdb_internal.create_trigger_statements "
                "WHERE database_name = current_database() ORDER BY table_id, trigger_id")
ROLES_SQL = "SELECT username FROM [SHOW ROLES]"
TABLES_SQL = ("SELECT table_schema, table_name FROM information_schema.tables "
              "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema', "
              "'crdb_internal', 'pg_extension')")
SYSTEM_DATABASES = ("defaultdb", "postgres", "system")
ROLES = [("admin",), ("root",)]
REVISION_ERROR = ("invalid RESTORE timestamp: restoring to arbitrary time requires that BACKUP for requested time be "
                  "created with 'revision_history' option.")
JOB_SQL = re.compile(r"^SELECT status, coalesce\(fraction_completed, 0\)::FLOAT8, coalesce\(error, ''\), "
                     r"coalesce\(running_status, ''\) FROM crdb_internal\.jobs WHERE job_id = \$1$")
END_TIME_SQL = re.compile(r"^SELECT \(cluster_logical_timestamp\(\) - 10000000000\)::STRING$")


def release(version: str) -> tuple[int, int, int]:
    found = re.search(r"v(\d+)\.(\d+)\.(\d+)", version)
    return int(found.group(1)), int(found.group(2)), int(found.group(3))


def _unquote_ident(text: str) -> str:
    return text[1:-1].replace('""', '"') if text.startswith('"') else text.lower()


def _unquote(text: str | None) -> str | None:
    return None if text is None else text.replace("''", "'")


def wall_time(hlc: str) -> datetime:
    """An HLC decimal's wall time, to the microsecond (as the text format carries it)."""
    nanos = int(Decimal(hlc))
    return datetime.fromtimestamp(nanos // 10**9, timezone.utc).replace(microsecond=nanos % 10**9 // 1000)


def go_time(hlc) -> str:
    """An HLC's wall time as Go prints a time.Time: `2022-05-24 15:26:39.136487236 +0000 UTC`."""
    nanos = int(Decimal(hlc))
    moment = datetime.fromtimestamp(nanos // 10**9, timezone.utc)
    fraction = f"{nanos % 10**9:09d}".rstrip("0")
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (f".{fraction}" if fraction else "") + " +0000 UTC"


def aost_value(operand: str) -> Decimal:
    """AS OF SYSTEM TIME's operand as an HLC decimal: a decimal as given, a TIMESTAMPTZ string to the microsecond."""
    if not operand.startswith("'"):
        return Decimal(operand)
    moment = datetime.fromisoformat(_unquote(operand[1:-1]))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    micros = (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    return Decimal(micros * 1000)


def version_text(release: tuple[int, int, int]) -> str:
    return f"{release[0]}.{release[1]}"


def s3_writer(**client_options) -> Callable[[str, str, bytes], None]:
    """What the nodes do with a collection's s3:// URL: write `path` under it with the URL's own
    keys, endpoint and region (path-style, as <= 24.2 does with AWS_ENDPOINT)."""
    import boto3
    from botocore.config import Config

    def write(url: str, path: str, body: bytes) -> None:
        parts = urlsplit(url)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        client = boto3.client("s3", endpoint_url=params.get("AWS_ENDPOINT") or None,
                              region_name=params.get("AWS_REGION", "us-east-1"),
                              aws_access_key_id=params.get("AWS_ACCESS_KEY_ID"),
                              aws_secret_access_key=params.get("AWS_SECRET_ACCESS_KEY"),
                              aws_session_token=params.get("AWS_SESSION_TOKEN"),
                              config=Config(s3={"addressing_style": "path"}), **client_options)
        key = "/".join(p for p in (parts.path.strip("/"), path.strip("/")) if p)
        client.put_object(Bucket=parts.netloc, Key=key, Body=body)
    return write


def folder_of(hlc: str) -> str:
    """The folder a full backup AS OF `hlc` gets: Go's "/2006/01/02-150405.00" of its end time."""
    nanos = int(Decimal(hlc))
    moment = datetime.fromtimestamp(nanos // 10**9, timezone.utc)
    return moment.strftime("/%Y/%m/%d-%H%M%S.") + f"{nanos % 10**9 // 10**7:02d}"


class Cluster(list):
    """The rules (a list, for WireServer) plus the state they keep: connections, jobs, backups."""

    def __init__(self, database: str, version: str, job_states: list, backup_rows: list, licensed: bool,
                 clock: Callable[[], int], restore_job_states: list | None = None,
                 writer: Callable[[str, str, bytes], None] | None = None):
        super().__init__()
        self.database, self.version, self.release = database, version, release(version)
        self.job_states, self.backup_rows, self.licensed, self.clock = job_states, backup_rows, licensed, clock
        self.restore_job_states = restore_job_states or job_states
        self.writer = writer  # the nodes' writes into the collection, or None
        self.connections: dict[str, str] = {}  # name -> URL
        self.jobs: dict[int, dict] = {}  # id -> {"statement", "kind", "polls", "canceled", "states", ...}
        self.chains: dict[tuple[str, str], list[dict]] = {}  # (collection, folder) -> layers
        self.timestamps: list[str] = []  # every cluster_logical_timestamp() handed out
        # name -> {"comment": str | None, "created": wall time in ns it exists from}
        self.databases: dict[str, dict] = {name: {"comment": None, "created": 0}
                                           for name in (*SYSTEM_DATABASES, database)}
        empty = Rows([("schema_name", TEXT), ("descriptor_name", TEXT), ("create_statement", TEXT)])
        self.extend([
            (re.compile(r"^SELECT version\(\)$"), Rows([("version", TEXT)], [(version,)])),
            ("SELECT 1", Rows([("?column?", INT8)], [(1,)])),  # a liveness check
            (END_TIME_SQL, self.logical_timestamp),
            (NOW_SQL, self.now),
            (_CREATE, self.create_connection),
            (_DROP, self.drop_connection),
            (_BACKUP, self.backup),
            (_RESTORE, self.restore),
            (JOB_SQL, self.job),
            (re.compile(r"^CANCEL JOB \d+$"), self.cancel),
            (_SHOW, self.show_backup),
            (DATABASES_SQL, self.show_databases),
            (COMMENT_SQL, self.read_comment),
            (_COMMENT, self.comment),
            (_RENAME, self.rename),
            (_DROP_DATABASE, self.drop_database),
            (_CREATE_DATABASE, self.create_database),
            (VIEWS_SQL, empty),
            (FUNCTIONS_SQL, Rows([("function_id", INT8), ("create_statement", TEXT)])),
            (PROCEDURES_SQL, Rows([("procedure_id", INT8), ("create_statement", TEXT)])),
            (TRIGGERS_SQL, Rows([("create_statement", TEXT)])),
            (ROLES_SQL, Rows([("username", TEXT)], ROLES)),
            (TABLES_SQL, self.tables),
            (_COUNT, self.count),
        ])

    # -- answers ----------------------------------------------------------------------------
    def logical_timestamp(self, sql, params):
        text = f"{self.clock() - 10_000_000_000}.0000000000"
        self.timestamps.append(text)
        return Rows([("?column?", TEXT)], [(text,)])

    def now(self, sql, params):
        text = f"{self.clock()}.0000000000"
        self.timestamps.append(text)
        return Rows([("cluster_logical_timestamp", TEXT)], [(text,)])

    def create_connection(self, sql, params):
        if self.release[:2] < (22, 2):
            return Fail("42601", 'at or near "external": syntax error')
        match = _CREATE.match(sql)
        name, url = _unquote_ident(match.group(1)), _unquote(match.group(2))
        refused = self.check_url(url)
        if refused:
            return refused
        if name in self.connections:
            return Fail("42710", f"external connection with name {name} already exists (fixture)")
        self.connections[name] = url
        self.write(url, "crdb_external_storage_location", b"")
        return Done("CREATE EXTERNAL CONNECTION")

    def drop_connection(self, sql, params):
        name = _unquote_ident(_DROP.match(sql).group(1))
        if self.connections.pop(name, None) is None:
            return Fail("42704", f"external connection {name} does not exist (fixture)")
        return Done("DROP EXTERNAL CONNECTION")

    def check_url(self, url: str) -> Fail | None:
        parts = urlsplit(url)
        if parts.scheme != "s3":
            return Fail("XX000", f"no recorded answer for a {parts.scheme}:// collection (fixture)")
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        known = set(S3_PARAMS)
        if self.release >= (24, 3, 3) or (24, 1, 10) <= self.release < (24, 2, 0) or \
                (24, 2, 8) <= self.release < (24, 3, 0):
            known.add("AWS_USE_PATH_STYLE")
        unknown = sorted(set(params) - known)
        if unknown:
            return Fail("XXUUU", f"unknown S3 query parameters: {', '.join(unknown)}")
        if params.get("AUTH", "specified") == "specified" and not params.get("AWS_ACCESS_KEY_ID"):
            return Fail("XXUUU", "AUTH is set to 'specified', but AWS_ACCESS_KEY_ID is not set")
        return None

    def collection(self, target: str) -> tuple[str, Fail | None]:
        """The URL an 'external://<name>' or s3:// target stands for, without its query."""
        url, refused = self.resolve(target)
        if refused:
            return "", refused
        return collection_key(url), None

    def resolve(self, target: str) -> tuple[str, Fail | None]:
        """The whole s3:// URL (credentials and all) an 'external://<name>' or s3:// target stands for."""
        if target.startswith("external://"):
            name = target[len("external://"):]
            if name not in self.connections:
                return "", Fail("42704", f"external connection {name} does not exist (fixture)")
            return self.connections[name], None
        refused = self.check_url(target)
        return ("", refused) if refused else (target, None)

    def write(self, url: str, path: str, body: bytes) -> None:
        if self.writer is not None:
            self.writer(url, path, body)

    def backup(self, sql, params):
        match = _BACKUP.match(sql)
        database, subdir, target = _unquote_ident(match.group(1)), _unquote(match.group(2)), _unquote(match.group(3))
        hlc, options = match.group(4), {o.strip() for o in match.group(5).split(",")}
        known = self.databases.get(database)
        if known is None or (re.fullmatch(r"\d+(\.\d+)?", hlc) and int(Decimal(hlc)) < known["created"]):
            return Fail("3D000", f'failed to resolve targets specified in the BACKUP stmt: database "{database}" '
                                 "does not exist")
        if not options <= {"detached", "revision_history"} or "detached" not in options:
            return Fail("XX000", f"no recorded answer for BACKUP WITH {', '.join(sorted(options))} (fixture)")
        if not re.fullmatch(r"\d+(\.\d+)?", hlc):
            return Fail("XX000", f"no recorded answer for AS OF SYSTEM TIME {hlc} (fixture)")
        if "revision_history" in options and not self.licensed and self.release[:2] < (24, 3):
            return Fail("XXC02", "use of BACKUP with revision_history requires an enterprise license. see "
                                 "https://cockroachlabs.com/pricing?cluster=8b6ed5e3-6b6f-4b6a-9d6e-8d0f3c2a1b7e "
                                 "for details on how to enable enterprise features")
        url, refused = self.resolve(target)
        if refused:
            return refused
        collection = collection_key(url)
        end = int(Decimal(hlc))
        if subdir is None:
            folder, start = folder_of(hlc), None
            layers = self.chains.setdefault((collection, folder), [])
            if layers:
                return Fail("XX000", f"{folder} in {collection} already holds a backup (fixture)")
        else:
            folder = "/" + subdir.lstrip("/")
            layers = self.chains.get((collection, folder))
            if not layers:
                return Fail("XX000", f"no full backup in {folder} of {collection} to add to (fixture)")
            start = layers[-1]["end_hlc"]
            if end <= int(Decimal(start)):
                return Fail("XX000", f"incremental AS OF {hlc} is not after the chain's end {start} (fixture)")
        job_id = FIRST_JOB_ID + len(self.jobs)
        layer = {"type": "full" if subdir is None else "incremental", "start_hlc": start, "end_hlc": hlc,
                 "revision_history": "revision_history" in options, "job_id": job_id, "done": False,
                 "database": database, "release": self.release}
        layers.append(layer)
        return self.start_job(sql, "backup", self.job_states, layer=layer, folder=folder,
                              on_success=lambda: self.backup_written(url, folder, layer))

    def backup_written(self, url: str, folder: str, layer: dict) -> None:
        layer["done"] = True
        if layer["type"] == "full":
            self.write(url, f"{folder}/BACKUP_MANIFEST", b"(fixture) backup manifest")
            self.write(url, f"{folder}/data/{layer['job_id']}.sst", b"(fixture) ranges")
        else:
            end = wall_time(layer["end_hlc"])
            where = f"incrementals{folder}/{end:%Y%m%d}/{end:%H%M%S}.{end.microsecond // 10000:02d}"
            self.write(url, f"{where}/BACKUP_MANIFEST", b"(fixture) backup manifest")
            self.write(url, f"{where}/data/{layer['job_id']}.sst", b"(fixture) ranges")

    def start_job(self, sql: str, kind: str, states: list, on_success: Callable[[], None], **extra) -> Rows:
        job_id = FIRST_JOB_ID + len(self.jobs)
        self.jobs[job_id] = {"statement": sql, "kind": kind, "polls": 0, "canceled": False, "states": states,
                             "on_success": on_success, "finished": False, **extra}
        return Rows([("job_id", INT8)], [(job_id,)])

    def seed_chain(self, collection: str, folder: str, ends: Iterable[str], revision_history: bool = False,
                   version: str | None = None, database: str | None = None) -> list[dict]:
        """A chain backed up earlier (by this cluster or another of `version`): a full backup ending at the
        first HLC of `ends`, incrementals at the others. `collection`: s3://bucket/path (no query)."""
        layers = self.chains.setdefault((collection_key(collection), "/" + folder.lstrip("/")), [])
        for end in ends:
            layers.append({"type": "incremental" if layers else "full",
                           "start_hlc": layers[-1]["end_hlc"] if layers else None, "end_hlc": end,
                           "revision_history": revision_history, "job_id": None, "done": True,
                           "database": database or self.database,
                           "release": release(version) if version else self.release})
        return layers

    # -- RESTORE ----------------------------------------------------------------------------
    def restore(self, sql, params):
        match = _RESTORE.match(sql)
        database, folder, target = _unquote_ident(match.group(1)), _unquote(match.group(2)), _unquote(match.group(3))
        operand, options = match.group(4), split_options(match.group(5))
        new_name = options.pop("new_db_name", None)
        if set(options) != {"detached"} or new_name is None or not re.fullmatch(r"'(?:[^']|'')*'", new_name):
            return Fail("XX000", f"no recorded answer for RESTORE WITH {match.group(5)} (fixture)")
        new_name = _unquote(new_name[1:-1])
        collection, refused = self.collection(target)
        if refused:
            return refused
        folder = "/" + folder.lstrip("/")
        layers = [layer for layer in self.chains.get((collection, folder), []) if layer["done"]]
        if not layers:
            return Fail("XX000", f"no backup found in {folder} of {collection} (fixture)")
        newest = max(layer["release"] for layer in layers)
        if newest[:2] > self.release[:2]:
            return Fail("XXUUU", f"backup from version {version_text(newest)} is newer than current version "
                                 f"{version_text(self.release)}")
        if database not in {layer["database"] for layer in layers}:
            return Fail("XX000", f'database "{database}" not found in the backup (fixture)')
        wanted = aost_value(operand) if operand else Decimal(layers[-1]["end_hlc"])
        refused = self.check_restore_time(layers, wanted)
        if refused:
            return refused
        if new_name in self.databases:
            return Fail("42P04", f'database "{new_name}" already exists')
        return self.start_job(sql, "restore", self.restore_job_states, database=new_name, as_of=wanted,
                              on_success=lambda: self.databases.setdefault(
                                  new_name, {"comment": None, "created": self.clock()}))

    @staticmethod
    def check_restore_time(layers: list[dict], wanted: Decimal) -> Fail | None:
        """ValidateEndTimeAndTruncate: the layer covering `wanted` must end at it, or have revision history."""
        for i, layer in enumerate(layers):
            start = Decimal(layer["start_hlc"]) if layer["start_hlc"] is not None else Decimal(0)
            end = Decimal(layer["end_hlc"])
            if not (start < wanted <= end):
                continue
            if wanted != end and not layer["revision_history"]:
                if i == 0:
                    return Fail("XXUUU", f"{REVISION_ERROR} nearest backup time is {go_time(end)}")
                return Fail("XXUUU", f"{REVISION_ERROR} nearest BACKUP times are {go_time(start)} or {go_time(end)}")
            return None
        return Fail("XXUUU", "invalid RESTORE timestamp: supplied backups do not cover requested time")

    # -- databases --------------------------------------------------------------------------
    def show_databases(self, sql, params):
        return Rows([("database_name", TEXT)], [(name,) for name in sorted(self.databases)])

    def read_comment(self, sql, params):
        known = self.databases.get(params[0])
        return Rows([("comment", TEXT)], [] if known is None else [(known["comment"],)])

    def comment(self, sql, params):
        match = _COMMENT.match(sql)
        name = _unquote_ident(match.group(1))
        if name not in self.databases:
            return Fail("3D000", f'database "{name}" does not exist')
        self.databases[name]["comment"] = _unquote(match.group(2))
        return Done("COMMENT ON DATABASE")

    def rename(self, sql, params):
        match = _RENAME.match(sql)
        old, new = _unquote_ident(match.group(1)), _unquote_ident(match.group(2))
        if old not in self.databases:
            return Fail("3D000", f'database "{old}" does not exist')
        if new in self.databases:
            return Fail("42P04", f'the new database name "{new}" already exists')
        self.databases[new] = self.databases.pop(old)
        return Done("ALTER DATABASE")

    def drop_database(self, sql, params):
        match = _DROP_DATABASE.match(sql)
        name = _unquote_ident(match.group(2))
        if name in SYSTEM_DATABASES[2:]:
            return Fail("42501", f'cannot drop the {name} database (fixture)')
        if self.databases.pop(name, None) is None and not match.group(1):
            return Fail("3D000", f'database "{name}" does not exist')
        return Done("DROP DATABASE")

    def create_database(self, sql, params):
        name = _unquote_ident(_CREATE_DATABASE.match(sql).group(1))
        if name in self.databases:
            return Fail("42P04", f'database "{name}" already exists')
        self.databases[name] = {"comment": None, "created": self.clock()}
        return Done("CREATE DATABASE")

    def tables(self, sql, params):
        return Rows([("table_schema", TEXT), ("table_name", TEXT)],
                    [(schema, name) for schema, name, kind, _, _ in self.backup_rows if kind == "table"])

    def count(self, sql, params):
        match = _COUNT.match(sql)
        schema, name = _unquote_ident(match.group(1)), _unquote_ident(match.group(2))
        for row_schema, row_name, kind, _, rows in self.backup_rows:
            if kind == "table" and (row_schema, row_name) == (schema, name):
                return Rows([("count", INT8)], [(rows,)])
        return Fail("42P01", f'relation "{schema}.{name}" does not exist')

    def job(self, sql, params):
        columns = [("status", TEXT), ("coalesce", FLOAT8), ("coalesce", TEXT), ("coalesce", TEXT)]
        job = self.jobs.get(params[0])
        if job is None:
            return Rows(columns, [])
        states = job["states"]
        status, fraction, error, running = states[min(job["polls"], len(states) - 1)]
        if job["canceled"]:
            return Rows(columns, [("canceled", fraction, "", "")])
        job["polls"] += 1
        if status == "succeeded" and not job["finished"]:
            job["finished"] = True
            job["on_success"]()
        return Rows(columns, [(status, fraction, error, running)])

    def cancel(self, sql, params):
        job = self.jobs.get(int(sql.split()[-1]))
        if job is None:
            return Fail("XX000", f"job with ID {sql.split()[-1]} does not exist (fixture)")
        job["canceled"] = True
        if "layer" in job:
            job["layer"]["done"] = False
        return Done("CANCEL JOBS 1")

    def show_backup(self, sql, params):
        match = _SHOW.match(sql)
        folder, target, check_files = "/" + _unquote(match.group(2)).lstrip("/"), _unquote(match.group(3)), \
            bool(match.group(4))
        collection, refused = self.collection(target)
        if refused:
            return refused
        layers = [layer for layer in self.chains.get((collection, folder), []) if layer["done"]]
        if not layers:
            return Fail("XX000", f"no recorded backup in {folder} of {collection} (fixture)")
        ts_type = TIMESTAMPTZ if self.release[:2] >= (23, 2) else TIMESTAMP
        columns = [("database_name", TEXT), ("parent_schema_name", TEXT), ("object_name", TEXT),
                   ("object_type", TEXT), ("backup_type", TEXT), ("start_time", ts_type), ("end_time", ts_type),
                   ("size_bytes", INT8), ("rows", INT8), ("is_full_cluster", BOOL), ("regions", TEXT)]
        if check_files:
            columns.append(("file_bytes", INT8))
        rows = []
        for layer in layers:
            stamp = (lambda hlc: None if hlc is None else
                     wall_time(hlc) if ts_type == TIMESTAMPTZ else wall_time(hlc).replace(tzinfo=None))
            objects = self.backup_rows if layer["database"] == self.database else \
                [(None, layer["database"], "database", None, None), (None, "public", "schema", None, None)]
            for schema, name, kind, size, count in objects:
                database = None if kind == "database" else layer["database"]
                if layer["type"] == "incremental" and size is not None:
                    size, count = size // 10, count // 10  # what changed since the layer before
                row = [database, schema, name, kind, layer["type"], stamp(layer["start_hlc"]),
                       stamp(layer["end_hlc"]), size, count, False, None]
                rows.append(row + ([size] if check_files else []))
        return project(match.group(1), columns, rows)


def collection_key(url: str) -> str:
    """A collection as the cluster tells chains apart: s3://bucket/path, without query or trailing slash."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def split_options(text: str) -> dict[str, str | None]:
    """`detached, new_db_name = 'x'` -> {"detached": None, "new_db_name": "'x'"} (commas in quotes kept)."""
    options = {}
    for part in re.findall(r"(?:[^,']|'(?:[^']|'')*')+", text):
        name, _, value = part.partition("=")
        options[name.strip().lower()] = value.strip() or None
    return options


def job_state(state) -> tuple[str, float, str, str]:
    """(status, fraction_completed, error, running_status) from a status or a tuple of the first ones."""
    if isinstance(state, str):
        return state, 1.0 if state == "succeeded" else 0.0, "", ""
    return (tuple(state) + (0.0, "", ""))[:4] if len(state) == 1 else (tuple(state) + ("", ""))[:4]


def project(select_list: str, columns: list[tuple[str, int]], rows: list[list]) -> Rows | Fail:
    """SELECT <columns or coalesce(column, 0)> over SHOW BACKUP's rows."""
    index = {name: i for i, (name, _) in enumerate(columns)}
    picked = []
    for expression in (e.strip() for e in re.split(r",(?![^()]*\))", select_list) if e.strip()):
        if expression in index:
            picked.append((expression, index[expression], None))
            continue
        coalesce = re.fullmatch(r"coalesce\((\w+)\s*,\s*(\d+)\)", expression)
        if coalesce and coalesce.group(1) in index:
            picked.append(("coalesce", index[coalesce.group(1)], int(coalesce.group(2))))
            continue
        return Fail("XX000", f"no recorded answer for the SHOW BACKUP column {expression!r} (fixture)")
    out_columns = [(name, columns[i][1]) for name, i, _ in picked]
    out_rows = [tuple(row[i] if default is None or row[i] is not None else default for _, i, default in picked)
                for row in rows]
    return Rows(out_columns, out_rows)


def cockroach_rules(database: str = DATABASE, version: str = VERSION, job_states: Iterable | None = None,
                    backup_rows: Iterable | None = None, licensed: bool = True,
                    clock: Callable[[], int] = time.time_ns, restore_job_states: Iterable | None = None,
                    writer: Callable[[str, str, bytes], None] | None = None) -> Cluster:
    """Rules answering the native method as a cluster of `version` holding `database` would.

    job_states: what each poll of a job returns, in order (the last repeats): a status, or
    (status, fraction_completed[, error[, running_status]]). backup_rows: SHOW BACKUP's objects per
    layer, as BACKUP_OBJECTS. licensed=False: a cluster without an Enterprise licence (before 24.3
    revision_history is refused with XXC02). clock: the cluster's time in ns. restore_job_states: the
    polls of RESTORE jobs, as job_states (default: the same). writer(url, path, body): what the nodes
    write under a collection's URL (s3_writer() writes to the real store), None: nothing."""
    rows = list(backup_rows) if backup_rows is not None else \
        [(s, database if k == "database" else n, k, size, count) for s, n, k, size, count in BACKUP_OBJECTS]
    states = [job_state(s) for s in (job_states or JOB_STATES)]
    restores = [job_state(s) for s in restore_job_states] if restore_job_states else None
    return Cluster(database, version, states, rows, licensed, clock, restores, writer)
