"""Soft delete through google-cloud-storage: the bucket policy and its default, soft-
deleted generations on delete and overwrite, listing and getting them, restore (with
its encryption as it was), hard deletion when the time comes, soft-deleted buckets and
their restore, and the interaction with keys: re-key jobs re-wrap soft-deleted
generations, objectsByKey marks them, and destroying a key version is allowed (the
object then restores as unreadable)."""

from __future__ import annotations

import pytest
import requests
from google.api_core import exceptions as gexc

from conftest import PROJECT, unique_bucket_name

T = 30
DAY = 86_400


def names(client, bucket, **kw):
    return sorted((b.name, b.generation) for b in client.list_blobs(bucket, **kw))


def test_policy_default_validation_and_change(server, gcs_client):
    b = gcs_client.create_bucket(unique_bucket_name(), location="US")
    assert b.soft_delete_policy.retention_duration_seconds == 7 * DAY
    assert b.soft_delete_policy.effective_time is not None
    b.soft_delete_policy.retention_duration_seconds = 30 * DAY
    b.patch()
    assert gcs_client.get_bucket(b.name).soft_delete_policy.retention_duration_seconds == 30 * DAY
    for bad in (1, 6 * DAY, 91 * DAY, -1, "x"):
        r = requests.patch(f"{server.url}/storage/v1/b/{b.name}", json={"softDeletePolicy": {"retentionDurationSeconds": bad}}, timeout=T)
        assert r.status_code == 400, (bad, r.text)
    assert gcs_client.get_bucket(b.name).soft_delete_policy.retention_duration_seconds == 30 * DAY
    r = requests.post(
        f"{server.url}/storage/v1/b?project={PROJECT}",
        json={"name": unique_bucket_name(), "softDeletePolicy": {"retentionDurationSeconds": "0"}},
        timeout=T,
    )
    assert r.status_code == 200 and r.json()["softDeletePolicy"]["retentionDurationSeconds"] == "0"


def test_delete_overwrite_list_get_restore_and_hard_delete(server, gcs_client, kms_client):
    from test_client_compat import make_key

    key = make_key(kms_client).name
    b = gcs_client.create_bucket(unique_bucket_name(), location="US")
    blob = b.blob("o", kms_key_name=key)
    blob.upload_from_string(b"first")
    g1 = b.get_blob("o").generation
    b.blob("o", kms_key_name=key).upload_from_string(b"second")  # overwrite: g1 soft-deleted
    g2 = b.get_blob("o").generation
    b.delete_blob("o")  # g2 soft-deleted
    assert names(gcs_client, b) == []
    assert names(gcs_client, b, versions=True) == []
    soft = list(gcs_client.list_blobs(b, soft_deleted=True))
    assert sorted(x.generation for x in soft) == [g1, g2]
    for x in soft:
        assert x._properties["softDeleteTime"] and x._properties["hardDeleteTime"]
    one = b.get_blob("o", generation=g1, soft_deleted=True)
    assert one.generation == g1 and one.kms_key_name.startswith(key)
    assert b.get_blob("o", generation=g1) is None
    # Restore g1: a new live generation, data and encryption as they were.
    restored = b.restore_blob("o", generation=g1)
    assert restored.generation not in (g1, g2) and restored.kms_key_name.startswith(key)
    assert b.blob("o").download_as_bytes() == b"first"
    assert [x.generation for x in gcs_client.list_blobs(b, soft_deleted=True)] == [g2]
    # Preconditions apply to the live object it would replace.
    with pytest.raises(gexc.PreconditionFailed):
        b.restore_blob("o", generation=g2, if_generation_match=0)
    with pytest.raises(gexc.NotFound):
        b.restore_blob("o", generation=12345)
    r = requests.post(f"{server.url}/storage/v1/b/{b.name}/o/o/restore", timeout=T)
    assert r.status_code == 400
    # After the retention duration, the worker erases it.
    server.advance(7 * DAY + 1)
    assert list(gcs_client.list_blobs(b, soft_deleted=True)) == []
    with pytest.raises(gexc.NotFound):
        b.restore_blob("o", generation=g2)
    assert b.blob("o").download_as_bytes() == b"first"


def test_no_soft_delete_when_off(server, gcs_client):
    b = gcs_client.bucket(unique_bucket_name())
    b.soft_delete_policy.retention_duration_seconds = 0
    b = gcs_client.create_bucket(b, location="US")
    b.blob("o").upload_from_string(b"x")
    b.delete_blob("o")
    assert list(gcs_client.list_blobs(b, soft_deleted=True)) == []
    b.delete()
    assert [x.name for x in gcs_client.list_buckets(soft_deleted=True)] == []


