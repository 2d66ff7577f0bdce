"""Server-side encryption parameters per call, key handling, error messages; the plain-http warning rule."""

from __future__ import annotations

import base64
import io
import secrets

import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from enclave_backup import log
from enclave_backup.config import Config, load
from enclave_backup.errors import ConfigError, StorageError
from enclave_backup.s3 import Storage, describe_error, plain_http_host
from enclave_backup.sse import Sse, read_customer_key

KEY = secrets.token_bytes(32)
KEY_B64 = base64.b64encode(KEY).decode()


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "SSE_CUSTOMER_KEY"
    path.write_text(KEY_B64 + "\n")  # as `openssl rand -base64 32 > file` writes it
    return str(path)


def test_each_mode_sends_its_parameters_on_the_calls_that_take_them():
    assert Sse().create() == Sse().part() == Sse().read() == {}
    assert Sse("AES256").create() == {"ServerSideEncryption": "AES256"}
    assert Sse("AES256").part() == Sse("AES256").read() == {}
    kms = Sse("aws:kms", "testkey-1")
    assert kms.create() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "testkey-1"}
    assert kms.part() == kms.read() == {}
    assert Sse("aws:kms").create() == {"ServerSideEncryption": "aws:kms"}  # the store's default KMS key
    c = Sse("SSE-C", customer_key=KEY)
    expected = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": KEY}
    assert c.create() == c.part() == c.read() == expected


def test_the_customer_key_is_read_from_its_file_and_never_shown(key_file):
    config = Config(bucket="bkt", sse="SSE-C", sse_customer_key_file=key_file)
    sse = Sse.from_config(config)
    assert sse.read()["SSECustomerKey"] == KEY
    for text in (repr(sse), str(sse), repr(config)):
        assert KEY_B64 not in text and repr(KEY) not in text
    assert sse.secrets() == [KEY_B64]


@pytest.mark.parametrize("content", ["not base64 at all!", base64.b64encode(b"x" * 16).decode(), ""])
def test_a_bad_key_file_is_a_config_error_that_does_not_quote_it(tmp_path, content):
    path = tmp_path / "key"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        read_customer_key(str(path))
    assert "32 bytes" in str(err.value) and "openssl rand -base64 32" in str(err.value)
    if content:
        assert content not in str(err.value)


def test_config_reads_the_chart_s_variables(key_file):
    config = load({"ENCLAVE_BACKUP_BUCKET": "bkt", "ENCLAVE_BACKUP_SSE": "sse-c",
                   "ENCLAVE_BACKUP_SSE_CUSTOMER_KEY_FILE": key_file})
    assert (config.sse, config.sse_customer_key_file) == ("SSE-C", key_file)
    config = load({"ENCLAVE_BACKUP_BUCKET": "bkt", "ENCLAVE_BACKUP_SSE": "aws:kms",
                   "ENCLAVE_BACKUP_SSE_KMS_KEY_ID": "k1"})
    assert Sse.from_config(config).create() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "k1"}


def test_confirmation_is_read_from_the_store_s_answer():
    assert Sse().confirmed({})
    assert Sse("AES256").confirmed({"ServerSideEncryption": "AES256"})
    assert not Sse("AES256").confirmed({})  # Ceph RGW 16 answers so and stores plaintext
    assert Sse("aws:kms", "k").confirmed({"ServerSideEncryption": "aws:kms"})
    assert Sse("SSE-C", customer_key=KEY).confirmed({"SSECustomerAlgorithm": "AES256"})
    assert not Sse("SSE-C", customer_key=KEY).confirmed({"ServerSideEncryption": "AES256"})


