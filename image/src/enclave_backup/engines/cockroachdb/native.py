"""CockroachDB's own BACKUP and RESTORE (the `native` method): the statements, the collection's URL
and what a job's state means. Pure: no I/O (jobs.py, native_backup.py and native_restore.py run them).

Every node writes its ranges straight to the collection, so the URL is what the nodes use: the
endpoint, region and addressing style they need, and the credentials, which go to CockroachDB
only (an external connection where the server has them) and never into a log line, the manifest
or an error: `redact` takes them out of any text that may carry the URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Mapping
from urllib.parse import quote, urlsplit

from ...db import quote_ident, quote_literal
from ...errors import ConfigError, DatabaseError

# Full backups go to `<collection>/<end time as %Y/%m/%d-%H%M%S.00>`; incrementals of one to
# `<collection>/incrementals/<that folder>/...` (cockroach pkg/backup/backupbase/constants.go:
# DateBasedIntoFolderName = "/2006/01/02-150405.00", DefaultIncrementalsSubdir = "incrementals").
INCREMENTALS_FOLDER = "incrementals"
FOLDER_FORMAT = "/%Y/%m/%d-%H%M%S.{hundredths:02d}"

# URL parameters of s3:// storage (pkg/cloud/amazon/s3_storage.go).
SECRET_PARAMS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_SECRET_PARAM = re.compile(r"(?i)\b(" + "|".join(SECRET_PARAMS) + r")=[^&'\"\s]*")
# CockroachDB itself redacts only AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN in what it shows
# (cloud.RedactedParams in pkg/cloud/amazon/s3_storage.go); the key id is taken out here too.
REDACTED = "redacted"

# Before 24.3 (aws-sdk-go v1) a custom AWS_ENDPOINT forces path-style (S3ForcePathStyle). 24.3.0
# moved to aws-sdk-go-v2, which addresses it virtual-hosted unless AWS_USE_PATH_STYLE=true, a
# parameter of 24.3.3 and 25.1 (cockroach#136678, PRs #136934, #136715); 24.1.10 and 24.2.8 accept it
# as a no-op, older releases reject it as an unknown S3 query parameter. So it is sent only where it counts.
PATH_STYLE_PARAM_SINCE = (24, 3, 3)
VIRTUAL_HOSTED_ONLY = ((24, 3, 0), (24, 3, 2))
EXTERNAL_CONNECTIONS_SINCE = (22, 2)
# Before 24.3 incremental and revision-history backups are Enterprise features; from 24.3 every
# feature needs a licence key (a cluster without one is throttled after its grace period).
FREE_FEATURES_UNTIL = (24, 3)
LICENCE_SQLSTATE = "XXC02"  # pgcode.CCLValidLicenseRequired

_RELEASE = re.compile(r"CockroachDB\s+\S+\s+v(\d+)\.(\d+)\.(\d+)")


def parse_release(version: str) -> tuple[int, int, int]:
    """(year, release, patch) from `SELECT version()`, e.g. 'CockroachDB CCL v24.3.3 (...)' -> (24, 3, 3)."""
    match = _RELEASE.search(version)
    if not match:
        raise DatabaseError(f"cannot read a CockroachDB version from {version[:200]!r}: the native method needs "
                            "CockroachDB (Backup.Method=dump backs up PostgreSQL)")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def redact(text: str) -> str:
    """`text` with the values of the URL's credential parameters replaced, as CockroachDB redacts them."""
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}", text)


@dataclass(frozen=True)
class Store:
    """Where the nodes write: bucket, folder and how to reach it. Credentials stay out of it."""
    bucket: str
    folder: str  # the collection's key prefix in the bucket, no leading or trailing slash
    endpoint: str = ""  # https://host[:port]; "" is AWS itself
    region: str = ""
    path_style: str = "auto"  # auto | true | false
    sse_mode: str = ""  # AES256 | aws:kms (AWS_SERVER_ENC_MODE), as ENCLAVE_BACKUP_SSE asks of the pod's writes
    kms_key_id: str = ""

    def wants_path_style(self) -> bool:
        # Self-hosted stores (MinIO, Ceph RGW) mostly serve path-style only; AWS and IBM COS serve both.
        return self.path_style == "true" or (self.path_style == "auto" and bool(self.endpoint))


