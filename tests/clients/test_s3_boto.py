"""The XML (S3-compatible) API through boto3 with SigV4 and HMAC keys.

One server serves the module (dev mode, so the KMS service agent is auto-granted); the
HMAC key belongs to a service account with roles/storage.admin on the test project.
Retries are off: a bug fails fast. Signatures the tests compute themselves (streaming
chunk signatures, GOOG4 signed URLs) follow the AWS and GCS documents, independently of
the server's Rust implementation.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit

import boto3
import botocore
import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import (
    PROJECT,
    Server,
    create_key_ring_at,
    create_symmetric_key,
    create_token,
    make_kms_client,
    run_sealstore_cli,
)

def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


SA = f"s3-tests@{PROJECT}.iam.gserviceaccount.com"


def new_bucket_name() -> str:
    return f"s3-{uuid.uuid4().hex[:20]}"


def hmac_key(data_dir: Path, sa: str = SA, role: str | None = "roles/storage.admin", project: str = PROJECT):
    args = ["iam", "hmac-keys", "create", "--data-dir", str(data_dir), "--service-account", sa, "--project", project]
    if role:
        args += ["--role", role]
    out = run_sealstore_cli(*args).stdout.split()
    return out[0], out[1]


def s3_client(url: str, access_id: str, secret: str, **config):
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=access_id,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}, **config),
    )


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("s3") / "data")
    s.start()
    yield s
    s.stop()
    print(s.log_text())


@pytest.fixture(scope="module")
def creds(srv):
    return hmac_key(srv.data_dir)


@pytest.fixture(scope="module")
def s3(srv, creds):
    return s3_client(srv.url, *creds)


@pytest.fixture
def bucket(s3):
    name = new_bucket_name()
    s3.create_bucket(Bucket=name)
    return name


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def status(exc: ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def kms_key(srv):
    """A CMEK key in us-east1 (buckets using it are created there)."""
    kms = make_kms_client(srv.url)
    ring = create_key_ring_at(kms, "us-east1")
    return create_symmetric_key(kms, ring.name).name


def test_bucket_crud_location_and_listing(s3):
    name = new_bucket_name()
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "us-east1"})
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == "US-EAST1"
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == "US-EAST1"
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket=name)
    assert code(e.value) == "BucketAlreadyOwnedByYou" and status(e.value) == 409
    s3.put_object(Bucket=name, Key="k", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket=name)
    assert code(e.value) == "BucketNotEmpty"
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as e:
        s3.head_bucket(Bucket=name)
    assert status(e.value) == 404


@pytest.mark.parametrize("name", ["storage", "upload", "download", "sealstore", "metrics", "Bad_Name", "ab"])
def test_reserved_and_invalid_bucket_names_are_refused(s3, name):
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket=name)
    assert status(e.value) == 400
    assert code(e.value) in ("InvalidBucketName", "InvalidArgument")


def test_reserved_names_are_refused_by_the_json_api_too(srv):
    r = requests.post(f"{srv.url}/storage/v1/b?project={PROJECT}", json={"name": "download"})
    assert r.status_code == 400, r.text
    assert "reserved" in r.json()["error"]["message"]


def test_put_get_head_ranges_overrides_and_metadata(s3, bucket):
    data = os.urandom(200_000)
    put = s3.put_object(Bucket=bucket, Key="dir/obj.bin", Body=data, ContentType="application/x-test",
                        Metadata={"color": "blue"}, CacheControl="no-cache")
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="dir/obj.bin")
    assert got["Body"].read() == data
    assert got["ContentType"] == "application/x-test" and got["Metadata"] == {"color": "blue"}
    assert got["CacheControl"] == "no-cache" and got["ETag"] == put["ETag"]
    assert got["VersionId"] == put["VersionId"]
    r = s3.get_object(Bucket=bucket, Key="dir/obj.bin", Range="bytes=100-199")
    assert r["Body"].read() == data[100:200] and r["ContentRange"] == f"bytes 100-199/{len(data)}"
    assert s3.get_object(Bucket=bucket, Key="dir/obj.bin", Range="bytes=-10")["Body"].read() == data[-10:]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="dir/obj.bin", Range=f"bytes={len(data)}-")
    assert code(e.value) == "InvalidRange" and status(e.value) == 416
    o = s3.get_object(Bucket=bucket, Key="dir/obj.bin", ResponseContentType="text/plain",
                      ResponseContentDisposition="attachment; filename=x")
    assert o["ContentType"] == "text/plain" and o["ContentDisposition"] == "attachment; filename=x"
    h = s3.head_object(Bucket=bucket, Key="dir/obj.bin")
    assert h["ContentLength"] == len(data) and h["ServerSideEncryption"] == "AES256"
    # Conditional reads.
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="dir/obj.bin", IfMatch='"00000000000000000000000000000000"')
    assert status(e.value) == 412
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="dir/obj.bin", IfNoneMatch=put["ETag"])
    assert status(e.value) == 304
    # Create-only writes.
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="dir/obj.bin", Body=b"again", IfNoneMatch="*")
    assert status(e.value) == 412
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="missing")
    assert code(e.value) == "NoSuchKey"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=new_bucket_name(), Key="missing")
    assert code(e.value) == "NoSuchBucket"


def test_content_md5_and_checksums_are_checked(s3, bucket):
    body = b"checked body"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    s3.put_object(Bucket=bucket, Key="ok", Body=body, ContentMD5=md5)
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="bad-md5", Body=body, ContentMD5=bad)
    assert code(e.value) == "BadDigest"
    # (CRC32C needs botocore[crt]; the aws-chunked test covers trailers.)
    for alg in ("CRC32", "SHA1", "SHA256"):
        s3.put_object(Bucket=bucket, Key=f"sum-{alg}", Body=body, ChecksumAlgorithm=alg)
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="bad-crc", Body=body, ChecksumCRC32="AAAAAA==")
    assert code(e.value) == "BadDigest"
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "bad-md5" not in listed and "bad-crc" not in listed


def test_listing_v1_v2_pagination_delimiters_and_encoding(s3, bucket):
    keys = [f"p/{i:03d}" for i in range(7)] + ["q/x", "q/y", "top", "sp ace+plus%"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    paged = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 3}):
        paged += [o["Key"] for o in page.get("Contents", [])]
    assert paged == sorted(keys)
    v1 = []
    for page in s3.get_paginator("list_objects").paginate(Bucket=bucket, PaginationConfig={"PageSize": 4}):
        v1 += [o["Key"] for o in page.get("Contents", [])]
    assert v1 == sorted(keys)
    root = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in root["CommonPrefixes"]] == ["p/", "q/"]
    assert sorted(o["Key"] for o in root["Contents"]) == ["sp ace+plus%", "top"]
    # v1 with a delimiter, one entry per page: NextMarker skips whole prefixes.
    seen = []
    for page in s3.get_paginator("list_objects").paginate(Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 1}):
        seen += [p["Prefix"] for p in page.get("CommonPrefixes", [])] + [o["Key"] for o in page.get("Contents", [])]
    assert seen == ["p/", "q/", "sp ace+plus%", "top"]
    after = s3.list_objects_v2(Bucket=bucket, Prefix="p/", StartAfter="p/004")
    assert [o["Key"] for o in after["Contents"]] == ["p/005", "p/006"]
    assert s3.list_objects_v2(Bucket=bucket, Prefix="p/", MaxKeys=2)["IsTruncated"] is True


def test_versioning_versions_and_version_ids(s3, bucket):
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    v1 = s3.put_object(Bucket=bucket, Key="doc", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="doc", Body=b"two")["VersionId"]
    assert s3.get_object(Bucket=bucket, Key="doc", VersionId=v1)["Body"].read() == b"one"
    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert {(v["VersionId"], v["IsLatest"]) for v in versions} == {(v1, False), (v2, True)}
    s3.delete_object(Bucket=bucket, Key="doc", VersionId=v1)
    assert [v["VersionId"] for v in s3.list_object_versions(Bucket=bucket)["Versions"]] == [v2]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="doc", VersionId="not-a-number")
    assert status(e.value) == 400
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)


def test_copy_directives_self_copy_and_delete_objects(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"payload", Metadata={"a": "1"}, ContentType="text/x-a")
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    d = s3.get_object(Bucket=bucket, Key="dst")
    assert d["Body"].read() == b"payload" and d["Metadata"] == {"a": "1"} and d["ContentType"] == "text/x-a"
    s3.copy_object(Bucket=bucket, Key="dst2", CopySource=f"{bucket}/src", MetadataDirective="REPLACE",
                   Metadata={"b": "2"}, ContentType="text/x-b")
    d2 = s3.head_object(Bucket=bucket, Key="dst2")
    assert d2["Metadata"] == {"b": "2"} and d2["ContentType"] == "text/x-b"
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"})
    assert code(e.value) == "InvalidRequest"
    s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"renamed": "yes"})
    assert s3.head_object(Bucket=bucket, Key="src")["Metadata"] == {"renamed": "yes"}
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "nope"})
    assert code(e.value) == "NoSuchKey"
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "src"}, {"Key": "dst"}, {"Key": "never-existed"}]})
    assert sorted(x["Key"] for x in r["Deleted"]) == ["dst", "never-existed", "src"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["dst2"]


def test_multipart_upload_with_copy_part_listing_and_abort(s3, bucket):
    part1 = os.urandom(5 * 1024 * 1024)
    part3 = os.urandom(1234)
    s3.put_object(Bucket=bucket, Key="copy-src", Body=os.urandom(6 * 1024 * 1024))
    src = s3.get_object(Bucket=bucket, Key="copy-src")["Body"].read()
    up = s3.create_multipart_upload(Bucket=bucket, Key="big", Metadata={"m": "1"}, ContentType="application/x-big")
    uid = up["UploadId"]
    assert uid in [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]]
    e1 = s3.upload_part(Bucket=bucket, Key="big", UploadId=uid, PartNumber=1, Body=part1)["ETag"]
    e2 = s3.upload_part_copy(Bucket=bucket, Key="big", UploadId=uid, PartNumber=2,
                             CopySource={"Bucket": bucket, "Key": "copy-src"},
                             CopySourceRange="bytes=0-5242879")["CopyPartResult"]["ETag"]
    e3 = s3.upload_part(Bucket=bucket, Key="big", UploadId=uid, PartNumber=3, Body=part3)["ETag"]
    parts = s3.list_parts(Bucket=bucket, Key="big", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, len(part1)), (2, 5 * 1024 * 1024), (3, 1234)]
    # Wrong order, unknown part, wrong ETag: S3's errors, nothing stored.
    for bad, want in [
        ([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}], "InvalidPartOrder"),
        ([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 9, "ETag": e1}], "InvalidPart"),
        ([{"PartNumber": 1, "ETag": e2}], "InvalidPart"),
        ([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e1}], "InvalidPart"),
    ]:
        with pytest.raises(ClientError) as e:
            s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=uid, MultipartUpload={"Parts": bad})
        assert code(e.value) == want, bad
    # A per-part CRC32C is checked against the part stored; other checksums are not kept.
    import google_crc32c
    good_crc = base64.b64encode(google_crc32c.value(part3).to_bytes(4, "big")).decode()
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=uid, MultipartUpload={"Parts": [
            {"PartNumber": 3, "ETag": e3, "ChecksumCRC32C": "AAAAAA=="}]})
    assert code(e.value) == "InvalidPart"
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=uid, MultipartUpload={"Parts": [
            {"PartNumber": 3, "ETag": e3, "ChecksumCRC32": "AAAAAA=="}]})
    assert code(e.value) == "NotImplemented"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="big")
    done = s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}, {"PartNumber": 3, "ETag": e3, "ChecksumCRC32C": good_crc}]})
    md5s = b"".join(bytes.fromhex(x.strip('"')) for x in (e1, e2, e3))
    assert done["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-3"'
    got = s3.get_object(Bucket=bucket, Key="big")
    assert got["Body"].read() == part1 + src[: 5 * 1024 * 1024] + part3
    assert got["ETag"] == done["ETag"] and got["Metadata"] == {"m": "1"} and got["ContentType"] == "application/x-big"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="big")["Contents"][0]
    assert listed["ETag"] == done["ETag"]
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=bucket, Key="big", UploadId=uid)
    assert code(e.value) == "NoSuchUpload"
    # A too-small first part; then abort.
    up2 = s3.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    a = s3.upload_part(Bucket=bucket, Key="small", UploadId=up2, PartNumber=1, Body=b"tiny")["ETag"]
    b = s3.upload_part(Bucket=bucket, Key="small", UploadId=up2, PartNumber=2, Body=b"tiny")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="small", UploadId=up2, MultipartUpload={"Parts": [
            {"PartNumber": 1, "ETag": a}, {"PartNumber": 2, "ETag": b}]})
    assert code(e.value) == "EntityTooSmall"
    s3.abort_multipart_upload(Bucket=bucket, Key="small", UploadId=up2)
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="small", UploadId=up2, PartNumber=3, Body=b"late")
    assert code(e.value) == "NoSuchUpload"
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=bucket)


def test_transfer_manager_multipart_round_trip(s3, bucket, tmp_path):
    from boto3.s3.transfer import TransferConfig
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(17 * 1024 * 1024))
    cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    s3.upload_file(str(src), bucket, "tm.bin", Config=cfg)
    out = tmp_path / "out.bin"
    s3.download_file(bucket, "tm.bin", str(out), Config=cfg)
    assert out.read_bytes() == src.read_bytes()
    assert s3.head_object(Bucket=bucket, Key="tm.bin")["ETag"].endswith('-4"')


def sse_c(key: bytes) -> dict:
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def test_sse_c_round_trip_wrong_and_missing_keys(s3, bucket):
    key, other = os.urandom(32), os.urandom(32)
    r = s3.put_object(Bucket=bucket, Key="secret", Body=b"customer data", **sse_c(key))
    assert r["SSECustomerAlgorithm"] == "AES256"
    assert r["SSECustomerKeyMD5"] == base64.b64encode(hashlib.md5(key).digest()).decode()
    assert s3.get_object(Bucket=bucket, Key="secret", **sse_c(key))["Body"].read() == b"customer data"
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="secret")
    assert code(e.value) == "InvalidRequest" and status(e.value) == 400
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="secret", **sse_c(other))
    assert status(e.value) == 403
    s3.put_object(Bucket=bucket, Key="plain", Body=b"p")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="plain", **sse_c(key))
    assert code(e.value) == "InvalidRequest"
    # Copy from SSE-C to SSE-C under a new key (re-key), and multipart under SSE-C.
    s3.copy_object(Bucket=bucket, Key="secret2", CopySource={"Bucket": bucket, "Key": "secret"},
                   CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=key, **sse_c(other))
    assert s3.get_object(Bucket=bucket, Key="secret2", **sse_c(other))["Body"].read() == b"customer data"
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp-secret", **sse_c(key))["UploadId"]
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="mp-secret", UploadId=up, PartNumber=1, Body=b"z", **sse_c(other))
    assert status(e.value) == 403
    et = s3.upload_part(Bucket=bucket, Key="mp-secret", UploadId=up, PartNumber=1, Body=b"z" * 10, **sse_c(key))["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="mp-secret", UploadId=up,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": et}]}, **sse_c(key))
    assert s3.get_object(Bucket=bucket, Key="mp-secret", **sse_c(key))["Body"].read() == b"z" * 10
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="bad", Body=b"x", SSECustomerAlgorithm="AES256", SSECustomerKey=b"short")
    assert status(e.value) == 400


def test_gcs_csek_headers_work_on_the_xml_api(srv, s3, bucket, creds):
    key = os.urandom(32)
    s3.put_object(Bucket=bucket, Key="goog", Body=b"goog data", **sse_c(key))
    headers = {
        "x-goog-encryption-algorithm": "AES256",
        "x-goog-encryption-key": base64.b64encode(key).decode(),
        "x-goog-encryption-key-sha256": base64.b64encode(hashlib.sha256(key).digest()).decode(),
    }
    url = f"{srv.url}/{bucket}/goog"
    r = requests.get(url, headers=signed_headers("GET", url, creds, headers))
    assert r.status_code == 200 and r.content == b"goog data"
    assert r.headers["x-goog-encryption-key-sha256"] == headers["x-goog-encryption-key-sha256"]


def test_sse_kms_bucket_default_and_copy_rekey(srv, s3, kms_key):
    name = new_bucket_name()
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "us-east1"})
    r = s3.put_object(Bucket=name, Key="k", Body=b"kms data", ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key)
    assert r["ServerSideEncryption"] == "aws:kms" and r["SSEKMSKeyId"] == kms_key
    h = s3.head_object(Bucket=name, Key="k")
    assert h["SSEKMSKeyId"] == kms_key
    assert h["ResponseMetadata"]["HTTPHeaders"]["x-goog-encryption-kms-key-name"].startswith(kms_key + "/cryptoKeyVersions/")
    assert s3.get_object(Bucket=name, Key="k")["Body"].read() == b"kms data"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=name, Key="v", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key + "/cryptoKeyVersions/1")
    assert status(e.value) == 400
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=name, Key="v", Body=b"x", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId=kms_key.replace("cryptoKeys/", "cryptoKeys/missing-"))
    assert code(e.value) == "KMS.NotFoundException"
    # Bucket default encryption.
    s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key}}]})
    rule = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key}
    gcs = requests.get(f"{srv.url}/storage/v1/b/{name}").json()
    assert gcs["encryption"]["defaultKmsKeyName"] == kms_key
    assert s3.put_object(Bucket=name, Key="d", Body=b"default")["ServerSideEncryption"] == "aws:kms"
    # A per-request SSE-S3 beats the default; a copy onto itself re-keys.
    assert s3.put_object(Bucket=name, Key="s3", Body=b"x", ServerSideEncryption="AES256")["ServerSideEncryption"] == "AES256"
    s3.copy_object(Bucket=name, Key="d", CopySource={"Bucket": name, "Key": "d"}, ServerSideEncryption="AES256")
    assert s3.head_object(Bucket=name, Key="d")["ServerSideEncryption"] == "AES256"
    s3.copy_object(Bucket=name, Key="d", CopySource={"Bucket": name, "Key": "d"}, ServerSideEncryption="aws:kms",
                   SSEKMSKeyId=kms_key)
    assert s3.head_object(Bucket=name, Key="d")["SSEKMSKeyId"] == kms_key
    s3.delete_bucket_encryption(Bucket=name)
    assert s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"][0][
        "ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    # A disabled key version fails closed.
    kms = make_kms_client(srv.url)
    from conftest import State, set_version_state
    set_version_state(kms, kms_key + "/cryptoKeyVersions/1", State.DISABLED)
    try:
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket=name, Key="k")
        assert code(e.value) == "KMS.DisabledException"
    finally:
        set_version_state(kms, kms_key + "/cryptoKeyVersions/1", State.ENABLED)


def test_object_lock_retention_and_legal_hold(srv, s3):
    name = new_bucket_name()
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
    r = s3.put_object(Bucket=name, Key="locked", Body=b"keep", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
    ret = s3.get_object_retention(Bucket=name, Key="locked")["Retention"]
    assert ret["Mode"] == "GOVERNANCE" and abs((ret["RetainUntilDate"] - until).total_seconds()) < 1
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=name, Key="locked", VersionId=r["VersionId"])
    assert status(e.value) == 403
    s3.delete_object(Bucket=name, Key="locked", VersionId=r["VersionId"], BypassGovernanceRetention=True)
    # Legal hold = a hold.
    s3.put_object(Bucket=name, Key="held", Body=b"h")
    s3.put_object_legal_hold(Bucket=name, Key="held", LegalHold={"Status": "ON"})
    assert s3.get_object_legal_hold(Bucket=name, Key="held")["LegalHold"]["Status"] == "ON"
    assert requests.get(f"{srv.url}/storage/v1/b/{name}/o/held").json()["temporaryHold"] is True
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=name, Key="held")
    assert status(e.value) == 403
    s3.put_object_legal_hold(Bucket=name, Key="held", LegalHold={"Status": "OFF"})
    s3.delete_object(Bucket=name, Key="held")
    # COMPLIANCE retention cannot be shortened; a default retention is the bucket policy.
    s3.put_object(Bucket=name, Key="c", Body=b"c")
    s3.put_object_retention(Bucket=name, Key="c", Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})
    with pytest.raises(ClientError):
        s3.put_object_retention(Bucket=name, Key="c", Retention={"Mode": "COMPLIANCE",
                                "RetainUntilDate": until - dt.timedelta(days=1)}, BypassGovernanceRetention=True)
    s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    cfg = s3.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"]
    assert cfg["Rule"]["DefaultRetention"] == {"Mode": "GOVERNANCE", "Days": 1}
    assert requests.get(f"{srv.url}/storage/v1/b/{name}").json()["retentionPolicy"]["retentionPeriod"] == "86400"


def test_presigned_urls_and_expiry(srv, creds, tmp_path):
    # Its own server: the test moves the clock.
    other = Server(tmp_path / "data")
    other.start()
    try:
        c = hmac_key(other.data_dir)
        s3 = s3_client(other.url, *c)
        name = new_bucket_name()
        s3.create_bucket(Bucket=name)
        put_url = s3.generate_presigned_url("put_object", Params={"Bucket": name, "Key": "p"}, ExpiresIn=600)
        assert requests.put(put_url, data=b"presigned body").status_code == 200
        get_url = s3.generate_presigned_url("get_object", Params={"Bucket": name, "Key": "p"}, ExpiresIn=600)
        r = requests.get(get_url)
        assert r.status_code == 200 and r.content == b"presigned body"
        tampered = get_url.replace("/p?", "/q?")
        assert requests.get(tampered).status_code == 403
        other.advance(601)
        r = requests.get(get_url)
        assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text and "expired" in r.text
        # Within 15 minutes a header-signed request is fine; beyond, the clocks are skewed.
        s3.list_buckets()
        other.advance(900)
        with pytest.raises(ClientError) as e:
            s3.list_buckets()
        assert code(e.value) == "RequestTimeTooSkewed"
    finally:
        other.stop()


def test_bad_signatures_unknown_and_inactive_keys(srv, s3, bucket, creds):
    aid, secret = creds
    with pytest.raises(ClientError) as e:
        s3_client(srv.url, aid, secret[:-1] + ("A" if secret[-1] != "A" else "B")).list_buckets()
    assert code(e.value) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as e:
        s3_client(srv.url, "GOOG1EUNKNOWNKEY", secret).list_buckets()
    assert code(e.value) == "InvalidAccessKeyId"
    # A key with no role: authenticated, then denied by IAM.
    weak = s3_client(srv.url, *hmac_key(srv.data_dir, sa=f"weak@{PROJECT}.iam.gserviceaccount.com", role=None))
    with pytest.raises(ClientError) as e:
        weak.get_object(Bucket=bucket, Key="x")
    assert code(e.value) == "AccessDenied"
    # Deactivated keys stop working at once.
    aid2, sec2 = hmac_key(srv.data_dir)
    c2 = s3_client(srv.url, aid2, sec2)
    c2.list_buckets()
    run_sealstore_cli("iam", "hmac-keys", "update", "--data-dir", str(srv.data_dir), "--project", PROJECT,
                      "--access-id", aid2, "--state", "INACTIVE")
    # The server trusts a verified key for at most a second (the CLI is another process;
    # through the JSON API a change applies at once).
    import time
    time.sleep(1.1)
    with pytest.raises(ClientError) as e:
        c2.list_buckets()
    assert code(e.value) == "InvalidAccessKeyId"


def signed_headers(method: str, url: str, creds, headers=None, body: bytes = b"", payload_hash=None) -> dict:
    """SigV4 `Authorization` for a raw request, computed here from the AWS document
    (not by botocore, which rewrites x-amz-content-sha256)."""
    aid, secret = creds
    parts = urlsplit(url)
    now = dt.datetime.now(dt.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    h = {k.lower(): str(v) for k, v in (headers or {}).items()}
    h.setdefault("host", parts.netloc)
    h["x-amz-date"] = amz_date
    h["x-amz-content-sha256"] = payload_hash or hashlib.sha256(body).hexdigest()
    names = sorted(h)
    pairs = sorted(
        (quote(k, safe="-_.~"), quote(v, safe="-_.~"))
        for k, _, v in (kv.partition("=") for kv in parts.query.split("&") if kv)
    ) if parts.query else []
    cq = "&".join(f"{k}={v}" for k, v in pairs)
    canonical = "\n".join([method, parts.path or "/", cq, "".join(f"{n}:{h[n].strip()}\n" for n in names),
                           ";".join(names), h["x-amz-content-sha256"]])
    scope = f"{day}/us-east-1/s3/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = _hmac(("AWS4" + secret).encode(), day)
    for p in ("us-east-1", "s3", "aws4_request"):
        k = _hmac(k, p)
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    h["Authorization"] = f"AWS4-HMAC-SHA256 Credential={aid}/{scope}, SignedHeaders={';'.join(names)}, Signature={sig}"
    h["X-Amz-Date"] = amz_date
    return h


def test_payload_hash_mismatch_and_malformed_xml_store_nothing(srv, s3, bucket, creds):
    url = f"{srv.url}/{bucket}/tampered"
    h = signed_headers("PUT", url, creds, body=b"the signed body")
    r = requests.put(url, data=b"another body!!!", headers=h)
    assert r.status_code == 400 and "<Code>XAmzContentSHA256Mismatch</Code>" in r.text, r.text
    for xml in [b"<Delete><Object><Key>x</Key>", b"not xml at all", b"<Delete><Object></Object></Delete>"]:
        u = f"{srv.url}/{bucket}?delete"
        md5 = base64.b64encode(hashlib.md5(xml).digest()).decode()
        r = requests.post(u, data=xml, headers=signed_headers("POST", u, creds, {"Content-MD5": md5}, xml))
        assert r.status_code == 400 and "<Code>MalformedXML</Code>" in r.text, (xml, r.text)
    big = b"<Delete>" + b"<Object><Key>k</Key></Object>" * 100_000 + b"</Delete>"
    u = f"{srv.url}/{bucket}?delete"
    r = requests.post(u, data=big, headers=signed_headers("POST", u, creds, body=big))
    assert r.status_code == 400, r.text
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def aws_chunked(chunks, trailer=None) -> bytes:
    out = b""
    for c in chunks:
        out += f"{len(c):x}\r\n".encode() + c + b"\r\n"
    out += b"0\r\n"
    if trailer:
        out += f"{trailer[0]}:{trailer[1]}\r\n".encode()
    return out + b"\r\n"


def test_streaming_unsigned_payload_with_trailer(srv, s3, bucket, creds):
    import zlib
    data = os.urandom(70_000)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    body = aws_chunked([data[:65536], data[65536:]], ("x-amz-checksum-crc32", crc))
    url = f"{srv.url}/{bucket}/chunked"
    extra = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)),
             "x-amz-trailer": "x-amz-checksum-crc32"}
    h = signed_headers("PUT", url, creds, extra, payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    r = requests.put(url, data=body, headers=h)
    assert r.status_code == 200, r.text
    got = s3.get_object(Bucket=bucket, Key="chunked")
    assert got["Body"].read() == data and "ContentEncoding" not in got
    bad = aws_chunked([data], ("x-amz-checksum-crc32", "AAAAAA=="))
    r = requests.put(f"{url}-bad", data=bad, headers=signed_headers("PUT", f"{url}-bad", creds, extra,
                     payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER"))
    assert r.status_code == 400 and "<Code>BadDigest</Code>" in r.text, r.text


def test_streaming_signed_chunks(srv, s3, bucket, creds):
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD: chunk signatures computed here, from the AWS
    document, and chained from the seed signature botocore made."""
    aid, secret = creds
    data = [os.urandom(65536), os.urandom(1000)]
    url = f"{srv.url}/{bucket}/signed-chunks"
    total = sum(len(d) for d in data)
    # Encoded length: each chunk header carries a 64-hex signature.
    enc_len = sum(len(f"{len(d):x};chunk-signature=".encode()) + 64 + 2 + len(d) + 2 for d in data)
    enc_len += len(b"0;chunk-signature=") + 64 + 4
    extra = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(total),
             "Content-Length": str(enc_len)}
    h = signed_headers("PUT", url, creds, extra, payload_hash="STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    seed = h["Authorization"].rsplit("Signature=", 1)[1]
    amz_date = h["X-Amz-Date"]
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    k = _hmac(("AWS4" + secret).encode(), amz_date[:8])
    for part in ("us-east-1", "s3", "aws4_request"):
        k = _hmac(k, part)

    def body(tamper=False):
        prev, out = seed, b""
        for d in data + [b""]:
            sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, hashlib.sha256(b"").hexdigest(),
                             hashlib.sha256(d).hexdigest()])
            sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
            prev = sig
            d2 = (b"X" + d[1:]) if (tamper and d) else d
            out += f"{len(d):x};chunk-signature={sig}\r\n".encode() + d2 + b"\r\n"
        return out

    b = body()
    assert len(b) == enc_len
    r = requests.put(url, data=b, headers=h)
    assert r.status_code == 200, r.text
    assert s3.get_object(Bucket=bucket, Key="signed-chunks")["Body"].read() == b"".join(data)
    r = requests.put(url + "2", data=body(tamper=True),
                     headers=signed_headers("PUT", url + "2", creds, extra, payload_hash="STREAMING-AWS4-HMAC-SHA256-PAYLOAD"))
    assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text, r.text
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="signed-chunks2")


