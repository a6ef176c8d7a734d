"""objects.rewrite (rewriteTo) with the official client and raw requests: key changes
re-encrypt, progress spans several calls and survives a restart, refusals."""

import base64
import hashlib
import json
import os

import pytest
import requests
from google.api_core import exceptions as gexc

from conftest import csek_headers, unique_bucket_name

MiB = 1024 * 1024


def md5_b64(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def make_key(kms_client, location, ring_id=None, key_id="k"):
    ring = kms_client.create_key_ring(
        request={
            "parent": f"projects/test-project/locations/{location}",
            "key_ring_id": ring_id or unique_bucket_name().replace("b-", "r-"),
            "key_ring": {},
        }
    )
    return kms_client.create_crypto_key(
        request={"parent": ring.name, "crypto_key_id": key_id, "crypto_key": {"purpose": 1}}
    )


def rewrite_all(dst, src):
    token, rewritten, total = dst.rewrite(src)
    calls = 1
    while token is not None:
        token, rewritten, total = dst.rewrite(src, token=token)
        calls += 1
    assert rewritten == total
    return calls


def test_rewrite_between_keys_reencrypts(gcs_client, kms_client):
    bucket = gcs_client.create_bucket(unique_bucket_name(), location="US")
    k1 = make_key(kms_client, "us", key_id="k1")
    k2 = make_key(kms_client, "us", key_id="k2")
    data = os.urandom(3 * MiB + 17)
    csek = os.urandom(32)

    # CSEK -> CMEK
    bucket.blob("a", encryption_key=csek).upload_from_string(data)
    dst = bucket.blob("b", kms_key_name=k1.name)
    rewrite_all(dst, bucket.blob("a", encryption_key=csek))
    got = bucket.get_blob("b")
    assert got.kms_key_name.startswith(k1.name + "/cryptoKeyVersions/")
    assert got.md5_hash == md5_b64(data)
    assert got.download_as_bytes() == data

    # CMEK -> another key
    dst = bucket.blob("c", kms_key_name=k2.name)
    rewrite_all(dst, bucket.blob("b"))
    got = bucket.get_blob("c")
    assert got.kms_key_name.startswith(k2.name + "/")
    assert got.download_as_bytes() == data

    # CMEK -> CSEK
    new_csek = os.urandom(32)
    dst = bucket.blob("d", encryption_key=new_csek)
    rewrite_all(dst, bucket.blob("c"))
    got = bucket.get_blob("d", encryption_key=new_csek)
    assert got.kms_key_name is None
    assert got.md5_hash == md5_b64(data)
    assert bucket.blob("d", encryption_key=new_csek).download_as_bytes() == data
    with pytest.raises(gexc.BadRequest):
        bucket.blob("d").download_as_bytes()


def _raw_rewrite(url, headers, token=None):
    u = url + (f"&rewriteToken={token}" if token else "")
    r = requests.post(u, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_rewrite_40_mib_in_1_mib_calls_survives_restart(server, new_gcs_client):
    client = new_gcs_client()
    bucket = client.create_bucket(unique_bucket_name(), location="US-EAST1")
    data = os.urandom(40 * MiB)
    blob = bucket.blob("big", chunk_size=8 * MiB)
    blob.upload_from_string(data)
    path = f"/storage/v1/b/{bucket.name}/o/big/rewriteTo/b/{bucket.name}/o/copy?maxBytesRewrittenPerCall={MiB}"
    first = _raw_rewrite(server.url + path, {})
    assert first["done"] is False
    assert int(first["totalBytesRewritten"]) == MiB
    assert int(first["objectSize"]) == len(data)
    token = first["rewriteToken"]
    calls = 1
    # Half way, restart the server: the token still works.
    while True:
        resp = _raw_rewrite(server.url + path, {}, token)
        calls += 1
        if calls == 20:
            server.restart()
        if resp["done"]:
            break
        token = resp["rewriteToken"]
    assert calls == 40
    assert resp["totalBytesRewritten"] == str(len(data))
    assert resp["resource"]["md5Hash"] == md5_b64(data)
    client = new_gcs_client()
    assert client.bucket(bucket.name).blob("copy").download_as_bytes() == data


def test_rewrite_token_is_bound(server, gcs_client):
    bucket = gcs_client.create_bucket(unique_bucket_name(), location="US")
    data = os.urandom(3 * MiB)
    bucket.blob("s").upload_from_string(data)
    base = f"{server.url}/storage/v1/b/{bucket.name}/o/s/rewriteTo/b/{bucket.name}/o/"
    first = _raw_rewrite(base + f"t?maxBytesRewrittenPerCall={MiB}", {})
    token = first["rewriteToken"]
    # Other destination parameters with the same token → 400.
    r = requests.post(base + f"other?maxBytesRewrittenPerCall={MiB}&rewriteToken={token}")
    assert r.status_code == 400, r.text
    r = requests.post(base + f"t?maxBytesRewrittenPerCall={2 * MiB}&rewriteToken={token}")
    assert r.status_code == 400, r.text
    # The token is authenticated: a client cannot re-point it (another session, another
    # source generation) without the server's key.
    body_b64, tag = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(body_b64 + "=" * (-len(body_b64) % 4)))
    body["source_generation"] += 1
    forged_body = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    r = requests.post(base + f"t?maxBytesRewrittenPerCall={MiB}&rewriteToken={forged_body}.{tag}")
    assert r.status_code == 400, r.text
    assert "rewriteToken" in r.json()["error"]["message"]
    # The source changes mid-rewrite → 412.
    bucket.blob("s").upload_from_string(b"changed")
    r = requests.post(base + f"t?maxBytesRewrittenPerCall={MiB}&rewriteToken={token}")
    assert r.status_code == 412, r.text
    # A floor of 1 MiB.
    r = requests.post(base + "t?maxBytesRewrittenPerCall=1024")
    assert r.status_code == 400


def test_rewrite_refuses_disabled_source_key(gcs_client, kms_client):
    bucket = gcs_client.create_bucket(unique_bucket_name(), location="US")
    key = make_key(kms_client, "us")
    bucket.blob("a", kms_key_name=key.name).upload_from_string(b"x" * 1000)
    kms_client.update_crypto_key_version(
        request={
            "crypto_key_version": {"name": key.name + "/cryptoKeyVersions/1", "state": "DISABLED"},
            "update_mask": {"paths": ["state"]},
        }
    )
    with pytest.raises(gexc.BadRequest) as info:
        bucket.blob("b").rewrite(bucket.blob("a"))
    assert info.value.errors[0]["reason"] == "cloudKmsDisabledKey"
    assert bucket.get_blob("b") is None


def test_rewrite_with_csek_source_headers(server, gcs_client):
    bucket = gcs_client.create_bucket(unique_bucket_name(), location="US")
    key = os.urandom(32)
    bucket.blob("a", encryption_key=key).upload_from_string(b"secret")
    url = f"{server.url}/storage/v1/b/{bucket.name}/o/a/rewriteTo/b/{bucket.name}/o/b"
    r = requests.post(url)
    assert r.status_code == 400
    assert r.json()["error"]["errors"][0]["reason"] == "resourceIsEncryptedWithCustomerEncryptionKey"
    r = requests.post(url, headers=csek_headers(key, copy_source=True))
    assert r.status_code == 200, r.text
    assert r.json()["done"] is True
    assert bucket.blob("b").download_as_bytes() == b"secret"
