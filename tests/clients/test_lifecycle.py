"""Object Lifecycle Management through google-cloud-storage: rules set with the client's
own helpers, applied by `clock:advance` (which runs every action that came due before
it replies), protection by holds and retention, the dry run, the audit trail, and
GCS's validation."""

from __future__ import annotations

import datetime
import json

import pytest
import requests
from google.api_core import exceptions as gexc

from conftest import PROJECT, project_number, unique_bucket_name

T = 30
DAY = 86_400


def names(bucket, versions=False):
    return sorted((b.name, b.generation) if versions else b.name for b in bucket.client.list_blobs(bucket, versions=versions))


def make_bucket(gcs_client, versioning=False):
    b = gcs_client.bucket(unique_bucket_name())
    b.versioning_enabled = versioning
    return gcs_client.create_bucket(b, location="US")


def test_rules_round_trip_through_the_client(gcs_client):
    b = make_bucket(gcs_client)
    b.add_lifecycle_set_storage_class_rule("NEARLINE", age=30, matches_prefix=["logs/"])
    b.add_lifecycle_delete_rule(age=365, matches_suffix=[".tmp"], is_live=True)
    b.add_lifecycle_delete_rule(
        number_of_newer_versions=3, days_since_noncurrent_time=7, noncurrent_time_before=datetime.date(2030, 1, 1)
    )
    b.add_lifecycle_delete_rule(created_before=datetime.date(2026, 1, 2), matches_storage_class=["COLDLINE"])
    b.add_lifecycle_delete_rule(custom_time_before=datetime.date(2027, 5, 1), days_since_custom_time=2)
    b.add_lifecycle_abort_incomplete_multipart_upload_rule(age=1)
    b.patch()
    fresh = gcs_client.get_bucket(b.name)
    rules = list(fresh.lifecycle_rules)
    assert len(rules) == 6
    assert rules[0]["action"] == {"type": "SetStorageClass", "storageClass": "NEARLINE"}
    assert rules[0]["condition"] == {"age": 30, "matchesPrefix": ["logs/"]}
    assert rules[2]["condition"]["noncurrentTimeBefore"] == "2030-01-01"
    assert rules[3]["condition"] == {"createdBefore": "2026-01-02", "matchesStorageClass": ["COLDLINE"]}
    assert rules[5]["action"] == {"type": "AbortIncompleteMultipartUpload"}
    # Clearing: the client sends lifecycle with no rules.
    fresh.clear_lifecycle_rules()
    fresh.patch()
    assert list(gcs_client.get_bucket(b.name).lifecycle_rules) == []


def test_storage_class_then_delete_as_time_passes(server, gcs_client):
    b = make_bucket(gcs_client)
    b.add_lifecycle_set_storage_class_rule("NEARLINE", age=1)
    b.add_lifecycle_set_storage_class_rule("COLDLINE", age=2)
    b.add_lifecycle_delete_rule(age=3, matches_prefix=["tmp/"])
    b.patch()
    for n in ("tmp/a", "keep/b"):
        b.blob(n).upload_from_string(b"x")
    server.advance(DAY + 5)
    assert {x.name: x.storage_class for x in gcs_client.list_blobs(b)} == {"keep/b": "NEARLINE", "tmp/a": "NEARLINE"}
    blob = b.get_blob("keep/b")
    assert blob.updated is not None and blob._properties["timeStorageClassUpdated"] != blob._properties["timeCreated"]
    server.advance(DAY)
    assert {x.name: x.storage_class for x in gcs_client.list_blobs(b)} == {"keep/b": "COLDLINE", "tmp/a": "COLDLINE"}
    server.advance(DAY)
    assert names(b) == ["keep/b"]
    # Never back to a warmer class, however long it waits.
    server.advance(30 * DAY)
    assert b.get_blob("keep/b").storage_class == "COLDLINE"