def collection_url(store: Store, release: tuple[int, int, int], credentials: dict[str, str]) -> str:
    """The s3:// URL of the collection for a server of `release`; `credentials` (the SECRET_PARAMS
    present) are added as given, none means the nodes' own (AUTH=implicit)."""
    params: list[tuple[str, str]] = []
    if credentials:
        params += [(name, credentials[name]) for name in SECRET_PARAMS if credentials.get(name)]
    else:
        params.append(("AUTH", "implicit"))
    if store.endpoint:
        params.append(("AWS_ENDPOINT", store.endpoint))
    params.append(("AWS_REGION", store.region or "us-east-1"))  # the SDK needs one, also for other stores
    if store.sse_mode:
        params.append(("AWS_SERVER_ENC_MODE", store.sse_mode))
    if store.kms_key_id:
        params.append(("AWS_SERVER_KMS_ID", store.kms_key_id))
    path_style = store.wants_path_style()
    if release >= PATH_STYLE_PARAM_SINCE:
        if path_style:
            params.append(("AWS_USE_PATH_STYLE", "true"))
    elif VIRTUAL_HOSTED_ONLY[0] <= release <= VIRTUAL_HOSTED_ONLY[1] and path_style and store.endpoint:
        raise ConfigError(
            f"CockroachDB v{'.'.join(map(str, release))} addresses a custom endpoint's buckets virtual-hosted only "
            "(cockroach#136678), and this store is to be addressed path-style; upgrade the cluster to 24.3.3 or "
            "later, or set Backup.Native.PathStyle=false if the store serves <bucket>.<host> names")
    elif not path_style and store.endpoint and release < (24, 3, 0):
        raise ConfigError(f"CockroachDB v{'.'.join(map(str, release))} addresses a custom endpoint path-style "
                          "only; Backup.Native.PathStyle=false needs CockroachDB 24.3 or later")
    query = "&".join(f"{name}={quote(value, safe='')}" for name, value in params)
    return f"s3://{store.bucket}/{quote(store.folder, safe='/-._~')}?{query}"


def store_for(config, folder: str, env: Mapping[str, str]) -> Store:
    """The store the pod writes to, as the nodes must reach it (the pod's AWS_* variables)."""
    if config.sse == "SSE-C":
        raise ConfigError("ENCLAVE_BACKUP_SSE=SSE-C cannot be used with the native method: CockroachDB's nodes "
                          "write with AES256 or aws:kms only (AWS_SERVER_ENC_MODE)")
    return Store(config.bucket, folder, endpoint=env.get("AWS_ENDPOINT_URL", "").strip().rstrip("/"),
                 region=(env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "").strip(),
                 path_style=config.native_path_style, sse_mode=config.sse, kms_key_id=config.sse_kms_key_id)


def credentials(env: Mapping[str, str]) -> dict[str, str]:
    """The pod's keys, handed to the nodes; none (a role of the nodes' own) means AUTH=implicit."""
    return {name: env[name] for name in SECRET_PARAMS if env.get(name, "").strip()}


def shown_url(url: str) -> str:
    """The URL without its credential parameters: for the manifest, logs and the hand restore."""
    parts = urlsplit(url)
    kept = [p for p in parts.query.split("&") if p and p.split("=", 1)[0].upper() not in SECRET_PARAMS]
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{'&'.join(kept)}" if kept else "")


def external_connection_name(run_id: str) -> str:
    """One connection per run: a concurrent run (incremental, verify) never replaces another's."""
    return f"enclave_backup_{run_id}"


def create_connection_sql(name: str, url: str) -> str:
    return f"CREATE EXTERNAL CONNECTION {quote_ident(name)} AS {quote_literal(url)}"


def drop_connection_sql(name: str) -> str:
    return f"DROP EXTERNAL CONNECTION {quote_ident(name)}"


def connection_url(name: str) -> str:
    return f"external://{name}"


# -- times ---------------------------------------------------------------------------------

