"""The JSON API edges that gsutil (apitools), gcsfs and Node hit, exercised on the wire
with raw requests (byte-exact as those clients send them) and with the official
Python client: multipart framing, resumable variants, ETags, objects.move, encryption
enforcement, uniform bucket-level access, public access prevention, rpo, TLS."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import subprocess

import pytest
import requests
from google.api_core import exceptions as gexc

from conftest import (
    PROJECT,
    Server,
    csek_headers,
    gcs_error,
    gcs_error_reason,
    project_number,
    unique_bucket_name,
)

T = 30
K = 256 * 1024


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def make_key(kms_client, location="us", key_id="k"):
    ring = kms_client.create_key_ring(
        request={
            "parent": f"projects/{PROJECT}/locations/{location}",
            "key_ring_id": unique_bucket_name("r"),
            "key_ring": {},
        }
    )
    return kms_client.create_crypto_key(
        request={"parent": ring.name, "crypto_key_id": key_id, "crypto_key": {"purpose": 1}}
    )


def new_bucket(server, body=None, query=""):
    name = unique_bucket_name()
    doc = {"name": name, "location": "US"}
    doc.update(body or {})
    r = requests.post(f"{server.url}/storage/v1/b?project={PROJECT}{query}", json=doc, timeout=T)
    assert r.status_code == 200, r.text
    return r.json()


def media(server, bucket, name):
    return requests.get(f"{server.url}/download/storage/v1/b/{bucket}/o/{name}?alt=media", timeout=T)


def start_session(server, bucket, name, path="/upload/storage/v1", headers=None):
    r = requests.post(
        f"{server.url}{path}/b/{bucket}/o?uploadType=resumable",
        json={"name": name},
        headers=headers or {},
        timeout=T,
    )
    assert r.status_code == 200, r.text
    return r.headers["location"]


# ---- multipart/related as apitools and gcsfs frame it -----------------------------------


@pytest.mark.parametrize("quote", ["'", '"', ""])
def test_multipart_lf_line_endings_and_quoted_boundaries(server, quote):
    bucket = new_bucket(server)["name"]
    boundary = "===1234567890=="
    # Data full of the bytes a line-ending rewrite could damage.
    data = b"\n--===\r\n\n\r" + os.urandom(70_000) + b"\r\n--" + b"\n" * 3 + b"\r"
    meta = json.dumps({"name": "lf.bin", "contentType": "application/x-test"})
    body = (
        f"--{boundary}\nContent-Type: application/json\nMIME-Version: 1.0\n\n{meta}\n"
        f"--{boundary}\nContent-Type: application/x-test\nMIME-Version: 1.0\n"
        "Content-Transfer-Encoding: binary\n\n"
    ).encode() + data + f"\n--{boundary}--".encode()
    r = requests.post(
        f"{server.url}/upload/storage/v1/b/{bucket}/o?uploadType=multipart",
        data=body,
        headers={"content-type": f"multipart/related; boundary={quote}{boundary}{quote}"},
        timeout=T,
    )
    assert r.status_code == 200, r.text
    assert r.json()["md5Hash"] == md5_b64(data)
    assert media(server, bucket, "lf.bin").content == data


def test_multipart_lf_body_that_is_truncated_stores_nothing(server):
    bucket = new_bucket(server)["name"]
    body = b"--b\nContent-Type: application/json\n\n{\"name\":\"t\"}\n--b\nContent-Type: x/y\n\nhalf"
    r = requests.post(
        f"{server.url}/upload/storage/v1/b/{bucket}/o?uploadType=multipart",
        data=body,
        headers={"content-type": "multipart/related; boundary='b'"},
        timeout=T,
    )
    assert r.status_code == 400, r.text
    assert requests.get(f"{server.url}/storage/v1/b/{bucket}/o/t", timeout=T).status_code == 404


# ---- resumable uploads -------------------------------------------------------------------


def test_resumable_route_and_post_chunks(server):
    """apitools starts sessions under /resumable/upload; gcsfs sends chunks with POST."""
    bucket = new_bucket(server)["name"]
    loc = start_session(server, bucket, "big", path="/resumable/upload/storage/v1")
    assert "/upload/storage/v1/" in loc
    data = os.urandom(2 * K + 1000)
    r = requests.post(loc, data=data[:K], headers={"content-range": f"bytes 0-{K - 1}/*"}, timeout=T)
    assert r.status_code == 308, r.text
    assert r.headers["range"] == f"bytes=0-{K - 1}"
    r = requests.post(
        loc, data=data[K:], headers={"content-range": f"bytes {K}-{len(data) - 1}/{len(data)}"}, timeout=T
    )
    assert r.status_code == 200, r.text
    assert r.json()["md5Hash"] == md5_b64(data)
    assert media(server, bucket, "big").content == data


def test_a_request_on_a_session_never_starts_one(server):
    bucket = new_bucket(server)["name"]
    loc = start_session(server, bucket, "s")
    # A JSON-looking body on the session URL is data, not metadata.
    body = b'{"name": "other"}'
    r = requests.post(loc, data=body, headers={"content-range": f"bytes 0-{len(body) - 1}/{len(body)}"}, timeout=T)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "s"
    assert media(server, bucket, "s").content == body
    assert requests.get(f"{server.url}/storage/v1/b/{bucket}/o/other", timeout=T).status_code == 404


@pytest.mark.parametrize("known_total", [False, True])
def test_single_request_upload_of_unknown_length(server, known_total):
    """Node's default upload: one PUT with `bytes 0-*/*` (or `0-*/N`), committed at the end."""
    bucket = new_bucket(server)["name"]
    loc = start_session(server, bucket, "node")
    data = os.urandom(9 * 1024 * 1024 + 17)
    total = str(len(data)) if known_total else "*"

    def chunks():
        for i in range(0, len(data), 1 << 20):
            yield data[i : i + (1 << 20)]

    r = requests.put(loc, data=chunks(), headers={"content-range": f"bytes 0-*/{total}"}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["size"] == str(len(data))
    assert r.json()["crc32c"]
    assert media(server, bucket, "node").content == data


def test_single_request_upload_with_the_wrong_total_stores_nothing(server):
    bucket = new_bucket(server)["name"]
    loc = start_session(server, bucket, "wrong")
    r = requests.put(loc, data=b"x" * 1000, headers={"content-range": "bytes 0-*/1001"}, timeout=T)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    assert requests.get(f"{server.url}/storage/v1/b/{bucket}/o/wrong", timeout=T).status_code == 404


def test_persisted_offset_never_moves_backwards(server):
    """Issue 12's repro: a chunk ending inside stored data must not pull the offset back."""
    bucket = new_bucket(server)["name"]
    loc = start_session(server, bucket, "overlap")
    data = os.urandom(786_532)

    def put(start, end, total="*"):
        return requests.put(
            loc, data=data[start : end + 1], headers={"content-range": f"bytes {start}-{end}/{total}"}, timeout=T
        )

    r = put(0, K - 1)
    assert r.status_code == 308 and r.headers["range"] == f"bytes=0-{K - 1}"
    r = put(100, 2 * K - 1)  # re-sends 100..K-1, adds K..2K-1
    assert r.status_code == 308 and r.headers["range"] == f"bytes=0-{2 * K - 1}"
    r = put(K, K + 999)  # wholly stored already: skipped, offset stays
    assert r.status_code == 308, r.text
    assert r.headers["range"] == f"bytes=0-{2 * K - 1}"
    # A chunk that starts beyond the stored data is refused.
    assert put(2 * K + 10, 3 * K + 9).status_code == 400
    r = put(2 * K, len(data) - 1, len(data))
    assert r.status_code == 200, r.text
    assert r.json()["size"] == str(len(data))
    assert media(server, bucket, "overlap").content == data


def test_session_is_bound_to_its_bucket(server):
    a = new_bucket(server)["name"]
    b = new_bucket(server)["name"]
    loc = start_session(server, b, "x")
    moved = loc.replace(f"/b/{b}/o", f"/b/{a}/o")
    r = requests.put(moved, data=b"abc", headers={"content-range": "bytes 0-2/3"}, timeout=T)
    assert r.status_code == 400, r.text
    assert requests.get(f"{server.url}/storage/v1/b/{a}/o/x", timeout=T).status_code == 404
    assert requests.get(f"{server.url}/storage/v1/b/{b}/o/x", timeout=T).status_code == 404


# ---- KMS bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("body", ['""', "", "{}"])
def test_kms_empty_messages(server, kms_client, body):
    key = make_key(kms_client)
    r = requests.post(
        f"{server.url}/v1/{key.name}/cryptoKeyVersions",
        data=body,
        headers={"content-type": "application/json"},
        timeout=T,
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"].startswith(key.name + "/cryptoKeyVersions/")


# ---- bucket and object resource details -------------------------------------------------


def test_bucket_create_with_trailing_slash_and_project_number(server):
    name = unique_bucket_name()
    r = requests.post(f"{server.url}/storage/v1/b/?project={PROJECT}", json={"name": name}, timeout=T)
    assert r.status_code == 200, r.text
    assert r.json()["projectNumber"] == project_number(PROJECT)
    r = requests.get(f"{server.url}/storage/v1/projects/{project_number(PROJECT)}/serviceAccount", timeout=T)
    assert r.json()["email_address"] == f"service-{project_number(PROJECT)}@gs-project-accounts.iam.gserviceaccount.com"


def test_rewrite_applies_storage_class(gcs_client):
    bucket = gcs_client.create_bucket(unique_bucket_name(), location="US")
    blob = bucket.blob("sc")
    blob.upload_from_string(b"data" * 1000)
    blob.update_storage_class("NEARLINE")  # a rewrite with storageClass in its body
    assert bucket.get_blob("sc").storage_class == "NEARLINE"
    assert bucket.get_blob("sc").download_as_bytes() == b"data" * 1000


def test_compose_without_content_type_leaves_it_unset(server, gcs_client):
    bucket = gcs_client.create_bucket(unique_bucket_name(), location="US")
    for n in ("a", "b"):
        bucket.blob(n).upload_from_string(n.encode(), content_type="text/plain")
    r = requests.post(
        f"{server.url}/storage/v1/b/{bucket.name}/o/ab/compose",
        json={"sourceObjects": [{"name": "a"}, {"name": "b"}]},
        timeout=T,
    )
    assert r.status_code == 200, r.text
    assert "contentType" not in r.json(), r.json()
    # An upload without one still gets GCS's default.
    r = requests.post(f"{server.url}/upload/storage/v1/b/{bucket.name}/o?uploadType=media&name=c", data=b"c", timeout=T)
    assert r.json()["contentType"] in ("application/octet-stream", "application/x-www-form-urlencoded")


def test_media_errors_are_plain_text_and_metadata_errors_json(server):
    bucket = new_bucket(server)["name"]
    r = media(server, bucket, "missing")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text.startswith("No such object")
    r = requests.get(f"{server.url}/storage/v1/b/{bucket}/o/missing", timeout=T)
    assert r.status_code == 404 and r.json()["error"]["code"] == 404
    r = requests.post(
        f"{server.url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name=x&predefinedAcl=private",
        data=b"x",
        timeout=T,
    )
    assert r.status_code == 400 and "Cannot insert legacy ACL" in r.json()["error"]["message"]


def test_unknown_and_unbuilt_fields_are_never_dropped(server):
    url = f"{server.url}/storage/v1/b?project={PROJECT}"
    r = requests.post(url, json={"name": unique_bucket_name(), "cors": [{"origin": ["*"]}]}, timeout=T)
    assert r.status_code == 501, r.text
    r = requests.post(url, json={"name": unique_bucket_name(), "ipFilter": {"mode": "Enabled"}}, timeout=T)
    assert r.status_code == 501, r.text
    r = requests.post(url, json={"name": unique_bucket_name(), "nonsense": 1}, timeout=T)
    assert r.status_code == 400, r.text
    bucket = new_bucket(server)["name"]
    r = requests.get(f"{server.url}/storage/v1/b/{bucket}/managedFolders", timeout=T)
    assert r.status_code == 501, r.text
    # The XML API names what it does not build, too.
    r = requests.put(f"{server.url}/{bucket}?cors", data=b"<CORSConfiguration/>", timeout=T)
    assert r.status_code == 501 and "<Code>NotImplemented</Code>" in r.text
    r = requests.post(
        f"{server.url}/upload/storage/v1/b/{bucket}/o?uploadType=multipart",
        data=b'--b\r\ncontent-type: application/json\r\n\r\n{"name":"o","owner2":1}\r\n--b\r\n\r\nx\r\n--b--',
        headers={"content-type": "multipart/related; boundary=b"},
        timeout=T,
    )
    assert r.status_code == 400, r.text
    assert requests.get(f"{server.url}/storage/v1/b/{bucket}/o/o", timeout=T).status_code == 404


# ---- ETags -------------------------------------------------------------------------------


def test_etag_preconditions_on_objects(server, gcs_client):
    bucket = gcs_client.create_bucket(unique_bucket_name(), location="US")
    bucket.blob("e").upload_from_string(b"etag me")
    url = f"{server.url}/storage/v1/b/{bucket.name}/o/e"
    etag = requests.get(url, timeout=T).json()["etag"]
    assert requests.get(url, headers={"If-None-Match": etag}, timeout=T).status_code == 304
    assert requests.get(url, headers={"If-None-Match": f'"{etag}"'}, timeout=T).status_code == 304
    assert requests.get(url, headers={"If-Match": "bogus"}, timeout=T).status_code == 412
    assert requests.head(url, headers={"If-Match": "bogus"}, timeout=T).status_code == 412
    assert requests.get(url, headers={"If-Match": etag}, timeout=T).status_code == 200
    murl = f"{server.url}/download/storage/v1/b/{bucket.name}/o/e?alt=media"
    assert requests.get(murl, headers={"If-Match": "bogus"}, timeout=T).status_code == 412
    assert requests.get(murl, headers={"If-None-Match": etag}, timeout=T).status_code == 304
    assert requests.get(murl, headers={"If-Match": etag}, timeout=T).content == b"etag me"
    # Writes with a wrong If-Match fail and change nothing.
    r = requests.patch(url, json={"metadata": {"k": "v"}}, headers={"If-Match": "bogus"}, timeout=T)
    assert r.status_code == 412, r.text
    assert "metadata" not in requests.get(url, timeout=T).json()
    assert requests.delete(url, headers={"If-Match": "bogus"}, timeout=T).status_code == 412
    assert requests.get(url, timeout=T).status_code == 200
    r = requests.patch(url, json={"metadata": {"k": "v"}}, headers={"If-Match": etag}, timeout=T)
    assert r.status_code == 200 and r.json()["etag"] != etag
    # The old ETag no longer matches anything.
    assert requests.delete(url, headers={"If-Match": etag}, timeout=T).status_code == 412
    assert requests.delete(url, headers={"If-Match": r.json()["etag"]}, timeout=T).status_code == 204
    # The official client's read-side etag conditions.
    bucket.blob("f").upload_from_string(b"f")
    blob = bucket.get_blob("f")
    with pytest.raises(gexc.PreconditionFailed):
        blob.download_as_bytes(if_etag_match="nope")
    assert blob.download_as_bytes(if_etag_match=blob.etag) == b"f"


def test_etag_preconditions_on_buckets(server):
    bucket = new_bucket(server)
    url = f"{server.url}/storage/v1/b/{bucket['name']}"
    etag = bucket["etag"]
    assert requests.get(url, headers={"If-None-Match": etag}, timeout=T).status_code == 304
    assert requests.get(url, headers={"If-Match": "bogus"}, timeout=T).status_code == 412
    r = requests.patch(url, json={"labels": {"a": "b"}}, headers={"If-Match": "bogus"}, timeout=T)
    assert r.status_code == 412
    assert "labels" not in requests.get(url, timeout=T).json()
    assert requests.delete(url, headers={"If-Match": "bogus"}, timeout=T).status_code == 412
    assert requests.get(url, timeout=T).status_code == 200
    assert requests.delete(url, headers={"If-Match": etag}, timeout=T).status_code == 204


# ---- objects.move ------------------------------------------------------------------------


def test_move_keeps_data_and_encryption(server, gcs_client, kms_client):
    key = make_key(kms_client)
    bucket = gcs_client.create_bucket(unique_bucket_name(), location="US")
    data = os.urandom(300_000)
    bucket.blob("src", kms_key_name=key.name).upload_from_string(data)
    src = bucket.get_blob("src")
    moved = bucket.move_blob(src, "dir/dst", if_source_generation_match=src.generation)
    assert moved.name == "dir/dst"
    got = bucket.get_blob("dir/dst")
    assert got.generation != src.generation and got.metageneration == 1
    assert got.kms_key_name == src.kms_key_name  # same wrapped key, not re-encrypted
    assert got.md5_hash == md5_b64(data)
    assert got.download_as_bytes() == data
    assert bucket.get_blob("src") is None
    # The key index follows the object.
    r = requests.get(
        f"{server.url}/sealstore/v1/b/{bucket.name}/objectsByKey",
        params={"kmsKeyName": key.name},
        timeout=T,
    )
    assert r.status_code == 200, r.text
    names = [o["name"] for o in r.json().get("items", [])]
    assert names == ["dir/dst"], r.json()


def test_move_csek_and_small_inline_objects(server, gcs_client):
    bucket = gcs_client.create_bucket(unique_bucket_name(), location="US")
    key = os.urandom(32)
    bucket.blob("c", encryption_key=key).upload_from_string(b"secret")
    r = requests.post(f"{server.url}/storage/v1/b/{bucket.name}/o/c/moveTo/o/d", timeout=T)
    assert r.status_code == 200, r.text
    assert bucket.blob("d", encryption_key=key).download_as_bytes() == b"secret"


def test_move_refusals_change_nothing(server, gcs_client):
    bucket = gcs_client.create_bucket(unique_bucket_name(), location="US")
    bucket.blob("a").upload_from_string(b"a")
    bucket.blob("b").upload_from_string(b"b")
    base = f"{server.url}/storage/v1/b/{bucket.name}/o"
    assert requests.post(f"{base}/a/moveTo/o/b?ifGenerationMatch=0", timeout=T).status_code == 412
    assert requests.post(f"{base}/a/moveTo/o/z?ifSourceGenerationMatch=1", timeout=T).status_code == 412
    assert requests.post(f"{base}/a/moveTo/o/a", timeout=T).status_code == 400
    assert requests.post(f"{base}/nope/moveTo/o/z", timeout=T).status_code == 404
    held = bucket.blob("a")
    held.reload()
    held.temporary_hold = True
    held.patch()
    r = requests.post(f"{base}/a/moveTo/o/z", timeout=T)
    assert r.status_code == 403 and gcs_error_reason(r) == "objectUnderActiveHold", r.text
    assert bucket.get_blob("a").download_as_bytes() == b"a"
    assert bucket.get_blob("b").download_as_bytes() == b"b"
    assert bucket.get_blob("z") is None
    held.temporary_hold = False
    held.patch()


# ---- encryption enforcement ---------------------------------------------------------------


def restricted(kind_field, mode="FullyRestricted"):
    return {kind_field: {"restrictionMode": mode}}


def test_enforcement_configs_round_trip(server, gcs_client):
    b = new_bucket(server, {"encryption": restricted("customerSuppliedEncryptionEnforcementConfig")})
    cfg = b["encryption"]["customerSuppliedEncryptionEnforcementConfig"]
    assert cfg["restrictionMode"] == "FullyRestricted" and cfg["effectiveTime"]
    bucket = gcs_client.get_bucket(b["name"])
    enc = bucket.encryption
    assert enc.customer_supplied_encryption_enforcement_config.restriction_mode == "FullyRestricted"
    r = requests.patch(
        f"{server.url}/storage/v1/b/{b['name']}",
        json={"encryption": {"customerSuppliedEncryptionEnforcementConfig": {"restrictionMode": "Sometimes"}}},
        timeout=T,
    )
    assert r.status_code == 400
    r = requests.patch(
        f"{server.url}/storage/v1/b/{b['name']}",
        json={"encryption": {"customerSuppliedEncryptionEnforcementConfig": None}},
        timeout=T,
    )
    assert r.status_code == 200 and "encryption" not in r.json(), r.json()


def test_each_restriction_refuses_its_kind_on_every_write_path(server, gcs_client, kms_client):
    key = make_key(kms_client)
    csek = os.urandom(32)
    src_bucket = gcs_client.create_bucket(unique_bucket_name(), location="US")
    src_bucket.blob("plain").upload_from_string(b"p" * 100)
    src_bucket.blob("csek", encryption_key=csek).upload_from_string(b"c" * 100)

    def check_refused(resp):
        assert resp.status_code == 412, resp.text
        assert "FullyRestricted" in (gcs_error(resp).get("message") or resp.text)

    cases = [
        ("customerSuppliedEncryptionEnforcementConfig", {"csek": True}),
        ("customerManagedEncryptionEnforcementConfig", {"kms": True}),
        ("googleManagedEncryptionEnforcementConfig", {}),
    ]
    for field, how in cases:
        b = new_bucket(server, {"encryption": restricted(field)})["name"]
        headers = csek_headers(csek) if how.get("csek") else {}
        q = f"&kmsKeyName={key.name}" if how.get("kms") else ""
        # Upload: media, multipart (through the client) and resumable.
        check_refused(
            requests.post(
                f"{server.url}/upload/storage/v1/b/{b}/o?uploadType=media&name=u{q}", data=b"x", headers=headers, timeout=T
            )
        )
        r = requests.post(
            f"{server.url}/upload/storage/v1/b/{b}/o?uploadType=resumable&name=r{q}", json={}, headers=headers, timeout=T
        )
        check_refused(r)
        # Copy and rewrite from the other bucket.
        src = "csek" if how.get("csek") else "plain"
        dq = f"?destinationKmsKeyName={key.name}" if how.get("kms") else ""
        copy_headers = dict(headers)
        if how.get("csek"):
            copy_headers.update(csek_headers(csek, copy_source=True))
        for verb in ("copyTo", "rewriteTo"):
            hdr = headers if verb == "copyTo" else copy_headers
            r = requests.post(
                f"{server.url}/storage/v1/b/{src_bucket.name}/o/{src}/{verb}/b/{b}/o/{verb}{dq}",
                json={},
                headers=hdr,
                timeout=T,
            )
            check_refused(r)
        # Compose inside the restricted bucket, of sources written before the restriction.
        r = requests.patch(f"{server.url}/storage/v1/b/{b}", json={"encryption": None}, timeout=T)
        assert r.status_code == 200
        cq = f"?kmsKeyName={key.name}" if how.get("kms") else ""
        for n in ("s1", "s2"):
            r = requests.post(
                f"{server.url}/upload/storage/v1/b/{b}/o?uploadType=media&name={n}{q}", data=n.encode(), headers=headers, timeout=T
            )
            assert r.status_code == 200, r.text
        r = requests.patch(f"{server.url}/storage/v1/b/{b}", json={"encryption": restricted(field)}, timeout=T)
        assert r.status_code == 200, r.text
        r = requests.post(
            f"{server.url}/storage/v1/b/{b}/o/c/compose{cq}",
            json={"sourceObjects": [{"name": "s1"}, {"name": "s2"}]},
            headers=headers,
            timeout=T,
        )
        check_refused(r)
        # Move: the destination would be a new object of the restricted kind.
        check_refused(requests.post(f"{server.url}/storage/v1/b/{b}/o/s1/moveTo/o/m", timeout=T))
        # Existing objects stay readable; nothing refused was stored.
        got = requests.get(f"{server.url}/download/storage/v1/b/{b}/o/s1?alt=media", headers=headers, timeout=T)
        assert got.content == b"s1"
        names = [o["name"] for o in requests.get(f"{server.url}/storage/v1/b/{b}/o", timeout=T).json().get("items", [])]
        assert sorted(names) == ["s1", "s2"], (field, names)


def test_google_managed_restricted_with_a_default_key_writes_cmek(server, kms_client):
    key = make_key(kms_client)
    b = new_bucket(
        server,
        {"encryption": {"defaultKmsKeyName": key.name, **restricted("googleManagedEncryptionEnforcementConfig")}},
    )["name"]
    r = requests.post(f"{server.url}/upload/storage/v1/b/{b}/o?uploadType=media&name=x", data=b"x", timeout=T)
    assert r.status_code == 200, r.text
    assert r.json()["kmsKeyName"].startswith(key.name)
    # A default key needs CMEK allowed.
    r = requests.patch(
        f"{server.url}/storage/v1/b/{b}",
        json={"encryption": {"defaultKmsKeyName": key.name, **restricted("customerManagedEncryptionEnforcementConfig")}},
        timeout=T,
    )
    assert r.status_code == 400, r.text


def test_rekey_job_target_respects_enforcement(server, gcs_client, kms_client):
    key = make_key(kms_client)
    b = gcs_client.create_bucket(unique_bucket_name(), location="US")
    b.blob("o").upload_from_string(b"o")
    r = requests.patch(
        f"{server.url}/storage/v1/b/{b.name}",
        json={"encryption": restricted("customerManagedEncryptionEnforcementConfig")},
        timeout=T,
    )
    assert r.status_code == 200
    r = requests.post(
        f"{server.url}/storage/v1/b/{b.name}/o/o/rewriteTo/b/{b.name}/o/o?destinationKmsKeyName={key.name}",
        json={},
        timeout=T,
    )
    assert r.status_code == 412, r.text
    assert b.get_blob("o").kms_key_name is None


# ---- uniform bucket-level access, public access prevention, rpo -------------------------


def test_uniform_bucket_level_access_and_acl_endpoints(server, gcs_client):
    b = new_bucket(server)
    ubla = b["iamConfiguration"]["uniformBucketLevelAccess"]
    assert ubla["enabled"] is True and ubla["lockedTime"]
    assert b["iamConfiguration"]["publicAccessPrevention"] == "inherited"
    url = f"{server.url}/storage/v1/b/{b['name']}"
    r = requests.patch(url, json={"iamConfiguration": {"uniformBucketLevelAccess": {"enabled": False}}}, timeout=T)
    assert r.status_code == 400 and "ACL" in r.text
    r = requests.get(f"{url}/acl", timeout=T)
    assert r.status_code == 400 and "Cannot get legacy ACL for a bucket" in r.json()["error"]["message"]
    r = requests.post(f"{url}/defaultObjectAcl", json={"entity": "allUsers", "role": "READER"}, timeout=T)
    assert r.status_code == 400 and "Cannot use ACL API" in r.json()["error"]["message"]
    bucket = gcs_client.get_bucket(b["name"])
    bucket.blob("o").upload_from_string(b"o")
    r = requests.get(f"{url}/o/o/acl", timeout=T)
    assert r.status_code == 400 and "Cannot get legacy ACL for an object" in r.json()["error"]["message"]
    r = requests.patch(f"{url}/o/o", json={"acl": [{"entity": "allUsers", "role": "READER"}]}, timeout=T)
    assert r.status_code == 400 and "Cannot update access control" in r.json()["error"]["message"]
    assert bucket.iam_configuration.uniform_bucket_level_access_enabled


def test_public_access_prevention(server, gcs_client):
    b = new_bucket(server, {"iamConfiguration": {"publicAccessPrevention": "enforced"}})
    assert b["iamConfiguration"]["publicAccessPrevention"] == "enforced"
    bucket = gcs_client.get_bucket(b["name"])
    policy = bucket.get_iam_policy(requested_policy_version=3)
    policy.bindings.append({"role": "roles/storage.objectViewer", "members": {"allUsers"}})
    with pytest.raises(gexc.PreconditionFailed) as info:
        bucket.set_iam_policy(policy)
    assert "public access prevention is enforced" in str(info.value)
    url = f"{server.url}/storage/v1/b/{b['name']}"
    r = requests.patch(url, json={"iamConfiguration": {"publicAccessPrevention": "sometimes"}}, timeout=T)
    assert r.status_code == 400
    r = requests.patch(url, json={"iamConfiguration": {"publicAccessPrevention": "inherited"}}, timeout=T)
    assert r.status_code == 200 and r.json()["iamConfiguration"]["publicAccessPrevention"] == "inherited"
    bucket.set_iam_policy(policy)  # allowed once prevention is off


def test_rpo(server):
    dual = new_bucket(server, {"location": "NAM4", "rpo": "ASYNC_TURBO"})
    assert dual["rpo"] == "ASYNC_TURBO"
    assert new_bucket(server, {"location": "US"})["rpo"] == "DEFAULT"
    assert "rpo" not in new_bucket(server, {"location": "US-EAST1"})
    url = f"{server.url}/storage/v1/b?project={PROJECT}"
    for body in ({"location": "US-EAST1", "rpo": "ASYNC_TURBO"}, {"location": "US", "rpo": "ASYNC_TURBO"}, {"rpo": "FAST"}):
        r = requests.post(url, json={"name": unique_bucket_name(), **body}, timeout=T)
        assert r.status_code == 400, (body, r.text)
    r = requests.patch(f"{server.url}/storage/v1/b/{dual['name']}", json={"rpo": "DEFAULT"}, timeout=T)
    assert r.json()["rpo"] == "DEFAULT"


# ---- TLS ---------------------------------------------------------------------------------


def make_cert(directory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def test_tls_listener_and_https_links(tmp_path):
    cert, key = make_cert(tmp_path)
    s = Server(tmp_path / "data", ["--tls-cert", str(cert), "--tls-key", str(key)]).start()
    try:
        assert s.url.startswith("https://127.0.0.1:"), s.url
        r = requests.post(f"{s.url}/storage/v1/b?project={PROJECT}", json={"name": "tls-bucket"}, verify=str(cert), timeout=T)
        assert r.status_code == 200, r.text
        assert r.json()["selfLink"].startswith("https://")
        loc = requests.post(
            f"{s.url}/upload/storage/v1/b/tls-bucket/o?uploadType=resumable&name=o", json={}, verify=str(cert), timeout=T
        ).headers["location"]
        assert loc.startswith("https://")
        r = requests.put(loc, data=b"over tls", verify=str(cert), timeout=T)
        assert r.status_code == 200 and r.json()["mediaLink"].startswith("https://")
        # Plain HTTP on the TLS port gets no HTTP answer.
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(s.url.replace("https://", "http://") + "/healthz", timeout=5)
    finally:
        s.stop()


def test_bad_tls_files_stop_the_server(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    out = subprocess.run(
        [str(Server(tmp_path).binary), "serve", "--data-dir", str(tmp_path / "d"), "--addr", "127.0.0.1:0",
         "--tls-cert", str(bad), "--tls-key", str(bad)],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode != 0
    assert "not a certificate" not in out.stderr  # file contents never echoed