def _client_error(status: int, code: str, message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize("status,code", [(400, "400"), (400, "InvalidArgument"), (403, "AccessDenied"),
                                         (403, "403")])
def test_a_refused_read_with_a_key_says_the_key_is_wrong(status, code):
    text = describe_error(_client_error(status, code), "reading", "bkt", "nightly/x.sql.gz", "SSE-C")
    assert "SSE-C encrypted" in text and "ENCLAVE_BACKUP_SSE_CUSTOMER_KEY_FILE" in text
    assert "global.S3.SseCustomerKeySecretName" in text and "wrong" in text
    assert ("may not read" in text) == (status == 403)


def test_a_refused_read_without_a_key_says_the_key_is_missing():
    text = describe_error(_client_error(400, "InvalidArgument"), "reading", "bkt", "nightly/x.sql.gz", "")
    assert "no key was given" in text and "ENCLAVE_BACKUP_SSE=SSE-C" in text


def test_credentials_errors_stay_credentials_errors():
    for mode in ("SSE-C", "", None):
        text = describe_error(_client_error(403, "SignatureDoesNotMatch"), "reading", "bkt", "k", mode)
        assert "rejected the credentials" in text
    # Without SSE-C a 403 is the credentials; listing (no key) never speaks of SSE-C.
    assert "rejected the credentials" in describe_error(_client_error(403, "AccessDenied"), "reading", "bkt", "k", "")
    assert "SSE-C" not in describe_error(_client_error(400, "InvalidArgument"), "listing", "bkt", None, "SSE-C")


def _storage(monkeypatch, config: Config) -> Storage:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x" * 40)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    return Storage(config)


def test_every_write_part_head_and_get_carries_the_customer_key(monkeypatch, key_file):
    storage = _storage(monkeypatch, Config(bucket="bkt", sse="SSE-C", sse_customer_key_file=key_file,
                                           part_size=5 << 20))
    c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": KEY}
    done = {"SSECustomerAlgorithm": "AES256"}
    with Stubber(storage.client) as stub:
        stub.add_response("put_object", done, {"Bucket": "bkt", "Key": "a", "Body": ANY, "ContentType": ANY,
                                               "ContentMD5": ANY, **c})
        stub.add_response("put_object", done, {"Bucket": "bkt", "Key": "b", "Body": ANY, "ContentType": ANY,
                                               "ContentMD5": ANY, "Metadata": {}, "IfNoneMatch": "*", **c})
        stub.add_response("create_multipart_upload", {"UploadId": "u1", **done},
                          {"Bucket": "bkt", "Key": "c", "ContentType": ANY, "Metadata": {}, **c})
        stub.add_response("upload_part", {"ETag": '"e1"'}, {"Bucket": "bkt", "Key": "c", "UploadId": "u1",
                                                             "PartNumber": 1, "Body": ANY, "ContentMD5": ANY, **c})
        stub.add_response("complete_multipart_upload", {}, {"Bucket": "bkt", "Key": "c", "UploadId": "u1",
                                                            "MultipartUpload": ANY, "IfNoneMatch": "*", **c})
        stub.add_response("head_object", {"ContentLength": 3, "Metadata": {}}, {"Bucket": "bkt", "Key": "c", **c})
        body = {"Body": io.BytesIO(b"abc")}
        stub.add_response("get_object", body, {"Bucket": "bkt", "Key": "c", **c})
        stub.add_response("get_object", {"Body": io.BytesIO(b"ab")}, {"Bucket": "bkt", "Key": "c",
                                                                      "Range": "bytes=0-1", **c})
        storage.put_bytes("a", b"{}", "application/json")
        storage.put_new("b", b"{}", "application/json")
        with storage.start_upload("c", "application/gzip", {}) as upload:
            upload.write(b"abc")
            upload.complete()
        assert storage.head("c").size == 3
        assert storage.get_bytes("c") == b"abc"
        assert storage.read_range("c", 2) == b"ab"
        stub.assert_no_pending_responses()


def test_kms_goes_on_the_creating_calls_only(monkeypatch):
    storage = _storage(monkeypatch, Config(bucket="bkt", sse="aws:kms", sse_kms_key_id="k1", part_size=5 << 20))
    kms = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "k1"}
    with Stubber(storage.client) as stub:
        stub.add_response("create_multipart_upload", {"UploadId": "u1", "ServerSideEncryption": "aws:kms"},
                          {"Bucket": "bkt", "Key": "c", "ContentType": ANY, "Metadata": {}, **kms})
        stub.add_response("upload_part", {"ETag": '"e1"'}, {"Bucket": "bkt", "Key": "c", "UploadId": "u1",
                                                             "PartNumber": 1, "Body": ANY, "ContentMD5": ANY})
        stub.add_response("complete_multipart_upload", {}, {"Bucket": "bkt", "Key": "c", "UploadId": "u1",
                                                            "MultipartUpload": ANY, "IfNoneMatch": "*"})
        stub.add_response("get_object", {"Body": io.BytesIO(b"abc")}, {"Bucket": "bkt", "Key": "c"})
        with storage.start_upload("c", "application/gzip", {}) as upload:
            upload.write(b"abc")
            upload.complete()
        assert storage.get_bytes("c") == b"abc"
        stub.assert_no_pending_responses()


def test_an_object_from_before_sse_c_is_read_without_the_key(monkeypatch, key_file):
    storage = _storage(monkeypatch, Config(bucket="bkt", sse="SSE-C", sse_customer_key_file=key_file))
    with Stubber(storage.client) as stub:
        # AWS refuses the key for an object that is not SSE-C encrypted.
        stub.add_client_error("get_object", "InvalidArgument", http_status_code=400)
        stub.add_response("get_object", {"Body": io.BytesIO(b"old")}, {"Bucket": "bkt", "Key": "old"})
        assert storage.get_bytes("old") == b"old"
        # Refused with and without the key: the SSE-C message, never the key.
        stub.add_client_error("get_object", "InvalidArgument", http_status_code=400)
        stub.add_client_error("get_object", "InvalidArgument", http_status_code=400)
        with pytest.raises(StorageError) as err:
            storage.get_bytes("new")
        assert "SSE-C encrypted" in str(err.value) and KEY_B64 not in str(err.value)
    assert log.scrub(f"key {KEY_B64}") == "key [redacted]"


@pytest.mark.parametrize("endpoint,host", [
    ("http://s3.example.com", "s3.example.com"),
    ("HTTP://S3.Example.com:9000/path", "s3.example.com"),
    ("http://10.1.2.3:7480", "10.1.2.3"),
    ("http://user@minio.example.org", "minio.example.org"),
    ("http://[2001:db8::1]:9000", "2001:db8::1"),
    ("http://minio.svc.example.com", "minio.svc.example.com"),
    ("https://s3.example.com", None),
    ("http://127.0.0.1:7480", None),
    ("http://127.8.9.10", None),
    ("http://[::1]:9000", None),
    ("http://localhost:9000", None),
    ("http://minio", None),
    ("http://minio:9000", None),
    ("http://minio.storage.svc", None),
    ("http://minio.storage.svc.cluster.local:9000", None),
    ("http://minio.storage.cluster.local", None),
    ("", None),
])
def test_plain_http_is_warned_about_only_outside_loopback_and_the_cluster(endpoint, host):
    assert plain_http_host(endpoint) == host


def test_other_bad_requests_are_not_taken_for_sse_c():
    text = describe_error(_client_error(400, "KeyTooLongError", "Your key is too long"), "reading", "bkt", "k", "")
    assert "SSE-C" not in text and "KeyTooLongError" in text