def hlc_to_datetime(hlc: str) -> datetime:
    """The wall time of an HLC timestamp as cluster_logical_timestamp() gives it ('<nanos>.<logical>')."""
    try:
        nanos = int(Decimal(hlc))
    except (InvalidOperation, ValueError):
        raise DatabaseError(f"unexpected timestamp from the server: {hlc[:60]!r}") from None
    return datetime.fromtimestamp(nanos // 1_000_000_000, timezone.utc).replace(
        microsecond=(nanos % 1_000_000_000) // 1000)


def full_folder(end: datetime) -> str:
    """The folder a full backup ending at `end` gets: `/2026/12/07-015500.12` (hundredths truncated)."""
    return end.astimezone(timezone.utc).strftime(FOLDER_FORMAT.format(hundredths=end.microsecond // 10000))


def parse_as_of(text: str) -> datetime:
    """restore.asOf: an RFC 3339 time with a zone, e.g. 2026-12-07T01:00:00Z."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ConfigError(f"ENCLAVE_BACKUP_RESTORE_AS_OF={text[:60]!r} is not an RFC 3339 time with a zone "
                          "(e.g. 2026-12-07T01:00:00Z)")
    return moment.astimezone(timezone.utc)


def as_of_literal(moment: datetime) -> str:
    """An AS OF SYSTEM TIME operand for a point in time (a TIMESTAMPTZ string)."""
    return quote_literal(moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00:00"))


# -- statements ------------------------------------------------------------------------------

def backup_sql(database: str, target: str, end_hlc: str, revision_history: bool,
               full_folder_of_chain: str | None = None) -> str:
    """BACKUP of one database at `end_hlc`, detached; into `full_folder_of_chain` an incremental."""
    into = quote_literal(target) if full_folder_of_chain is None else \
        f"{quote_literal(full_folder_of_chain)} IN {quote_literal(target)}"
    options = ["detached"] + (["revision_history"] if revision_history else [])
    return (f"BACKUP DATABASE {quote_ident(database)} INTO {into} AS OF SYSTEM TIME {_decimal(end_hlc)} "
            f"WITH {', '.join(options)}")


def restore_sql(database: str, folder: str, target: str, new_name: str, as_of: str | None) -> str:
    """RESTORE of `database` from a chain (its full backup's folder) into `new_name`, detached."""
    at = f" AS OF SYSTEM TIME {as_of}" if as_of else ""
    return (f"RESTORE DATABASE {quote_ident(database)} FROM {quote_literal(folder)} IN {quote_literal(target)}{at} "
            f"WITH detached, new_db_name = {quote_literal(new_name)}")


def show_backup_sql(folder: str, target: str, release: tuple[int, int, int]) -> str:
    """SHOW BACKUP of one chain; `FROM ... IN` is the 22.1+ form (21.2 reads `SHOW BACKUP '<f>' IN '<c>'`)."""
    source = f"{quote_literal(folder)} IN {quote_literal(target)}"
    return f"SHOW BACKUP FROM {source}" if release[:2] >= (22, 1) else f"SHOW BACKUP {source}"


def _decimal(hlc: str) -> str:
    """An HLC timestamp as a decimal literal, refused unless it is one (it is spliced into SQL)."""
    if not re.fullmatch(r"\d{1,20}(?:\.\d{1,10})?", hlc):
        raise DatabaseError(f"unexpected timestamp from the server: {hlc[:60]!r}")
    return hlc


END_TIME_SQL = "SELECT (cluster_logical_timestamp() - 10000000000)::STRING"  # 10 s ago: no contention
NOW_SQL = "SELECT cluster_logical_timestamp()::STRING"
JOB_SQL = ("SELECT status, coalesce(fraction_completed, 0)::FLOAT8, coalesce(error, ''), "
           "coalesce(running_status, '') FROM crdb_internal.jobs WHERE job_id = %s")


def cancel_job_sql(job_id: int) -> str:
    return f"CANCEL JOB {int(job_id)}"


# -- jobs ------------------------------------------------------------------------------------

# pkg/jobs/jobs.go (Status* constants; 25.2 renamed them State* in Go only) and SHOW JOBS's docs:
# the values of crdb_internal.jobs.status.
SUCCEEDED = "succeeded"
FAILED_STATES = ("failed", "canceled", "revert-failed")
ENDING_STATES = ("reverting", "retry-reverting", "cancel-requested")  # on their way to failed or canceled
PAUSED_STATES = ("paused", "pause-requested")
RUNNING_STATES = ("pending", "running", "retry-running")


@dataclass(frozen=True)
class JobState:
    status: str
    fraction: float = 0.0
    error: str = ""
    running_status: str = ""


@dataclass(frozen=True)
class Verdict:
    done: bool = False
    failed: str = ""  # why the job failed (redacted), or ""
    cancel: bool = False  # we give up on it: cancel it so no unlisted backup completes later


def judge(job_id: int, what: str, state: JobState | None, paused_for: float, pause_limit: float) -> Verdict:
    """What a poll of job `job_id` (a BACKUP or RESTORE) means: go on waiting, done, or failed.

    A paused job may be resumed by an operator (RESUME JOB) for `pause_limit` seconds; after that
    the run gives up and cancels it, so that it does not complete later unseen."""
    if state is None:
        return Verdict(failed=f"{what} job {job_id} is gone from crdb_internal.jobs")
    status = state.status.lower()
    if status == SUCCEEDED:
        return Verdict(done=True)
    if status in FAILED_STATES or status in ENDING_STATES:
        reason = redact(state.error) or "no error recorded"
        return Verdict(failed=f"{what} job {job_id} {status}: {reason}")
    if status in PAUSED_STATES:
        if paused_for >= pause_limit:
            return Verdict(failed=f"{what} job {job_id} stayed {status} for {pause_limit:g}s "
                                  f"({redact(state.error) or 'paused by an operator or a schedule'}); it was canceled "
                                  "so that it does not complete unseen; run the backup again", cancel=True)
        return Verdict()
    if status in RUNNING_STATES:
        return Verdict()
    return Verdict(failed=f"{what} job {job_id} is in a state this tool does not know: {status[:40]!r}", cancel=True)


def licence_hint(release: tuple[int, int, int], feature: str) -> str:
    if release[:2] < FREE_FEATURES_UNTIL:
        return (f"{feature} is an Enterprise feature before CockroachDB 24.3: set a licence "
                "(SET CLUSTER SETTING enterprise.license) or use full backups without revision history")
    return "CockroachDB 24.3 and later need a licence key for this (SET CLUSTER SETTING enterprise.license)"


def check_restorable(source: tuple[int, int, int], target: tuple[int, int, int]) -> str | None:
    """Why a cluster of `target` cannot RESTORE a backup made by `source`, or None.

    CockroachDB restores a backup of the same release or the next one, where the next may skip an
    innovation release, and never a newer release's (docs src/current/v24.3/restoring-backups-across-
    versions.md, cockroachdb/docs@79e9a5d03f4b01203131e71af49a6f2eaae9ff63; the server's own check
    says "backup from version %s is newer than current version" or "... older than the minimum
    restorable version"). Releases this table does not know are left to the server's check."""
    name = (lambda r: f"v{r[0]}.{r[1]}")
    if target[:2] < source[:2]:
        return (f"the backup was made by CockroachDB {name(source)}; this cluster runs {name(target)}, and no "
                "release restores a newer release's backup: restore it into a cluster of the same release or newer")
    if source[:2] not in _RELEASES or target[:2] not in _RELEASES:
        return None
    after = _RELEASES[_RELEASES.index(source[:2]):]
    reach = after[:2] + (after[2:3] if len(after) > 1 and after[1] in _INNOVATION else ())
    if target[:2] not in reach:
        return (f"the backup was made by CockroachDB {name(source)}; a cluster of {name(target)} restores backups "
                f"of its own release and of the one before it only ({', '.join(map(name, reach))} restore this "
                "one): restore it into one of those, then take a new backup there")
    return None


# Releases in order; an upgrade (and a restore) may skip an innovation release.
_RELEASES = ((21, 2), (22, 1), (22, 2), (23, 1), (23, 2), (24, 1), (24, 2), (24, 3), (25, 1), (25, 2), (25, 3),
             (25, 4))
_INNOVATION = ((24, 2), (25, 1), (25, 3))