def test_versioned_bucket_noncurrent_rules(server, gcs_client):
    b = make_bucket(gcs_client, versioning=True)
    for i in range(4):
        b.blob("o").upload_from_string(f"v{i}".encode())
    gens = [g for _, g in names(b, versions=True)]
    assert len(gens) == 4
    noncurrent = [x for x in gcs_client.list_blobs(b, versions=True) if x.generation != gens[-1]]
    assert all(x._properties.get("timeDeleted") for x in noncurrent)
    b.add_lifecycle_delete_rule(is_live=False, number_of_newer_versions=2)
    b.patch()
    server.advance(1)
    # Generations with at least two newer ones go; the live one and one noncurrent stay.
    assert [g for _, g in names(b, versions=True)] == gens[2:]
    # A live delete on a versioned bucket makes it noncurrent, as a client delete would.
    b.clear_lifecycle_rules()
    b.add_lifecycle_delete_rule(age=2, is_live=True)
    b.add_lifecycle_delete_rule(days_since_noncurrent_time=1, is_live=False)
    b.patch()
    server.advance(2 * DAY)
    assert b.get_blob("o") is None
    remaining = list(gcs_client.list_blobs(b, versions=True))
    assert [x.generation for x in remaining] == [gens[3]]
    server.advance(DAY + 1)
    assert list(gcs_client.list_blobs(b, versions=True)) == []


def test_holds_and_retention_are_never_overridden(server, gcs_client):
    b = make_bucket(gcs_client)
    b.add_lifecycle_delete_rule(age=1)
    b.patch()
    held = b.blob("held")
    held.upload_from_string(b"x")
    held.temporary_hold = True
    held.patch()
    b.blob("free").upload_from_string(b"x")
    server.advance(2 * DAY)
    assert names(b) == ["held"]
    preview = requests.get(f"{server.url}/sealstore/v1/b/{b.name}/lifecycle:preview", timeout=T).json()
    assert [a["name"] for a in preview["actions"]] == ["held"] and "hold" in preview["actions"][0]["blockedBy"]
    held.temporary_hold = False
    held.patch()
    server.advance(1)
    assert names(b) == []
    # Under a bucket retention policy objects stay until it expires.
    r = make_bucket(gcs_client)
    r.retention_period = 5 * DAY
    r.patch()
    r.add_lifecycle_delete_rule(age=1)
    r.patch()
    r.blob("kept").upload_from_string(b"x")
    server.advance(2 * DAY)
    assert names(r) == ["kept"]
    server.advance(4 * DAY)
    assert names(r) == []


def test_preview_and_audit(server, gcs_client):
    b = make_bucket(gcs_client)
    b.add_lifecycle_delete_rule(age=10, matches_prefix=["a"])
    b.add_lifecycle_set_storage_class_rule("ARCHIVE", age=5)
    b.patch()
    for n in ("a1", "b1"):
        b.blob(n).upload_from_string(b"x")
    url = f"{server.url}/sealstore/v1/b/{b.name}/lifecycle:preview"
    assert requests.get(url, timeout=T).json()["actions"] == []
    later = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=11)).isoformat()
    # The fake clock may be ahead of the wall clock: preview at a time past both rules.
    now = requests.post(f"{server.url}/sealstore/v1/clock:advance", json={"seconds": 0}, timeout=T).json()["now"]
    at = (datetime.datetime.fromisoformat(now.replace("Z", "+00:00")) + datetime.timedelta(days=11)).isoformat()
    actions = requests.get(url, params={"atTime": at}, timeout=T).json()["actions"]
    assert {(a["name"], a["action"], a.get("storageClass")) for a in actions} == {("a1", "Delete", None), ("b1", "SetStorageClass", "ARCHIVE")}
    assert names(b) == ["a1", "b1"], "a preview changes nothing"
    assert requests.get(url, params={"atTime": "soon"}, timeout=T).status_code == 400
    assert later
    server.advance(11 * DAY)
    assert names(b) == ["b1"]
    agent = f"serviceAccount:service-{project_number(PROJECT)}@gs-project-accounts.iam.gserviceaccount.com"
    lines = [json.loads(l) for l in (server.data_dir / "audit.log").read_text().splitlines()]
    lc = [l for l in lines if l["method"].startswith("lifecycle:")]
    assert {(l["principal"], l["method"], l["resource"].split("#")[0]) for l in lc} == {
        (agent, "lifecycle: Delete (rule 0)", f"b/{b.name}/o/a1"),
        (agent, "lifecycle: SetStorageClass ARCHIVE (rule 1)", f"b/{b.name}/o/b1"),
    }


