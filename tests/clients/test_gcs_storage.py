"""End-to-end tests of sealstore's GCS JSON API face (buckets and objects).

Every test starts its own sealstore (fresh data dir, ``--fake-clock``) and drives it with
the official ``google-cloud-storage`` client, pointed at the server through
``STORAGE_EMULATOR_HOST`` (see the ``gcs_client`` fixture), plus raw ``requests`` calls where
the wire format itself is under test (headers, status codes, resumable protocol, bad input).

Wire facts come from ``shared/reference/gcs-json-api.md``; the requirements from issue 4.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import quote, urlsplit, urlunsplit

import google_crc32c
import pytest
import requests
from google.api_core import exceptions as gexc

from conftest import (
    LOCATION_NAME,
    PROJECT,
    create_key_ring,
    create_symmetric_key,
    gcs_crc32c_b64,
    gcs_error,
    gcs_error_reason,
    gcs_md5_b64,
    unique_bucket_name,
)

KiB = 1024
MiB = 1024 * KiB
CHUNK = 256 * KiB  # the resumable-upload granularity
HTTP_TIMEOUT = 60

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
EMPTY_MD5_B64 = "1B2M2Y8AsgTpgAmY7PhCfg=="
EMPTY_CRC32C_B64 = "AAAAAA=="

# A boundary of the shape the Python client uses (quoted in the Content-Type header).
BOUNDARY = "===============7330845974216740156=="


# ======================================================================================
# Helpers
# ======================================================================================


def q(name: str) -> str:
    """An object name as one path segment (``/`` → ``%2F``, space → ``%20``)."""
    return quote(name, safe="")


def object_url(base: str, bucket: str, name: str) -> str:
    return f"{base}/storage/v1/b/{bucket}/o/{q(name)}"


def download_url(base: str, bucket: str, name: str) -> str:
    return f"{base}/download/storage/v1/b/{bucket}/o/{q(name)}"


def upload_url(base: str, bucket: str) -> str:
    return f"{base}/upload/storage/v1/b/{bucket}/o"


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def make_bucket(client, prefix: str = "b", **kwargs):
    return client.create_bucket(unique_bucket_name(prefix), **kwargs)


def make_versioned_bucket(client):
    bucket = make_bucket(client)
    bucket.versioning_enabled = True
    bucket.patch()
    assert bucket.versioning_enabled is True
    return bucket


def upload(bucket, name: str, data: bytes, **kwargs):
    blob = bucket.blob(name)
    blob.upload_from_string(data, **kwargs)
    return blob


def assert_hashes(blob, data: bytes) -> None:
    assert blob.size == len(data)
    assert blob.md5_hash == gcs_md5_b64(data), "md5Hash is not base64(MD5(data))"
    assert blob.crc32c == gcs_crc32c_b64(data), "crc32c is not base64(BE32(CRC32C(data)))"


def assert_gcs_error_response(resp: requests.Response, code: int, reason: Optional[str] = None) -> Dict:
    """``resp`` is ``code`` with a GCS JSON error body:
    ``{"error":{"code":N,"message":"..","errors":[{"domain":"..","reason":"..","message":".."}]}}``."""
    assert resp.status_code == code, f"expected {code}, got {resp.status_code}: {resp.text[:500]!r}"
    if resp.headers.get("content-type", "").startswith("text/plain"):
        # Media endpoints answer in plain text, as GCS does; the reason is in a header.
        assert resp.text, "empty plain-text error"
        if reason is not None:
            assert resp.headers.get("x-sealstore-error-reason") == reason, resp.headers
        return {"code": code, "message": resp.text}
    try:
        body = resp.json()
    except ValueError:
        pytest.fail(f"{code} body is not JSON: {resp.text[:500]!r}")
    err = body.get("error")
    assert isinstance(err, dict), body
    assert err.get("code") == code, body
    assert isinstance(err.get("message"), str) and err["message"], body
    errors = err.get("errors")
    assert isinstance(errors, list) and errors, body
    for e in errors:
        assert isinstance(e, dict), body
        for key in ("domain", "reason", "message"):
            assert isinstance(e.get(key), str) and e[key], f"errors[].{key} missing: {body}"
    assert err["message"] == errors[0]["message"], body
    if reason is not None:
        assert errors[0]["reason"] == reason, body
    return err


def assert_reason(exc, reason: str) -> None:
    assert gcs_error_reason(exc) == reason, f"expected reason {reason!r}: {gcs_error(exc) or exc!r}"


def multipart_body(
    metadata, data: bytes, content_type: str = "application/octet-stream", boundary: str = BOUNDARY
) -> Tuple[bytes, str]:
    """A multipart/related upload body byte-for-byte like the Python client's."""
    meta = metadata if isinstance(metadata, (bytes, bytearray)) else json.dumps(metadata).encode("utf-8")
    body = (
        f"--{boundary}\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n".encode()
        + bytes(meta)
        + f"\r\n--{boundary}\r\ncontent-type: {content_type}\r\n\r\n".encode()
        + bytes(data)
        + f"\r\n--{boundary}--".encode()
    )
    return body, f'multipart/related; boundary="{boundary}"'


def raw_multipart(base: str, bucket: str, metadata, data: bytes, params=None) -> requests.Response:
    body, ctype = multipart_body(metadata, data)
    return requests.post(
        upload_url(base, bucket),
        params={"uploadType": "multipart", **(params or {})},
        data=body,
        headers={"Content-Type": ctype},
        timeout=HTTP_TIMEOUT,
    )


