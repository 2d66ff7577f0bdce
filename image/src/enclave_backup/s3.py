"""Everything that talks to S3: client set-up, bounded-memory multipart upload, listing, reads.

Retries are botocore's own (standard mode: throttling, 5xx and connection errors with
exponential backoff). Nothing here wraps an S3 call in a second retry layer.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from types import TracebackType
from typing import Iterator
from urllib.parse import urlsplit

import botocore.loaders
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from . import log
from .config import Config, MiB
from .sse import Sse, read_refused_message
from .errors import STOP_DEADLINE_SECONDS, ConfigError, IntegrityError, StorageError, Terminated

MAX_PARTS = 10_000
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
PARTS_PER_STEP = 1_000

_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
               "ExpiredToken", "AuthorizationHeaderMalformed", "InvalidSecurity"}
# How stores answer a read of an SSE-C object without its key or with another (HEAD has no body: "400").
_SSE_READ_CODES = {"400", "BadRequest", "InvalidArgument", "InvalidRequest"}


def part_size(base: int, part_number: int) -> int:
    """Size of part `part_number` (1-based): grows by `base` every 1,000 parts.

    Small dumps keep small parts (little memory); 10,000 parts of a 20 MiB base still
    hold 55,000 x 20 MiB = 1.07 TiB, and the largest part is then 10 x base.
    """
    return base * (1 + (part_number - 1) // PARTS_PER_STEP)


def capacity(base: int) -> int:
    return sum(part_size(base, n) for n in range(1, MAX_PARTS + 1))


def plain_http_host(endpoint: str) -> str | None:
    """The host of a plain-http endpoint that is neither loopback nor in the cluster, else None.

    In the cluster: a Service name (bare, or under .svc / .cluster.local); the same rule as the chart's NOTES.
    """
    parts = urlsplit(endpoint.strip())
    if parts.scheme.lower() != "http":
        return None
    host = (parts.hostname or "").lower().rstrip(".")
    if not host or host == "localhost" or host.endswith(".localhost"):
        return None
    try:
        return None if ipaddress.ip_address(host).is_loopback else host
    except ValueError:
        pass
    if "." not in host or host.endswith((".svc", ".svc.cluster.local", ".cluster.local")):
        return None
    return host


def describe_error(exc: Exception, action: str, bucket: str, key: str | None = None,
                   sse_mode: str | None = None) -> str:
    """A message that says what failed and what to do; never the request's credentials.

    `sse_mode` (the configured SSE mode, "" for none) is given for reads of objects: a 400 there
    (or a 403 with an SSE-C key set) is how stores refuse an SSE-C object read with a wrong or no key.
    """
    where = f"s3://{bucket}/{key}" if key else f"bucket {bucket!r}"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if sse_mode is not None and key and ((status == 400 and code in _SSE_READ_CODES) or (
                status == 403 and sse_mode == "SSE-C" and code not in _AUTH_CODES - {"AccessDenied"})):
            return read_refused_message(where, sse_mode, code or str(status))
        if code in _AUTH_CODES or status == 403:
            return (f"{action} {where}: the storage rejected the credentials ({code or status}); "
                    "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the Secret named by "
                    "global.S3.HmacSecretName and that the key may use this bucket")
        if code == "NoSuchBucket" or (status == 404 and key is None):
            return f"{action} {where}: the bucket does not exist; create it or fix global.S3.Bucket"
        if code in ("NoSuchKey", "404", "NotFound"):
            return f"{action} {where}: no such object"
        return f"{action} {where}: {code or status}: {exc.response.get('Error', {}).get('Message', '')}".rstrip(": ")
    if isinstance(exc, EndpointConnectionError):
        return (f"{action} {where}: cannot connect to the S3 endpoint {exc.kwargs.get('endpoint_url', '')}; "
                "check global.S3.Endpoint and the network path")
    return f"{action} {where}: {type(exc).__name__}: {exc}"


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _status(exc: ClientError):
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def is_precondition_failed(exc: Exception) -> bool:
    return isinstance(exc, ClientError) and (_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict")
                                              or _status(exc) == 412)


def is_unsupported(exc: Exception) -> bool:
    """The store does not know conditional writes (it answers 501 rather than ignoring the header)."""
    return isinstance(exc, ClientError) and (_code(exc) == "NotImplemented" or _status(exc) == 501)


def is_not_found(exc: ClientError) -> bool:
    err = exc.response.get("Error", {})
    return err.get("Code") in ("NoSuchKey", "404", "NotFound") or \
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404


@contextlib.contextmanager
def storage_errors(action: str, bucket: str, key: str | None = None, sse_mode: str | None = None):
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise StorageError(log.scrub(describe_error(exc, action, bucket, key, sse_mode))) from None


_warned: set[str] = set()  # warnings given once per process, not once per client


def _warn_once(what: str, message: str, **fields) -> None:
    if what not in _warned:
        _warned.add(what)
        log.get().warning(message, **fields)


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class ObjectHead:
    size: int
    metadata: dict[str, str]  # the x-amz-meta-* headers, names without the prefix


@dataclass(frozen=True)
class PendingUpload:
    key: str
    upload_id: str
    initiated: datetime


def _stop_on_terminated(caught_exception=None, **_) -> None:
    """SIGTERM's Terminated raised inside a request ends the call. botocore wraps whatever an attempt
    raises in HTTPClientError, a failure it retries: the stop would be lost in the retries."""
    stop = getattr(caught_exception, "kwargs", {}).get("error", caught_exception)
    if isinstance(stop, Terminated):
        raise stop


# The service model and endpoint rules, parsed once per process: a second client (cleanup, quick
# abort) costs milliseconds, not the first one's JSON parsing. A session per client still reads
# the AWS_* variables and credentials afresh.
_LOADER = botocore.loaders.create_loader()
_LOADER_LOCK = threading.Lock()


def _s3_client(boto_config: BotoConfig):
    session = botocore.session.Session()
    session.register_component("data_loader", _LOADER)
    with _LOADER_LOCK:  # the loader's cache is not made for concurrent first loads
        return session.create_client("s3", config=boto_config)


class Storage:
    def __init__(self, config: Config, *, max_attempts: int | None = None):
        self.config = config
        self.bucket = config.bucket
        self.pinned: dict[str, str] = {}  # key -> ETag, see pin()
        boto_config = BotoConfig(
            retries={"mode": "standard", "max_attempts": max_attempts or config.s3_max_attempts},
            connect_timeout=config.s3_connect_timeout,
            read_timeout=config.s3_read_timeout,
            max_pool_connections=max(10, config.upload_concurrency * 2),
            # Several S3-compatible stores reject the CRC checksums boto3 sends by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.sse = Sse.from_config(config)
        log.add_secrets(self.sse.secrets())
        try:
            # The AWS_* variables (endpoint, region, keys, CA bundle) are read by botocore itself.
            self.client = _s3_client(boto_config)
        except (BotoCoreError, ValueError) as exc:
            raise ConfigError(log.scrub(f"cannot set up the S3 client: {exc}")) from None
        self.client.meta.events.register_first("needs-retry.s3", _stop_on_terminated)
        host = plain_http_host(self.client.meta.endpoint_url or "")
        if host:
            _warn_once("plain-http", "the S3 endpoint is plain http to a host that is neither loopback nor in the "
                       "cluster: backups and signed requests cross the network unencrypted; use https:// "
                       "(global.S3.Endpoint, and global.S3.CaBundle for a private CA)", host=host)

    def _read(self, method, **kwargs):
        """A HEAD or GET with the SSE-C key. A 400 with the key gets one try without it: AWS refuses the key
        for an object that is not SSE-C encrypted (one written before SSE-C was turned on)."""
        extra = self.sse.read()
        try:
            return method(**kwargs, **extra)
        except ClientError as exc:
            if not extra or _status(exc) != 400:
                raise
            try:
                return method(**kwargs)
            except ClientError:
                raise exc from None

    def _check_confirmed(self, response: dict, key: str) -> None:
        if not self.sse.confirmed(response):
            _warn_once("sse-unconfirmed", "the store's answer does not confirm the server-side encryption asked "
                       "for: it may store the objects unencrypted (Ceph RGW before 17 ignores AES256)",
                       sse=self.sse.mode, key=key)

    def cleanup_storage(self) -> "Storage":
        """A second client with a longer retry budget, for aborts after an outage."""
        return Storage(self.config, max_attempts=max(10, self.config.s3_max_attempts * 2))

    def quick_storage(self, seconds: float) -> "Storage":
        """A client that gives up within about `seconds`: after SIGTERM the pod's grace period counts."""
        budget = max(0.5, seconds / 2)
        quick = replace(self.config, s3_connect_timeout=min(self.config.s3_connect_timeout, budget),
                        s3_read_timeout=min(self.config.s3_read_timeout, budget))
        return Storage(quick, max_attempts=1)

    def check_bucket(self) -> None:
        with storage_errors("checking", self.bucket):
            self.client.head_bucket(Bucket=self.bucket)

    def list(self, prefix: str, shallow: bool = False) -> Iterator[StoredObject]:
        """Objects under `prefix`; `shallow`: only those directly in it (none of a deeper folder's)."""
        paginator = self.client.get_paginator("list_objects_v2")
        with storage_errors("listing", self.bucket, prefix or None):
            pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix, **({"Delimiter": "/"} if shallow else {}))
            for page in pages:
                for item in page.get("Contents", []):
                    yield StoredObject(item["Key"], item["Size"], item["LastModified"])

    def get_bytes(self, key: str) -> bytes:
        with storage_errors("reading", self.bucket, key, self.sse.mode):
            return self._read(self.client.get_object, Bucket=self.bucket, Key=key)["Body"].read()

    def read_range(self, key: str, length: int) -> bytes:
        """The object's first `length` bytes (fewer if it is shorter)."""
        if length <= 0:
            return b""
        with storage_errors("reading", self.bucket, key, self.sse.mode):
            return self._read(self.client.get_object, Bucket=self.bucket, Key=key,
                              Range=f"bytes=0-{length - 1}")["Body"].read()

    def head(self, key: str) -> ObjectHead | None:
        """The object's size and metadata; None if there is no such object."""
        try:
            head = self._read(self.client.head_object, Bucket=self.bucket, Key=key)
            return ObjectHead(head["ContentLength"], head.get("Metadata", {}))
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise StorageError(log.scrub(describe_error(exc, "reading", self.bucket, key, self.sse.mode))) from None
        except BotoCoreError as exc:
            raise StorageError(log.scrub(describe_error(exc, "reading", self.bucket, key, self.sse.mode))) from None

    def pin(self, key: str, etag: str) -> None:
        """From now on read only this version of `key` (the one checked against its manifest)."""
        self.pinned[key] = etag

    def open_read(self, key: str) -> "ObjectReader":
        """The object's bytes as they arrive, for reading with read(size).

        A pinned key is read with If-Match: a replaced object is refused, never read instead."""
        etag = self.pinned.get(key)
        try:
            response = self._read(self.client.get_object, Bucket=self.bucket, Key=key,
                                  **({"IfMatch": etag} if etag else {}))
        except ClientError as exc:
            if etag and is_precondition_failed(exc):
                raise IntegrityError(f"s3://{self.bucket}/{key} was replaced after it was checked against its "
                                     "manifest; nothing was run from the new object") from None
            raise StorageError(log.scrub(describe_error(exc, "reading", self.bucket, key, self.sse.mode))) from None
        except BotoCoreError as exc:
            raise StorageError(log.scrub(describe_error(exc, "reading", self.bucket, key, self.sse.mode))) from None
        return ObjectReader(response["Body"], self.bucket, key, response.get("ETag", ""))

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Write (or replace) a small object of this tool's own, such as a verification result."""
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        with storage_errors("writing", self.bucket, key):
            self._check_confirmed(self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                                         ContentType=content_type, ContentMD5=md5,
                                                         **self.sse.create()), key)

    def put_new(self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None) -> None:
        """Write `key` only if nothing is there (If-None-Match: *); never replace another run's object."""
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        args = dict(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, ContentMD5=md5,
                    Metadata=metadata or {}, **self.sse.create())
        with storage_errors("writing", self.bucket, key):
            self._check_confirmed(conditional(lambda extra: self.client.put_object(**args, **extra),
                                              self.bucket, key), key)

    def delete(self, key: str) -> None:
        with storage_errors("deleting", self.bucket, key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def pending_uploads(self, prefix: str) -> list[PendingUpload]:
        paginator = self.client.get_paginator("list_multipart_uploads")
        uploads: list[PendingUpload] = []
        with storage_errors("listing pending uploads in", self.bucket, prefix or None):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                uploads.extend(PendingUpload(u["Key"], u["UploadId"], u["Initiated"])
                               for u in page.get("Uploads", []))
        return uploads

    def abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return
            raise StorageError(log.scrub(describe_error(exc, "aborting the upload of", self.bucket, key))) from None
        except BotoCoreError as exc:
            raise StorageError(log.scrub(describe_error(exc, "aborting the upload of", self.bucket, key))) from None

    def start_upload(self, key: str, content_type: str, metadata: dict[str, str]) -> "MultipartUpload":
        """A new multipart upload of `key`, to use as a `with` block (see MultipartUpload)."""
        with storage_errors("starting the upload of", self.bucket, key):
            created = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type, Metadata=metadata, **self.sse.create())
        self._check_confirmed(created, key)
        upload_id = created["UploadId"]
        return MultipartUpload(self, key, upload_id, self.config.part_size, self.config.upload_concurrency)

    def upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> dict:
        """Store part `number`; returns the entry CompleteMultipartUpload takes for it."""
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        with storage_errors(f"uploading part {number} of", self.bucket, key):
            etag = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                           Body=body, ContentMD5=md5, **self.sse.part())["ETag"]
        return {"PartNumber": number, "ETag": etag}

    def complete_upload(self, key: str, upload_id: str, parts: list[dict]) -> None:
        """Make the object visible; never over another run's object (If-None-Match)."""
        with storage_errors("completing the upload of", self.bucket, key):
            conditional(lambda extra: self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts},
                **self.sse.part(), **extra),
                self.bucket, key)