def test_lifecycle_on_bucket_create_and_custom_time(server, gcs_client):
    name = unique_bucket_name()
    body = {
        "name": name,
        "lifecycle": {"rule": [{"action": {"type": "Delete"}, "condition": {"daysSinceCustomTime": 1}}]},
    }
    r = requests.post(f"{server.url}/storage/v1/b?project={PROJECT}", json=body, timeout=T)
    assert r.status_code == 200 and r.json()["lifecycle"]["rule"][0]["condition"] == {"daysSinceCustomTime": 1}
    b = gcs_client.bucket(name)
    now = requests.post(f"{server.url}/sealstore/v1/clock:advance", json={"seconds": 0}, timeout=T).json()["now"]
    blob = b.blob("c")
    blob.custom_time = datetime.datetime.fromisoformat(now.replace("Z", "+00:00"))
    blob.upload_from_string(b"x")
    b.blob("no-custom-time").upload_from_string(b"x")
    server.advance(DAY + 1)
    assert names(b) == ["no-custom-time"]


@pytest.mark.parametrize(
    "rule",
    [
        {"action": {"type": "Shred"}, "condition": {"age": 1}},
        {"action": {"type": "Delete"}, "condition": {}},
        {"action": {"type": "Delete"}, "condition": {"age": -1}},
        {"action": {"type": "Delete"}, "condition": {"age": 99999999999}},
        {"action": {"type": "Delete"}, "condition": {"createdBefore": "2026-13-01"}},
        {"action": {"type": "Delete"}, "condition": {"matchesStorageClass": ["TEPID"]}},
        {"action": {"type": "Delete"}, "condition": {"sizeOver": 10}},
        {"action": {"type": "SetStorageClass"}, "condition": {"age": 1}},
        {"action": {"type": "SetStorageClass", "storageClass": "WARM"}, "condition": {"age": 1}},
        {"action": {"type": "AbortIncompleteMultipartUpload"}, "condition": {"isLive": True}},
    ],
)
def test_invalid_rules_are_refused_and_change_nothing(server, gcs_client, rule):
    b = make_bucket(gcs_client)
    b.add_lifecycle_delete_rule(age=7)
    b.patch()
    r = requests.patch(f"{server.url}/storage/v1/b/{b.name}", json={"lifecycle": {"rule": [rule]}}, timeout=T)
    assert r.status_code == 400, r.text
    assert list(gcs_client.get_bucket(b.name).lifecycle_rules) == [{"action": {"type": "Delete"}, "condition": {"age": 7}}]
    r = requests.post(
        f"{server.url}/storage/v1/b?project={PROJECT}",
        json={"name": unique_bucket_name(), "lifecycle": {"rule": [rule]}},
        timeout=T,
    )
    assert r.status_code == 400, r.text
    with pytest.raises(gexc.BadRequest):
        bad = gcs_client.bucket(b.name)
        bad._properties["lifecycle"] = {"rule": [rule]}
        bad._changes.add("lifecycle")
        bad.patch()


def test_background_worker_applies_rules_in_bounded_steps(tmp_path):
    """Without clock:advance the background worker applies due actions by itself, one
    bounded step (here one page of 500 generations) per interval."""
    import concurrent.futures
    import time

    from conftest import Server

    s = Server(tmp_path / "data", ["--lifecycle-interval-secs", "1", "--lifecycle-pages-per-step", "1"]).start()
    try:
        bucket = unique_bucket_name()
        r = requests.post(
            f"{s.url}/storage/v1/b?project={PROJECT}",
            json={"name": bucket, "lifecycle": {"rule": [{"action": {"type": "SetStorageClass", "storageClass": "ARCHIVE"}, "condition": {"age": 0}}]}},
            timeout=T,
        )
        assert r.status_code == 200, r.text

        def upload(i):
            with requests.Session() as sess:
                for j in range(i, 1200, 8):
                    sess.post(f"{s.url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name=o{j:05d}", data=b"x", timeout=T)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(upload, range(8)))

        def archived():
            n, token = 0, None
            while True:
                page = requests.get(f"{s.url}/storage/v1/b/{bucket}/o", params={"pageToken": token} if token else {}, timeout=T).json()
                n += sum(1 for o in page.get("items", []) if o["storageClass"] == "ARCHIVE")
                token = page.get("nextPageToken")
                if not token:
                    return n

        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            seen.append(archived())
            if seen[-1] == 1200:
                break
            time.sleep(0.3)
        assert seen[-1] == 1200, seen
        # Steps were bounded: progress came in page-sized increments, not all at once.
        assert any(0 < n < 1200 for n in seen), seen
    finally:
        s.stop()