def test_bucket_soft_delete_and_restore(server, gcs_client):
    b = gcs_client.create_bucket(unique_bucket_name(), location="US")
    b.blob("o").upload_from_string(b"kept")
    g = b.get_blob("o").generation
    policy = b.get_iam_policy(requested_policy_version=3)
    policy.bindings.append({"role": "roles/storage.objectViewer", "members": {"user:reader@example.com"}})
    b.set_iam_policy(policy)
    b.delete_blob("o")
    b.delete()  # only soft-deleted objects: allowed
    with pytest.raises(gexc.NotFound):
        gcs_client.get_bucket(b.name)
    listed = [x for x in gcs_client.list_buckets(soft_deleted=True) if x.name == b.name]
    assert len(listed) == 1
    gen = listed[0].generation
    assert listed[0]._properties["softDeleteTime"] and listed[0]._properties["hardDeleteTime"]
    assert gcs_client.get_bucket(b.name, generation=gen, soft_deleted=True).name == b.name
    # A live bucket of the same name blocks the restore, and sees none of the old objects.
    other = gcs_client.create_bucket(b.name, location="US")
    assert list(gcs_client.list_blobs(other, soft_deleted=True)) == []
    with pytest.raises(gexc.Conflict):
        gcs_client.restore_bucket(b.name, generation=gen)
    other.delete()
    back = gcs_client.restore_bucket(b.name, generation=gen)
    assert back.name == b.name
    soft = list(gcs_client.list_blobs(back, soft_deleted=True))
    assert [x.generation for x in soft] == [g]
    roles = {bd["role"] for bd in back.get_iam_policy(requested_policy_version=3).bindings}
    assert "roles/storage.objectViewer" in roles
    back.restore_blob("o", generation=g)
    assert back.blob("o").download_as_bytes() == b"kept"


def test_soft_deleted_bucket_is_hard_deleted_after_its_last_object(server, gcs_client):
    b = gcs_client.create_bucket(unique_bucket_name(), location="US")
    b.blob("o").upload_from_string(b"x")
    b.delete_blob("o")
    server.advance(3 * DAY)
    b.delete()
    hard = [x for x in gcs_client.list_buckets(soft_deleted=True) if x.name == b.name][0]._properties["hardDeleteTime"]
    assert hard
    server.advance(7 * DAY + 1)
    assert [x for x in gcs_client.list_buckets(soft_deleted=True) if x.name == b.name] == []


def test_keys_see_soft_deleted_generations(server, gcs_client, kms_client):
    from test_client_compat import make_key

    k1, k2 = make_key(kms_client, key_id="k1").name, make_key(kms_client, key_id="k2").name
    b = gcs_client.bucket(unique_bucket_name())
    # Long enough to outlast the 30-day destruction schedule below.
    b.soft_delete_policy.retention_duration_seconds = 90 * DAY
    b = gcs_client.create_bucket(b, location="US")
    b.blob("o", kms_key_name=k1).upload_from_string(b"data")
    g = b.get_blob("o").generation
    b.delete_blob("o")
    r = requests.get(f"{server.url}/sealstore/v1/b/{b.name}/objectsByKey", params={"kmsKeyName": k1}, timeout=T).json()
    assert [(i["name"], i.get("softDeleted")) for i in r["items"]] == [("o", True)]
    # A re-key job re-wraps it like a noncurrent generation.
    job = requests.post(
        f"{server.url}/sealstore/v1/projects/{PROJECT}/rekeyJobs",
        json={"bucket": b.name, "prefix": "", "from": {"kmsKeyName": k1}, "to": {"kmsKeyName": k2}},
        timeout=T,
    ).json()
    import time

    for _ in range(100):
        j = requests.get(f"{server.url}/sealstore/v1/{job['name']}", timeout=T).json()
        if j["state"] != "RUNNING":
            break
        time.sleep(0.1)
    assert j["state"] == "SUCCEEDED", j
    assert b.get_blob("o", generation=g, soft_deleted=True).kms_key_name.startswith(k2 + "/")
    # Destroying the key version is allowed: the object then restores as unreadable.
    kms_client.destroy_crypto_key_version(request={"name": f"{k2}/cryptoKeyVersions/1"})
    server.advance(31 * DAY)
    b.restore_blob("o", generation=g)
    with pytest.raises(gexc.GoogleAPICallError):
        b.blob("o").download_as_bytes()