def raw_initiate(base: str, bucket: str, metadata: Dict, headers=None, params=None) -> str:
    """POST uploadType=resumable; returns the session URI from ``Location``."""
    resp = requests.post(
        upload_url(base, bucket),
        params={"uploadType": "resumable", **(params or {})},
        data=json.dumps(metadata).encode(),
        headers={
            "Content-Type": "application/json; charset=UTF-8",
            "x-upload-content-type": "application/octet-stream",
            **(headers or {}),
        },
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code in (200, 201), f"initiate -> {resp.status_code}: {resp.text}"
    location = resp.headers.get("Location")
    assert location, f"no Location header on the initiate reply: {dict(resp.headers)}"
    assert "upload_id=" in location, location
    return location


def raw_put(session: str, data: bytes, content_range: str, headers=None) -> requests.Response:
    return requests.put(
        session,
        data=data,
        headers={
            "Content-Range": content_range,
            "Content-Type": "application/octet-stream",
            **(headers or {}),
        },
        timeout=HTTP_TIMEOUT,
    )


def status_query(session: str) -> requests.Response:
    return requests.put(session, data=b"", headers={"Content-Range": "bytes */*"}, timeout=HTTP_TIMEOUT)


def rebase(url: str, new_base: str) -> str:
    """Keep ``url``'s path and query, take scheme and host:port from ``new_base``."""
    old, new = urlsplit(url), urlsplit(new_base)
    return urlunsplit((new.scheme, new.netloc, old.path, old.query, ""))


def object_exists_raw(base: str, bucket: str, name: str) -> bool:
    resp = requests.get(object_url(base, bucket, name), timeout=HTTP_TIMEOUT)
    assert resp.status_code in (200, 404), f"GET object -> {resp.status_code}: {resp.text}"
    return resp.status_code == 200


def get_object_json(base: str, bucket: str, name: str, **params) -> Dict:
    resp = requests.get(object_url(base, bucket, name), params=params, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200, f"GET object -> {resp.status_code}: {resp.text}"
    return resp.json()


# ======================================================================================
# 1. Buckets
# ======================================================================================


@pytest.mark.parametrize(
    "location, want_location, want_type",
    [
        ("US-EAST1", "US-EAST1", "region"),
        ("us-east1", "US-EAST1", "region"),  # GCS upper-cases locations
        ("US", "US", "multi-region"),
        ("NAM4", "NAM4", "dual-region"),
    ],
)
def test_bucket_create_location_and_type(gcs_client, location, want_location, want_type):
    name = unique_bucket_name()
    bucket = gcs_client.create_bucket(name, location=location)
    assert bucket.name == name
    assert bucket.location == want_location
    assert bucket.location_type == want_type
    assert bucket.storage_class == "STANDARD"
    assert bucket.metageneration == 1
    assert bucket.time_created is not None
    assert bucket.etag

    got = gcs_client.get_bucket(name)
    assert got.name == name
    assert got.location == want_location
    assert got.location_type == want_type
    assert got.storage_class == "STANDARD"
    assert got.metageneration == 1


def test_bucket_create_defaults_and_storage_class(gcs_client, server):
    # No location → the GCS default, US (multi-region).
    plain = gcs_client.create_bucket(unique_bucket_name())
    assert plain.location == "US"
    assert plain.location_type == "multi-region"
    assert plain.storage_class == "STANDARD"

    nearline = gcs_client.bucket(unique_bucket_name())
    nearline.storage_class = "NEARLINE"
    gcs_client.create_bucket(nearline, location="US-EAST1")
    assert nearline.storage_class == "NEARLINE"
    assert gcs_client.get_bucket(nearline.name).storage_class == "NEARLINE"

    # The raw resource: kind, int64 as strings, RFC 3339 timestamps with milliseconds.
    resp = requests.get(
        f"{server.url}/storage/v1/b/{nearline.name}",
        params={"projection": "noAcl", "prettyPrint": "false"},
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["kind"] == "storage#bucket"
    assert body["name"] == nearline.name
    assert body["location"] == "US-EAST1"
    assert body["locationType"] == "region"
    assert body["storageClass"] == "NEARLINE"
    assert body["metageneration"] == "1", "int64 fields must be JSON strings"
    assert RFC3339_MS.match(body["timeCreated"]), body["timeCreated"]
    assert RFC3339_MS.match(body["updated"]), body["updated"]
    assert body.get("etag")


def test_bucket_create_with_no_project_literal(server):
    """Without a project the client sends ``project=<none>``; accept it."""
    name = unique_bucket_name()
    resp = requests.post(
        f"{server.url}/storage/v1/b",
        params={"project": "<none>", "prettyPrint": "false"},
        json={"name": name, "location": "US"},
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == name
    assert requests.get(f"{server.url}/storage/v1/b/{name}", timeout=HTTP_TIMEOUT).status_code == 200


def test_bucket_create_rejects_bad_location_and_storage_class(gcs_client):
    with pytest.raises(gexc.BadRequest):
        gcs_client.create_bucket(unique_bucket_name(), location="MARS-NORTH1")
    bucket = gcs_client.bucket(unique_bucket_name())
    bucket.storage_class = "PLATINUM"
    with pytest.raises(gexc.BadRequest):
        gcs_client.create_bucket(bucket, location="US")


@pytest.mark.parametrize(
    "bad_name",
    [
        "ab",  # too short
        pytest.param("a" * 64, id="64-chars"),  # too long (no dots)
        "UpperCase-bucket",  # upper case
        "goog-prefix-bucket",  # reserved "goog" prefix
        "my-google-bucket",  # contains "google"
        "with space",  # space
        "192.168.5.4",  # IP address form
    ],
)
def test_bucket_invalid_names_rejected(gcs_client, server, bad_name):
    with pytest.raises(gexc.BadRequest) as info:
        gcs_client.create_bucket(bad_name)
    assert gcs_error(info.value).get("code") == 400
    assert requests.get(
        f"{server.url}/storage/v1/b/{quote(bad_name, safe='')}", timeout=HTTP_TIMEOUT
    ).status_code in (400, 404)


@pytest.mark.parametrize("bad_name", ["-leading-dash", "trailing-dash-", "_leading_underscore"])
def test_bucket_invalid_names_rejected_raw(server, bad_name):
    """Names the client refuses locally (first/last char not alphanumeric), sent raw."""
    resp = requests.post(
        f"{server.url}/storage/v1/b",
        params={"project": PROJECT},
        json={"name": bad_name},
        timeout=HTTP_TIMEOUT,
    )
    assert_gcs_error_response(resp, 400)


def test_bucket_valid_edge_names(gcs_client):
    hexs = secrets.token_hex(4)
    names = [
        "a1z",  # 3 characters
        ("m" + hexs).ljust(63, "x"),  # 63 characters
        f"under_score-{hexs}",
        f"dotted.name.{hexs}",
    ]
    for name in names:
        assert gcs_client.create_bucket(name).name == name
        assert gcs_client.get_bucket(name).name == name


def test_bucket_get_missing_is_not_found(gcs_client, server):
    name = unique_bucket_name()
    with pytest.raises(gexc.NotFound) as info:
        gcs_client.get_bucket(name)
    assert_reason(info.value, "notFound")
    assert gcs_client.lookup_bucket(name) is None
    assert gcs_client.bucket(name).exists() is False
    resp = requests.get(f"{server.url}/storage/v1/b/{name}", timeout=HTTP_TIMEOUT)
    assert_gcs_error_response(resp, 404, "notFound")
    # Objects of a missing bucket are missing too.
    with pytest.raises(gexc.NotFound):
        list(gcs_client.list_blobs(name))
    with pytest.raises(gexc.NotFound):
        gcs_client.bucket(name).blob("x").download_as_bytes()


def test_bucket_duplicate_create_conflict(gcs_client):
    bucket = make_bucket(gcs_client)
    assert bucket.exists() is True
    with pytest.raises(gexc.Conflict) as info:
        gcs_client.create_bucket(bucket.name)
    assert_reason(info.value, "conflict")


def test_bucket_list_prefix_and_paging(gcs_client, server):
    pa = sorted(gcs_client.create_bucket(f"pa-{secrets.token_hex(6)}").name for _ in range(5))
    pb = sorted(gcs_client.create_bucket(f"pb-{secrets.token_hex(6)}").name for _ in range(2))

    assert [b.name for b in gcs_client.list_buckets()] == sorted(pa + pb)
    listed = list(gcs_client.list_buckets(prefix="pa-"))
    assert [b.name for b in listed] == pa
    assert all(b.location == "US" for b in listed)
    assert [b.name for b in gcs_client.list_buckets(prefix="pb-")] == pb
    assert list(gcs_client.list_buckets(prefix="zz-")) == []

    # Paging through the client: pages of at most 2, nothing lost or repeated.
    iterator = gcs_client.list_buckets(prefix="pa-", page_size=2)
    pages = [[b.name for b in page] for page in iterator.pages]
    assert all(1 <= len(p) <= 2 for p in pages), pages
    assert len(pages) >= 3
    assert [n for p in pages for n in p] == pa

    assert [b.name for b in gcs_client.list_buckets(prefix="pa-", max_results=3)] == pa[:3]
    assert [b.name for b in gcs_client.list_buckets(max_results=4, page_size=3)] == sorted(pa + pb)[:4]

    # Raw: kind, nextPageToken on every page but the last.
    names: List[str] = []
    token = None
    tokens = []
    while True:
        params = {"project": PROJECT, "prefix": "pa-", "maxResults": "2", "projection": "noAcl"}
        if token:
            params["pageToken"] = token
        resp = requests.get(f"{server.url}/storage/v1/b", params=params, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["kind"] == "storage#buckets"
        items = body.get("items", [])
        assert len(items) <= 2
        names += [i["name"] for i in items]
        token = body.get("nextPageToken")
        tokens.append(token)
        if not token:
            break
        assert len(tokens) < 20, "pagination does not end"
    assert names == pa
    # 5 buckets in pages of 2: tokens on pages 1 and 2, none on page 3.
    assert len(tokens) == 3 and tokens[0] and tokens[1] and not tokens[2], tokens


def test_bucket_patch_labels_and_update(gcs_client):
    bucket = make_bucket(gcs_client, location="US-EAST1")
    assert bucket.metageneration == 1

    bucket.labels = {"env": "dev", "team": "storage"}
    bucket.patch()
    assert bucket.labels == {"env": "dev", "team": "storage"}
    assert bucket.metageneration == 2
    fresh = gcs_client.get_bucket(bucket.name)
    assert fresh.labels == {"env": "dev", "team": "storage"}
    assert fresh.metageneration == 2
    assert fresh.location == "US-EAST1"  # a patch leaves other fields alone

    # Removing a label: the client sends {"labels": {"env": null, ...}}.
    bucket.labels = {"team": "storage"}
    bucket.patch()
    assert bucket.labels == {"team": "storage"}
    assert bucket.metageneration == 3
    assert gcs_client.get_bucket(bucket.name).labels == {"team": "storage"}

    # Stale ifMetagenerationMatch → 412 conditionNotMet, nothing changed.
    bucket.labels = {"team": "storage", "k": "v"}
    with pytest.raises(gexc.PreconditionFailed) as info:
        bucket.patch(if_metageneration_match=1)
    assert_reason(info.value, "conditionNotMet")
    bucket.reload()
    assert bucket.labels == {"team": "storage"}
    assert bucket.metageneration == 3

    # Matching ifMetagenerationMatch → applied.
    bucket.labels = {"team": "storage", "k": "v"}
    bucket.patch(if_metageneration_match=3)
    assert bucket.metageneration == 4

    # Full update (PUT): replaces the writable fields.
    bucket.labels = {"only": "this"}
    bucket.storage_class = "COLDLINE"
    bucket.update()
    assert bucket.metageneration == 5
    fresh = gcs_client.get_bucket(bucket.name)
    assert fresh.labels == {"only": "this"}
    assert fresh.storage_class == "COLDLINE"
    assert fresh.location == "US-EAST1"
    assert fresh.metageneration == 5


def test_bucket_versioning_flag(gcs_client):
    bucket = make_bucket(gcs_client)
    assert not bucket.versioning_enabled
    bucket.versioning_enabled = True
    bucket.patch()
    assert bucket.metageneration == 2
    assert gcs_client.get_bucket(bucket.name).versioning_enabled is True
    bucket.versioning_enabled = False
    bucket.patch()
    assert gcs_client.get_bucket(bucket.name).versioning_enabled is False


def test_bucket_default_kms_key_name_stored_and_cleared(gcs_client, kms_client):
    ring = create_key_ring(kms_client)
    key = create_symmetric_key(kms_client, ring.name)
    assert ring.name.startswith(LOCATION_NAME)

    bucket = make_bucket(gcs_client, location="US-EAST1")
    assert bucket.default_kms_key_name is None
    bucket.default_kms_key_name = key.name
    bucket.patch()
    assert bucket.default_kms_key_name == key.name
    assert gcs_client.get_bucket(bucket.name).default_kms_key_name == key.name

    bucket.default_kms_key_name = None  # {"encryption": {"defaultKmsKeyName": null}}
    bucket.patch()
    assert gcs_client.get_bucket(bucket.name).default_kms_key_name is None


def test_bucket_delete(gcs_client):
    empty = make_bucket(gcs_client)
    with pytest.raises(gexc.PreconditionFailed) as info:
        empty.delete(if_metageneration_match=7)
    assert_reason(info.value, "conditionNotMet")
    empty.delete()
    with pytest.raises(gexc.NotFound):
        gcs_client.get_bucket(empty.name)
    with pytest.raises(gexc.NotFound):
        empty.delete()

    full = make_bucket(gcs_client)
    upload(full, "keep.txt", b"data")
    with pytest.raises(gexc.Conflict) as info:
        full.delete()
    assert_reason(info.value, "conflict")
    assert gcs_client.get_bucket(full.name).name == full.name
    assert full.blob("keep.txt").download_as_bytes() == b"data"
    full.delete_blob("keep.txt")
    full.delete()
    assert gcs_client.lookup_bucket(full.name) is None


def test_bucket_delete_refused_while_noncurrent_versions_remain(gcs_client):
    bucket = make_versioned_bucket(gcs_client)
    upload(bucket, "v.txt", b"one")
    bucket.delete_blob("v.txt")  # only a noncurrent generation remains
    assert bucket.get_blob("v.txt") is None
    with pytest.raises(gexc.Conflict):
        bucket.delete()
    # force=True lists with versions=True and deletes every generation first.
    bucket.delete(force=True)
    assert gcs_client.lookup_bucket(bucket.name) is None


def test_background_bucket_metadata_get(gcs_client, new_gcs_client, server):
    """3.17.x sends GET /storage/v1/b/{bucket}?projection=noAcl in the background."""
    bucket = make_bucket(gcs_client, location="US-EAST1")
    upload(bucket, "obj", b"x")
    got = gcs_client.get_bucket(bucket.name)
    assert got.location == "US-EAST1"
    assert got.location_type == "region"

    for params in (
        {"projection": "noAcl", "prettyPrint": "false"},
        {"projection": "full", "prettyPrint": "false"},
        {"fields": "name", "prettyPrint": "false"},
        {"userProject": PROJECT},
    ):
        resp = requests.get(f"{server.url}/storage/v1/b/{bucket.name}", params=params, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 200, (params, resp.text)
        assert resp.json()["name"] == bucket.name

    # A fresh client touching the bucket through an object call fills its metadata cache from
    # the background GET; that only happens if the server answered it with the bucket.
    from google.cloud.storage import _opentelemetry_tracing as otel

    client = new_gcs_client()
    assert client.bucket(bucket.name).get_blob("obj").size == 1
    if otel._is_bucket_metadata_disabled() or not hasattr(client, "_bucket_metadata_cache"):
        return
    deadline = time.monotonic() + 15
    cached = None
    while time.monotonic() < deadline:
        cached = client._bucket_metadata_cache.get(bucket.name)
        if cached:
            break
        time.sleep(0.1)
    assert cached, "the background GET /storage/v1/b/{bucket}?projection=noAcl did not succeed"
    assert cached[1] == "us-east1"


# ======================================================================================
# 2. Versioning
# ======================================================================================


def test_versioning_keeps_noncurrent_generations(gcs_client):
    bucket = make_versioned_bucket(gcs_client)
    first = upload(bucket, "doc.txt", b"version one")
    second = upload(bucket, "doc.txt", b"version two!")
    g1, g2 = first.generation, second.generation
    assert g1 and g2 and g2 > g1
    assert second.metageneration == 1

    versions = list(gcs_client.list_blobs(bucket, versions=True))
    assert [b.name for b in versions] == ["doc.txt", "doc.txt"]
    assert sorted(b.generation for b in versions) == [g1, g2]
    assert [b.name for b in gcs_client.list_blobs(bucket)] == ["doc.txt"]

    assert bucket.blob("doc.txt", generation=g1).download_as_bytes() == b"version one"
    assert bucket.blob("doc.txt", generation=g2).download_as_bytes() == b"version two!"
    assert bucket.blob("doc.txt").download_as_bytes() == b"version two!"
    live = bucket.get_blob("doc.txt")
    assert live.generation == g2
    old = bucket.get_blob("doc.txt", generation=g1)
    assert old is not None and old.generation == g1
    assert_hashes(old, b"version one")


def test_without_versioning_old_generation_is_gone(gcs_client):
    bucket = make_bucket(gcs_client)
    first = upload(bucket, "doc.txt", b"version one")
    second = upload(bucket, "doc.txt", b"version two!")
    g1, g2 = first.generation, second.generation
    assert g2 != g1
    with pytest.raises(gexc.NotFound):
        bucket.blob("doc.txt", generation=g1).download_as_bytes()
    assert bucket.get_blob("doc.txt", generation=g1) is None
    versions = list(gcs_client.list_blobs(bucket, versions=True))
    assert [(b.name, b.generation) for b in versions] == [("doc.txt", g2)]


# ======================================================================================
# 3. Small (multipart) uploads
# ======================================================================================


def test_small_multipart_upload(gcs_client, server):
    bucket = make_bucket(gcs_client)
    data = b"hello sealstore\n" * 100
    blob = bucket.blob("small.txt")
    blob.metadata = {"color": "blue", "n": "1"}
    blob.cache_control = "no-cache"
    blob.upload_from_string(data, content_type="text/plain; charset=utf-8")

    assert_hashes(blob, data)
    assert blob.generation and blob.generation > 0
    assert blob.metageneration == 1
    assert blob.content_type == "text/plain; charset=utf-8"
    assert blob.metadata == {"color": "blue", "n": "1"}
    assert blob.cache_control == "no-cache"
    assert blob.storage_class == "STANDARD"
    assert blob.etag
    assert blob.id == f"{bucket.name}/small.txt/{blob.generation}"
    assert blob.time_created is not None and blob.updated is not None

    got = bucket.get_blob("small.txt")
    assert got.generation == blob.generation
    assert_hashes(got, data)
    assert got.metadata == {"color": "blue", "n": "1"}
    assert got.content_type == "text/plain; charset=utf-8"
    assert got.download_as_bytes(checksum="md5") == data
    assert bucket.blob("small.txt").download_as_bytes(checksum="crc32c") == data
    assert bucket.blob("small.txt").exists() is True
    assert bucket.blob("absent.txt").exists() is False

    # The raw resource: kind, id, int64 fields as strings, timestamps, links on our origin.
    body = get_object_json(server.url, bucket.name, "small.txt", projection="noAcl", prettyPrint="false")
    assert body["kind"] == "storage#object"
    assert body["name"] == "small.txt"
    assert body["bucket"] == bucket.name
    assert body["generation"] == str(blob.generation)
    assert body["metageneration"] == "1"
    assert body["size"] == str(len(data))
    assert body["md5Hash"] == gcs_md5_b64(data)
    assert body["crc32c"] == gcs_crc32c_b64(data)
    assert body["id"] == f"{bucket.name}/small.txt/{blob.generation}"
    assert RFC3339_MS.match(body["timeCreated"]), body["timeCreated"]
    assert RFC3339_MS.match(body["updated"]), body["updated"]
    assert body.get("etag")
    if "mediaLink" in body:
        assert body["mediaLink"].startswith(server.url + "/"), body["mediaLink"]
    if "selfLink" in body:
        assert body["selfLink"].startswith(server.url + "/"), body["selfLink"]


def test_multipart_upload_md5_mode_and_empty_object(gcs_client):
    bucket = make_bucket(gcs_client)
    data = random_bytes(100 * KiB + 3)
    blob = bucket.blob("md5-mode.bin")
    blob.upload_from_string(data, content_type="application/octet-stream", checksum="md5")
    assert_hashes(blob, data)
    assert bucket.blob("md5-mode.bin").download_as_bytes(checksum="md5") == data

    empty = upload(bucket, "empty", b"")
    assert empty.size == 0
    assert empty.md5_hash == EMPTY_MD5_B64
    assert empty.crc32c == EMPTY_CRC32C_B64
    assert bucket.blob("empty").download_as_bytes() == b""


def test_media_upload_type(gcs_client, server):
    bucket = make_bucket(gcs_client)
    data = b"simple media upload"
    resp = requests.post(
        upload_url(server.url, bucket.name),
        params={"uploadType": "media", "name": "dir/media.txt"},
        data=data,
        headers={"Content-Type": "text/plain"},
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["name"] == "dir/media.txt"
    assert body["size"] == str(len(data))
    assert body["contentType"] == "text/plain"
    assert body["md5Hash"] == gcs_md5_b64(data)
    assert body["crc32c"] == gcs_crc32c_b64(data)
    assert body["metageneration"] == "1"
    assert bucket.blob("dir/media.txt").download_as_bytes() == data

    # A media upload needs a name.
    resp = requests.post(
        upload_url(server.url, bucket.name), params={"uploadType": "media"}, data=data, timeout=HTTP_TIMEOUT
    )
    assert_gcs_error_response(resp, 400)


# ======================================================================================
# 4. Large (resumable) uploads
# ======================================================================================


def test_large_resumable_upload_from_filename(gcs_client, tmp_path):
    bucket = make_bucket(gcs_client)
    data = random_bytes(9 * MiB + 5)
    path = tmp_path / "big.bin"
    path.write_bytes(data)

    blob = bucket.blob("big/from-file.bin")
    blob.chunk_size = CHUNK * 4  # 1 MiB
    blob.upload_from_filename(str(path), content_type="application/octet-stream")
    assert_hashes(blob, data)
    assert blob.metageneration == 1

    fresh = bucket.blob("big/from-file.bin")
    assert fresh.download_as_bytes(checksum="md5") == data
    assert bucket.blob("big/from-file.bin").download_as_bytes(checksum="crc32c") == data
    out = tmp_path / "out.bin"
    bucket.blob("big/from-file.bin").download_to_filename(str(out), checksum="crc32c")
    assert out.read_bytes() == data

    # The same in md5 mode: the last chunk carries x-goog-hash: md5=..., the client then
    # compares the final resource's md5Hash.
    blob2 = bucket.blob("big/md5-mode.bin")
    blob2.chunk_size = CHUNK * 4
    blob2.upload_from_filename(str(path), content_type="application/octet-stream", checksum="md5")
    assert_hashes(blob2, data)


def test_large_single_chunk_upload_spans_parts(gcs_client):
    """20 MiB in one request (the client's default: no chunk_size) is stored as 8 MiB
    parts; whole and ranged downloads across part boundaries check out."""
    bucket = make_bucket(gcs_client)
    data = random_bytes(20 * MiB + 3)
    blob = bucket.blob("big/one-request.bin")
    blob.upload_from_string(data, content_type="application/octet-stream")
    assert_hashes(blob, data)
    assert bucket.blob("big/one-request.bin").download_as_bytes(checksum="crc32c") == data
    part = 8 * MiB
    for start, end in ((part - 7, part + 7), (2 * part - 1, 2 * part), (len(data) - 4, len(data) - 1)):
        got = bucket.blob("big/one-request.bin").download_as_bytes(start=start, end=end)
        assert got == data[start : end + 1], (start, end)
    # A small object next to it reads back too (it lives in its metadata row).
    upload(bucket, "big/small.txt", b"small")
    assert bucket.blob("big/small.txt").download_as_bytes(checksum="md5") == b"small"


def test_large_resumable_upload_unknown_size(gcs_client):
    bucket = make_bucket(gcs_client)
    data = random_bytes(9 * MiB + 5)
    blob = bucket.blob("big/stream.bin")
    blob.chunk_size = CHUNK * 4
    # size=None: every chunk says "bytes S-E/*" until the short last one names the total.
    blob.upload_from_file(io.BytesIO(data), size=None, content_type="application/octet-stream")
    assert_hashes(blob, data)
    assert bucket.blob("big/stream.bin").download_as_bytes(checksum="md5") == data
    assert bucket.blob("big/stream.bin").download_as_bytes(checksum="crc32c") == data


def test_resumable_unknown_size_exact_multiple_ends_with_empty_chunk(gcs_client):
    """A stream of exactly 2 chunks: the client finishes with an empty ``bytes */TOTAL`` PUT."""
    bucket = make_bucket(gcs_client)
    data = random_bytes(2 * CHUNK)
    blob = bucket.blob("exact.bin")
    blob.chunk_size = CHUNK
    blob.upload_from_file(io.BytesIO(data), size=None, content_type="application/octet-stream")
    assert_hashes(blob, data)
    assert bucket.blob("exact.bin").download_as_bytes(checksum="crc32c") == data


def test_resumable_upload_of_small_and_empty_streams(gcs_client):
    bucket = make_bucket(gcs_client)
    small = random_bytes(1000)
    blob = bucket.blob("tiny-stream.bin")
    blob.chunk_size = CHUNK
    blob.upload_from_file(io.BytesIO(small), size=None)
    assert_hashes(blob, small)
    assert bucket.blob("tiny-stream.bin").download_as_bytes() == small

    empty = bucket.blob("empty-stream.bin")
    empty.chunk_size = CHUNK
    empty.upload_from_file(io.BytesIO(b""), size=None)
    assert empty.size == 0
    assert empty.md5_hash == EMPTY_MD5_B64
    assert empty.crc32c == EMPTY_CRC32C_B64
    assert bucket.blob("empty-stream.bin").download_as_bytes() == b""


# ======================================================================================
# 5. Downloads
# ======================================================================================


def test_download_whole_and_ranges_via_client(gcs_client):
    bucket = make_bucket(gcs_client)
    data = b"0123456789"
    upload(bucket, "r.txt", data)
    blob = bucket.blob("r.txt")

    assert blob.download_as_bytes() == data
    assert blob.download_as_bytes(checksum="md5") == data
    assert blob.download_as_bytes(checksum="crc32c") == data
    assert blob.download_as_bytes(start=2, end=5) == b"2345"  # inclusive
    assert blob.download_as_bytes(start=2) == b"23456789"
    assert blob.download_as_bytes(end=3) == b"0123"
    assert blob.download_as_bytes(start=9, end=9) == b"9"
    assert blob.download_as_bytes(start=2, end=1000) == b"23456789"
    with pytest.raises(gexc.RequestRangeNotSatisfiable):
        blob.download_as_bytes(start=10)
    with pytest.raises(gexc.RequestRangeNotSatisfiable):
        blob.download_as_bytes(start=100, end=200)
    with pytest.raises(gexc.NotFound):
        bucket.blob("missing.txt").download_as_bytes()


def test_download_ranges_across_segment_boundaries(gcs_client, server):
    """Ranges that start/end on and around the 64 KiB segment boundaries."""
    bucket = make_bucket(gcs_client)
    data = random_bytes(300 * KiB + 17)
    upload(bucket, "seg.bin", data, content_type="application/octet-stream")
    blob = bucket.blob("seg.bin")
    seg = 64 * KiB
    for start, end in [
        (0, seg - 1),
        (seg - 1, seg),
        (seg, seg),
        (seg - 5, 2 * seg + 5),
        (3 * seg + 1, 4 * seg - 2),
        (0, len(data) - 1),
        (len(data) - 1, len(data) - 1),
        (len(data) - 100, len(data) + 100),
    ]:
        want = data[start : end + 1]
        assert blob.download_as_bytes(start=start, end=end) == want, (start, end)
        resp = requests.get(
            download_url(server.url, bucket.name, "seg.bin"),
            params={"alt": "media"},
            headers={"Range": f"bytes={start}-{end}"},
            timeout=HTTP_TIMEOUT,
        )
        assert resp.status_code == 206, (start, end, resp.status_code)
        assert resp.content == want, (start, end)
        last = min(end, len(data) - 1)
        assert resp.headers["Content-Range"] == f"bytes {start}-{last}/{len(data)}"
    assert blob.download_as_bytes(start=200 * KiB) == data[200 * KiB :]
    # Chunked downloads: a series of 206 replies whose Content-Range/Content-Length must agree.
    assert bucket.blob("seg.bin", chunk_size=CHUNK).download_as_bytes() == data
    assert bucket.blob("seg.bin", chunk_size=CHUNK).download_as_bytes(start=1000, end=CHUNK + 5000) == data[1000 : CHUNK + 5001]
    upload(bucket, "small.bin", b"tiny")
    assert bucket.blob("small.bin", chunk_size=CHUNK).download_as_bytes() == b"tiny"  # range past the end


def test_download_headers_raw(gcs_client, server):
    bucket = make_bucket(gcs_client)
    data = b"raw header check data"
    blob = upload(bucket, "h.txt", data, content_type="text/plain")
    crc, md5 = gcs_crc32c_b64(data), gcs_md5_b64(data)

    resp = requests.get(download_url(server.url, bucket.name, "h.txt"), params={"alt": "media"}, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200, resp.text
    assert resp.content == data
    hashes = resp.raw.headers.getlist("X-Goog-Hash")
    assert hashes == [f"crc32c={crc},md5={md5}"], f"X-Goog-Hash must be one header, no space: {hashes}"
    assert resp.headers["x-goog-generation"] == str(blob.generation)
    assert resp.headers["x-goog-metageneration"] == "1"
    assert resp.headers["x-goog-stored-content-length"] == str(len(data))
    assert resp.headers["X-Goog-Storage-Class"] == "STANDARD"
    assert resp.headers.get("ETag")
    assert resp.headers["Content-Length"] == str(len(data))
    assert resp.headers["Content-Type"].startswith("text/plain")

    # Range → 206 with Content-Range.
    resp = requests.get(
        download_url(server.url, bucket.name, "h.txt"),
        params={"alt": "media"},
        headers={"Range": "bytes=0-3"},
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 206
    assert resp.content == data[:4]
    assert resp.headers["Content-Range"] == f"bytes 0-3/{len(data)}"
    assert resp.headers["Content-Length"] == "4"
    assert resp.headers["x-goog-generation"] == str(blob.generation)
    assert resp.headers["x-goog-stored-content-length"] == str(len(data))

    # Open-ended and suffix ranges.
    resp = requests.get(
        download_url(server.url, bucket.name, "h.txt"),
        params={"alt": "media"},
        headers={"Range": "bytes=5-"},
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 206
    assert resp.content == data[5:]
    assert resp.headers["Content-Range"] == f"bytes 5-{len(data) - 1}/{len(data)}"
    resp = requests.get(
        download_url(server.url, bucket.name, "h.txt"),
        params={"alt": "media"},
        headers={"Range": "bytes=-3"},
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 206
    assert resp.content == data[-3:]
    assert resp.headers["Content-Range"] == f"bytes {len(data) - 3}-{len(data) - 1}/{len(data)}"

    # Unsatisfiable → 416 with Content-Range: bytes */size.
    resp = requests.get(
        download_url(server.url, bucket.name, "h.txt"),
        params={"alt": "media"},
        headers={"Range": f"bytes={len(data)}-"},
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 416
    assert resp.headers.get("Content-Range") == f"bytes */{len(data)}"

    # alt=media on the JSON path works too; without alt it is the JSON resource.
    resp = requests.get(object_url(server.url, bucket.name, "h.txt"), params={"alt": "media"}, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200
    assert resp.content == data
    assert resp.raw.headers.getlist("X-Goog-Hash") == [f"crc32c={crc},md5={md5}"]
    resp = requests.get(object_url(server.url, bucket.name, "h.txt"), params={"alt": "json"}, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200
    assert resp.json()["name"] == "h.txt"

    # A specific generation through the media path.
    resp = requests.get(
        download_url(server.url, bucket.name, "h.txt"),
        params={"alt": "media", "generation": str(blob.generation)},
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 200 and resp.content == data

    # Missing object on the media path → 404.
    resp = requests.get(download_url(server.url, bucket.name, "nope"), params={"alt": "media"}, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 404


def test_download_empty_object(gcs_client, server):
    bucket = make_bucket(gcs_client)
    upload(bucket, "empty.bin", b"")
    blob = bucket.blob("empty.bin")
    assert blob.download_as_bytes() == b""
    assert blob.download_as_bytes(checksum="md5") == b""
    # A chunked download asks for "bytes=0-(chunk-1)"; 416 with "bytes */0" means empty to it.
    assert bucket.blob("empty.bin", chunk_size=CHUNK).download_as_bytes() == b""
    # A one-shot ranged download of an empty object is unsatisfiable.
    with pytest.raises(gexc.RequestRangeNotSatisfiable):
        blob.download_as_bytes(start=0)

    resp = requests.get(download_url(server.url, bucket.name, "empty.bin"), params={"alt": "media"}, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200
    assert resp.content == b""
    assert resp.raw.headers.getlist("X-Goog-Hash") == [f"crc32c={EMPTY_CRC32C_B64},md5={EMPTY_MD5_B64}"]
    assert resp.headers["x-goog-stored-content-length"] == "0"

    resp = requests.get(
        download_url(server.url, bucket.name, "empty.bin"),
        params={"alt": "media"},
        headers={"Range": "bytes=0-"},
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 416
    assert resp.headers.get("Content-Range") == "bytes */0"


def test_download_after_reload_uses_media_link(gcs_client):
    """After a GET the client downloads through ``mediaLink`` verbatim."""
    bucket = make_bucket(gcs_client)
    data = random_bytes(70 * KiB)
    upload(bucket, "ml.bin", data)
    blob = bucket.get_blob("ml.bin")
    assert blob.download_as_bytes(checksum="md5") == data
    listed = list(gcs_client.list_blobs(bucket))
    assert listed[0].download_as_bytes(checksum="crc32c") == data


# ======================================================================================
# 6. Object names
# ======================================================================================


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("dir/a b/ü.txt", id="slash-space-umlaut"),
        pytest.param("plus+sign and%percent", id="plus-percent"),
        pytest.param("q?x#y&z=1;semi", id="query-chars"),
        pytest.param("trailing/", id="trailing-slash"),
        pytest.param("日本語/ファイル.txt", id="cjk"),
        pytest.param("a" * 1024, id="1024-ascii"),
        pytest.param("é" * 512, id="1024-bytes-utf8"),  # 512 characters
    ],
)
def test_object_names_round_trip(gcs_client, server, name):
    bucket = make_bucket(gcs_client)
    data = f"content of {name!r}".encode()
    blob = upload(bucket, name, data)
    assert blob.name == name
    assert bucket.blob(name).download_as_bytes() == data
    got = bucket.get_blob(name)
    assert got is not None and got.name == name
    assert [b.name for b in gcs_client.list_blobs(bucket)] == [name]
    # Raw: the name is one percent-encoded path segment.
    resp = requests.get(download_url(server.url, bucket.name, name), params={"alt": "media"}, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200 and resp.content == data
    assert get_object_json(server.url, bucket.name, name)["name"] == name
    bucket.delete_blob(name)
    assert bucket.get_blob(name) is None


# ======================================================================================
# 7. Listing
# ======================================================================================

LIST_NAMES = [
    "a.txt",
    "d/1.txt",
    "d/2.txt",
    "d/other/5.txt",
    "d/sub/3.txt",
    "d/sub/4.txt",
    "e/6.txt",
]


def _populate(bucket) -> None:
    for name in reversed(LIST_NAMES):  # upload order must not matter
        upload(bucket, name, name.encode())


def test_list_prefix_and_delimiter(gcs_client):
    bucket = make_bucket(gcs_client)
    _populate(bucket)

    listed = list(gcs_client.list_blobs(bucket))
    assert [b.name for b in listed] == LIST_NAMES  # lexicographic
    for b in listed:
        assert b.size == len(b.name.encode())
        assert b.md5_hash == gcs_md5_b64(b.name.encode())
        assert b.crc32c == gcs_crc32c_b64(b.name.encode())
        assert b.generation and b.metageneration == 1

    assert [b.name for b in gcs_client.list_blobs(bucket, prefix="d/s")] == ["d/sub/3.txt", "d/sub/4.txt"]
    assert [b.name for b in gcs_client.list_blobs(bucket, prefix="zzz")] == []

    it = gcs_client.list_blobs(bucket, prefix="d/", delimiter="/")
    assert [b.name for b in it] == ["d/1.txt", "d/2.txt"]
    assert it.prefixes == {"d/other/", "d/sub/"}

    it = gcs_client.list_blobs(bucket, delimiter="/")
    assert [b.name for b in it] == ["a.txt"]
    assert it.prefixes == {"d/", "e/"}

    it = gcs_client.list_blobs(bucket, prefix="d/sub/", delimiter="/")
    assert [b.name for b in it] == ["d/sub/3.txt", "d/sub/4.txt"]
    assert it.prefixes == set()

    # Prefixes spread over pages of one entry each (maxResults counts items + prefixes).
    it = gcs_client.list_blobs(bucket, delimiter="/", page_size=1)
    assert [b.name for b in it] == ["a.txt"]
    assert it.prefixes == {"d/", "e/"}
    it = gcs_client.list_blobs(bucket, prefix="d/", delimiter="/", page_size=1)
    assert [b.name for b in it] == ["d/1.txt", "d/2.txt"]
    assert it.prefixes == {"d/other/", "d/sub/"}


def test_list_raw_prefixes_field(gcs_client, server):
    bucket = make_bucket(gcs_client)
    _populate(bucket)
    resp = requests.get(
        f"{server.url}/storage/v1/b/{bucket.name}/o",
        params={"prefix": "d/", "delimiter": "/", "projection": "noAcl", "prettyPrint": "false"},
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["kind"] == "storage#objects"
    assert [i["name"] for i in body["items"]] == ["d/1.txt", "d/2.txt"]
    assert sorted(body["prefixes"]) == ["d/other/", "d/sub/"]
    assert "nextPageToken" not in body
    for item in body["items"]:
        assert item["kind"] == "storage#object"
        assert isinstance(item["size"], str) and isinstance(item["generation"], str)

    # With maxResults=1, each page holds at most one item-or-prefix.
    seen_items, seen_prefixes, token = [], [], None
    for _ in range(20):
        params = {"delimiter": "/", "maxResults": "1"}
        if token:
            params["pageToken"] = token
        body = requests.get(
            f"{server.url}/storage/v1/b/{bucket.name}/o", params=params, timeout=HTTP_TIMEOUT
        ).json()
        items, prefixes = body.get("items", []), body.get("prefixes", [])
        assert len(items) + len(prefixes) <= 1, body
        seen_items += [i["name"] for i in items]
        seen_prefixes += prefixes
        token = body.get("nextPageToken")
        if not token:
            break
    else:
        pytest.fail("pagination does not end")
    assert seen_items == ["a.txt"]
    assert sorted(seen_prefixes) == ["d/", "e/"], "no prefix lost or repeated across pages"


def test_list_paging(gcs_client, server):
    bucket = make_bucket(gcs_client)
    _populate(bucket)

    iterator = gcs_client.list_blobs(bucket, page_size=3)
    pages = [[b.name for b in page] for page in iterator.pages]
    assert all(1 <= len(p) <= 3 for p in pages), pages
    assert [n for p in pages for n in p] == LIST_NAMES
    assert len(pages) >= 3

    assert [b.name for b in gcs_client.list_blobs(bucket, max_results=5)] == LIST_NAMES[:5]
    assert [b.name for b in gcs_client.list_blobs(bucket, max_results=5, page_size=2)] == LIST_NAMES[:5]

    # Raw: 7 objects in pages of 3 → tokens on pages 1 and 2, none on page 3.
    names, tokens, token = [], [], None
    for _ in range(3):
        params = {"maxResults": "3"}
        if token:
            params["pageToken"] = token
        resp = requests.get(f"{server.url}/storage/v1/b/{bucket.name}/o", params=params, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        page = [i["name"] for i in body.get("items", [])]
        expected = 3 if len(tokens) < 2 else 1
        assert len(page) == expected, (tokens, page)
        names += page
        token = body.get("nextPageToken")
        tokens.append(token)
        if not token:
            break
    assert names == LIST_NAMES
    assert tokens[0] and tokens[1] and tokens[2] is None, tokens

    # Resuming from a token the client got back.
    it = gcs_client.list_blobs(bucket, max_results=2)
    first = [b.name for b in it]
    assert first == LIST_NAMES[:2]
    assert it.next_page_token
    rest = [b.name for b in gcs_client.list_blobs(bucket, page_token=it.next_page_token)]
    assert rest == LIST_NAMES[2:]


def test_list_start_and_end_offset(gcs_client):
    bucket = make_bucket(gcs_client)
    _populate(bucket)
    got = [b.name for b in gcs_client.list_blobs(bucket, start_offset="d/2", end_offset="d/sub/4.txt")]
    assert got == ["d/2.txt", "d/other/5.txt", "d/sub/3.txt"]  # [start, end)
    got = [b.name for b in gcs_client.list_blobs(bucket, start_offset="d/sub/4.txt")]
    assert got == ["d/sub/4.txt", "e/6.txt"]
    got = [b.name for b in gcs_client.list_blobs(bucket, end_offset="d/1.txt")]
    assert got == ["a.txt"]
    got = [b.name for b in gcs_client.list_blobs(bucket, prefix="d/", start_offset="d/3")]
    assert got == ["d/other/5.txt", "d/sub/3.txt", "d/sub/4.txt"]


def test_list_match_glob(gcs_client, server):
    bucket = make_bucket(gcs_client)
    _populate(bucket)

    def names(**kw):
        return [b.name for b in gcs_client.list_blobs(bucket, **kw)]

    assert names(match_glob="*.txt") == ["a.txt"]  # * stays within one segment
    assert names(match_glob="**.txt") == LIST_NAMES
    assert names(match_glob="d/**/*.txt") == ["d/1.txt", "d/2.txt", "d/other/5.txt", "d/sub/3.txt", "d/sub/4.txt"]
    assert names(match_glob="d/sub/[3-4].txt") == ["d/sub/3.txt", "d/sub/4.txt"]
    assert names(match_glob="d/?.txt") == ["d/1.txt", "d/2.txt"]
    assert names(match_glob="{a,e/*}.txt") == ["a.txt", "e/6.txt"]
    assert names(match_glob="d/[!1]*") == ["d/2.txt"]
    # Combined with prefix, delimiter and paging: only matching names count.
    assert names(match_glob="**/[35].txt", prefix="d/") == ["d/other/5.txt", "d/sub/3.txt"]
    it = gcs_client.list_blobs(bucket, match_glob="**/4.txt", delimiter="/", prefix="d/")
    assert [b.name for b in it] == []
    assert it.prefixes == {"d/sub/"}
    assert names(match_glob="**.txt", page_size=2) == LIST_NAMES
    # A malformed glob is a 400 in the GCS error format.
    resp = requests.get(
        f"{server.url}/storage/v1/b/{bucket.name}/o", params={"matchGlob": "[abc"}, timeout=HTTP_TIMEOUT
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["errors"][0]["reason"] == "invalid"


def test_list_versions(gcs_client):
    bucket = make_versioned_bucket(gcs_client)
    g1 = upload(bucket, "v.txt", b"1").generation
    g2 = upload(bucket, "v.txt", b"22").generation
    g3 = upload(bucket, "w.txt", b"333").generation
    listed = [(b.name, b.generation, b.size) for b in gcs_client.list_blobs(bucket, versions=True)]
    assert sorted(listed) == [("v.txt", g1, 1), ("v.txt", g2, 2), ("w.txt", g3, 3)]
    assert [n for n, _, _ in listed] == ["v.txt", "v.txt", "w.txt"]
    assert [(b.name, b.generation) for b in gcs_client.list_blobs(bucket)] == [("v.txt", g2), ("w.txt", g3)]
    assert len(list(gcs_client.list_blobs(bucket, versions=True, prefix="v"))) == 2
    paged = [b.generation for b in gcs_client.list_blobs(bucket, versions=True, page_size=1)]
    assert sorted(paged) == sorted([g1, g2, g3])


# ======================================================================================
# 8. Metadata patch and update
# ======================================================================================


def test_object_metadata_patch_and_update(gcs_client, server):
    bucket = make_bucket(gcs_client)
    data = b"a,b\n1,2\n"
    blob = upload(bucket, "m.csv", data, content_type="text/plain")
    gen = blob.generation
    assert blob.metageneration == 1

    blob.content_type = "text/csv"
    blob.content_disposition = 'attachment; filename="m.csv"'
    blob.cache_control = "public, max-age=60"
    blob.metadata = {"owner": "alice", "stage": "raw"}
    blob.patch()
    assert blob.metageneration == 2
    assert blob.generation == gen

    fresh = bucket.blob("m.csv")
    fresh.reload()
    assert fresh.metageneration == 2
    assert fresh.generation == gen
    assert fresh.content_type == "text/csv"
    assert fresh.content_disposition == 'attachment; filename="m.csv"'
    assert fresh.cache_control == "public, max-age=60"
    assert fresh.metadata == {"owner": "alice", "stage": "raw"}
    assert_hashes(fresh, data)  # a metadata change leaves the data and its hashes alone

    # The media response reflects the new metadata.
    resp = requests.get(download_url(server.url, bucket.name, "m.csv"), params={"alt": "media"}, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200 and resp.content == data
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert resp.headers["Cache-Control"] == "public, max-age=60"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="m.csv"'
    assert resp.headers["x-goog-metageneration"] == "2"

    # A null metadata value removes that key; the others stay.
    fresh.metadata = {"stage": None, "reviewed": "yes"}
    fresh.patch()
    assert fresh.metageneration == 3
    assert bucket.get_blob("m.csv").metadata == {"owner": "alice", "reviewed": "yes"}

    # Full update (PUT): the writable fields become exactly what was sent.
    full = bucket.get_blob("m.csv")
    full.metadata = {"only": "this"}
    full.content_language = "en"
    full.update()
    assert full.metageneration == 4
    after = bucket.get_blob("m.csv")
    assert after.metageneration == 4
    assert after.generation == gen
    assert after.metadata == {"only": "this"}
    assert after.content_language == "en"
    assert after.content_type == "text/csv"
    assert_hashes(after, data)
    assert bucket.blob("m.csv").download_as_bytes(checksum="md5") == data

    # Patching a missing object → 404.
    ghost = bucket.blob("ghost")
    ghost.metadata = {"x": "y"}
    with pytest.raises(gexc.NotFound):
        ghost.patch()


def test_patch_specific_generation_on_versioned_bucket(gcs_client):
    bucket = make_versioned_bucket(gcs_client)
    g1 = upload(bucket, "p.txt", b"one").generation
    g2 = upload(bucket, "p.txt", b"two").generation
    old = bucket.blob("p.txt", generation=g1)
    old.metadata = {"old": "yes"}
    old.patch()
    assert old.generation == g1 and old.metageneration == 2
    assert bucket.get_blob("p.txt", generation=g1).metadata == {"old": "yes"}
    live = bucket.get_blob("p.txt")
    assert live.generation == g2 and live.metageneration == 1 and not live.metadata


# ======================================================================================
# 9. Delete
# ======================================================================================


def test_delete_live_object(gcs_client):
    bucket = make_bucket(gcs_client)
    upload(bucket, "gone.txt", b"bye")
    bucket.delete_blob("gone.txt")
    assert bucket.get_blob("gone.txt") is None
    with pytest.raises(gexc.NotFound):
        bucket.blob("gone.txt").download_as_bytes()
    assert list(gcs_client.list_blobs(bucket, versions=True)) == []
    with pytest.raises(gexc.NotFound) as info:
        bucket.delete_blob("gone.txt")
    assert_reason(info.value, "notFound")
    # Blob.delete() of a loaded blob.
    blob = upload(bucket, "again.txt", b"x")
    blob.delete()
    assert bucket.get_blob("again.txt") is None


def test_delete_missing_is_not_found(gcs_client, server):
    bucket = make_bucket(gcs_client)
    with pytest.raises(gexc.NotFound) as info:
        bucket.delete_blob("never-existed")
    assert_reason(info.value, "notFound")
    g = upload(bucket, "x", b"x").generation
    with pytest.raises(gexc.NotFound):
        bucket.delete_blob("x", generation=g + 1)
    resp = requests.delete(object_url(server.url, bucket.name, "never-existed"), timeout=HTTP_TIMEOUT)
    assert_gcs_error_response(resp, 404, "notFound")
    resp = requests.delete(object_url(server.url, bucket.name, "x"), timeout=HTTP_TIMEOUT)
    assert resp.status_code == 204
    assert resp.content == b""


def test_delete_on_versioned_bucket(gcs_client):
    bucket = make_versioned_bucket(gcs_client)
    g1 = upload(bucket, "v.txt", b"one").generation
    g2 = upload(bucket, "v.txt", b"two").generation

    # Deleting a specific (noncurrent) generation removes only that one.
    bucket.delete_blob("v.txt", generation=g1)
    assert [b.generation for b in gcs_client.list_blobs(bucket, versions=True)] == [g2]
    assert bucket.blob("v.txt").download_as_bytes() == b"two"
    with pytest.raises(gexc.NotFound):
        bucket.blob("v.txt", generation=g1).download_as_bytes()

    # Deleting the live object keeps it as a noncurrent generation.
    bucket.delete_blob("v.txt")
    assert bucket.get_blob("v.txt") is None
    with pytest.raises(gexc.NotFound):
        bucket.blob("v.txt").download_as_bytes()
    assert [b.generation for b in gcs_client.list_blobs(bucket, versions=True)] == [g2]
    assert bucket.blob("v.txt", generation=g2).download_as_bytes() == b"two"

    # A new upload after that gets a new generation; the noncurrent one stays.
    g3 = upload(bucket, "v.txt", b"three").generation
    assert g3 > g2
    assert sorted(b.generation for b in gcs_client.list_blobs(bucket, versions=True)) == [g2, g3]
    bucket.delete_blob("v.txt", generation=g2)
    assert [b.generation for b in gcs_client.list_blobs(bucket, versions=True)] == [g3]


# ======================================================================================
# 10. copyTo and rename
# ======================================================================================


def test_copy_within_and_across_buckets(gcs_client):
    src_bucket = make_bucket(gcs_client)
    dst_bucket = make_bucket(gcs_client, location="US-EAST1")
    data = random_bytes(200 * KiB + 1)
    src = src_bucket.blob("src.bin")
    src.metadata = {"k": "v"}
    src.upload_from_string(data, content_type="application/x-test")

    same = src_bucket.copy_blob(src, src_bucket, "copy.bin")
    assert same.name == "copy.bin"
    assert same.generation
    assert_hashes(same, data)
    assert same.content_type == "application/x-test"
    assert same.metadata == {"k": "v"}
    assert same.metageneration == 1
    assert src_bucket.blob("copy.bin").download_as_bytes(checksum="md5") == data

    other = src_bucket.copy_blob(src, dst_bucket, "dir/copied.bin")
    assert other.bucket.name == dst_bucket.name
    assert_hashes(other, data)
    assert dst_bucket.blob("dir/copied.bin").download_as_bytes(checksum="crc32c") == data
    got = dst_bucket.get_blob("dir/copied.bin")
    assert_hashes(got, data)

    # The source is untouched.
    assert src_bucket.blob("src.bin").download_as_bytes() == data

    # Copy without a new name keeps the name.
    kept = src_bucket.copy_blob(src, dst_bucket)
    assert kept.name == "src.bin"
    assert dst_bucket.blob("src.bin").download_as_bytes() == data

    # A missing source → 404.
    with pytest.raises(gexc.NotFound):
        src_bucket.copy_blob(src_bucket.blob("missing"), dst_bucket, "x")


def test_copy_source_generation_and_preconditions(gcs_client):
    bucket = make_versioned_bucket(gcs_client)
    g1 = upload(bucket, "s.txt", b"old").generation
    g2 = upload(bucket, "s.txt", b"new").generation

    old_copy = bucket.copy_blob(bucket.blob("s.txt"), bucket, "from-old.txt", source_generation=g1)
    assert bucket.blob("from-old.txt").download_as_bytes() == b"old"
    assert_hashes(old_copy, b"old")

    # Destination precondition: ifGenerationMatch=0 on an existing destination → 412.
    with pytest.raises(gexc.PreconditionFailed) as info:
        bucket.copy_blob(bucket.blob("s.txt"), bucket, "from-old.txt", if_generation_match=0)
    assert_reason(info.value, "conditionNotMet")
    # Source precondition mismatch → 412.
    with pytest.raises(gexc.PreconditionFailed):
        bucket.copy_blob(bucket.blob("s.txt"), bucket, "y.txt", if_source_generation_match=g1)
    assert bucket.get_blob("y.txt") is None
    bucket.copy_blob(bucket.blob("s.txt"), bucket, "y.txt", if_source_generation_match=g2, if_generation_match=0)
    assert bucket.blob("y.txt").download_as_bytes() == b"new"


def test_rename_blob(gcs_client):
    bucket = make_bucket(gcs_client)
    data = b"rename me"
    blob = upload(bucket, "before.txt", data)
    renamed = bucket.rename_blob(blob, "after/renamed.txt")
    assert renamed.name == "after/renamed.txt"
    assert_hashes(renamed, data)
    assert bucket.get_blob("before.txt") is None
    assert bucket.blob("after/renamed.txt").download_as_bytes() == data
    assert [b.name for b in gcs_client.list_blobs(bucket)] == ["after/renamed.txt"]


# ======================================================================================
# 11. compose
# ======================================================================================


def test_compose_three_sources(gcs_client, server):
    bucket = make_bucket(gcs_client)
    parts = [random_bytes(70 * KiB + 1), b"middle", random_bytes(3)]
    sources = [upload(bucket, f"part-{i}", p) for i, p in enumerate(parts)]
    whole = b"".join(parts)

    dest = bucket.blob("composite.bin")
    dest.content_type = "application/x-composite"
    dest.compose(sources)
    assert dest.size == len(whole)
    assert dest.crc32c == gcs_crc32c_b64(whole)
    assert dest.md5_hash is None
    assert dest.component_count == 3
    assert dest.content_type == "application/x-composite"
    assert dest.metageneration == 1

    got = bucket.get_blob("composite.bin")
    assert got.crc32c == gcs_crc32c_b64(whole)
    assert got.md5_hash is None
    assert got.component_count == 3
    assert bucket.blob("composite.bin").download_as_bytes(checksum="crc32c") == whole
    # No md5 in X-Goog-Hash, so the client skips an md5 check.
    assert bucket.blob("composite.bin").download_as_bytes(checksum="md5") == whole
    assert bucket.blob("composite.bin").download_as_bytes(start=70 * KiB, end=70 * KiB + 5) == whole[70 * KiB : 70 * KiB + 6]

    body = get_object_json(server.url, bucket.name, "composite.bin")
    assert body["componentCount"] == 3, "componentCount is an int32: a plain JSON number"
    assert "md5Hash" not in body
    resp = requests.get(download_url(server.url, bucket.name, "composite.bin"), params={"alt": "media"}, timeout=HTTP_TIMEOUT)
    assert resp.content == whole
    assert resp.raw.headers.getlist("X-Goog-Hash") == [f"crc32c={gcs_crc32c_b64(whole)}"]

    # A composite can be a source again; componentCount accumulates.
    extra = upload(bucket, "extra", b"!")
    again = bucket.blob("composite2.bin")
    again.compose([bucket.blob("composite.bin"), extra])
    assert again.component_count == 4
    assert again.crc32c == gcs_crc32c_b64(whole + b"!")
    assert again.md5_hash is None
    assert bucket.blob("composite2.bin").download_as_bytes() == whole + b"!"

    # The same source may be named several times.
    rep = bucket.blob("repeat.bin")
    rep.compose([bucket.blob("part-1")] * 3)
    assert bucket.blob("repeat.bin").download_as_bytes() == b"middle" * 3
    assert rep.crc32c == gcs_crc32c_b64(b"middle" * 3)


def test_compose_limits_and_errors(gcs_client):
    bucket = make_bucket(gcs_client)
    parts = [f"<{i:02d}>".encode() for i in range(33)]
    sources = [upload(bucket, f"p{i:02d}", p) for i, p in enumerate(parts)]

    ok = bucket.blob("thirty-two")
    ok.compose(sources[:32])
    assert ok.component_count == 32
    assert bucket.blob("thirty-two").download_as_bytes() == b"".join(parts[:32])
    assert ok.crc32c == gcs_crc32c_b64(b"".join(parts[:32]))

    with pytest.raises(gexc.BadRequest):
        bucket.blob("thirty-three").compose(sources)
    assert bucket.get_blob("thirty-three") is None

    with pytest.raises(gexc.BadRequest):
        bucket.blob("none").compose([])
    assert bucket.get_blob("none") is None

    with pytest.raises(gexc.NotFound):
        bucket.blob("with-missing").compose([sources[0], bucket.blob("no-such-source")])
    assert bucket.get_blob("with-missing") is None

    # Destination precondition.
    with pytest.raises(gexc.PreconditionFailed) as info:
        bucket.blob("thirty-two").compose(sources[:2], if_generation_match=0)
    assert_reason(info.value, "conditionNotMet")
    assert bucket.blob("thirty-two").download_as_bytes() == b"".join(parts[:32])


# ======================================================================================
# 12. Preconditions
# ======================================================================================


def test_upload_preconditions(gcs_client):
    bucket = make_bucket(gcs_client)
    g1 = upload(bucket, "p.txt", b"v1", if_generation_match=0).generation  # create-if-absent

    with pytest.raises(gexc.PreconditionFailed) as info:
        bucket.blob("p.txt").upload_from_string(b"v2", if_generation_match=0)
    assert_reason(info.value, "conditionNotMet")
    live = bucket.get_blob("p.txt")
    assert live.generation == g1
    assert bucket.blob("p.txt").download_as_bytes() == b"v1"

    g2 = upload(bucket, "p.txt", b"v2", if_generation_match=g1).generation
    assert g2 != g1
    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("p.txt").upload_from_string(b"v3", if_generation_match=g1)  # stale
    assert bucket.blob("p.txt").download_as_bytes() == b"v2"

    # Preconditions on a resumable upload too.
    big = bucket.blob("p.txt")
    big.chunk_size = CHUNK
    with pytest.raises(gexc.PreconditionFailed):
        big.upload_from_file(io.BytesIO(random_bytes(CHUNK + 10)), size=None, if_generation_match=0)
    assert bucket.blob("p.txt").download_as_bytes() == b"v2"

    # ifMetagenerationMatch on upload.
    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("p.txt").upload_from_string(b"v3", if_metageneration_match=5)
    upload(bucket, "p.txt", b"v3", if_metageneration_match=1)
    assert bucket.blob("p.txt").download_as_bytes() == b"v3"


def test_upload_metageneration_not_match_alias(gcs_client, server):
    """The client sends ``ifMetaGenerationNotMatch`` (capital G) on uploads."""
    bucket = make_bucket(gcs_client)
    upload(bucket, "n.txt", b"v1")
    # Current metageneration is 1: NotMatch=1 fails (412 or 304), NotMatch=7 passes.
    with pytest.raises((gexc.PreconditionFailed, gexc.NotModified)):
        bucket.blob("n.txt").upload_from_string(b"v2", if_metageneration_not_match=1)
    assert bucket.blob("n.txt").download_as_bytes() == b"v1"
    upload(bucket, "n.txt", b"v2", if_metageneration_not_match=7)
    assert bucket.blob("n.txt").download_as_bytes() == b"v2"

    # A NotMatch precondition fails when no live object exists.
    with pytest.raises((gexc.PreconditionFailed, gexc.NotModified)):
        bucket.blob("absent.txt").upload_from_string(b"x", if_generation_not_match=0)
    assert bucket.get_blob("absent.txt") is None

    # Both spellings on a JSON read.
    for param in ("ifMetagenerationNotMatch", "ifMetaGenerationNotMatch"):
        resp = requests.get(object_url(server.url, bucket.name, "n.txt"), params={param: "1"}, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 304, (param, resp.status_code, resp.text)
        resp = requests.get(object_url(server.url, bucket.name, "n.txt"), params={param: "2"}, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 200, (param, resp.status_code, resp.text)


def test_metadata_and_delete_preconditions(gcs_client):
    bucket = make_bucket(gcs_client)
    blob = upload(bucket, "m.txt", b"data")
    gen = blob.generation

    blob.metadata = {"a": "1"}
    with pytest.raises(gexc.PreconditionFailed) as info:
        blob.patch(if_metageneration_match=2)
    assert_reason(info.value, "conditionNotMet")
    assert not bucket.get_blob("m.txt").metadata
    blob.metadata = {"a": "1"}
    blob.patch(if_metageneration_match=1)
    assert blob.metageneration == 2
    blob.metadata = {"a": "2"}
    with pytest.raises(gexc.PreconditionFailed):
        blob.patch(if_generation_match=gen + 1)
    blob.metadata = {"a": "2"}
    blob.patch(if_generation_match=gen)
    assert blob.metageneration == 3

    with pytest.raises(gexc.PreconditionFailed) as info:
        bucket.delete_blob("m.txt", if_generation_match=gen + 1)
    assert_reason(info.value, "conditionNotMet")
    with pytest.raises(gexc.PreconditionFailed):
        bucket.delete_blob("m.txt", if_metageneration_match=1)
    assert bucket.get_blob("m.txt") is not None
    bucket.delete_blob("m.txt", if_generation_match=gen, if_metageneration_match=3)
    assert bucket.get_blob("m.txt") is None


def test_read_preconditions(gcs_client, server):
    bucket = make_bucket(gcs_client)
    data = b"read preconditions"
    gen = upload(bucket, "r.txt", data).generation

    # ifGenerationNotMatch with the current generation → 304, on both read paths.
    for url, params in (
        (download_url(server.url, bucket.name, "r.txt"), {"alt": "media"}),
        (object_url(server.url, bucket.name, "r.txt"), {"alt": "media"}),
        (object_url(server.url, bucket.name, "r.txt"), {}),
    ):
        resp = requests.get(url, params={**params, "ifGenerationNotMatch": str(gen)}, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 304, (url, params, resp.status_code)
        assert resp.content == b""
        resp = requests.get(url, params={**params, "ifGenerationNotMatch": str(gen + 1)}, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 200, (url, params, resp.status_code)
        resp = requests.get(url, params={**params, "ifGenerationMatch": str(gen + 1)}, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 412, (url, params, resp.status_code)
        resp = requests.get(url, params={**params, "ifGenerationMatch": str(gen)}, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 200, (url, params, resp.status_code)
        resp = requests.get(url, params={**params, "ifMetagenerationMatch": "2"}, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 412, (url, params, resp.status_code)
        resp = requests.get(url, params={**params, "ifMetagenerationMatch": "1"}, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 200, (url, params, resp.status_code)

    resp = requests.get(object_url(server.url, bucket.name, "r.txt"), params={"ifGenerationMatch": str(gen + 1)}, timeout=HTTP_TIMEOUT)
    assert_gcs_error_response(resp, 412, "conditionNotMet")

    # Through the client.
    with pytest.raises(gexc.NotModified):
        bucket.blob("r.txt").download_as_bytes(if_generation_not_match=gen)
    with pytest.raises(gexc.NotModified):
        bucket.blob("r.txt").reload(if_generation_not_match=gen)
    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("r.txt").download_as_bytes(if_generation_match=gen + 1)
    with pytest.raises(gexc.PreconditionFailed) as info:
        bucket.blob("r.txt").reload(if_generation_match=gen + 1)
    assert_reason(info.value, "conditionNotMet")
    assert bucket.blob("r.txt").download_as_bytes(if_generation_match=gen) == data
    assert bucket.blob("r.txt").download_as_bytes(if_metageneration_match=1) == data


# ======================================================================================
# 13. Checksum validation on upload
# ======================================================================================


def test_raw_multipart_with_correct_hashes_is_accepted(gcs_client, server):
    """Sanity check of the raw multipart builder used by the rejection tests below."""
    bucket = make_bucket(gcs_client)
    data = b"raw multipart body"
    resp = raw_multipart(
        server.url,
        bucket.name,
        {"name": "ok.txt", "crc32c": gcs_crc32c_b64(data), "md5Hash": gcs_md5_b64(data), "contentType": "text/plain"},
        data,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["name"] == "ok.txt"
    assert body["crc32c"] == gcs_crc32c_b64(data)
    assert body["md5Hash"] == gcs_md5_b64(data)
    assert bucket.blob("ok.txt").download_as_bytes() == data


@pytest.mark.parametrize("field, label", [("crc32c", "CRC32C"), ("md5Hash", "MD5")])
def test_multipart_wrong_checksum_rejected(gcs_client, server, field, label):
    bucket = make_bucket(gcs_client)
    data = b"checksum me" * 50
    wrong = gcs_crc32c_b64(b"other") if field == "crc32c" else gcs_md5_b64(b"other")

    resp = raw_multipart(server.url, bucket.name, {"name": "bad.txt", field: wrong}, data)
    err = assert_gcs_error_response(resp, 400)
    assert label in err["message"] and wrong in err["message"], err
    assert not object_exists_raw(server.url, bucket.name, "bad.txt")
    with pytest.raises(gexc.NotFound):
        bucket.blob("bad.txt").download_as_bytes()

    # One right and one wrong value is still a mismatch.
    meta = {"name": "bad.txt", "crc32c": gcs_crc32c_b64(data), "md5Hash": gcs_md5_b64(data)}
    meta[field] = wrong
    assert_gcs_error_response(raw_multipart(server.url, bucket.name, meta, data), 400)
    assert not object_exists_raw(server.url, bucket.name, "bad.txt")

    # Over an existing object: the live generation is untouched.
    good = upload(bucket, "live.txt", b"original")
    meta = {"name": "live.txt", field: wrong}
    assert_gcs_error_response(raw_multipart(server.url, bucket.name, meta, data), 400)
    live = bucket.get_blob("live.txt")
    assert live.generation == good.generation
    assert bucket.blob("live.txt").download_as_bytes() == b"original"


def test_client_wrong_checksum_rejected(gcs_client):
    """The official client can carry a wrong value: a preset ``crc32c``/``md5Hash`` with
    ``checksum=None`` (multipart), or ``crc32c_checksum_value`` (resumable initiate body)."""
    bucket = make_bucket(gcs_client)
    data = b"client side" * 10

    blob = bucket.blob("wrong-crc.txt")
    blob.crc32c = gcs_crc32c_b64(b"not the data")
    with pytest.raises(gexc.BadRequest) as info:
        blob.upload_from_string(data, checksum=None)
    assert "crc32c" in str(info.value).lower()
    assert bucket.get_blob("wrong-crc.txt") is None

    blob = bucket.blob("wrong-md5.txt")
    blob.md5_hash = gcs_md5_b64(b"not the data")
    with pytest.raises(gexc.BadRequest):
        blob.upload_from_string(data, checksum=None)
    assert bucket.get_blob("wrong-md5.txt") is None

    big = bucket.blob("wrong-resumable.bin")
    big.chunk_size = CHUNK
    payload = random_bytes(CHUNK + 1000)
    with pytest.raises(gexc.BadRequest):
        big.upload_from_file(
            io.BytesIO(payload), size=None, crc32c_checksum_value=gcs_crc32c_b64(b"not the data")
        )
    assert bucket.get_blob("wrong-resumable.bin") is None

    # The right value through the same routes is accepted.
    blob = bucket.blob("right.txt")
    blob.crc32c = gcs_crc32c_b64(data)
    blob.upload_from_string(data, checksum=None)
    assert_hashes(blob, data)
    big = bucket.blob("right-resumable.bin")
    big.chunk_size = CHUNK
    big.upload_from_file(io.BytesIO(payload), size=None, crc32c_checksum_value=gcs_crc32c_b64(payload))
    assert_hashes(big, payload)


@pytest.mark.parametrize("hash_header", ["crc32c", "md5"])
def test_resumable_final_chunk_wrong_x_goog_hash_rejected(gcs_client, server, hash_header):
    bucket = make_bucket(gcs_client)
    data = random_bytes(CHUNK + 123)
    session = raw_initiate(server.url, bucket.name, {"name": "r.bin"})
    resp = raw_put(session, data[:CHUNK], f"bytes 0-{CHUNK - 1}/*")
    assert resp.status_code == 308, resp.text
    wrong = gcs_crc32c_b64(b"x") if hash_header == "crc32c" else gcs_md5_b64(b"x")
    resp = raw_put(
        session,
        data[CHUNK:],
        f"bytes {CHUNK}-{len(data) - 1}/{len(data)}",
        headers={"x-goog-hash": f"{hash_header}={wrong}"},
    )
    assert_gcs_error_response(resp, 400)
    assert not object_exists_raw(server.url, bucket.name, "r.bin")

    # A single-request upload with a wrong hash, and with the right one.
    session = raw_initiate(server.url, bucket.name, {"name": "one.bin"})
    resp = raw_put(session, data, f"bytes 0-{len(data) - 1}/{len(data)}", headers={"x-goog-hash": f"{hash_header}={wrong}"})
    assert_gcs_error_response(resp, 400)
    assert not object_exists_raw(server.url, bucket.name, "one.bin")
    right = gcs_crc32c_b64(data) if hash_header == "crc32c" else gcs_md5_b64(data)
    session = raw_initiate(server.url, bucket.name, {"name": "one.bin"})
    resp = raw_put(session, data, f"bytes 0-{len(data) - 1}/{len(data)}", headers={"x-goog-hash": f"{hash_header}={right}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["md5Hash"] == gcs_md5_b64(data)
    assert resp.json()["crc32c"] == gcs_crc32c_b64(data)


def test_resumable_session_metadata_wrong_crc32c_rejected(gcs_client, server):
    bucket = make_bucket(gcs_client)
    data = random_bytes(1000)
    session = raw_initiate(server.url, bucket.name, {"name": "s.bin", "crc32c": gcs_crc32c_b64(b"nope")})
    resp = raw_put(session, data, f"bytes 0-{len(data) - 1}/{len(data)}")
    assert_gcs_error_response(resp, 400)
    assert not object_exists_raw(server.url, bucket.name, "s.bin")
    session = raw_initiate(server.url, bucket.name, {"name": "s.bin", "md5Hash": gcs_md5_b64(b"nope")})
    resp = raw_put(session, data, f"bytes 0-{len(data) - 1}/{len(data)}")
    assert_gcs_error_response(resp, 400)
    assert not object_exists_raw(server.url, bucket.name, "s.bin")


# ======================================================================================
# 14. Bad input
# ======================================================================================


def _post_multipart_raw(base: str, bucket: str, body: bytes, content_type: str) -> requests.Response:
    return requests.post(
        upload_url(base, bucket),
        params={"uploadType": "multipart"},
        data=body,
        headers={"Content-Type": content_type},
        timeout=HTTP_TIMEOUT,
    )


def test_malformed_multipart_bodies(gcs_client, server):
    bucket = make_bucket(gcs_client)
    data = b"payload"
    good_body, ctype = multipart_body({"name": "mp.txt"}, data)
    b = BOUNDARY.encode()

    cases = {
        "garbage": (b"this is not multipart at all", ctype),
        "no boundary parameter": (good_body, "multipart/related"),
        "wrong boundary": (good_body, 'multipart/related; boundary="something-else"'),
        "truncated (no closing delimiter)": (good_body[: -len(f"\r\n--{BOUNDARY}--")], ctype),
        "truncated mid-data": (good_body[:-20], ctype),
        "metadata only": (
            b"--" + b + b"\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n"
            + b'{"name": "mp.txt"}' + b"\r\n--" + b + b"--",
            ctype,
        ),
        "metadata not JSON": (multipart_body(b"{not json", data)[0], ctype),
        "metadata is a JSON array": (multipart_body(b"[1, 2]", data)[0], ctype),
        "metadata without a name": (multipart_body({"contentType": "text/plain"}, data)[0], ctype),
        "empty body": (b"", ctype),
    }
    for label, (body, content_type) in cases.items():
        resp = _post_multipart_raw(server.url, bucket.name, body, content_type)
        assert resp.status_code == 400, f"{label}: {resp.status_code} {resp.text[:300]}"
        assert_gcs_error_response(resp, 400)
        assert not object_exists_raw(server.url, bucket.name, "mp.txt"), label
    assert list(gcs_client.list_blobs(bucket, versions=True)) == []

    # The well-formed body works (so the failures above are about the malformations).
    resp = _post_multipart_raw(server.url, bucket.name, good_body, ctype)
    assert resp.status_code == 200, resp.text
    assert bucket.blob("mp.txt").download_as_bytes() == data


def test_bad_content_range_on_resumable_put(gcs_client, server):
    bucket = make_bucket(gcs_client)
    data = random_bytes(CHUNK)
    # A fresh session for every case: a session may be unusable after a rejected chunk.
    for bad in [
        "bytes abc",
        "garbage",
        "items 0-9/10",
        f"bytes 10-5/{CHUNK}",
        "bytes 0-x/*",
        "bytes -5-10/*",
        f"bytes 0-{CHUNK - 1}/10",  # total smaller than the range
    ]:
        session = raw_initiate(server.url, bucket.name, {"name": "cr.bin"})
        resp = raw_put(session, data, bad)
        assert resp.status_code == 400, (bad, resp.status_code, resp.text[:200])
        assert_gcs_error_response(resp, 400)
    # Body length differs from what Content-Range announces (oversize / truncated).
    for body, content_range in [
        (data + b"extra", f"bytes 0-{CHUNK - 1}/*"),
        (data[:100], f"bytes 0-{CHUNK - 1}/{CHUNK}"),
    ]:
        session = raw_initiate(server.url, bucket.name, {"name": "cr.bin"})
        resp = raw_put(session, body, content_range)
        assert resp.status_code == 400, (len(body), content_range, resp.status_code, resp.text[:200])
        assert_gcs_error_response(resp, 400)
    assert not object_exists_raw(server.url, bucket.name, "cr.bin")


def test_non_final_chunk_must_be_multiple_of_256k(gcs_client, server):
    bucket = make_bucket(gcs_client)
    session = raw_initiate(server.url, bucket.name, {"name": "c.bin"})
    resp = raw_put(session, b"x" * 1024, "bytes 0-1023/*")
    assert resp.status_code == 400, resp.text
    assert not object_exists_raw(server.url, bucket.name, "c.bin")


def test_unknown_resumable_session(gcs_client, server):
    bucket = make_bucket(gcs_client)
    session = raw_initiate(server.url, bucket.name, {"name": "u.bin"})
    parts = urlsplit(session)
    bogus = urlunsplit(
        (parts.scheme, parts.netloc, parts.path, re.sub(r"upload_id=[^&]*", "upload_id=does-not-exist", parts.query), "")
    )
    resp = raw_put(bogus, b"abc", "bytes 0-2/3")
    assert resp.status_code in (404, 410), resp.status_code
    assert not object_exists_raw(server.url, bucket.name, "u.bin")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a" * 1025, id="1025-ascii"),
        pytest.param("é" * 512 + "a", id="1025-bytes-utf8-in-513-chars"),
        pytest.param("line\nfeed", id="LF"),
        pytest.param("carriage\rreturn", id="CR"),
        pytest.param("nul\0char", id="NUL"),
        pytest.param(".", id="dot"),
        pytest.param("..", id="dot-dot"),
    ],
)
def test_invalid_object_names_rejected(gcs_client, server, name):
    bucket = make_bucket(gcs_client)
    with pytest.raises(gexc.BadRequest):
        bucket.blob(name).upload_from_string(b"x")
    resp = raw_multipart(server.url, bucket.name, {"name": name}, b"x")
    assert_gcs_error_response(resp, 400)
    resp = requests.post(
        upload_url(server.url, bucket.name),
        params={"uploadType": "media", "name": name},
        data=b"x",
        timeout=HTTP_TIMEOUT,
    )
    assert_gcs_error_response(resp, 400)
    resp = requests.post(
        upload_url(server.url, bucket.name),
        params={"uploadType": "resumable"},
        json={"name": name},
        timeout=HTTP_TIMEOUT,
    )
    assert_gcs_error_response(resp, 400)
    assert list(gcs_client.list_blobs(bucket, versions=True)) == []


def test_unknown_query_values_rejected(gcs_client, server):
    bucket = make_bucket(gcs_client)
    upload(bucket, "o.txt", b"x")
    base = server.url

    resp = requests.post(upload_url(base, bucket.name), params={"uploadType": "bogus", "name": "z"}, data=b"x", timeout=HTTP_TIMEOUT)
    assert_gcs_error_response(resp, 400)
    resp = requests.post(upload_url(base, bucket.name), params={"name": "z"}, data=b"x", timeout=HTTP_TIMEOUT)
    assert_gcs_error_response(resp, 400)  # no uploadType at all
    assert not object_exists_raw(base, bucket.name, "z")

    for url, params in [
        (object_url(base, bucket.name, "o.txt"), {"alt": "bogus"}),
        (object_url(base, bucket.name, "o.txt"), {"projection": "bogus"}),
        (object_url(base, bucket.name, "o.txt"), {"ifGenerationMatch": "not-a-number"}),
        (object_url(base, bucket.name, "o.txt"), {"generation": "abc"}),
        (f"{base}/storage/v1/b/{bucket.name}/o", {"maxResults": "abc"}),
        (f"{base}/storage/v1/b/{bucket.name}/o", {"versions": "maybe"}),
        (f"{base}/storage/v1/b/{bucket.name}", {"projection": "bogus"}),
        (f"{base}/storage/v1/b", {"project": PROJECT, "maxResults": "-1"}),
    ]:
        resp = requests.get(url, params=params, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 400, (url, params, resp.status_code, resp.text[:200])
        assert_gcs_error_response(resp, 400)

    # Booleans arrive as Python str(bool); any case is fine.
    for value in ("True", "true", "False", "false"):
        resp = requests.get(f"{base}/storage/v1/b/{bucket.name}/o", params={"versions": value}, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 200, (value, resp.text)


def _raw_http(base: str, request: bytes, timeout: float = 15.0) -> bytes:
    """Send ``request`` on a fresh connection, half-close it, return whatever comes back."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (socket.timeout, ConnectionResetError):
            pass
    return b"".join(chunks)


def test_truncated_upload_bodies_store_nothing(gcs_client, server):
    """A body shorter than its Content-Length (client went away) → nothing stored, no panic."""
    bucket = make_bucket(gcs_client)
    host = urlsplit(server.url).netloc
    data = random_bytes(100 * KiB)

    req = (
        f"POST /upload/storage/v1/b/{bucket.name}/o?uploadType=media&name=trunc-media HTTP/1.1\r\n"
        f"Host: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: {len(data) * 2}\r\n\r\n"
    ).encode() + data
    reply = _raw_http(server.url, req)
    assert not reply.startswith(b"HTTP/1.1 200"), reply[:200]

    body, ctype = multipart_body({"name": "trunc-multi"}, data)
    req = (
        f"POST /upload/storage/v1/b/{bucket.name}/o?uploadType=multipart HTTP/1.1\r\n"
        f"Host: {host}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body) + 1000}\r\n\r\n"
    ).encode() + body
    reply = _raw_http(server.url, req)
    assert not reply.startswith(b"HTTP/1.1 200"), reply[:200]

    session = raw_initiate(server.url, bucket.name, {"name": "trunc-resumable"})
    sp = urlsplit(session)
    path = f"{sp.path}?{sp.query}" if sp.query else sp.path
    req = (
        f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Range: bytes 0-{len(data) - 1}/{len(data)}\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data[: len(data) // 2]
    reply = _raw_http(server.url, req)
    assert not reply.startswith(b"HTTP/1.1 200"), reply[:200]

    time.sleep(0.5)
    for name in ("trunc-media", "trunc-multi", "trunc-resumable"):
        assert not object_exists_raw(server.url, bucket.name, name), name
    assert list(gcs_client.list_blobs(bucket, versions=True)) == []
    assert server.running, "the server died on a truncated body"
    # The server still works.
    assert upload(bucket, "after", b"fine").download_as_bytes() == b"fine"


def test_error_body_format_on_json_api(gcs_client, server):
    bucket = make_bucket(gcs_client)
    resp = requests.get(object_url(server.url, bucket.name, "dir/a b.txt"), timeout=HTTP_TIMEOUT)
    err = assert_gcs_error_response(resp, 404, "notFound")
    assert resp.headers["Content-Type"].startswith("application/json")
    assert err["errors"][0]["domain"] == "global"
    resp = requests.post(
        f"{server.url}/storage/v1/b", params={"project": PROJECT}, json={"name": bucket.name}, timeout=HTTP_TIMEOUT
    )
    assert_gcs_error_response(resp, 409, "conflict")
    upload(bucket, "x", b"x")
    resp = requests.delete(
        object_url(server.url, bucket.name, "x"), params={"ifGenerationMatch": "1"}, timeout=HTTP_TIMEOUT
    )
    assert_gcs_error_response(resp, 412, "conditionNotMet")


# ======================================================================================
# 15. Resumable protocol and restart
# ======================================================================================


def test_resumable_status_query_before_any_data(gcs_client, server):
    bucket = make_bucket(gcs_client)
    session = raw_initiate(server.url, bucket.name, {"name": "s.bin"})
    resp = status_query(session)
    assert resp.status_code == 308
    assert "Range" not in resp.headers, "nothing persisted yet: 308 without Range"
    data = random_bytes(3 * CHUNK + 7)
    # Known total on every chunk.
    for i in range(3):
        resp = raw_put(session, data[i * CHUNK : (i + 1) * CHUNK], f"bytes {i * CHUNK}-{(i + 1) * CHUNK - 1}/{len(data)}")
        assert resp.status_code == 308, resp.text
        assert resp.headers["Range"] == f"bytes=0-{(i + 1) * CHUNK - 1}"
        resp = status_query(session)
        assert resp.status_code == 308
        assert resp.headers["Range"] == f"bytes=0-{(i + 1) * CHUNK - 1}"
    resp = raw_put(session, data[3 * CHUNK :], f"bytes {3 * CHUNK}-{len(data) - 1}/{len(data)}")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["size"] == str(len(data))
    assert body["crc32c"] == gcs_crc32c_b64(data)
    assert body["md5Hash"] == gcs_md5_b64(data)
    assert bucket.blob("s.bin").download_as_bytes(checksum="md5") == data


def test_resumable_session_survives_restart(gcs_client, new_gcs_client, server):
    bucket = make_bucket(gcs_client)
    data = random_bytes(CHUNK + 54321)
    blob = bucket.blob("dir/restart.bin")
    session = blob.create_resumable_upload_session(content_type="application/octet-stream")
    assert "upload_id=" in session

    resp = raw_put(session, data[:CHUNK], f"bytes 0-{CHUNK - 1}/*")
    assert resp.status_code == 308, resp.text
    assert resp.headers["Range"] == f"bytes=0-{CHUNK - 1}"

    server.restart()  # the port changes; keep path + query
    session = rebase(session, server.url)

    resp = status_query(session)
    assert resp.status_code == 308, resp.text
    assert resp.headers["Range"] == f"bytes=0-{CHUNK - 1}"

    resp = raw_put(session, data[CHUNK:], f"bytes {CHUNK}-{len(data) - 1}/{len(data)}")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["name"] == "dir/restart.bin"
    assert body["size"] == str(len(data))
    assert body["crc32c"] == gcs_crc32c_b64(data), "the running CRC32C must survive the restart"
    assert body["md5Hash"] == gcs_md5_b64(data), "the running MD5 must survive the restart"

    client = new_gcs_client()
    b2 = client.bucket(bucket.name)
    assert b2.blob("dir/restart.bin").download_as_bytes(checksum="md5") == data
    assert b2.blob("dir/restart.bin").download_as_bytes(checksum="crc32c") == data
    assert_hashes(b2.get_blob("dir/restart.bin"), data)


def test_resumable_session_survives_restart_mid_multi_chunk(gcs_client, new_gcs_client, server):
    """Two chunks before and two after a restart, with the total unknown until the end."""
    bucket = make_bucket(gcs_client)
    data = random_bytes(4 * CHUNK + 1)
    session = raw_initiate(server.url, bucket.name, {"name": "multi.bin"})
    for i in range(2):
        resp = raw_put(session, data[i * CHUNK : (i + 1) * CHUNK], f"bytes {i * CHUNK}-{(i + 1) * CHUNK - 1}/*")
        assert resp.status_code == 308
    server.restart()
    session = rebase(session, server.url)
    resp = status_query(session)
    assert resp.status_code == 308 and resp.headers["Range"] == f"bytes=0-{2 * CHUNK - 1}"
    for i in range(2, 4):
        resp = raw_put(session, data[i * CHUNK : (i + 1) * CHUNK], f"bytes {i * CHUNK}-{(i + 1) * CHUNK - 1}/*")
        assert resp.status_code == 308
        assert resp.headers["Range"] == f"bytes=0-{(i + 1) * CHUNK - 1}"
    resp = raw_put(session, data[4 * CHUNK :], f"bytes {4 * CHUNK}-{len(data) - 1}/{len(data)}",
                   headers={"x-goog-hash": f"crc32c={gcs_crc32c_b64(data)}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["md5Hash"] == gcs_md5_b64(data)
    assert resp.json()["crc32c"] == gcs_crc32c_b64(data)
    client = new_gcs_client()
    assert client.bucket(bucket.name).blob("multi.bin").download_as_bytes(checksum="md5") == data


def test_objects_survive_restart(gcs_client, new_gcs_client, server):
    bucket = make_versioned_bucket(gcs_client)
    small = b"small object"
    big = random_bytes(CHUNK * 3 + 11)
    g1 = upload(bucket, "small.txt", small, content_type="text/plain").generation
    g2 = upload(bucket, "small.txt", small + b" v2").generation
    upload(bucket, "big.bin", big)
    server.restart()
    client = new_gcs_client()
    b2 = client.get_bucket(bucket.name)
    assert b2.versioning_enabled is True
    assert b2.blob("small.txt", generation=g1).download_as_bytes() == small
    assert b2.blob("small.txt").download_as_bytes(checksum="md5") == small + b" v2"
    assert b2.get_blob("small.txt").generation == g2
    assert b2.blob("big.bin").download_as_bytes(checksum="crc32c") == big
    assert_hashes(b2.get_blob("big.bin"), big)


# ======================================================================================
# 16. No plaintext at rest
# ======================================================================================


def _needles(label: str, data: bytes) -> Dict[str, bytes]:
    md5 = hashlib.md5(data).digest()
    crc = google_crc32c.value(data).to_bytes(4, "big")
    return {
        f"{label} md5 raw": md5,
        f"{label} md5 hex": md5.hex().encode(),
        f"{label} md5 HEX": md5.hex().upper().encode(),
        f"{label} md5 base64": base64.b64encode(md5),
        f"{label} crc32c base64": base64.b64encode(crc),
        f"{label} crc32c hex": crc.hex().encode(),
    }


def _scan(data_dir: Path, needles: Dict[str, bytes]) -> Tuple[List[str], int]:
    hits, total = [], 0
    for path in sorted(Path(data_dir).rglob("*")):
        try:
            if not path.is_file():
                continue
            content = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            continue  # SQLite temp files come and go
        total += len(content)
        for label, needle in needles.items():
            if needle in content:
                hits.append(f"{label} in {path}")
    return hits, total


def test_no_plaintext_or_md5_at_rest(gcs_client, server):
    bucket = make_bucket(gcs_client)
    unit1 = b"SEALSTORE-KNOWN-PLAINTEXT-ONE-" + secrets.token_hex(8).encode() + b"|"
    unit2 = b"SEALSTORE-KNOWN-PLAINTEXT-TWO-" + secrets.token_hex(8).encode() + b"|"
    unit3 = b"SEALSTORE-KNOWN-PLAINTEXT-SESSION-" + secrets.token_hex(8).encode() + b"|"
    small = unit1 * (200 * KiB // len(unit1))
    large = unit2 * ((3 * CHUNK + 1000) // len(unit2))
    partial = (unit3 * (CHUNK // len(unit3) + 1))[:CHUNK]

    upload(bucket, "object-one", small)  # multipart
    blob = bucket.blob("object-two")
    blob.chunk_size = CHUNK
    blob.upload_from_file(io.BytesIO(large), size=None)  # resumable, several chunks
    session = raw_initiate(server.url, bucket.name, {"name": "object-three"})
    resp = raw_put(session, partial, f"bytes 0-{CHUNK - 1}/*")  # an unfinished session
    assert resp.status_code == 308
    # Metadata updates do not leak anything either.
    meta_blob = bucket.blob("object-one")
    meta_blob.metadata = {"touched": "yes"}
    meta_blob.patch()

    assert bucket.blob("object-one").download_as_bytes() == small
    assert bucket.blob("object-two").download_as_bytes() == large

    needles = {"plaintext one": unit1, "plaintext two": unit2, "session plaintext": unit3}
    needles.update(_needles("one", small))
    needles.update(_needles("two", large))

    hits, total = _scan(server.data_dir, needles)
    assert total > len(small) + len(large), f"scanned only {total} bytes under {server.data_dir}"
    assert hits == [], "\n".join(hits)

    server.stop()
    hits, total = _scan(server.data_dir, needles)
    assert total > len(small) + len(large)
    assert hits == [], "\n".join(hits)
