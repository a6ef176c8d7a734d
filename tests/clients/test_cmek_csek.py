"""End-to-end tests of CMEK and CSEK (issue 6): every rule of the Cloud Storage CMEK seed.

Every test starts its own sealstore (fresh data dir, ``--fake-clock``) and drives it with the
official ``google-cloud-storage`` and ``google-cloud-kms`` (REST) clients, both on project
``test-project``. Raw ``requests`` calls are used where the client cannot send the request
(versioned key names, CSEK together with ``kmsKeyName``, malformed CSEK headers, copy and
compose with CSEK headers, a ``kmsKeyName`` metadata patch).

Rules: ``shared/MISSION.md`` §A; wire details: ``shared/reference/gcs-json-api.md`` §7, §8.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import secrets
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple
from urllib.parse import quote

import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud.storage import Blob
from google.protobuf import duration_pb2

from conftest import (
    ENCRYPTER_DECRYPTER_ROLE,
    LOCATION,
    ONE_DAY_S,
    PROJECT,
    STORAGE_EMULATOR_ENV,
    Algorithm,
    Purpose,
    State,
    create_key,
    create_key_ring_at,
    create_symmetric_key,
    csek_headers,
    csek_key_sha256,
    encrypt_symmetric,
    error_status,
    gcs_crc32c_b64,
    gcs_error,
    gcs_md5_b64,
    make_gcs_client,
    make_kms_client,
    set_version_state,
    storage_service_agent,
    gcs_error_reason,
    project_number,
    unique_bucket_name,
    unique_id,
    version_name,
    wait_enabled,
    whole_second_after,
)

KiB = 1024
MiB = 1024 * KiB
CHUNK = 256 * KiB  # the resumable-upload granularity
HTTP_TIMEOUT = 60

BUCKET_LOCATION = "US-EAST1"  # matches conftest.LOCATION ("us-east1") for the location rule

PERMISSION_DENIED_MESSAGE = (
    "Permission denied on Cloud KMS key. Please ensure that your Cloud Storage service account "
    "has been authorized to use this key."
)
CSEK_REQUIRED_MESSAGE = "The target object is encrypted by a customer-supplied encryption key."
BAD_KEY_MESSAGE = "Bad Cloud KMS crypto key"

BOUNDARY = "===============7330845974216740156=="


# ======================================================================================
# Helpers
# ======================================================================================


def q(name: str) -> str:
    return quote(name, safe="")


def object_url(base: str, bucket: str, name: str) -> str:
    return f"{base}/storage/v1/b/{bucket}/o/{q(name)}"


def download_url(base: str, bucket: str, name: str) -> str:
    return f"{base}/download/storage/v1/b/{bucket}/o/{q(name)}"


def upload_url(base: str, bucket: str) -> str:
    return f"{base}/upload/storage/v1/b/{bucket}/o"


def one_day() -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ONE_DAY_S)


def make_bucket(client, location: str = BUCKET_LOCATION, prefix: str = "cmek", **kwargs):
    return client.create_bucket(unique_bucket_name(prefix), location=location, **kwargs)


def make_key(kms_client, location: str = LOCATION, *, ring_name: Optional[str] = None, project: str = PROJECT, **fields):
    """A SOFTWARE ENCRYPT_DECRYPT key whose version 1 is ENABLED and primary, in a new key
    ring at ``location`` (or in ``ring_name``). Extra keyword args are CryptoKey fields."""
    if ring_name is None:
        ring_name = create_key_ring_at(kms_client, location, project=project).name
    key = create_symmetric_key(kms_client, ring_name, **fields)
    assert key.primary.name == version_name(key.name, 1)
    return key


def ring_of(key_name: str) -> str:
    return key_name.split("/cryptoKeys/")[0]


def set_default_key(bucket, key_name: Optional[str]) -> None:
    bucket.default_kms_key_name = key_name
    bucket.patch()
    assert bucket.default_kms_key_name == key_name


def rotate(kms_client, key_name: str) -> str:
    """Manual rotation: a new version, waited ENABLED, made primary. Returns its name."""
    created = kms_client.create_crypto_key_version(request={"parent": key_name, "crypto_key_version": {}})
    wait_enabled(kms_client, created.name)
    number = created.name.rsplit("/", 1)[1]
    updated = kms_client.update_crypto_key_primary_version(
        request={"name": key_name, "crypto_key_version_id": number}
    )
    assert updated.primary.name == created.name
    return created.name


def upload(bucket, name: str, data: bytes, *, kms_key_name=None, encryption_key=None, **kwargs):
    blob = bucket.blob(name, kms_key_name=kms_key_name, encryption_key=encryption_key)
    blob.upload_from_string(data, **kwargs)
    return blob


def download(bucket, name: str, encryption_key: Optional[bytes] = None) -> bytes:
    return bucket.blob(name, encryption_key=encryption_key).download_as_bytes()


def multipart_body(metadata: Dict, data: bytes, content_type: str = "application/octet-stream") -> Tuple[bytes, str]:
    import json

    body = (
        f"--{BOUNDARY}\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n".encode()
        + json.dumps(metadata).encode()
        + f"\r\n--{BOUNDARY}\r\ncontent-type: {content_type}\r\n\r\n".encode()
        + bytes(data)
        + f"\r\n--{BOUNDARY}--".encode()
    )
    return body, f'multipart/related; boundary="{BOUNDARY}"'


def raw_multipart(base: str, bucket: str, name: str, data: bytes, *, params=None, headers=None) -> requests.Response:
    body, ctype = multipart_body({"name": name}, data)
    return requests.post(
        upload_url(base, bucket),
        params={"uploadType": "multipart", **(params or {})},
        data=body,
        headers={"Content-Type": ctype, **(headers or {})},
        timeout=HTTP_TIMEOUT,
    )


def raw_initiate(base: str, bucket: str, name: str, *, params=None, headers=None) -> requests.Response:
    import json

    return requests.post(
        upload_url(base, bucket),
        params={"uploadType": "resumable", **(params or {})},
        data=json.dumps({"name": name}).encode(),
        headers={
            "Content-Type": "application/json; charset=UTF-8",
            "x-upload-content-type": "application/octet-stream",
            **(headers or {}),
        },
        timeout=HTTP_TIMEOUT,
    )


def raw_download(base: str, bucket: str, name: str, headers=None) -> requests.Response:
    return requests.get(
        download_url(base, bucket, name), params={"alt": "media"}, headers=headers or {}, timeout=HTTP_TIMEOUT
    )


def raw_copy(base: str, src_bucket: str, src: str, dst_bucket: str, dst: str, *, params=None, headers=None):
    return requests.post(
        f"{base}/storage/v1/b/{src_bucket}/o/{q(src)}/copyTo/b/{dst_bucket}/o/{q(dst)}",
        params=params or {},
        headers=headers or {},
        timeout=HTTP_TIMEOUT,
    )


def raw_compose(base: str, bucket: str, dst: str, sources: Iterable[str], *, params=None, headers=None):
    body = {"sourceObjects": [{"name": s} for s in sources], "destination": {}}
    return requests.post(
        f"{object_url(base, bucket, dst)}/compose",
        params=params or {},
        json=body,
        headers=headers or {},
        timeout=HTTP_TIMEOUT,
    )


def raw_patch_object(base: str, bucket: str, name: str, body: Dict) -> requests.Response:
    return requests.patch(
        object_url(base, bucket, name), params={"projection": "full"}, json=body, timeout=HTTP_TIMEOUT
    )


def get_json(base: str, bucket: str, name: str, headers=None) -> Dict:
    resp = requests.get(
        object_url(base, bucket, name), params={"projection": "noAcl"}, headers=headers or {}, timeout=HTTP_TIMEOUT
    )
    assert resp.status_code == 200, f"GET object {name} -> {resp.status_code}: {resp.text}"
    return resp.json()


def list_json(base: str, bucket: str) -> Dict[str, Dict]:
    """Raw listing (``versions=true``): name → item."""
    items: Dict[str, Dict] = {}
    token = None
    while True:
        params = {"projection": "noAcl", "versions": "true"}
        if token:
            params["pageToken"] = token
        resp = requests.get(f"{base}/storage/v1/b/{bucket}/o", params=params, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 200, f"list -> {resp.status_code}: {resp.text}"
        body = resp.json()
        for item in body.get("items", []):
            items[item["name"]] = item
        token = body.get("nextPageToken")
        if not token:
            return items


def assert_failure(
    exc_or_resp,
    status: int,
    reason: Optional[str] = None,
    *,
    message_prefix: Optional[str] = None,
    message_contains: Iterable[str] = (),
) -> str:
    """A GCS-format error: status, ``error.errors[0].reason`` and ``error.message``.

    A plain-text body (GCS does that on the media path) is accepted only when
    ``message_prefix`` is given and the text starts with it. Returns the message."""
    if isinstance(exc_or_resp, requests.Response):
        resp = exc_or_resp
        got = resp.status_code
    else:
        resp = getattr(exc_or_resp, "response", None)
        got = resp.status_code if resp is not None else getattr(exc_or_resp, "code", None)
    text = resp.text if resp is not None else ""
    assert got == status, f"expected {status}, got {got}: {text[:500]!r}"
    err = gcs_error(exc_or_resp)
    if err:
        assert err.get("code") == status, err
        errors = err.get("errors") or []
        assert errors and isinstance(errors[0], dict), err
        if reason is not None:
            assert errors[0].get("reason") == reason, f"expected reason {reason!r}: {err}"
        message = err.get("message") or ""
        assert message, err
    else:
        # Media endpoints answer in plain text (as GCS does), with the reason in a header.
        assert resp is not None and resp.headers.get("content-type", "").startswith("text/plain"), (
            f"{status} error body is neither GCS JSON nor plain text: {text[:500]!r}"
        )
        if reason is not None:
            assert gcs_error_reason(resp) == reason, f"expected reason {reason!r}: {text[:500]!r}"
        message = text
        assert message, "empty plain-text error"
    if message_prefix is not None:
        assert message.startswith(message_prefix), f"{message!r} does not start with {message_prefix!r}"
    for part in message_contains:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def assert_hashes_json(meta: Dict, data: bytes) -> None:
    assert meta.get("crc32c") == gcs_crc32c_b64(data), meta
    assert meta.get("md5Hash") == gcs_md5_b64(data), meta


def assert_no_hashes_json(meta: Dict) -> None:
    assert "crc32c" not in meta, f"crc32c must be withheld: {meta}"
    assert "md5Hash" not in meta, f"md5Hash must be withheld: {meta}"


def assert_nothing_stored(server, bucket, name: str, *, reuse: bool = True, **reuse_blob_kwargs) -> None:
    """No object (live or noncurrent) under ``name``; with ``reuse``, a create-if-absent upload
    (``ifGenerationMatch=0``) of that name then succeeds: the failure consumed nothing."""
    resp = requests.get(object_url(server.url, bucket.name, name), timeout=HTTP_TIMEOUT)
    assert resp.status_code == 404, f"{name} exists after a failed write: {resp.status_code} {resp.text}"
    assert name not in list_json(server.url, bucket.name), f"{name} is listed after a failed write"
    if not reuse:
        return
    data = b"the name is still free: " + name.encode()
    blob = bucket.blob(name, **reuse_blob_kwargs)
    blob.upload_from_string(data, if_generation_match=0)
    assert download(bucket, name, reuse_blob_kwargs.get("encryption_key")) == data


def policy_bindings(policy) -> List[Dict]:
    return [{"role": b.role, "members": list(b.members)} for b in policy.bindings]


def has_member(policy, role: str, member: str) -> bool:
    return any(b.role == role and member in b.members for b in policy.bindings)


def grant(kms_client, resource: str, member: str, role: str = ENCRYPTER_DECRYPTER_ROLE) -> None:
    policy = kms_client.get_iam_policy(request={"resource": resource})
    bindings = policy_bindings(policy)
    for b in bindings:
        if b["role"] == role:
            if member not in b["members"]:
                b["members"].append(member)
            break
    else:
        bindings.append({"role": role, "members": [member]})
    kms_client.set_iam_policy(request={"resource": resource, "policy": {"bindings": bindings, "etag": policy.etag}})
    assert has_member(kms_client.get_iam_policy(request={"resource": resource}), role, member)


def revoke(kms_client, resource: str, member: str, role: str = ENCRYPTER_DECRYPTER_ROLE) -> None:
    policy = kms_client.get_iam_policy(request={"resource": resource})
    bindings = []
    for b in policy_bindings(policy):
        if b["role"] == role:
            b["members"] = [m for m in b["members"] if m != member]
        if b["members"]:
            bindings.append(b)
    kms_client.set_iam_policy(request={"resource": resource, "policy": {"bindings": bindings, "etag": policy.etag}})
    assert not has_member(kms_client.get_iam_policy(request={"resource": resource}), role, member)


def agent_member(project: str = PROJECT) -> str:
    return f"serviceAccount:{storage_service_agent(project)}"


def scan_dir(data_dir: Path, needles: Dict[str, bytes]) -> Tuple[List[str], int]:
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


def storage_client_for(srv, monkeypatch):
    monkeypatch.setenv(STORAGE_EMULATOR_ENV, srv.url)
    return make_gcs_client(srv.url)


# ======================================================================================
# 1. CMEK on write: the key, its version, precedence
# ======================================================================================


def test_cmek_upload_with_kms_key_name_records_the_version(gcs_client, kms_client, server):
    key = make_key(kms_client)
    v1 = version_name(key.name, 1)
    bucket = make_bucket(gcs_client)
    data = os.urandom(100 * KiB)

    blob = upload(bucket, "dir/cmek.bin", data, kms_key_name=key.name)
    assert blob.kms_key_name == v1, "the object records the versioned key name"
    # The upload response carries the hashes.
    assert blob.crc32c == gcs_crc32c_b64(data)
    assert blob.md5_hash == gcs_md5_b64(data)

    assert bucket.get_blob("dir/cmek.bin").kms_key_name == v1
    meta = get_json(server.url, bucket.name, "dir/cmek.bin")
    assert meta["kmsKeyName"] == v1
    assert "customerEncryption" not in meta
    assert_hashes_json(meta, data)
    listed = {b.name: b for b in gcs_client.list_blobs(bucket)}
    assert listed["dir/cmek.bin"].kms_key_name == v1
    assert download(bucket, "dir/cmek.bin") == data
    assert bucket.blob("dir/cmek.bin").download_as_bytes(checksum="md5") == data

    # A resumable upload (several chunks, size unknown) naming the key.
    big = os.urandom(3 * CHUNK + 17)
    resumable = bucket.blob("resumable.bin", kms_key_name=key.name, chunk_size=CHUNK)
    resumable.upload_from_file(io.BytesIO(big), size=None)  # the client checks the final crc32c
    assert resumable.kms_key_name == v1
    assert bucket.get_blob("resumable.bin").kms_key_name == v1
    assert download(bucket, "resumable.bin") == big

    # A bucket without a default key and no key named: Google-managed.
    plain = upload(bucket, "plain.bin", b"plain")
    assert plain.kms_key_name is None
    assert "kmsKeyName" not in get_json(server.url, bucket.name, "plain.bin")


def test_bucket_default_key_applies_and_is_shown_unversioned(gcs_client, kms_client, server):
    key = make_key(kms_client)
    bucket = make_bucket(gcs_client)
    set_default_key(bucket, key.name)
    assert gcs_client.get_bucket(bucket.name).default_kms_key_name == key.name
    resp = requests.get(f"{server.url}/storage/v1/b/{bucket.name}", timeout=HTTP_TIMEOUT)
    assert resp.json()["encryption"]["defaultKmsKeyName"] == key.name, "no version on the bucket default"

    data = b"encrypted under the bucket default"
    blob = upload(bucket, "default.txt", data)
    assert blob.kms_key_name == version_name(key.name, 1)
    assert get_json(server.url, bucket.name, "default.txt")["kmsKeyName"] == version_name(key.name, 1)
    assert download(bucket, "default.txt") == data

    big = os.urandom(2 * CHUNK + 3)
    resumable = bucket.blob("resumable.bin", chunk_size=CHUNK)
    resumable.upload_from_file(io.BytesIO(big), size=None)
    assert resumable.kms_key_name == version_name(key.name, 1)
    assert download(bucket, "resumable.bin") == big

    # Clearing the default: new objects are Google-managed again, old ones keep their key.
    set_default_key(bucket, None)
    assert gcs_client.get_bucket(bucket.name).default_kms_key_name is None
    assert upload(bucket, "after-clear.txt", b"x").kms_key_name is None
    assert bucket.get_blob("default.txt").kms_key_name == version_name(key.name, 1)
    assert download(bucket, "default.txt") == data


def test_key_precedence_on_insert_compose_and_copy(gcs_client, kms_client, server):
    """CSEK > kmsKeyName / destinationKmsKeyName > bucket default > Google-managed."""
    default_key = make_key(kms_client)
    named_key = make_key(kms_client, ring_name=ring_of(default_key.name))
    d1, n1 = version_name(default_key.name, 1), version_name(named_key.name, 1)
    bucket = make_bucket(gcs_client)
    set_default_key(bucket, default_key.name)
    plain_bucket = make_bucket(gcs_client)

    # insert
    assert upload(bucket, "a", b"aaaa").kms_key_name == d1
    assert upload(bucket, "b", b"bbbb", kms_key_name=named_key.name).kms_key_name == n1, "the request's key wins"
    assert download(bucket, "a") == b"aaaa"
    assert download(bucket, "b") == b"bbbb"

    # compose: no parameter → bucket default; ?kmsKeyName → that key
    composed = bucket.blob("ab-default")
    composed.compose([bucket.blob("a"), bucket.blob("b")])
    assert composed.kms_key_name == d1
    assert download(bucket, "ab-default") == b"aaaabbbb"
    resp = raw_compose(server.url, bucket.name, "ab-named", ["a", "b"], params={"kmsKeyName": named_key.name})
    assert resp.status_code == 200, resp.text
    assert resp.json()["kmsKeyName"] == n1
    assert download(bucket, "ab-named") == b"aaaabbbb"

    # copy: no parameter → the destination bucket's default (or Google-managed);
    # ?destinationKmsKeyName → that key
    copied = bucket.copy_blob(bucket.blob("b"), bucket, "b-copy")
    assert copied.kms_key_name == d1
    assert download(bucket, "b-copy") == b"bbbb"
    resp = raw_copy(server.url, bucket.name, "a", bucket.name, "a-named", params={"destinationKmsKeyName": named_key.name})
    assert resp.status_code == 200, resp.text
    assert resp.json()["kmsKeyName"] == n1
    assert download(bucket, "a-named") == b"aaaa"
    to_plain = bucket.copy_blob(bucket.blob("a"), plain_bucket, "a-plain")
    assert to_plain.kms_key_name is None, "the destination bucket has no default key"
    assert "kmsKeyName" not in get_json(server.url, plain_bucket.name, "a-plain")
    assert download(plain_bucket, "a-plain") == b"aaaa"
    resp = raw_copy(
        server.url, plain_bucket.name, "a-plain", plain_bucket.name, "a-plain-named",
        params={"destinationKmsKeyName": named_key.name},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["kmsKeyName"] == n1

    # CSEK beats both the parameter-less default (see also the CSEK tests).
    csek = os.urandom(32)
    blob = upload(bucket, "c", b"cccc", encryption_key=csek)
    assert blob.kms_key_name is None


@pytest.mark.parametrize("op", ["insert", "compose", "copy", "bucket-default"])
def test_versioned_key_name_is_rejected(gcs_client, kms_client, server, op):
    key = make_key(kms_client)
    versioned = version_name(key.name, 1)
    bucket = make_bucket(gcs_client)
    upload(bucket, "src", b"source data")

    if op == "bucket-default":
        bucket.default_kms_key_name = versioned
        with pytest.raises(gexc.BadRequest) as info:
            bucket.patch()
        message = assert_failure(info.value, 400, "invalid")
        assert message.startswith(BAD_KEY_MESSAGE), message
        assert gcs_client.get_bucket(bucket.name).default_kms_key_name is None
        assert gcs_client.get_bucket(bucket.name).metageneration == 1
        return

    if op == "insert":  # the client strips versioned names, so raw
        resp = raw_multipart(server.url, bucket.name, "dst", b"payload", params={"kmsKeyName": versioned})
    elif op == "compose":
        resp = raw_compose(server.url, bucket.name, "dst", ["src"], params={"kmsKeyName": versioned})
    else:
        resp = raw_copy(server.url, bucket.name, "src", bucket.name, "dst", params={"destinationKmsKeyName": versioned})
    message = assert_failure(resp, 400, "invalid")
    assert message.startswith(BAD_KEY_MESSAGE), message
    assert versioned in message, message
    assert_nothing_stored(server, bucket, "dst")


# --------------------------------------------------------------------------------------
# Unusable keys
# --------------------------------------------------------------------------------------

# kind → (reason, message prefix or None)
UNUSABLE_KEYS = {
    "missing": ("cloudKmsEncryptionKeyNotFound", None),
    "asymmetric-sign": ("invalid", BAD_KEY_MESSAGE),
    "asymmetric-decrypt": ("invalid", BAD_KEY_MESSAGE),
    "no-primary": ("invalid", None),
    "disabled-primary": ("cloudKmsDisabledKey", None),
}


def unusable_key(kms_client, kind: str) -> str:
    ring = create_key_ring_at(kms_client, LOCATION)
    if kind == "missing":
        return f"{ring.name}/cryptoKeys/{unique_id('missing')}"
    if kind == "asymmetric-sign":
        return create_key(kms_client, ring.name, Purpose.ASYMMETRIC_SIGN, Algorithm.EC_SIGN_P256_SHA256).name
    if kind == "asymmetric-decrypt":
        return create_key(
            kms_client, ring.name, Purpose.ASYMMETRIC_DECRYPT, Algorithm.RSA_DECRYPT_OAEP_2048_SHA256
        ).name
    if kind == "no-primary":
        key = create_key(
            kms_client,
            ring.name,
            Purpose.ENCRYPT_DECRYPT,
            Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
            skip_initial_version_creation=True,
        )
        assert not key.primary.name
        return key.name
    if kind == "disabled-primary":
        key = make_key(kms_client, ring_name=ring.name)
        set_version_state(kms_client, version_name(key.name, 1), State.DISABLED)
        return key.name
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", list(UNUSABLE_KEYS))
@pytest.mark.parametrize("op", ["insert", "resumable", "compose", "copy", "bucket-default"])
def test_unusable_key_is_refused(gcs_client, kms_client, server, op, kind):
    reason, prefix = UNUSABLE_KEYS[kind]
    key_name = unusable_key(kms_client, kind)
    bucket = make_bucket(gcs_client)
    upload(bucket, "src", b"source data")

    if op == "bucket-default":
        bucket.default_kms_key_name = key_name
        with pytest.raises(gexc.BadRequest) as info:
            bucket.patch()
        assert_failure(info.value, 400, reason, message_prefix=prefix)
        fresh = gcs_client.get_bucket(bucket.name)
        assert fresh.default_kms_key_name is None
        assert fresh.metageneration == 1
        assert upload(bucket, "after", b"x").kms_key_name is None
        return

    if op == "insert":
        with pytest.raises(gexc.BadRequest) as info:
            upload(bucket, "dst", b"payload", kms_key_name=key_name)
        failure = info.value
    elif op == "resumable":
        blob = bucket.blob("dst", kms_key_name=key_name, chunk_size=CHUNK)
        with pytest.raises(gexc.BadRequest) as info:
            blob.upload_from_file(io.BytesIO(os.urandom(2 * CHUNK + 1)), size=None)
        failure = info.value
    elif op == "compose":
        failure = raw_compose(server.url, bucket.name, "dst", ["src", "src"], params={"kmsKeyName": key_name})
    else:
        failure = raw_copy(server.url, bucket.name, "src", bucket.name, "dst", params={"destinationKmsKeyName": key_name})
    assert_failure(failure, 400, reason, message_prefix=prefix)
    assert_nothing_stored(server, bucket, "dst")


# ======================================================================================
# 2. Location rule
# ======================================================================================

CUSTOM_DUAL = ["US-EAST1", "US-WEST1"]

# (bucket location, custom dataLocations, key ring location, allowed)
LOCATION_TABLE = [
    ("US-EAST1", None, "us-east1", True),
    ("US-WEST1", None, "us-west1", True),
    ("US", None, "us", True),
    ("EU", None, "eu", True),
    ("ASIA", None, "asia", True),
    ("NAM4", None, "nam4", True),
    ("EUR4", None, "eur4", True),
    ("ASIA1", None, "asia1", True),
    ("US", CUSTOM_DUAL, "us", True),
    ("US-EAST1", None, "us", False),
    ("US-EAST1", None, "us-west1", False),
    ("US-EAST1", None, "nam4", False),
    ("US-EAST1", None, "global", False),
    ("US", None, "us-east1", False),
    ("US", None, "eu", False),
    ("US", None, "nam4", False),
    ("US", None, "global", False),
    ("EU", None, "us", False),
    ("EU", None, "europe-west1", False),
    ("ASIA", None, "asia1", False),
    ("NAM4", None, "us", False),
    ("NAM4", None, "us-east1", False),
    ("NAM4", None, "us-central1", False),
    ("EUR4", None, "eu", False),
    ("ASIA1", None, "asia", False),
    ("ASIA1", None, "asia-northeast1", False),
    ("US", CUSTOM_DUAL, "us-east1", False),
    ("US", CUSTOM_DUAL, "us-west1", False),
    ("US", CUSTOM_DUAL, "nam4", False),
    ("US", CUSTOM_DUAL, "global", False),
]


def _location_id(case) -> str:
    bucket_loc, dual, ring_loc, allowed = case
    where = f"{bucket_loc}[{'+'.join(dual)}]" if dual else bucket_loc
    return f"{where}-{ring_loc}-{'ok' if allowed else 'refused'}"


def names_location(message: str, location: str) -> bool:
    """``location`` appears in ``message`` as a whole token (``us`` does not match ``US-EAST1``)."""
    return re.search(rf"(?<![\w-]){re.escape(location)}(?![\w-])", message, re.IGNORECASE) is not None


@pytest.mark.parametrize(
    "bucket_location, data_locations, ring_location, allowed",
    [pytest.param(*case, id=_location_id(case)) for case in LOCATION_TABLE],
)
def test_key_location_rule(gcs_client, kms_client, server, bucket_location, data_locations, ring_location, allowed):
    bucket = gcs_client.create_bucket(
        unique_bucket_name("loc"), location=bucket_location, data_locations=data_locations
    )
    assert bucket.location == bucket_location
    key = make_key(kms_client, ring_location)
    data = f"{bucket_location} with a key in {ring_location}".encode()

    if allowed:
        set_default_key(bucket, key.name)
        assert gcs_client.get_bucket(bucket.name).default_kms_key_name == key.name
        assert upload(bucket, "default.txt", data).kms_key_name == version_name(key.name, 1)
        assert upload(bucket, "named.txt", data, kms_key_name=key.name).kms_key_name == version_name(key.name, 1)
        assert download(bucket, "default.txt") == data
        assert download(bucket, "named.txt") == data
        return

    def check_message(message: str) -> None:
        assert names_location(message, ring_location), f"{ring_location!r} not named in {message!r}"
        if data_locations:
            assert names_location(message, bucket_location) or all(
                names_location(message, r) for r in data_locations
            ), f"bucket location not named in {message!r}"
        else:
            assert names_location(message, bucket_location), f"{bucket_location!r} not named in {message!r}"

    # Setting the key as the bucket default is validated.
    bucket.default_kms_key_name = key.name
    with pytest.raises(gexc.BadRequest) as info:
        bucket.patch()
    check_message(assert_failure(info.value, 400, "cloudKmsKeyLocationNotAllowed"))
    fresh = gcs_client.get_bucket(bucket.name)
    assert fresh.default_kms_key_name is None
    assert fresh.metageneration == 1

    # So is a write naming it.
    with pytest.raises(gexc.BadRequest) as info:
        upload(bucket, "named.txt", data, kms_key_name=key.name)
    check_message(assert_failure(info.value, 400, "cloudKmsKeyLocationNotAllowed"))
    assert_nothing_stored(server, bucket, "named.txt")


# ======================================================================================
# 3. Service agent
# ======================================================================================


def test_service_agent_email(gcs_client, server):
    assert gcs_client.get_service_account_email() == storage_service_agent(PROJECT)
    assert gcs_client.get_service_account_email(project="other-project") == storage_service_agent("other-project")
    resp = requests.get(f"{server.url}/storage/v1/projects/{PROJECT}/serviceAccount", timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["kind"] == "storage#serviceAccount"
    number = project_number(PROJECT)
    assert body["email_address"] == f"service-{number}@gs-project-accounts.iam.gserviceaccount.com"
    # The project may be named by its number too, as gsutil does.
    by_number = requests.get(f"{server.url}/storage/v1/projects/{number}/serviceAccount", timeout=HTTP_TIMEOUT)
    assert by_number.status_code == 200, by_number.text
    assert by_number.json()["email_address"] == body["email_address"]
    # Every bucket reports its project's number.
    bucket = gcs_client.create_bucket(f"pn-{uuid.uuid4().hex[:10]}", location="US-EAST1")
    assert str(bucket.project_number) == number


def test_new_keys_grant_their_project_service_agent(kms_client):
    for project in (PROJECT, "other-project"):
        key = make_key(kms_client, LOCATION, project=project)
        policy = kms_client.get_iam_policy(request={"resource": key.name})
        assert has_member(policy, ENCRYPTER_DECRYPTER_ROLE, agent_member(project)), policy_bindings(policy)
        if project != PROJECT:
            assert not has_member(policy, ENCRYPTER_DECRYPTER_ROLE, agent_member(PROJECT))


def test_service_agent_without_grant_is_forbidden(gcs_client, kms_client, server):
    key = make_key(kms_client)
    member = agent_member(PROJECT)
    assert has_member(kms_client.get_iam_policy(request={"resource": key.name}), ENCRYPTER_DECRYPTER_ROLE, member)
    bucket = make_bucket(gcs_client)
    default_bucket = make_bucket(gcs_client)
    set_default_key(default_bucket, key.name)
    data = os.urandom(40 * KiB)
    upload(bucket, "before.bin", data, kms_key_name=key.name)
    upload(default_bucket, "before.bin", data)

    def assert_denied() -> None:
        with pytest.raises(gexc.Forbidden) as info:
            upload(bucket, "denied.bin", data, kms_key_name=key.name)
        assert_failure(info.value, 403, "forbidden", message_contains=(PERMISSION_DENIED_MESSAGE,))
        with pytest.raises(gexc.Forbidden) as info:
            upload(default_bucket, "denied.bin", data)
        assert_failure(info.value, 403, "forbidden", message_contains=(PERMISSION_DENIED_MESSAGE,))
        for b in (bucket, default_bucket):
            with pytest.raises(gexc.Forbidden) as info:
                download(b, "before.bin")
            assert_failure(info.value, 403, "forbidden", message_contains=(PERMISSION_DENIED_MESSAGE,))
            assert_nothing_stored(server, b, "denied.bin", reuse=False)

    def assert_allowed() -> None:
        for b in (bucket, default_bucket):
            assert download(b, "before.bin") == data
        assert upload(bucket, "allowed.bin", data, kms_key_name=key.name).kms_key_name == version_name(key.name, 1)
        assert upload(default_bucket, "allowed.bin", data).kms_key_name == version_name(key.name, 1)
        for b in (bucket, default_bucket):
            assert download(b, "allowed.bin") == data
            b.delete_blob("allowed.bin")

    # Remove the agent's grant on the key: uploads and downloads with the key → 403.
    revoke(kms_client, key.name, member)
    assert_denied()
    # The name was not consumed.
    assert_nothing_stored(server, bucket, "denied.bin")
    bucket.delete_blob("denied.bin")

    # Grant again on the key: access comes back.
    grant(kms_client, key.name, member)
    assert_allowed()

    # Remove it again, then grant on the key ring instead (inherited by the key).
    revoke(kms_client, key.name, member)
    assert_denied()
    grant(kms_client, ring_of(key.name), member)
    assert_allowed()


# ======================================================================================
# 4. Reads of CMEK objects: disable / destroy, metadata, hashes
# ======================================================================================


def test_listing_omits_hashes_of_cmek_objects(gcs_client, kms_client, server):
    key = make_key(kms_client)
    other = make_key(kms_client, ring_name=ring_of(key.name))
    bucket = make_bucket(gcs_client)
    set_default_key(bucket, key.name)
    plain_bucket = make_bucket(gcs_client)
    objects = {
        "by-default": os.urandom(1000),
        "by-param": os.urandom(2000),
    }
    upload(bucket, "by-default", objects["by-default"])
    upload(bucket, "by-param", objects["by-param"], kms_key_name=other.name)
    plain = b"google-managed"
    upload(plain_bucket, "plain", plain)

    items = list_json(server.url, bucket.name)
    assert set(items) == {"by-default", "by-param"}
    assert items["by-default"]["kmsKeyName"] == version_name(key.name, 1)
    assert items["by-param"]["kmsKeyName"] == version_name(other.name, 1)
    for name, data in objects.items():
        assert_no_hashes_json(items[name])
        assert items[name]["size"] == str(len(data))
        # A metadata GET returns them (the version is usable).
        assert_hashes_json(get_json(server.url, bucket.name, name), data)
        got = bucket.get_blob(name)
        assert got.crc32c == gcs_crc32c_b64(data) and got.md5_hash == gcs_md5_b64(data)
    for blob in gcs_client.list_blobs(bucket):
        assert blob.crc32c is None and blob.md5_hash is None, blob.name
        assert blob.kms_key_name.endswith("/cryptoKeyVersions/1"), blob.kms_key_name
    # Google-managed objects keep their hashes in listings.
    assert_hashes_json(list_json(server.url, plain_bucket.name)["plain"], plain)


def test_disabled_version_blocks_data_until_enabled(gcs_client, kms_client, server):
    key = make_key(kms_client)
    v1 = version_name(key.name, 1)
    bucket = make_bucket(gcs_client)
    data = os.urandom(64 * KiB)
    upload(bucket, "cmek.bin", data, kms_key_name=key.name)
    upload(bucket, "doomed.bin", b"deleted while disabled", kms_key_name=key.name)
    upload(bucket, "plain.bin", b"plain")
    assert_hashes_json(get_json(server.url, bucket.name, "cmek.bin"), data)

    set_version_state(kms_client, v1, State.DISABLED)

    # Data access fails: download, copy, compose.
    with pytest.raises(gexc.BadRequest) as info:
        download(bucket, "cmek.bin")
    assert_failure(info.value, 400, "cloudKmsDisabledKey")
    assert_failure(raw_download(server.url, bucket.name, "cmek.bin"), 400, "cloudKmsDisabledKey")
    with pytest.raises(gexc.BadRequest) as info:
        bucket.copy_blob(bucket.blob("cmek.bin"), bucket, "copy.bin")
    assert_failure(info.value, 400, "cloudKmsDisabledKey")
    assert_nothing_stored(server, bucket, "copy.bin", reuse=False)
    resp = raw_compose(server.url, bucket.name, "composed.bin", ["plain.bin", "cmek.bin"])
    assert_failure(resp, 400, "cloudKmsDisabledKey")
    assert_nothing_stored(server, bucket, "composed.bin", reuse=False)

    # Metadata get (without hashes), patch, list and delete still work.
    meta = get_json(server.url, bucket.name, "cmek.bin")
    assert meta["kmsKeyName"] == v1
    assert meta["size"] == str(len(data))
    assert_no_hashes_json(meta)
    blob = bucket.get_blob("cmek.bin")
    assert blob.kms_key_name == v1
    assert blob.crc32c is None and blob.md5_hash is None
    blob.metadata = {"state": "disabled"}
    blob.patch()
    assert blob.metageneration == 2
    assert bucket.get_blob("cmek.bin").metadata == {"state": "disabled"}
    items = list_json(server.url, bucket.name)
    assert set(items) == {"cmek.bin", "doomed.bin", "plain.bin"}
    assert_no_hashes_json(items["cmek.bin"])
    bucket.delete_blob("doomed.bin")
    assert bucket.get_blob("doomed.bin") is None

    # Enabling restores access at once.
    set_version_state(kms_client, v1, State.ENABLED)
    assert download(bucket, "cmek.bin") == data
    assert_hashes_json(get_json(server.url, bucket.name, "cmek.bin"), data)
    assert bucket.copy_blob(bucket.blob("cmek.bin"), bucket, "copy.bin").name == "copy.bin"
    assert download(bucket, "copy.bin") == data
    resp = raw_compose(server.url, bucket.name, "composed.bin", ["plain.bin", "cmek.bin"])
    assert resp.status_code == 200, resp.text
    assert download(bucket, "composed.bin") == b"plain" + data


def test_destroyed_version_blocks_downloads_forever(server, new_gcs_client, new_kms_client):
    kms_client = new_kms_client()
    gcs_client = new_gcs_client()
    key = make_key(kms_client, destroy_scheduled_duration=one_day())
    v1 = version_name(key.name, 1)
    bucket = make_bucket(gcs_client)
    data = os.urandom(10 * KiB)
    upload(bucket, "kept.bin", data, kms_key_name=key.name)
    upload(bucket, "deleted-later.bin", b"bye", kms_key_name=key.name)

    scheduled = kms_client.destroy_crypto_key_version(request={"name": v1})
    assert scheduled.state == State.DESTROY_SCHEDULED
    # Scheduled for destruction is already unusable.
    with pytest.raises(gexc.BadRequest) as info:
        download(bucket, "kept.bin")
    assert_failure(info.value, 400, "cloudKmsDisabledKey")
    assert_no_hashes_json(get_json(server.url, bucket.name, "kept.bin"))

    server.advance(ONE_DAY_S + 60)
    assert kms_client.get_crypto_key_version(request={"name": v1}).state == State.DESTROYED

    def check_destroyed(gcs, base: str, expect_names) -> None:
        b = gcs.bucket(bucket.name)
        with pytest.raises(gexc.BadRequest) as info:
            download(b, "kept.bin")
        assert_failure(info.value, 400, "cloudKmsDisabledKey")
        assert_failure(raw_download(base, bucket.name, "kept.bin"), 400, "cloudKmsDisabledKey")
        resp = raw_copy(base, bucket.name, "kept.bin", bucket.name, "rescued.bin")
        assert_failure(resp, 400, "cloudKmsDisabledKey")
        items = list_json(base, bucket.name)
        assert set(items) == set(expect_names)
        for item in items.values():
            assert item["kmsKeyName"] == v1
            assert_no_hashes_json(item)
        meta = get_json(base, bucket.name, "kept.bin")
        assert meta["size"] == str(len(data))
        assert_no_hashes_json(meta)

    check_destroyed(gcs_client, server.url, {"kept.bin", "deleted-later.bin"})

    server.restart()
    gcs_client = new_gcs_client()
    kms_client = new_kms_client()
    assert kms_client.get_crypto_key_version(request={"name": v1}).state == State.DESTROYED
    server.advance(30 * ONE_DAY_S)
    check_destroyed(gcs_client, server.url, {"kept.bin", "deleted-later.bin"})

    # Delete still works.
    gcs_client.bucket(bucket.name).delete_blob("deleted-later.bin")
    check_destroyed(gcs_client, server.url, {"kept.bin"})


def test_metadata_patch_cannot_set_or_change_kms_key_name(gcs_client, kms_client, server):
    key = make_key(kms_client)
    other = make_key(kms_client, ring_name=ring_of(key.name))
    v1 = version_name(key.name, 1)
    bucket = make_bucket(gcs_client)
    data = b"cmek object"
    upload(bucket, "cmek.txt", data, kms_key_name=key.name)
    upload(bucket, "plain.txt", b"plain object")

    for name, value in [
        ("cmek.txt", other.name),
        ("cmek.txt", version_name(other.name, 1)),
        ("plain.txt", key.name),
    ]:
        resp = raw_patch_object(server.url, bucket.name, name, {"kmsKeyName": value})
        assert_failure(resp, 400, "cloudKmsCannotChangeKeyName")

    meta = get_json(server.url, bucket.name, "cmek.txt")
    assert meta["kmsKeyName"] == v1
    assert meta["metageneration"] == "1"
    meta = get_json(server.url, bucket.name, "plain.txt")
    assert "kmsKeyName" not in meta
    assert meta["metageneration"] == "1"

    # Other metadata changes work on a CMEK object; a full update that echoes the stored
    # (versioned) key name back is not a change of key.
    blob = bucket.get_blob("cmek.txt")
    blob.metadata = {"k": "v"}
    blob.patch()
    assert blob.metageneration == 2
    assert blob.kms_key_name == v1
    blob.content_type = "text/plain"
    blob.update()
    assert blob.metageneration == 3
    assert blob.kms_key_name == v1
    assert download(bucket, "cmek.txt") == data


# ======================================================================================
# 5. Rotation
# ======================================================================================


def test_manual_rotation_new_writes_use_new_primary(gcs_client, kms_client, server):
    key = make_key(kms_client)
    v1, v2 = version_name(key.name, 1), version_name(key.name, 2)
    bucket = make_bucket(gcs_client)
    set_default_key(bucket, key.name)
    named_bucket = make_bucket(gcs_client)
    d1, d2 = os.urandom(5000), os.urandom(6000)

    assert upload(bucket, "obj1", d1).kms_key_name == v1
    assert upload(named_bucket, "obj1", d1, kms_key_name=key.name).kms_key_name == v1

    assert rotate(kms_client, key.name) == v2

    obj2 = upload(bucket, "obj2", d2)
    assert obj2.kms_key_name == v2
    assert upload(named_bucket, "obj2", d2, kms_key_name=key.name).kms_key_name == v2
    assert gcs_client.get_bucket(bucket.name).default_kms_key_name == key.name, "the default stays unversioned"

    for b in (bucket, named_bucket):
        assert b.get_blob("obj1").kms_key_name == v1
        assert b.get_blob("obj2").kms_key_name == v2
        items = list_json(server.url, b.name)
        assert items["obj1"]["kmsKeyName"] == v1 and items["obj2"]["kmsKeyName"] == v2
        assert download(b, "obj1") == d1
        assert download(b, "obj2") == d2
    # The old version is not disabled by the rotation.
    assert kms_client.get_crypto_key_version(request={"name": v1}).state == State.ENABLED


def test_automatic_rotation_on_the_fake_clock(gcs_client, kms_client, server):
    ring = create_key_ring_at(kms_client, LOCATION)
    first_rotation = whole_second_after(ring.create_time) + timedelta(days=1)
    key = make_key(kms_client, ring_name=ring.name, rotation_period=one_day(), next_rotation_time=first_rotation)
    v1, v2 = version_name(key.name, 1), version_name(key.name, 2)
    bucket = make_bucket(gcs_client)
    set_default_key(bucket, key.name)
    d1, d2 = b"before the rotation", b"after the rotation"
    assert upload(bucket, "obj1", d1).kms_key_name == v1

    server.advance(ONE_DAY_S + 60)
    assert kms_client.get_crypto_key(request={"name": key.name}).primary.name == v2
    wait_enabled(kms_client, v2)

    assert upload(bucket, "obj2", d2).kms_key_name == v2
    assert upload(bucket, "obj3", d2, kms_key_name=key.name).kms_key_name == v2
    assert bucket.get_blob("obj1").kms_key_name == v1
    assert download(bucket, "obj1") == d1
    assert download(bucket, "obj2") == d2
    assert download(bucket, "obj3") == d2


# ======================================================================================
# Runbook and disabled primaries
# ======================================================================================


def test_key_replacement_runbook_steps_1_2_4(gcs_client, kms_client, server):
    old = make_key(kms_client)
    new = make_key(kms_client, ring_name=ring_of(old.name))
    old_v1, new_v1 = version_name(old.name, 1), version_name(new.name, 1)
    bucket = make_bucket(gcs_client)
    set_default_key(bucket, old.name)
    data = {name: os.urandom(3000) for name in ("a-default", "b-named", "c-default", "d-named", "e-default")}

    # Before: objects under the old key, by default and by name.
    assert upload(bucket, "a-default", data["a-default"]).kms_key_name == old_v1
    assert upload(bucket, "b-named", data["b-named"], kms_key_name=old.name).kms_key_name == old_v1

    # Step 1: switch the bucket default to the new key.
    set_default_key(bucket, new.name)
    assert gcs_client.get_bucket(bucket.name).default_kms_key_name == new.name
    assert upload(bucket, "c-default", data["c-default"]).kms_key_name == new_v1

    # Step 2: requests that named the old key name the new one.
    assert upload(bucket, "d-named", data["d-named"], kms_key_name=new.name).kms_key_name == new_v1

    # (Step 3, rewrite, is issue 7.) The listing shows which objects still use the old key.
    items = list_json(server.url, bucket.name)
    under_old = sorted(n for n, i in items.items() if i["kmsKeyName"].startswith(old.name + "/"))
    assert under_old == ["a-default", "b-named"]

    # Step 4: disable every version of the old key and watch for failures.
    for version in kms_client.list_crypto_key_versions(request={"parent": old.name}):
        set_version_state(kms_client, version.name, State.DISABLED)
    for name in ("a-default", "b-named"):
        with pytest.raises(gexc.BadRequest) as info:
            download(bucket, name)
        assert_failure(info.value, 400, "cloudKmsDisabledKey")
    for name in ("c-default", "d-named"):
        assert download(bucket, name) == data[name]
    # New uploads keep working under the new key; naming the old key now fails.
    assert upload(bucket, "e-default", data["e-default"]).kms_key_name == new_v1
    assert download(bucket, "e-default") == data["e-default"]
    with pytest.raises(gexc.BadRequest) as info:
        upload(bucket, "f-old", b"x", kms_key_name=old.name)
    assert_failure(info.value, 400, "cloudKmsDisabledKey")
    assert_nothing_stored(server, bucket, "f-old")


def test_disabled_primary_blocks_default_uploads_but_not_other_keys(gcs_client, kms_client, server):
    key = make_key(kms_client)
    other = make_key(kms_client, ring_name=ring_of(key.name))
    bucket = make_bucket(gcs_client)
    set_default_key(bucket, key.name)
    upload(bucket, "existing", b"x", kms_key_name=other.name)  # a readable copy source
    set_version_state(kms_client, version_name(key.name, 1), State.DISABLED)

    with pytest.raises(gexc.BadRequest) as info:
        upload(bucket, "blocked", b"payload")
    assert_failure(info.value, 400, "cloudKmsDisabledKey")
    blob = bucket.blob("blocked-resumable", chunk_size=CHUNK)
    with pytest.raises(gexc.BadRequest) as info:
        blob.upload_from_file(io.BytesIO(os.urandom(2 * CHUNK + 5)), size=None)
    assert_failure(info.value, 400, "cloudKmsDisabledKey")
    resp = raw_copy(server.url, bucket.name, "existing", bucket.name, "blocked-copy")
    assert_failure(resp, 400, "cloudKmsDisabledKey")
    for name in ("blocked", "blocked-resumable", "blocked-copy"):
        assert_nothing_stored(server, bucket, name, kms_key_name=other.name)

    # A request naming another valid key succeeds, and so does a CSEK.
    named = upload(bucket, "named", b"payload", kms_key_name=other.name)
    assert named.kms_key_name == version_name(other.name, 1)
    assert download(bucket, "named") == b"payload"
    csek = os.urandom(32)
    assert upload(bucket, "csek", b"payload", encryption_key=csek).kms_key_name is None
    assert download(bucket, "csek", csek) == b"payload"

    # A new primary makes the default usable again.
    v2 = rotate(kms_client, key.name)
    assert upload(bucket, "unblocked", b"payload").kms_key_name == v2
    assert download(bucket, "unblocked") == b"payload"


# ======================================================================================
# 6. CSEK
# ======================================================================================


def test_csek_write_and_read(gcs_client, server):
    bucket = make_bucket(gcs_client)
    key, wrong = os.urandom(32), os.urandom(32)
    data = os.urandom(50 * KiB)

    blob = Blob("secret.bin", bucket, encryption_key=key)
    blob.upload_from_string(data)
    assert blob._properties.get("customerEncryption") == {
        "encryptionAlgorithm": "AES256",
        "keySha256": csek_key_sha256(key),
    }
    assert blob.kms_key_name is None

    # No key → 400.
    with pytest.raises(gexc.BadRequest) as info:
        download(bucket, "secret.bin")
    assert_failure(
        info.value, 400, "resourceIsEncryptedWithCustomerEncryptionKey", message_prefix=CSEK_REQUIRED_MESSAGE
    )
    resp = raw_download(server.url, bucket.name, "secret.bin")
    assert_failure(resp, 400, "resourceIsEncryptedWithCustomerEncryptionKey", message_prefix=CSEK_REQUIRED_MESSAGE)
    assert data not in resp.content

    # Wrong key → 400.
    with pytest.raises(gexc.BadRequest) as info:
        download(bucket, "secret.bin", wrong)
    assert_failure(info.value, 400, "customerEncryptionKeyIsIncorrect")
    resp = raw_download(server.url, bucket.name, "secret.bin", headers=csek_headers(wrong))
    assert_failure(resp, 400, "customerEncryptionKeyIsIncorrect")

    # Right key → the data, with its hashes.
    assert download(bucket, "secret.bin", key) == data
    assert Blob("secret.bin", bucket, encryption_key=key).download_as_bytes(checksum="md5") == data
    resp = raw_download(server.url, bucket.name, "secret.bin", headers=csek_headers(key))
    assert resp.status_code == 200 and resp.content == data
    assert resp.headers["X-Goog-Hash"] == f"crc32c={gcs_crc32c_b64(data)},md5={gcs_md5_b64(data)}"
    ranged = requests.get(
        download_url(server.url, bucket.name, "secret.bin"),
        params={"alt": "media"},
        headers={**csek_headers(key), "Range": "bytes=10-19"},
        timeout=HTTP_TIMEOUT,
    )
    assert ranged.status_code == 206 and ranged.content == data[10:20]

    # A key for an object that is not CSEK-encrypted → 400.
    upload(bucket, "plain.bin", b"plain")
    with pytest.raises(gexc.BadRequest) as info:
        download(bucket, "plain.bin", key)
    assert_failure(info.value, 400, "resourceNotEncryptedWithCustomerEncryptionKey")


def test_csek_metadata_without_and_with_the_key(gcs_client, server):
    bucket = make_bucket(gcs_client)
    key = os.urandom(32)
    data = b"customer-supplied " * 100
    Blob("c.txt", bucket, encryption_key=key).upload_from_string(data)

    # Without the key: get works, without hashes; customerEncryption is there.
    meta = get_json(server.url, bucket.name, "c.txt")
    assert meta["customerEncryption"] == {"encryptionAlgorithm": "AES256", "keySha256": csek_key_sha256(key)}
    assert meta["size"] == str(len(data))
    assert "kmsKeyName" not in meta
    assert_no_hashes_json(meta)
    blob = bucket.get_blob("c.txt")
    assert blob.crc32c is None and blob.md5_hash is None

    # Patch and list work without the key.
    blob.metadata = {"color": "blue"}
    blob.patch()
    assert blob.metageneration == 2
    items = list_json(server.url, bucket.name)
    assert items["c.txt"]["customerEncryption"]["keySha256"] == csek_key_sha256(key)
    assert items["c.txt"]["metadata"] == {"color": "blue"}
    assert_no_hashes_json(items["c.txt"])
    assert [b.name for b in gcs_client.list_blobs(bucket)] == ["c.txt"]

    # With the right key, get returns the hashes.
    keyed = bucket.get_blob("c.txt", encryption_key=key)
    assert keyed.crc32c == gcs_crc32c_b64(data)
    assert keyed.md5_hash == gcs_md5_b64(data)
    assert_hashes_json(get_json(server.url, bucket.name, "c.txt", headers=csek_headers(key)), data)
    assert download(bucket, "c.txt", key) == data

    # Delete works without the key.
    bucket.delete_blob("c.txt")
    assert bucket.get_blob("c.txt") is None
    assert list_json(server.url, bucket.name) == {}


def test_csek_beats_the_bucket_default_cmek(gcs_client, kms_client, server):
    kms_key = make_key(kms_client)
    bucket = make_bucket(gcs_client)
    set_default_key(bucket, kms_key.name)
    key = os.urandom(32)
    data = b"CSEK wins"

    blob = Blob("c.txt", bucket, encryption_key=key)
    blob.upload_from_string(data)
    assert blob.kms_key_name is None
    meta = get_json(server.url, bucket.name, "c.txt")
    assert "kmsKeyName" not in meta
    assert meta["customerEncryption"]["keySha256"] == csek_key_sha256(key)
    assert "kmsKeyName" not in list_json(server.url, bucket.name)["c.txt"]
    assert download(bucket, "c.txt", key) == data
    with pytest.raises(gexc.BadRequest) as info:
        download(bucket, "c.txt")
    assert_failure(info.value, 400, "resourceIsEncryptedWithCustomerEncryptionKey", message_prefix=CSEK_REQUIRED_MESSAGE)

    # A CMEK object in the same bucket still reads without any CSEK.
    assert upload(bucket, "k.txt", b"cmek").kms_key_name == version_name(kms_key.name, 1)
    assert download(bucket, "k.txt") == b"cmek"


def test_csek_with_explicit_kms_key_name_is_rejected(gcs_client, kms_client, server):
    kms_key = make_key(kms_client)
    bucket = make_bucket(gcs_client)
    key = os.urandom(32)
    resp = raw_multipart(
        server.url, bucket.name, "both", b"payload", params={"kmsKeyName": kms_key.name}, headers=csek_headers(key)
    )
    assert_failure(resp, 400)
    resp = raw_initiate(
        server.url, bucket.name, "both-resumable", params={"kmsKeyName": kms_key.name}, headers=csek_headers(key)
    )
    assert_failure(resp, 400)
    assert_nothing_stored(server, bucket, "both")
    assert_nothing_stored(server, bucket, "both-resumable", encryption_key=key)
    # The client refuses the combination locally.
    with pytest.raises(ValueError):
        Blob("x", bucket, encryption_key=key, kms_key_name=kms_key.name)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _sha_b64(raw: bytes) -> str:
    return _b64(hashlib.sha256(raw).digest())


def malformed_headers(case: str, key: bytes) -> Dict[str, str]:
    good = csek_headers(key)
    if case == "key-not-base64":
        return {**good, "x-goog-encryption-key": "not*base64*at*all!"}
    if case == "key-31-bytes":
        short = key[:31]
        return {**good, "x-goog-encryption-key": _b64(short), "x-goog-encryption-key-sha256": _sha_b64(short)}
    if case == "key-33-bytes":
        long = key + b"\x01"
        return {**good, "x-goog-encryption-key": _b64(long), "x-goog-encryption-key-sha256": _sha_b64(long)}
    if case == "sha256-mismatch":
        return {**good, "x-goog-encryption-key-sha256": _sha_b64(b"something else")}
    if case == "sha256-missing":
        return {k: v for k, v in good.items() if k != "x-goog-encryption-key-sha256"}
    if case == "algorithm-aes128":
        return {**good, "x-goog-encryption-algorithm": "AES128"}
    if case == "algorithm-missing":
        return {k: v for k, v in good.items() if k != "x-goog-encryption-algorithm"}
    raise AssertionError(case)


MALFORMED_CASES = {
    "key-not-base64": "customerEncryptionKeyFormatIsInvalid",
    "key-31-bytes": "customerEncryptionKeyFormatIsInvalid",
    "key-33-bytes": "customerEncryptionKeyFormatIsInvalid",
    "sha256-mismatch": "customerEncryptionKeySha256IsInvalid",
    "sha256-missing": "customerEncryptionKeySha256IsInvalid",
    "algorithm-aes128": "customerEncryptionAlgorithmIsInvalid",
    "algorithm-missing": "customerEncryptionAlgorithmIsInvalid",
}


@pytest.mark.parametrize("case", list(MALFORMED_CASES))
@pytest.mark.parametrize("op", ["upload", "download"])
def test_csek_malformed_headers(gcs_client, server, op, case):
    reason = MALFORMED_CASES[case]
    bucket = make_bucket(gcs_client)
    key = os.urandom(32)
    headers = malformed_headers(case, key)
    if op == "upload":
        resp = raw_multipart(server.url, bucket.name, "bad", b"payload", headers=headers)
        assert_failure(resp, 400, reason)
        assert_nothing_stored(server, bucket, "bad", encryption_key=key)
    else:
        data = b"stored with a good key"
        Blob("obj", bucket, encryption_key=key).upload_from_string(data)
        resp = raw_download(server.url, bucket.name, "obj", headers=headers)
        assert_failure(resp, 400, reason)
        assert data not in resp.content
        assert download(bucket, "obj", key) == data


def test_csek_resumable_upload_over_8_mib(gcs_client, server):
    bucket = make_bucket(gcs_client)
    key = os.urandom(32)
    data = os.urandom(9 * MiB + 5)
    blob = Blob("big.bin", bucket, encryption_key=key, chunk_size=1 * MiB)
    blob.upload_from_file(io.BytesIO(data), size=len(data))  # resumable: > 8 MiB
    assert blob._properties["customerEncryption"]["keySha256"] == csek_key_sha256(key)
    assert blob.crc32c == gcs_crc32c_b64(data)  # the final response carries the hashes
    assert download(bucket, "big.bin", key) == data
    keyed = bucket.get_blob("big.bin", encryption_key=key)
    assert keyed.size == len(data)
    assert keyed.md5_hash == gcs_md5_b64(data)
    with pytest.raises(gexc.BadRequest) as info:
        download(bucket, "big.bin")
    assert_failure(info.value, 400, "resourceIsEncryptedWithCustomerEncryptionKey", message_prefix=CSEK_REQUIRED_MESSAGE)


def test_csek_copy_and_compose_with_plain_headers(gcs_client, server):
    bucket = make_bucket(gcs_client)
    key, wrong = os.urandom(32), os.urandom(32)
    a, b = b"first part|", b"second part"
    Blob("a", bucket, encryption_key=key).upload_from_string(a)
    Blob("b", bucket, encryption_key=key).upload_from_string(b)
    sha = csek_key_sha256(key)

    # copyTo: the source and destination both use the key in the plain headers.
    resp = raw_copy(server.url, bucket.name, "a", bucket.name, "a-copy", headers=csek_headers(key))
    assert resp.status_code == 200, resp.text
    assert resp.json()["customerEncryption"] == {"encryptionAlgorithm": "AES256", "keySha256": sha}
    assert download(bucket, "a-copy", key) == a
    # Without headers (as the Python client sends it) → 400, nothing stored.
    resp = raw_copy(server.url, bucket.name, "a", bucket.name, "a-copy2")
    assert_failure(resp, 400, "resourceIsEncryptedWithCustomerEncryptionKey", message_prefix=CSEK_REQUIRED_MESSAGE)
    with pytest.raises(gexc.BadRequest) as info:
        bucket.copy_blob(bucket.blob("a"), bucket, "a-copy2")
    assert_failure(info.value, 400, "resourceIsEncryptedWithCustomerEncryptionKey", message_prefix=CSEK_REQUIRED_MESSAGE)
    resp = raw_copy(server.url, bucket.name, "a", bucket.name, "a-copy2", headers=csek_headers(wrong))
    assert_failure(resp, 400, "customerEncryptionKeyIsIncorrect")
    assert_nothing_stored(server, bucket, "a-copy2", encryption_key=key)

    # compose: the destination is encrypted with the same key.
    resp = raw_compose(server.url, bucket.name, "ab", ["a", "b"], headers=csek_headers(key))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["customerEncryption"] == {"encryptionAlgorithm": "AES256", "keySha256": sha}
    assert body["componentCount"] == 2
    assert download(bucket, "ab", key) == a + b
    with pytest.raises(gexc.BadRequest):
        download(bucket, "ab")
    resp = raw_compose(server.url, bucket.name, "ab2", ["a", "b"])
    assert_failure(resp, 400, "resourceIsEncryptedWithCustomerEncryptionKey", message_prefix=CSEK_REQUIRED_MESSAGE)
    resp = raw_compose(server.url, bucket.name, "ab2", ["a", "b"], headers=csek_headers(wrong))
    assert_failure(resp, 400, "customerEncryptionKeyIsIncorrect")
    assert_nothing_stored(server, bucket, "ab2", encryption_key=key)


def test_csek_only_the_key_hash_is_stored(gcs_client, server):
    bucket = make_bucket(gcs_client)
    key = os.urandom(32)
    unit = b"SEALSTORE-CSEK-PLAINTEXT-" + secrets.token_hex(8).encode() + b"|"
    small = unit * (100 * KiB // len(unit))
    large = (unit * ((3 * CHUNK + 500) // len(unit) + 1))[: 3 * CHUNK + 500]
    partial = (unit * (CHUNK // len(unit) + 1))[:CHUNK]

    Blob("small", bucket, encryption_key=key).upload_from_string(small)
    big = Blob("large", bucket, encryption_key=key, chunk_size=CHUNK)
    big.upload_from_file(io.BytesIO(large), size=None)
    # An unfinished resumable session with the key.
    resp = raw_initiate(server.url, bucket.name, "unfinished", headers=csek_headers(key))
    assert resp.status_code in (200, 201), resp.text
    put = requests.put(
        resp.headers["Location"],
        data=partial,
        headers={"Content-Range": f"bytes 0-{CHUNK - 1}/*", **csek_headers(key)},
        timeout=HTTP_TIMEOUT,
    )
    assert put.status_code == 308, put.text
    assert download(bucket, "small", key) == small
    assert download(bucket, "large", key) == large

    needles = {
        "raw key": key,
        "base64 key": base64.b64encode(key),
        "urlsafe base64 key": base64.urlsafe_b64encode(key),
        "hex key": key.hex().encode(),
        "plaintext": unit,
    }
    for srv_running in (True, False):
        if not srv_running:
            server.stop()
        hits, total = scan_dir(server.data_dir, needles)
        assert total > len(small) + len(large), f"scanned only {total} bytes"
        assert hits == [], "\n".join(hits)


# ======================================================================================
# 7. Quotas
# ======================================================================================

QUOTA = 5


def _calls_until_refused(call, attempts: int) -> Tuple[int, List[Exception], bool]:
    """Runs ``call(i)`` ``attempts`` times; returns (successes before the first failure,
    all failures, whether a wall-clock minute boundary was crossed meanwhile)."""
    start = time.time()
    successes, failures = 0, []
    first_failure_at = None
    for i in range(attempts):
        try:
            call(i)
        except gexc.GoogleAPICallError as exc:
            failures.append(exc)
            if first_failure_at is None:
                first_failure_at = time.time()
            continue
        if not failures:
            successes += 1
    crossed = int(start // 60) != int((first_failure_at or time.time()) // 60)
    return successes, failures, crossed


def test_kms_quota_exceeded_is_resource_exhausted(server_factory):
    srv = server_factory("--kms-ops-per-minute", str(QUOTA))
    kms_client = make_kms_client(srv.url)
    key = make_key(kms_client)
    other_project_key = make_key(kms_client, project="other-project")

    successes, failures, crossed = _calls_until_refused(
        lambda i: encrypt_symmetric(kms_client, key.name, f"message {i}".encode()), 2 * QUOTA + 2
    )
    assert failures, "no encrypt was refused"
    assert 1 <= successes <= (2 * QUOTA if crossed else QUOTA), successes
    for exc in failures:
        assert isinstance(exc, gexc.TooManyRequests), repr(exc)
        assert exc.code == 429
        assert error_status(exc) == "RESOURCE_EXHAUSTED", exc
    # The quota is per project.
    assert encrypt_symmetric(kms_client, other_project_key.name, b"other project").name == version_name(
        other_project_key.name, 1
    )


def test_storage_cmek_quota_exceeded_is_rate_limited(server_factory, monkeypatch):
    srv = server_factory("--kms-ops-per-minute", str(QUOTA))
    kms_client = make_kms_client(srv.url)
    gcs_client = storage_client_for(srv, monkeypatch)
    key = make_key(kms_client)
    bucket = make_bucket(gcs_client)

    results: Dict[str, Optional[Exception]] = {}

    def write(i: int) -> None:
        name = f"cmek-{i:02d}"
        try:
            upload(bucket, name, f"object {i}".encode(), kms_key_name=key.name, retry=None)
        except gexc.GoogleAPICallError as exc:
            results[name] = exc
            raise
        results[name] = None

    successes, failures, crossed = _calls_until_refused(write, 2 * QUOTA + 2)
    assert failures, "no CMEK upload was rate limited"
    assert 1 <= successes <= (2 * QUOTA if crossed else QUOTA), successes
    for exc in failures:
        assert isinstance(exc, gexc.TooManyRequests), repr(exc)
        assert_failure(exc, 429, "rateLimitExceeded")

    # Nothing half-written: exactly the successful uploads exist.
    stored = set(list_json(srv.url, bucket.name))
    assert stored == {name for name, exc in results.items() if exc is None}
    for name, exc in results.items():
        if exc is not None:
            assert requests.get(object_url(srv.url, bucket.name, name), timeout=HTTP_TIMEOUT).status_code == 404

    # Google-managed uploads are not limited.
    for i in range(QUOTA + 2):
        data = f"google-managed {i}".encode()
        blob = upload(bucket, f"plain-{i}", data, retry=None)
        assert blob.kms_key_name is None
        assert download(bucket, f"plain-{i}") == data