class ObjectReader:
    """An object's bytes as they arrive; a failed read raises StorageError saying what failed."""

    def __init__(self, body, bucket: str, key: str, etag: str = ""):
        self._body, self.bucket, self.key, self.etag = body, bucket, key, etag

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all that is left for -1); b"" at the end."""
        try:
            return self._body.read(None if size < 0 else size)
        except (BotoCoreError, ClientError, OSError) as exc:  # OSError: the connection broke mid-body
            raise StorageError(log.scrub(describe_error(exc, "reading", self.bucket, self.key))) from None

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> "ObjectReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class MultipartUpload:
    """Buffers stored bytes into parts and uploads them on a small thread pool.

    At most `concurrency` parts are in flight; `write` blocks when all slots are
    taken, so memory stays near (concurrency + 1) x part size whatever the dump's size.
    A part is at least its part_size(); it takes whole writes, so it can be one write longer.

    Used as a `with` block: the object becomes visible only through complete(), called
    inside the block; leaving it any other way (an error, SIGTERM, Ctrl-C, or without
    complete()) aborts the upload, so no object and no parts are left.
    """

    def __init__(self, storage: Storage, key: str, upload_id: str, base_part_size: int, concurrency: int):
        self.storage = storage
        self.key = key
        self.upload_id = upload_id
        self._base = base_part_size
        self._concurrency = concurrency
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="upload")
        self._slots = threading.BoundedSemaphore(concurrency)
        self._futures: list[Future] = []
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._next_part = 1
        self._finished = False
        self.size = 0

    def __enter__(self) -> "MultipartUpload":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._finished:
            return
        logger = log.get()
        try:
            # After SIGTERM the pod's grace period counts: one short attempt, no waiting for parts in flight.
            self.abort(STOP_DEADLINE_SECONDS if isinstance(exc, Terminated) else None)
            logger.info("multipart upload aborted: no object was written", key=self.key)
        except StorageError as failed:
            logger.error("could not abort the multipart upload; the next backup removes it once stale",
                         key=self.key, upload_id=self.upload_id, error=str(failed))

    def write(self, data) -> None:
        # Kept as written and joined once per part: no copy per write, no re-slicing.
        self._chunks.append(data if isinstance(data, bytes) else bytes(data))
        self._buffered += len(data)
        self.size += len(data)
        if self._buffered >= part_size(self._base, self._next_part):
            self._submit()

    def _submit(self) -> None:
        if self._next_part > MAX_PARTS:
            raise StorageError(f"the backup of s3://{self.storage.bucket}/{self.key} needs more than "
                               f"{MAX_PARTS} parts; raise ENCLAVE_BACKUP_PART_SIZE_MIB")
        self._raise_failed()
        # Wait for a free slot before joining, so a blocked writer holds one part, not two.
        self._slots.acquire()
        body = b"".join(self._chunks)
        self._chunks, self._buffered = [], 0
        future = self._pool.submit(self.storage.upload_part, self.key, self.upload_id, self._next_part, body)
        future.add_done_callback(lambda _f: self._slots.release())
        self._futures.append(future)
        self._next_part += 1

    def _split_last_part(self) -> None:
        """Send the buffered tail as up to `concurrency` parts at once: the end of the run waits for them.

        Each but the last is at least S3's 5 MiB minimum; parts take whole writes, so no bytes are copied.
        """
        pieces = min(self._concurrency, self._buffered // MIN_PART_SIZE, MAX_PARTS - self._next_part + 1)
        if pieces < 2:
            return
        target = self._buffered / pieces
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        for chunk in chunks:
            self._chunks.append(chunk)
            self._buffered += len(chunk)
            if self._buffered >= target and pieces > 1:
                self._submit()
                pieces -= 1

    def _raise_failed(self) -> None:
        for future in self._futures:
            if future.done() and future.exception() is not None:
                raise future.exception()

    def complete(self) -> None:
        """Upload what is buffered and make the object visible."""
        self._split_last_part()
        if self._chunks or self._next_part == 1:
            self._submit()
        parts = [f.result() for f in self._futures]
        self.storage.complete_upload(self.key, self.upload_id, parts)
        self._finished = True
        self._pool.shutdown(wait=True)

    def abort(self, deadline_seconds: float | None = None) -> None:
        """Drop every uploaded part. Safe to call twice; raises only if S3 stays unreachable.

        With a deadline (after SIGTERM) parts in flight are not waited for and one short
        attempt is made; what a stalled store keeps, the next backup removes once stale.
        """
        if self._finished:
            return
        self._finished = True
        for future in self._futures:
            future.cancel()
        self._pool.shutdown(wait=deadline_seconds is None, cancel_futures=True)
        self._chunks, self._buffered = [], 0
        if deadline_seconds is not None:
            self.storage.quick_storage(deadline_seconds).abort(self.key, self.upload_id)
            return
        cleanup = self.storage.cleanup_storage()
        cleanup.abort(self.key, self.upload_id)
        # S3 may still be storing a part that raced the abort: list and abort again.
        if any(u.upload_id == self.upload_id for u in cleanup.pending_uploads(self.key)):
            cleanup.abort(self.key, self.upload_id)


def conditional(call, bucket: str, key: str):
    """`call(extra)` with If-None-Match: * (a store without conditional writes gets the call without it:
    keys carry a run id, so nothing else writes this key); an object already there is never replaced."""
    try:
        return call({"IfNoneMatch": "*"})
    except ClientError as exc:
        if is_precondition_failed(exc):
            raise StorageError(f"s3://{bucket}/{key} already exists: another run wrote it, and it was left "
                               "untouched; run the backup again") from None
        if not is_unsupported(exc):
            raise
    return call({})