def goog4_signed_url(url: str, access_id: str, secret: str, method: str = "GET", expires: int = 300) -> str:
    """A GCS V4 signed URL with an HMAC key (GOOG4-HMAC-SHA256), as the GCS signing
    document describes it."""
    parts = urlsplit(url)
    now = dt.datetime.now(dt.timezone.utc)
    ts, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/auto/storage/goog4_request"
    q = {
        "X-Goog-Algorithm": "GOOG4-HMAC-SHA256",
        "X-Goog-Credential": f"{access_id}/{scope}",
        "X-Goog-Date": ts,
        "X-Goog-Expires": str(expires),
        "X-Goog-SignedHeaders": "host",
    }
    cq = "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in sorted(q.items()))
    canonical = "\n".join([method, parts.path, cq, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"])
    sts = "\n".join(["GOOG4-HMAC-SHA256", ts, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    k = _hmac(("GOOG4" + secret).encode(), day)
    for p in ("auto", "storage", "goog4_request"):
        k = _hmac(k, p)
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{cq}&X-Goog-Signature={sig}"


def test_gcs_v4_signed_urls_with_hmac_keys(srv, s3, bucket, creds):
    s3.put_object(Bucket=bucket, Key="dir/signed obj", Body=b"goog4")
    url = goog4_signed_url(f"{srv.url}/{bucket}/dir/signed%20obj", *creds)
    r = requests.get(url)
    assert r.status_code == 200 and r.content == b"goog4", r.text
    bad = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    assert requests.get(bad).status_code == 403


def test_hmac_keys_json_api_with_the_python_client(srv):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    client = storage.Client(project=PROJECT, credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": srv.url})
    sa = f"json-api@{PROJECT}.iam.gserviceaccount.com"
    meta, secret = client.create_hmac_key(service_account_email=sa)
    assert meta.access_id.startswith("GOOG1E") and len(secret) == 40 and meta.state == "ACTIVE"
    assert meta.access_id in [k.access_id for k in client.list_hmac_keys(service_account_email=sa)]
    got = client.get_hmac_key_metadata(meta.access_id)
    assert got.service_account_email == sa
    # The secret works for signing until the key is deactivated.
    s3 = s3_client(srv.url, meta.access_id, secret)
    with pytest.raises(ClientError) as e:
        s3.list_buckets()  # authenticated, but the new service account has no role
    assert code(e.value) == "AccessDenied"
    from google.api_core.exceptions import BadRequest
    with pytest.raises(BadRequest):
        got.delete()
    got.state = "INACTIVE"
    got.update()
    with pytest.raises(ClientError) as e:
        s3.list_buckets()
    assert code(e.value) == "InvalidAccessKeyId"
    got.delete()
    assert meta.access_id not in [k.access_id for k in client.list_hmac_keys(service_account_email=sa)]
    # The secret is stored sealed: it appears nowhere in the data dir.
    for f in Path(srv.data_dir).rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


def test_plaintext_written_through_the_xml_api_is_nowhere_on_disk(srv, s3, bucket):
    marker = b"PLAINTEXT-MARKER-" + uuid.uuid4().hex.encode()
    s3.put_object(Bucket=bucket, Key="small", Body=marker * 3)
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    p1 = marker * (6 * 1024 * 1024 // len(marker) + 1)
    e1 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=p1)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=2, Body=marker)["ETag"]
    # Parts in flight are encrypted too.
    def scan():
        for f in Path(srv.data_dir).rglob("*"):
            if f.is_file():
                assert marker not in f.read_bytes(), f
    scan()
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=up, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    scan()


def test_token_mode_bearer_works_and_anonymous_is_refused(tmp_path):
    srv = Server(tmp_path / "data", ["--auth", "token"])
    srv.start()
    try:
        token, _ = create_token(srv.data_dir, "user:alice@example.com", project=PROJECT, role="roles/storage.admin")
        name = new_bucket_name()
        h = {"Authorization": f"Bearer {token}", "x-goog-project-id": PROJECT}
        assert requests.put(f"{srv.url}/{name}", headers=h).status_code == 200
        assert requests.put(f"{srv.url}/{name}/o", headers=h, data=b"bearer").status_code == 200
        assert requests.get(f"{srv.url}/{name}/o", headers=h).content == b"bearer"
        r = requests.get(f"{srv.url}/{name}/o")
        assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text
        s3 = s3_client(srv.url, *hmac_key(srv.data_dir))
        assert s3.get_object(Bucket=name, Key="o")["Body"].read() == b"bearer"
    finally:
        srv.stop()


def test_virtual_host_style(tmp_path):
    srv = Server(tmp_path / "data", ["--xml-domain", "s3.localhost"])
    srv.start()
    try:
        creds = hmac_key(srv.data_dir)
        port = urlsplit(srv.url).port
        name = new_bucket_name()
        path_style = s3_client(srv.url, *creds)
        path_style.create_bucket(Bucket=name)
        path_style.put_object(Bucket=name, Key="storage/v1/looks-reserved", Body=b"vhost")
        url = f"http://{name}.s3.localhost:{port}/storage/v1/looks-reserved"
        # Connect to loopback, present the virtual-host name (signed as such).
        h = signed_headers("GET", url, creds)
        h["Host"] = f"{name}.s3.localhost:{port}"
        r = requests.get(f"http://127.0.0.1:{port}/storage/v1/looks-reserved", headers=h)
        assert r.status_code == 200 and r.content == b"vhost", r.text
    finally:
        srv.stop()


def test_unsupported_features_answer_not_implemented(s3, bucket):
    with pytest.raises(ClientError) as e:
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    assert code(e.value) == "NotImplemented" and status(e.value) == 501
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="t", Body=b"x", Tagging="a=b")
    assert code(e.value) == "NotImplemented"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="t", Body=b"x", ACL="public-read")
    assert code(e.value) == "NotImplemented"
    s3.put_object(Bucket=bucket, Key="t", Body=b"x", ACL="private")


def test_incomplete_uploads_are_aborted_by_lifecycle_and_by_age(tmp_path):
    srv = Server(tmp_path / "data", ["--multipart-upload-ttl-secs", "7200"])
    srv.start()
    try:
        # Unsigned (dev mode): the test moves the server's clock past any signature's skew.
        s3 = boto3.client("s3", endpoint_url=srv.url, region_name="us-east-1", config=Config(
            signature_version=botocore.UNSIGNED, s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        ruled, plain = new_bucket_name(), new_bucket_name()
        for b in (ruled, plain):
            assert requests.put(f"{srv.url}/{b}", headers={"x-goog-project-id": PROJECT}).status_code == 200
        rule = {"action": {"type": "AbortIncompleteMultipartUpload"}, "condition": {"age": 1, "matchesPrefix": ["tmp/"]}}
        r = requests.patch(f"{srv.url}/storage/v1/b/{ruled}", json={"lifecycle": {"rule": [rule]}})
        assert r.status_code == 200, r.text
        kept = s3.create_multipart_upload(Bucket=ruled, Key="keep/x")["UploadId"]
        gone = s3.create_multipart_upload(Bucket=ruled, Key="tmp/x")["UploadId"]
        s3.upload_part(Bucket=ruled, Key="tmp/x", UploadId=gone, PartNumber=1, Body=b"part")
        aged = s3.create_multipart_upload(Bucket=plain, Key="y")["UploadId"]
        srv.advance(3600)
        assert len(s3.list_multipart_uploads(Bucket=ruled)["Uploads"]) == 2
        srv.advance(86_400)
        left = [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=ruled).get("Uploads", [])]
        # The rule took tmp/; the age limit (2 h) took the rest.
        assert left == []
        assert "Uploads" not in s3.list_multipart_uploads(Bucket=plain)
        for b, k, u in [(ruled, "tmp/x", gone), (plain, "y", aged), (ruled, "keep/x", kept)]:
            with pytest.raises(ClientError) as e:
                s3.list_parts(Bucket=b, Key=k, UploadId=u)
            assert code(e.value) == "NoSuchUpload"
    finally:
        srv.stop()


def test_gcs_xml_headers(srv, bucket, creds):
    """GCS XML API headers: x-goog-meta-*, x-goog-if-generation-match,
    x-goog-if-metageneration-match, x-goog-generation, x-goog-hash,
    x-goog-stored-content-length, x-goog-copy-source with its encryption headers."""
    url = f"{srv.url}/{bucket}/g"
    body = b"gcs xml body"

    def req(method, u, headers=None, data=b""):
        return requests.request(method, u, data=data, headers=signed_headers(method, u, creds, headers, data))

    r = req("PUT", url, {"x-goog-meta-owner": "team", "x-goog-if-generation-match": "0"}, body)
    assert r.status_code == 200, r.text
    gen = r.headers["x-goog-generation"]
    assert req("PUT", url, {"x-goog-if-generation-match": "0"}, b"again").status_code == 412
    assert req("PUT", url, {"x-goog-if-metageneration-match": "7"}, b"again").status_code == 412
    g = req("GET", url)
    assert g.content == body and g.headers["x-goog-generation"] == gen
    assert g.headers["x-goog-stored-content-length"] == str(len(body))
    assert g.headers["x-amz-meta-owner"] == "team"
    crc = base64.b64encode(__import__("google_crc32c").value(body).to_bytes(4, "big")).decode()
    assert f"crc32c={crc}" in g.headers["x-goog-hash"]
    assert f"md5={base64.b64encode(hashlib.md5(body).digest()).decode()}" in g.headers["x-goog-hash"]
    # A CSEK source copied with x-goog-copy-source and its encryption headers.
    key = os.urandom(32)
    enc = {
        "x-goog-encryption-algorithm": "AES256",
        "x-goog-encryption-key": base64.b64encode(key).decode(),
        "x-goog-encryption-key-sha256": base64.b64encode(hashlib.sha256(key).digest()).decode(),
    }
    assert req("PUT", f"{url}-csek", enc, body).status_code == 200
    copy_headers = {"x-goog-copy-source": f"/{bucket}/g-csek"}
    copy_headers.update({k.replace("x-goog-encryption", "x-goog-copy-source-encryption"): v for k, v in enc.items()})
    r = req("PUT", f"{url}-copy", copy_headers)
    assert r.status_code == 200 and "<CopyObjectResult" in r.text, r.text
    assert req("GET", f"{url}-copy").content == body


def test_blocked_encryption_types_are_the_csek_enforcement(srv, s3, bucket):
    key = os.urandom(32)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
        "BlockedEncryptionTypes": {"EncryptionType": ["SSE-C"]}}]})
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["BlockedEncryptionTypes"]["EncryptionType"] == ["SSE-C"]
    gcs = requests.get(f"{srv.url}/storage/v1/b/{bucket}").json()
    assert gcs["encryption"]["customerSuppliedEncryptionEnforcementConfig"]["restrictionMode"] == "FullyRestricted"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="blocked", Body=b"x", **sse_c(key))
    assert code(e.value) == "AccessDenied"
    s3.put_object(Bucket=bucket, Key="fine", Body=b"x")
    s3.delete_bucket_encryption(Bucket=bucket)
    assert "BlockedEncryptionTypes" not in s3.get_bucket_encryption(Bucket=bucket)[
        "ServerSideEncryptionConfiguration"]["Rules"][0]
    s3.put_object(Bucket=bucket, Key="now-allowed", Body=b"x", **sse_c(key))
