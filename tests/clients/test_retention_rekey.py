"""End-to-end tests of issue 7 apart from rewriteTo (see test_rewrite.py): finding objects by
key, bucket retention policies and their lock, holds, object retention, the destruction guard
on key versions, and re-key jobs (the seed's key-replacement runbook).

Every test starts its own ``sealstore serve --fake-clock`` (the ``server`` fixture) and drives it
with the official ``google-cloud-storage`` and ``google-cloud-kms`` (REST) clients on project
``test-project``. Raw ``requests`` calls are used for the ops API (``/sealstore/v1/...``) and
for the requests the storage client refuses to send (a lock without a policy or with a stale
metageneration).

Buckets are in ``US-EAST1`` and key rings in ``us-east1`` (the CMEK location rule).

Spec: ``issues show 7``; wire details: ``shared/reference/gcs-json-api.md`` §8.2 and §9.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timedelta
from typing import Dict, Iterable, List, Optional, Set, Tuple

import pytest
import requests
from google.api_core import exceptions as gexc
from google.protobuf import duration_pb2

from conftest import (
    LOCATION,
    ONE_DAY_S,
    PROJECT,
    State,
    create_key_ring_at,
    create_symmetric_key,
    csek_key_sha256,
    error_status,
    gcs_crc32c_b64,
    gcs_error,
    gcs_error_reason,
    gcs_md5_b64,
    run_sealstore_cli,
    set_version_state,
    unique_bucket_name,
    version_name,
    wait_enabled,
)

KiB = 1024
MiB = 1024 * KiB
HTTP_TIMEOUT = 60
JOB_TIMEOUT_S = 180.0
BUCKET_LOCATION = "US-EAST1"  # matches conftest.LOCATION ("us-east1")

JOB_STATES = {"RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"}
TERMINAL_JOB_STATES = {"SUCCEEDED", "FAILED", "CANCELLED"}
COUNTER_NAMES = ("scanned", "rewritten", "skipped", "failed")

# A timestamp the server computed from another one it returned: allow for sub-second rounding.
TIME_SLACK = timedelta(seconds=2)


# ======================================================================================
# Helpers: buckets, keys, objects
# ======================================================================================



@pytest.fixture
def server(tmp_path):
    """These tests count the generations a key protects; soft-deleted generations are
    counted too (test_soft_delete.py covers that), so here new buckets have soft delete
    off and a delete removes a generation at once."""
    from conftest import Server

    srv = Server(tmp_path / "data", ["--default-soft-delete-seconds", "0"]).start()
    try:
        yield srv
    finally:
        srv.stop()
        print(srv.log_text())


def make_bucket(gcs, prefix: str = "ret", **kwargs):
    return gcs.create_bucket(unique_bucket_name(prefix), location=BUCKET_LOCATION, **kwargs)


def one_day() -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ONE_DAY_S)


def make_key(kms_client, ring_name: Optional[str] = None, **fields):
    """A SOFTWARE symmetric key in ``us-east1`` whose version 1 is ENABLED and primary.
    Versions are scheduled for destruction for one day (the shortest allowed)."""
    if ring_name is None:
        ring_name = create_key_ring_at(kms_client, LOCATION).name
    fields.setdefault("destroy_scheduled_duration", one_day())
    key = create_symmetric_key(kms_client, ring_name, **fields)
    assert key.primary.name == version_name(key.name, 1)
    return key


def ring_of(key_name: str) -> str:
    return key_name.split("/cryptoKeys/")[0]


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


def version_state(kms_client, name: str):
    return kms_client.get_crypto_key_version(request={"name": name}).state


def set_default_key(bucket, key_name: Optional[str]) -> None:
    bucket.default_kms_key_name = key_name
    bucket.patch()
    assert bucket.default_kms_key_name == key_name


def upload(bucket, name: str, data: bytes, *, kms_key_name=None, encryption_key=None, **kwargs):
    blob = bucket.blob(name, kms_key_name=kms_key_name, encryption_key=encryption_key)
    blob.upload_from_string(data, **kwargs)
    return blob


def download(bucket, name: str, encryption_key: Optional[bytes] = None) -> bytes:
    return bucket.blob(name, encryption_key=encryption_key).download_as_bytes()


def get_blob(bucket, name: str, encryption_key: Optional[bytes] = None):
    blob = bucket.get_blob(name, encryption_key=encryption_key)
    assert blob is not None, f"{bucket.name}/{name} is missing"
    return blob


def assert_reads(bucket, name: str, data: bytes, encryption_key: Optional[bytes] = None):
    """The object reads back ``data`` and its metadata carries the right hashes."""
    blob = get_blob(bucket, name, encryption_key)
    assert blob.md5_hash == gcs_md5_b64(data), f"{name}: md5Hash changed"
    assert blob.crc32c == gcs_crc32c_b64(data), f"{name}: crc32c changed"
    assert blob.size == len(data)
    assert download(bucket, name, encryption_key) == data, f"{name}: data changed"
    return blob


def assert_gcs_error(exc, status: int, reason: Optional[str] = None) -> str:
    """A GCS JSON error with ``status`` and ``error.errors[0].reason``; returns the message."""
    resp = getattr(exc, "response", None)
    got = resp.status_code if resp is not None else getattr(exc, "code", None)
    text = resp.text[:500] if resp is not None else repr(exc)
    assert got == status, f"expected {status}, got {got}: {text}"
    if reason is not None:
        assert gcs_error_reason(exc) == reason, f"expected reason {reason!r}: {gcs_error(exc) or text}"
    return gcs_error(exc).get("message", "")


def assert_forbidden(call, reason: str) -> None:
    with pytest.raises(gexc.Forbidden) as info:
        call()
    assert_gcs_error(info.value, 403, reason)


def assert_protected(bucket, name: str, data: bytes, reason: str) -> None:
    """Delete and overwrite of a protected object → 403 ``reason``; the object is unchanged."""
    assert_forbidden(lambda: bucket.delete_blob(name), reason)
    assert_forbidden(lambda: bucket.blob(name).upload_from_string(b"overwrite attempt"), reason)
    assert download(bucket, name) == data


def close_to(actual: Optional[datetime], expected: datetime, slack: timedelta = TIME_SLACK) -> bool:
    return actual is not None and abs(actual - expected) <= slack


def whole_seconds(ts: datetime) -> datetime:
    return ts.replace(microsecond=0)


# ======================================================================================
# Helpers: ops API (objectsByKey, rekey jobs) and CLI
# ======================================================================================


def objects_by_key(server, bucket: str, **params) -> List[Dict]:
    """``GET /sealstore/v1/b/{bucket}/objectsByKey``, following ``nextPageToken``."""
    items: List[Dict] = []
    token = None
    pages = 0
    while True:
        query = dict(params)
        if token:
            query["pageToken"] = token
        resp = requests.get(
            f"{server.url}/sealstore/v1/b/{bucket}/objectsByKey", params=query, timeout=HTTP_TIMEOUT
        )
        assert resp.status_code == 200, f"objectsByKey {query} -> {resp.status_code}: {resp.text}"
        body = resp.json()
        items.extend(body.get("items") or [])
        token = body.get("nextPageToken")
        pages += 1
        assert pages < 1000, "objectsByKey pagination does not end"
        if not token:
            return items


def gens(items: Iterable[Dict]) -> Set[Tuple[str, str]]:
    """``{(name, generation)}`` of objectsByKey / find items (generation as a string)."""
    out = set()
    for item in items:
        pair = (item["name"], str(item["generation"]))
        assert pair not in out, f"duplicate item {pair}"
        out.add(pair)
    return out


def names_under(server, bucket: str, key_name: str) -> Set[str]:
    return {item["name"] for item in objects_by_key(server, bucket, kmsKeyName=key_name)}


def jobs_url(server) -> str:
    return f"{server.url}/sealstore/v1/projects/{PROJECT}/rekeyJobs"


def job_body(bucket: str, to: Dict, *, source: Optional[Dict] = None, mode: Optional[str] = None, prefix: str = ""):
    body = {"bucket": bucket, "prefix": prefix, "to": to}
    if source is not None:
        body["from"] = source
    if mode is not None:
        body["mode"] = mode
    return body


def create_job(server, bucket: str, to: Dict, **kwargs) -> Dict:
    resp = requests.post(jobs_url(server), json=job_body(bucket, to, **kwargs), timeout=HTTP_TIMEOUT)
    assert resp.status_code in (200, 201), f"create rekey job -> {resp.status_code}: {resp.text}"
    job = resp.json()
    assert re.fullmatch(rf"projects/{PROJECT}/rekeyJobs/[^/:]+", job.get("name", "")), job
    assert job.get("state") in JOB_STATES, job
    return job


def get_job(server, name: str) -> Dict:
    resp = requests.get(f"{server.url}/sealstore/v1/{name}", timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200, f"GET {name} -> {resp.status_code}: {resp.text}"
    job = resp.json()
    assert job["name"] == name, job
    assert job.get("state") in JOB_STATES, job
    return job


def wait_job(server, name: str, timeout: float = JOB_TIMEOUT_S) -> Dict:
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(server, name)
        if job["state"] in TERMINAL_JOB_STATES:
            assert job.get("createTime") and job.get("updateTime"), job
            return job
        if time.monotonic() >= deadline:
            pytest.fail(f"rekey job {name} still {job['state']} after {timeout} s: {job}")
        time.sleep(0.1)


def run_job(server, bucket: str, to: Dict, **kwargs) -> Dict:
    """Creates a job, waits for it, and checks it SUCCEEDED with no failures."""
    job = wait_job(server, create_job(server, bucket, to, **kwargs)["name"])
    assert job["state"] == "SUCCEEDED", job
    assert counters(job)["failed"] == 0, job
    assert not job.get("failures"), job
    return job


def counters(job: Dict) -> Dict[str, int]:
    """The four counters as ints (int64 may be a JSON string; a zero may be left out)."""
    raw = job.get("counters") or {}
    out = {k: int(raw.get(k, 0)) for k in COUNTER_NAMES}
    assert out["scanned"] >= out["rewritten"] + out["skipped"] + out["failed"], job
    return out


def skipped(job: Dict) -> Dict[str, int]:
    """Skip reasons → counts; their sum is the ``skipped`` counter."""
    reasons = {k: int(v) for k, v in (job.get("skipped") or {}).items()}
    assert sum(reasons.values()) == counters(job)["skipped"], f"skip reasons do not add up: {job}"
    return reasons


def to_key(key_name: str) -> Dict:
    return {"kmsKeyName": key_name}


def under(blob, key_name: str) -> bool:
    return bool(blob.kms_key_name) and blob.kms_key_name.startswith(key_name + "/cryptoKeyVersions/")


def cli_json(*args: str) -> Dict:
    proc = run_sealstore_cli(*args)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"sealstore {' '.join(args)} did not print JSON on stdout: {proc.stdout!r}", pytrace=False)


def lock_url(server, bucket: str) -> str:
    return f"{server.url}/storage/v1/b/{bucket}/lockRetentionPolicy"


def assert_destroy_refused(kms_client, version: str, count: int, object_names: Iterable[str], strip=()) -> str:
    """``:destroy`` → 400 FAILED_PRECONDITION naming how many objects block it and one of them;
    the version stays in the state it was in. Returns the message."""
    before = version_state(kms_client, version)
    with pytest.raises(gexc.BadRequest) as info:
        kms_client.destroy_crypto_key_version(request={"name": version})
    assert error_status(info.value) == "FAILED_PRECONDITION", info.value
    message = info.value.message
    object_names = list(object_names)
    assert any(n in message for n in object_names), f"no example among {object_names} in {message!r}"
    rest = message.replace(version, " ")
    for s in sorted([*object_names, *strip], key=len, reverse=True):
        rest = rest.replace(s, " ")
    assert re.search(rf"(?<![\w.]){count}(?![\w.])", rest), f"the count {count} is not in {message!r}"
    assert version_state(kms_client, version) == before
    return message


def destroy(kms_client, version: str):
    scheduled = kms_client.destroy_crypto_key_version(request={"name": version})
    assert scheduled.state == State.DESTROY_SCHEDULED
    return scheduled


def assert_data_unreadable(bucket, name: str) -> None:
    with pytest.raises(gexc.BadRequest) as info:
        download(bucket, name)
    assert_gcs_error(info.value, 400, "cloudKmsDisabledKey")


# ======================================================================================
# A. Finding objects by key
# ======================================================================================


def test_objects_by_key_lists_every_generation_under_a_key_or_version_or_csek(server, gcs_client, kms_client):
    k1 = make_key(kms_client)
    k2 = make_key(kms_client, ring_of(k1.name))
    k1v1, k1v2, k2v1 = version_name(k1.name, 1), version_name(k1.name, 2), version_name(k2.name, 1)
    bucket = make_bucket(gcs_client, "find")
    bucket.versioning_enabled = True
    bucket.patch()
    other = make_bucket(gcs_client, "find")
    c1, c2 = os.urandom(32), os.urandom(32)

    x1 = upload(bucket, "x", b"x one", kms_key_name=k1.name)
    assert x1.kms_key_name == k1v1
    upload(other, "x", b"other bucket", kms_key_name=k1.name)
    assert rotate(kms_client, k1.name) == k1v2
    x2 = upload(bucket, "x", b"x two", kms_key_name=k1.name)  # x1 becomes noncurrent
    assert x2.kms_key_name == k1v2 and x2.generation != x1.generation
    y = upload(bucket, "dir/y", b"y", kms_key_name=k2.name)
    z = upload(bucket, "z", b"z", encryption_key=c1)
    upload(bucket, "w", b"w", encryption_key=c2)
    upload(bucket, "g", b"google-managed")

    # Every generation under K1 (any version), current and noncurrent, and only this bucket's.
    items = objects_by_key(server, bucket.name, kmsKeyName=k1.name)
    assert gens(items) == {("x", str(x1.generation)), ("x", str(x2.generation))}
    by_gen = {str(i["generation"]): i for i in items}
    assert by_gen[str(x1.generation)]["kmsKeyName"] == k1v1
    assert by_gen[str(x2.generation)]["kmsKeyName"] == k1v2
    assert all("customerEncryption" not in i for i in items)

    # One version.
    assert gens(objects_by_key(server, bucket.name, kmsKeyName=k1.name, keyVersion=1)) == {("x", str(x1.generation))}
    assert gens(objects_by_key(server, bucket.name, kmsKeyName=k1.name, keyVersion=2)) == {("x", str(x2.generation))}

    # Another key.
    items = objects_by_key(server, bucket.name, kmsKeyName=k2.name)
    assert gens(items) == {("dir/y", str(y.generation))}
    assert items[0]["kmsKeyName"] == k2v1

    # A CSEK, by the SHA-256 of the key.
    items = objects_by_key(server, bucket.name, csekSha256=csek_key_sha256(c1))
    assert gens(items) == {("z", str(z.generation))}
    assert items[0]["customerEncryption"] == {"encryptionAlgorithm": "AES256", "keySha256": csek_key_sha256(c1)}
    assert "kmsKeyName" not in items[0]
    assert objects_by_key(server, bucket.name, csekSha256=csek_key_sha256(os.urandom(32))) == []

    # Deleting the live generation leaves a noncurrent one, still found; deleting that
    # generation too removes it from the index.
    bucket.delete_blob("dir/y")
    assert gens(objects_by_key(server, bucket.name, kmsKeyName=k2.name)) == {("dir/y", str(y.generation))}
    bucket.delete_blob("dir/y", generation=y.generation)
    assert objects_by_key(server, bucket.name, kmsKeyName=k2.name) == []

    # The other bucket is queried on its own.
    assert {i["name"] for i in objects_by_key(server, other.name, kmsKeyName=k1.name)} == {"x"}


def test_objects_by_key_pages(server, gcs_client, kms_client):
    key = make_key(kms_client)
    bucket = make_bucket(gcs_client, "find")
    expected = set()
    for i in range(7):
        blob = upload(bucket, f"obj-{i:02d}", os.urandom(100), kms_key_name=key.name)
        expected.add((blob.name, str(blob.generation)))
    upload(bucket, "plain", b"not under the key")
    pages = []
    token = None
    while True:
        params = {"kmsKeyName": key.name, "maxResults": 3}
        if token:
            params["pageToken"] = token
        resp = requests.get(
            f"{server.url}/sealstore/v1/b/{bucket.name}/objectsByKey", params=params, timeout=HTTP_TIMEOUT
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        pages.append(body.get("items") or [])
        token = body.get("nextPageToken")
        if not token:
            break
        assert len(pages) < 10
    assert [len(p) for p in pages] == [3, 3, 1]
    assert gens(i for p in pages for i in p) == expected
    assert gens(objects_by_key(server, bucket.name, kmsKeyName=key.name)) == expected


def test_objects_find_cli(server, gcs_client, kms_client):
    key = make_key(kms_client)
    bucket = make_bucket(gcs_client, "find")
    a = upload(bucket, "a", b"a", kms_key_name=key.name)
    assert rotate(kms_client, key.name) == version_name(key.name, 2)
    b = upload(bucket, "b", b"b", kms_key_name=key.name)
    csek = os.urandom(32)
    c = upload(bucket, "c", b"c", encryption_key=csek)
    upload(bucket, "plain", b"plain")
    base = ("objects", "find", "--endpoint", server.url, "--bucket", bucket.name)

    out = cli_json(*base, "--key", key.name)
    assert gens(out["items"]) == {("a", str(a.generation)), ("b", str(b.generation))}
    assert gens(out["items"]) == gens(objects_by_key(server, bucket.name, kmsKeyName=key.name))
    assert {i["kmsKeyName"] for i in out["items"]} == {version_name(key.name, 1), version_name(key.name, 2)}

    out = cli_json(*base, "--key", key.name, "--key-version", "1")
    assert gens(out["items"]) == {("a", str(a.generation))}

    out = cli_json(*base, "--csek-sha256", csek_key_sha256(csek))
    assert gens(out["items"]) == {("c", str(c.generation))}
    assert out["items"][0]["customerEncryption"]["keySha256"] == csek_key_sha256(csek)

    other = make_key(kms_client, ring_of(key.name))
    assert cli_json(*base, "--key", other.name).get("items", []) == []


# ======================================================================================
# B. Bucket retention policy and its lock
# ======================================================================================


def test_bucket_retention_policy_lock_and_expiry(server, gcs_client):
    bucket = make_bucket(gcs_client)
    bucket.retention_period = ONE_DAY_S
    bucket.patch()
    policy = bucket._properties["retentionPolicy"]
    assert policy["retentionPeriod"] == str(ONE_DAY_S)
    assert policy.get("effectiveTime"), policy
    assert not policy.get("isLocked"), policy
    assert gcs_client.get_bucket(bucket.name).retention_period == ONE_DAY_S

    data = os.urandom(5000)
    upload(bucket, "obj", data)
    upload(bucket, "src", b"another object")
    blob = get_blob(bucket, "obj")
    created = blob.time_created
    assert close_to(blob.retention_expiration_time, created + timedelta(seconds=ONE_DAY_S)), blob._properties

    # Delete and every kind of write onto the name are refused.
    reason = "retentionPolicyNotMet"
    assert_protected(bucket, "obj", data, reason)
    assert_forbidden(lambda: bucket.copy_blob(bucket.blob("src"), bucket, "obj"), reason)
    assert_forbidden(lambda: bucket.blob("obj").compose([bucket.blob("src")]), reason)
    assert_forbidden(lambda: bucket.blob("obj").rewrite(bucket.blob("src")), reason)
    assert_reads(bucket, "obj", data)

    # An unlocked policy can be reduced (and raised again).
    bucket.retention_period = 3600
    bucket.patch()
    assert close_to(get_blob(bucket, "obj").retention_expiration_time, created + timedelta(seconds=3600))
    bucket.retention_period = ONE_DAY_S
    bucket.patch()

    # Lock: needs the current metageneration.
    bucket.reload()
    metageneration = bucket.metageneration
    resp = requests.post(lock_url(server, bucket.name), timeout=HTTP_TIMEOUT)
    assert resp.status_code == 400, f"lock without ifMetagenerationMatch -> {resp.status_code}: {resp.text}"
    resp = requests.post(
        lock_url(server, bucket.name), params={"ifMetagenerationMatch": metageneration - 1}, timeout=HTTP_TIMEOUT
    )
    assert resp.status_code == 412, f"lock with a stale metageneration -> {resp.status_code}: {resp.text}"
    assert gcs_error_reason(resp) == "conditionNotMet", resp.text
    assert not gcs_client.get_bucket(bucket.name).retention_policy_locked

    bucket.lock_retention_policy()
    assert bucket.retention_policy_locked is True
    fresh = gcs_client.get_bucket(bucket.name)
    assert fresh.retention_policy_locked is True
    assert fresh.retention_period == ONE_DAY_S

    # A locked policy cannot be reduced (400) or removed (403).
    fresh.retention_period = ONE_DAY_S - 1
    with pytest.raises(gexc.BadRequest):
        fresh.patch()
    fresh = gcs_client.get_bucket(bucket.name)
    fresh.retention_period = None
    with pytest.raises(gexc.Forbidden):
        fresh.patch()
    fresh = gcs_client.get_bucket(bucket.name)
    assert fresh.retention_period == ONE_DAY_S and fresh.retention_policy_locked is True

    # It can be increased; objects' expiry follows.
    fresh.retention_period = 2 * ONE_DAY_S
    fresh.patch()
    fresh = gcs_client.get_bucket(bucket.name)
    assert fresh.retention_period == 2 * ONE_DAY_S and fresh.retention_policy_locked is True
    assert close_to(get_blob(bucket, "obj").retention_expiration_time, created + timedelta(seconds=2 * ONE_DAY_S))

    # One day later the object is still retained, two days later it can be deleted.
    server.advance(ONE_DAY_S + 60)
    assert_forbidden(lambda: bucket.delete_blob("obj"), reason)
    server.advance(ONE_DAY_S)
    bucket.delete_blob("obj")
    bucket.delete_blob("src")
    assert bucket.get_blob("obj") is None
    # An empty bucket with a locked policy can be deleted.
    gcs_client.get_bucket(bucket.name).delete()


def test_bucket_retention_one_day_then_delete(server, gcs_client):
    bucket = make_bucket(gcs_client)
    bucket.retention_period = ONE_DAY_S
    bucket.patch()
    bucket.lock_retention_policy()
    data = b"retained for a day"
    upload(bucket, "obj", data)
    assert_protected(bucket, "obj", data, "retentionPolicyNotMet")
    server.advance(ONE_DAY_S + 60)
    bucket.delete_blob("obj")
    assert bucket.get_blob("obj") is None
    # A new object under the same name is retained again from its own creation.
    upload(bucket, "obj", data)
    assert_forbidden(lambda: bucket.delete_blob("obj"), "retentionPolicyNotMet")


def test_lock_without_policy_or_with_stale_metageneration(server, gcs_client):
    bucket = make_bucket(gcs_client)
    bucket.reload()
    resp = requests.post(
        lock_url(server, bucket.name), params={"ifMetagenerationMatch": bucket.metageneration}, timeout=HTTP_TIMEOUT
    )
    assert resp.status_code == 400, f"lock without a policy -> {resp.status_code}: {resp.text}"

    bucket.retention_period = 60
    bucket.patch()
    stale = bucket.metageneration
    bucket.labels = {"touched": "yes"}
    bucket.patch()
    assert bucket.metageneration > stale
    resp = requests.post(lock_url(server, bucket.name), params={"ifMetagenerationMatch": stale}, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 412, f"lock with a stale metageneration -> {resp.status_code}: {resp.text}"
    # Still unlocked: it can be removed.
    fresh = gcs_client.get_bucket(bucket.name)
    assert not fresh.retention_policy_locked
    fresh.retention_period = None
    fresh.patch()
    assert gcs_client.get_bucket(bucket.name).retention_period is None


# ======================================================================================
# C. Holds
# ======================================================================================


@pytest.mark.parametrize("hold", ["temporary_hold", "event_based_hold"])
def test_object_hold_blocks_delete_and_overwrite_until_released(server, gcs_client, hold):
    bucket = make_bucket(gcs_client, "hold")
    data = os.urandom(3000)
    blob = upload(bucket, "held", data)
    setattr(blob, hold, True)
    blob.patch()
    assert getattr(blob, hold) is True
    assert getattr(get_blob(bucket, "held"), hold) is True

    assert_protected(bucket, "held", data, "objectUnderActiveHold")
    server.advance(30 * ONE_DAY_S)  # holds do not expire
    assert_protected(bucket, "held", data, "objectUnderActiveHold")

    blob = get_blob(bucket, "held")
    setattr(blob, hold, False)
    blob.patch()
    assert not getattr(get_blob(bucket, "held"), hold)
    bucket.delete_blob("held")
    assert bucket.get_blob("held") is None


def test_default_event_based_hold(server, gcs_client):
    bucket = make_bucket(gcs_client, "hold")
    bucket.default_event_based_hold = True
    bucket.patch()
    assert gcs_client.get_bucket(bucket.name).default_event_based_hold is True

    blob = upload(bucket, "a", b"a")
    assert blob.event_based_hold is True
    assert get_blob(bucket, "a").event_based_hold is True
    assert_protected(bucket, "a", b"a", "objectUnderActiveHold")

    bucket.default_event_based_hold = False
    bucket.patch()
    assert not upload(bucket, "b", b"b").event_based_hold
    bucket.delete_blob("b")
    # The object uploaded before keeps its hold.
    assert_forbidden(lambda: bucket.delete_blob("a"), "objectUnderActiveHold")


def test_releasing_an_event_based_hold_starts_the_retention_clock(server, gcs_client):
    bucket = make_bucket(gcs_client, "hold")
    bucket.retention_period = ONE_DAY_S
    bucket.default_event_based_hold = True
    bucket.patch()
    data = b"event-held"
    blob = upload(bucket, "obj", data)
    assert blob.event_based_hold is True
    blob = get_blob(bucket, "obj")
    created = blob.time_created
    assert blob.retention_expiration_time is None, "no expiry while an event-based hold is active"

    server.advance(3 * ONE_DAY_S)  # far past timeCreated + period
    assert_protected(bucket, "obj", data, "objectUnderActiveHold")

    blob.event_based_hold = False
    blob.patch()
    released = blob.updated
    assert released >= created + timedelta(days=3)
    expiry = get_blob(bucket, "obj").retention_expiration_time
    assert close_to(expiry, released + timedelta(seconds=ONE_DAY_S)), (released, expiry)

    # Retained from the release, not from creation.
    assert_protected(bucket, "obj", data, "retentionPolicyNotMet")
    server.advance(ONE_DAY_S - 3600)
    assert_forbidden(lambda: bucket.delete_blob("obj"), "retentionPolicyNotMet")
    server.advance(3600 + 60)
    bucket.delete_blob("obj")


def test_temporary_hold_does_not_move_the_retention_expiry(server, gcs_client):
    bucket = make_bucket(gcs_client, "hold")
    bucket.retention_period = 3600
    bucket.patch()
    blob = upload(bucket, "obj", b"x")
    expiry = get_blob(bucket, "obj").retention_expiration_time
    assert expiry is not None
    blob.temporary_hold = True
    blob.patch()
    server.advance(7200)
    assert_forbidden(lambda: bucket.delete_blob("obj"), "objectUnderActiveHold")
    blob = get_blob(bucket, "obj")
    blob.temporary_hold = False
    blob.patch()
    assert close_to(get_blob(bucket, "obj").retention_expiration_time, expiry)
    bucket.delete_blob("obj")


# ======================================================================================
# D. Object retention
# ======================================================================================


def patch_retention(bucket, name: str, mode: Optional[str], until: Optional[datetime], override: bool = False):
    blob = get_blob(bucket, name)
    retention = blob.retention
    retention.mode = mode
    retention.retain_until_time = until
    blob.patch(override_unlocked_retention=override)
    return blob


def assert_retention(bucket, name: str, mode: Optional[str], until: Optional[datetime]) -> None:
    retention = get_blob(bucket, name).retention
    assert retention.mode == mode, dict(retention)
    if until is None:
        assert retention.retain_until_time is None, dict(retention)
    else:
        assert close_to(retention.retain_until_time, until, timedelta(seconds=1)), dict(retention)


def test_object_retention_unlocked(server, gcs_client):
    bucket = make_bucket(gcs_client, "objret", enable_object_retention=True)
    assert bucket.object_retention_mode == "Enabled"
    assert gcs_client.get_bucket(bucket.name).object_retention_mode == "Enabled"
    data = os.urandom(2000)
    created = whole_seconds(upload(bucket, "doc", data).time_created)
    day, hour, two_days = (created + timedelta(days=1), created + timedelta(hours=1), created + timedelta(days=2))

    patch_retention(bucket, "doc", "Unlocked", day)
    assert_retention(bucket, "doc", "Unlocked", day)
    assert_protected(bucket, "doc", data, "retentionPolicyNotMet")

    # Lowering needs overrideUnlockedRetention.
    with pytest.raises(gexc.Forbidden):
        patch_retention(bucket, "doc", "Unlocked", hour)
    assert_retention(bucket, "doc", "Unlocked", day)
    patch_retention(bucket, "doc", "Unlocked", hour, override=True)
    assert_retention(bucket, "doc", "Unlocked", hour)

    # Raising does not.
    patch_retention(bucket, "doc", "Unlocked", two_days)
    assert_retention(bucket, "doc", "Unlocked", two_days)

    # Removing needs it.
    with pytest.raises(gexc.Forbidden):
        patch_retention(bucket, "doc", None, None)
    assert_retention(bucket, "doc", "Unlocked", two_days)
    assert_forbidden(lambda: bucket.delete_blob("doc"), "retentionPolicyNotMet")
    blob = patch_retention(bucket, "doc", None, None, override=True)
    assert blob.retention.mode is None
    assert_retention(bucket, "doc", None, None)
    bucket.delete_blob("doc")
    assert bucket.get_blob("doc") is None


def test_object_retention_locked(server, gcs_client):
    bucket = make_bucket(gcs_client, "objret", enable_object_retention=True)
    data = os.urandom(2000)
    created = whole_seconds(upload(bucket, "doc", data).time_created)
    day, hour, two_days = (created + timedelta(days=1), created + timedelta(hours=1), created + timedelta(days=2))
    patch_retention(bucket, "doc", "Unlocked", day)

    # Unlocked → Locked needs overrideUnlockedRetention (reference §9.1).
    with pytest.raises(gexc.Forbidden):
        patch_retention(bucket, "doc", "Locked", day)
    assert_retention(bucket, "doc", "Unlocked", day)
    patch_retention(bucket, "doc", "Locked", day, override=True)
    assert_retention(bucket, "doc", "Locked", day)

    # Locked: no reducing, no removing, no unlocking, even with the override.
    with pytest.raises(gexc.Forbidden):
        patch_retention(bucket, "doc", "Locked", hour, override=True)
    with pytest.raises(gexc.Forbidden):
        patch_retention(bucket, "doc", None, None, override=True)
    with pytest.raises(gexc.Forbidden):
        patch_retention(bucket, "doc", "Unlocked", day, override=True)
    assert_retention(bucket, "doc", "Locked", day)

    # It can be extended.
    patch_retention(bucket, "doc", "Locked", two_days)
    assert_retention(bucket, "doc", "Locked", two_days)
    assert_protected(bucket, "doc", data, "retentionPolicyNotMet")

    server.advance(ONE_DAY_S + 60)
    assert_forbidden(lambda: bucket.delete_blob("doc"), "retentionPolicyNotMet")
    server.advance(ONE_DAY_S)
    bucket.delete_blob("doc")
    assert bucket.get_blob("doc") is None


def test_object_retention_needs_an_enabled_bucket(server, gcs_client):
    bucket = make_bucket(gcs_client, "objret")
    assert bucket.object_retention_mode is None
    upload(bucket, "doc", b"doc")
    until = whole_seconds(get_blob(bucket, "doc").time_created) + timedelta(days=1)
    with pytest.raises(gexc.BadRequest):
        patch_retention(bucket, "doc", "Unlocked", until)
    assert get_blob(bucket, "doc").retention.mode is None
    bucket.delete_blob("doc")


# ======================================================================================
# E. The destruction guard
# ======================================================================================


def test_locked_policy_blocks_destroy_until_expiry_then_data_is_gone(server, gcs_client, kms_client):
    key = make_key(kms_client)
    v1 = version_name(key.name, 1)
    bucket = make_bucket(gcs_client, "guard")
    set_default_key(bucket, key.name)
    bucket.retention_period = ONE_DAY_S
    bucket.patch()
    bucket.lock_retention_policy()
    assert bucket.retention_policy_locked is True
    names = ["alpha.bin", "beta.bin", "gamma.bin"]
    data = {n: os.urandom(4000) for n in names}
    for n in names:
        assert upload(bucket, n, data[n]).kms_key_name == v1

    # Destroy refused: 3 objects block it; the version stays ENABLED and the data readable.
    assert_destroy_refused(kms_client, v1, 3, names, strip=(bucket.name,))
    assert version_state(kms_client, v1) == State.ENABLED
    for n in names:
        assert_reads(bucket, n, data[n])
    assert_forbidden(lambda: bucket.delete_blob("alpha.bin"), "retentionPolicyNotMet")

    # A day later the retention has expired: destroy is allowed.
    server.advance(ONE_DAY_S + 60)
    destroy(kms_client, v1)
    for n in names:
        assert_data_unreadable(bucket, n)

    server.advance(ONE_DAY_S + 60)
    assert version_state(kms_client, v1) == State.DESTROYED
    for n in names:
        assert_data_unreadable(bucket, n)
    listed = {b.name: b for b in gcs_client.list_blobs(bucket.name)}
    assert set(listed) == set(names)
    assert all(b.kms_key_name == v1 for b in listed.values())
    assert get_blob(bucket, "beta.bin").size == len(data["beta.bin"])
    bucket.delete_blob("alpha.bin")
    assert {b.name for b in gcs_client.list_blobs(bucket.name)} == {"beta.bin", "gamma.bin"}


@pytest.mark.parametrize("hold", ["temporary_hold", "event_based_hold"])
def test_a_hold_alone_blocks_destroy(server, gcs_client, kms_client, hold):
    key = make_key(kms_client)
    v1 = version_name(key.name, 1)
    bucket = make_bucket(gcs_client, "guard")  # no retention policy at all
    upload(bucket, "held.bin", b"held", kms_key_name=key.name)
    upload(bucket, "free.bin", b"free", kms_key_name=key.name)
    blob = get_blob(bucket, "held.bin")
    setattr(blob, hold, True)
    blob.patch()

    assert_destroy_refused(kms_client, v1, 1, ["held.bin"], strip=(bucket.name,))
    assert version_state(kms_client, v1) == State.ENABLED
    server.advance(10 * ONE_DAY_S)  # holds do not expire
    assert_destroy_refused(kms_client, v1, 1, ["held.bin"], strip=(bucket.name,))

    blob = get_blob(bucket, "held.bin")
    setattr(blob, hold, False)
    blob.patch()
    destroy(kms_client, v1)
    server.advance(ONE_DAY_S + 60)
    assert version_state(kms_client, v1) == State.DESTROYED
    assert_data_unreadable(bucket, "held.bin")


def test_unlocked_retention_does_not_block_destroy(server, gcs_client, kms_client):
    """Only locked retention (bucket policy or object retention) and holds pin a version."""
    key = make_key(kms_client)
    v1 = version_name(key.name, 1)
    policy_bucket = make_bucket(gcs_client, "guard")
    policy_bucket.retention_period = ONE_DAY_S
    policy_bucket.patch()
    upload(policy_bucket, "retained.bin", b"r", kms_key_name=key.name)
    objret_bucket = make_bucket(gcs_client, "guard", enable_object_retention=True)
    created = whole_seconds(upload(objret_bucket, "unlocked.bin", b"u", kms_key_name=key.name).time_created)
    patch_retention(objret_bucket, "unlocked.bin", "Unlocked", created + timedelta(days=1))

    destroy(kms_client, v1)
    server.advance(ONE_DAY_S + 60)
    assert version_state(kms_client, v1) == State.DESTROYED


def test_locked_object_retention_blocks_destroy(server, gcs_client, kms_client):
    key = make_key(kms_client)
    v1 = version_name(key.name, 1)
    bucket = make_bucket(gcs_client, "guard", enable_object_retention=True)
    data = b"locked by object retention"
    created = whole_seconds(upload(bucket, "pinned.bin", data, kms_key_name=key.name).time_created)
    patch_retention(bucket, "pinned.bin", "Unlocked", created + timedelta(days=1))
    patch_retention(bucket, "pinned.bin", "Locked", created + timedelta(days=1), override=True)

    assert_destroy_refused(kms_client, v1, 1, ["pinned.bin"], strip=(bucket.name,))
    assert_reads(bucket, "pinned.bin", data)
    server.advance(ONE_DAY_S + 60)
    destroy(kms_client, v1)
    server.advance(ONE_DAY_S + 60)
    assert version_state(kms_client, v1) == State.DESTROYED
    assert_data_unreadable(bucket, "pinned.bin")
    bucket.delete_blob("pinned.bin")


def test_hold_after_scheduling_keeps_the_version_scheduled_until_released(server, new_gcs_client, new_kms_client):
    gcs_client, kms_client = new_gcs_client(), new_kms_client()
    key = make_key(kms_client)
    v1 = version_name(key.name, 1)
    bucket = make_bucket(gcs_client, "guard")
    upload(bucket, "obj.bin", b"late hold", kms_key_name=key.name)
    destroy(kms_client, v1)

    # The hold arrives while the version is scheduled (metadata patches still work).
    blob = get_blob(bucket, "obj.bin")
    blob.temporary_hold = True
    blob.patch()
    assert get_blob(bucket, "obj.bin").temporary_hold is True

    server.advance(ONE_DAY_S + 60)  # past destroyTime: blocked, stays scheduled
    assert version_state(kms_client, v1) == State.DESTROY_SCHEDULED
    server.advance(ONE_DAY_S)
    assert version_state(kms_client, v1) == State.DESTROY_SCHEDULED

    # Still blocked (and still retried) after a restart.
    server.restart()
    gcs_client, kms_client = new_gcs_client(), new_kms_client()
    bucket = gcs_client.bucket(bucket.name)
    server.advance(60)
    assert version_state(kms_client, v1) == State.DESTROY_SCHEDULED

    blob = get_blob(bucket, "obj.bin")
    blob.temporary_hold = False
    blob.patch()
    server.advance(60)
    assert version_state(kms_client, v1) == State.DESTROYED
    assert_data_unreadable(bucket, "obj.bin")
    bucket.delete_blob("obj.bin")
    assert bucket.get_blob("obj.bin") is None


# ======================================================================================
# F. Re-key jobs
# ======================================================================================


def test_rekey_job_counters_prefix_csek_and_idempotence(server, gcs_client, kms_client):
    k1 = make_key(kms_client)
    k2 = make_key(kms_client, ring_of(k1.name))
    k2v1 = version_name(k2.name, 1)
    bucket = make_bucket(gcs_client, "rekey")
    csek = os.urandom(32)
    data = {n: os.urandom(size) for n, size in [("a/1", 1000), ("a/2", 3 * MiB + 7), ("a/3", 500),
                                               ("a/4", 700), ("a/5", 900), ("b/1", 1100)]}
    upload(bucket, "a/1", data["a/1"], kms_key_name=k1.name)
    blob = bucket.blob("a/2", kms_key_name=k1.name)
    blob.content_type = "text/plain"
    blob.metadata = {"owner": "team-x"}
    blob.upload_from_string(data["a/2"], content_type="text/plain")
    upload(bucket, "a/3", data["a/3"], kms_key_name=k2.name)
    upload(bucket, "a/4", data["a/4"])  # Google-managed
    upload(bucket, "a/5", data["a/5"], encryption_key=csek)
    upload(bucket, "b/1", data["b/1"], kms_key_name=k1.name)
    before = {n: get_blob(bucket, n, csek if n == "a/5" else None) for n in data}

    # From K1 under a/: the two K1 objects there; rewrite is the default mode.
    job = run_job(server, bucket.name, to_key(k2.name), source=to_key(k1.name), prefix="a/")
    c = counters(job)
    assert c["rewritten"] == 2, job
    assert skipped(job).get("csek", 0) == 0, job
    for n in ("a/1", "a/2"):
        after = assert_reads(bucket, n, data[n])
        assert after.kms_key_name == k2v1
        assert after.generation != before[n].generation, f"{n}: rewrite mode makes a new generation"
    a2 = get_blob(bucket, "a/2")
    assert a2.content_type == "text/plain" and a2.metadata == {"owner": "team-x"}
    for n in ("a/3", "a/4", "b/1"):
        assert get_blob(bucket, n).generation == before[n].generation, f"{n} must not be touched"
    assert under(get_blob(bucket, "b/1"), k1.name)
    assert names_under(server, bucket.name, k1.name) == {"b/1"}

    # The same job again: nothing left to do.
    job = run_job(server, bucket.name, to_key(k2.name), source=to_key(k1.name), prefix="a/")
    assert counters(job)["rewritten"] == 0, job

    # Without "from": everything under a/ not already under K2; the CSEK object is skipped.
    job = run_job(server, bucket.name, to_key(k2.name), prefix="a/")
    assert counters(job)["rewritten"] == 1, job  # a/4, Google-managed
    assert skipped(job).get("csek", 0) == 1, job
    assert get_blob(bucket, "a/4").kms_key_name == k2v1
    assert_reads(bucket, "a/4", data["a/4"])
    assert_reads(bucket, "a/5", data["a/5"], csek)
    assert get_blob(bucket, "a/5", csek).generation == before["a/5"].generation

    # Idempotent: a second run rewrites nothing and skips every object under the prefix.
    generations = {n: get_blob(bucket, n, csek if n == "a/5" else None).generation for n in data}
    job = run_job(server, bucket.name, to_key(k2.name), prefix="a/")
    c = counters(job)
    assert c["rewritten"] == 0, job
    assert c["skipped"] == 5, job
    reasons = skipped(job)
    assert reasons.get("csek", 0) == 1, job
    for n in data:
        assert get_blob(bucket, n, csek if n == "a/5" else None).generation == generations[n]

    # Jobs never disable or destroy anything.
    assert version_state(kms_client, version_name(k1.name, 1)) == State.ENABLED
    assert version_state(kms_client, k2v1) == State.ENABLED
    assert_reads(bucket, "b/1", data["b/1"])


def test_rekey_job_source_selectors_and_google_managed_target(server, gcs_client, kms_client):
    k1 = make_key(kms_client)
    k2 = make_key(kms_client, ring_of(k1.name))
    v1, v2 = version_name(k1.name, 1), version_name(k1.name, 2)
    bucket = make_bucket(gcs_client, "rekey")
    data: Dict[str, bytes] = {}

    def put(name: str) -> None:
        data[name] = os.urandom(2000)
        upload(bucket, name, data[name], kms_key_name=k1.name)

    for n in ("versions/one", "primary/one", "primary/also-one"):
        put(n)
    assert rotate(kms_client, k1.name) == v2
    for n in ("versions/two", "primary/two", "managed/two"):
        put(n)
    gen = {n: get_blob(bucket, n).generation for n in data}

    # A list of versions.
    job = run_job(server, bucket.name, to_key(k2.name), source={"kmsKeyVersions": [v1]}, prefix="versions/")
    assert counters(job)["rewritten"] == 1, job
    assert get_blob(bucket, "versions/one").kms_key_name == version_name(k2.name, 1)
    assert get_blob(bucket, "versions/two").kms_key_name == v2
    assert get_blob(bucket, "versions/two").generation == gen["versions/two"]

    # All but the current primary, onto the key's own primary (routine rotation).
    job = run_job(server, bucket.name, to_key(k1.name), source={"allButPrimaryOf": k1.name}, prefix="primary/")
    assert counters(job)["rewritten"] == 2, job
    for n in ("primary/one", "primary/also-one", "primary/two"):
        assert get_blob(bucket, n).kms_key_name == v2
    assert get_blob(bucket, "primary/two").generation == gen["primary/two"]
    assert objects_by_key(server, bucket.name, kmsKeyName=k1.name, keyVersion=1) == []

    # To the Google-managed key.
    job = run_job(server, bucket.name, {"googleManaged": True}, prefix="managed/")
    assert counters(job)["rewritten"] == 1, job
    assert get_blob(bucket, "managed/two").kms_key_name is None
    assert "managed/two" not in names_under(server, bucket.name, k1.name)

    for n in data:
        assert_reads(bucket, n, data[n])
    assert version_state(kms_client, v1) == State.ENABLED
    assert version_state(kms_client, v2) == State.ENABLED
    # The old version no longer protects anything: disabling it breaks no read.
    set_version_state(kms_client, v1, State.DISABLED)
    for n in data:
        assert_reads(bucket, n, data[n])


def test_rekey_job_counts_failures_and_retries_them(server, gcs_client, kms_client):
    k1 = make_key(kms_client)
    k2 = make_key(kms_client, ring_of(k1.name))
    v1 = version_name(k1.name, 1)
    bucket = make_bucket(gcs_client, "rekey")
    bad, good = os.urandom(1500), os.urandom(1600)
    upload(bucket, "bad-object", bad, kms_key_name=k1.name)
    rotate(kms_client, k1.name)
    upload(bucket, "good-object", good, kms_key_name=k1.name)
    set_version_state(kms_client, v1, State.DISABLED)

    job = wait_job(server, create_job(server, bucket.name, to_key(k2.name), source=to_key(k1.name))["name"])
    assert job["state"] in ("SUCCEEDED", "FAILED"), job
    c = counters(job)
    assert c["rewritten"] == 1 and c["failed"] == 1, job
    failures = json.dumps(job.get("failures") or [])
    assert "bad-object" in failures and "good-object" not in failures, job
    assert get_blob(bucket, "good-object").kms_key_name == version_name(k2.name, 1)
    assert get_blob(bucket, "bad-object").kms_key_name == v1
    assert version_state(kms_client, v1) == State.DISABLED

    # Once the version is usable again, the same job finishes the work.
    set_version_state(kms_client, v1, State.ENABLED)
    assert_reads(bucket, "bad-object", bad)
    job = run_job(server, bucket.name, to_key(k2.name), source=to_key(k1.name))
    assert counters(job)["rewritten"] == 1, job
    assert names_under(server, bucket.name, k1.name) == set()
    assert_reads(bucket, "bad-object", bad)
    assert_reads(bucket, "good-object", good)


def test_rekey_job_cancel(server, gcs_client, kms_client):
    k1 = make_key(kms_client)
    k2 = make_key(kms_client, ring_of(k1.name))
    bucket = make_bucket(gcs_client, "rekey")
    count = 120
    data = {f"o{i:04d}": os.urandom(64 * KiB) for i in range(count)}
    for n, d in data.items():
        upload(bucket, n, d, kms_key_name=k1.name)

    job = create_job(server, bucket.name, to_key(k2.name), source=to_key(k1.name))
    resp = requests.post(f"{server.url}/sealstore/v1/{job['name']}:cancel", timeout=HTTP_TIMEOUT)
    final = wait_job(server, job["name"])
    if resp.status_code == 200:
        assert final["state"] in ("CANCELLED", "SUCCEEDED"), final
    else:
        # Only a job that already finished may refuse to be cancelled.
        assert resp.status_code in (400, 409), resp.text
        assert final["state"] == "SUCCEEDED", final
    c = counters(final)
    assert c["failed"] == 0 and c["rewritten"] <= count, final

    # A cancelled job stays stopped.
    time.sleep(1.0)
    again = get_job(server, job["name"])
    assert again["state"] == final["state"] and counters(again) == c, (final, again)

    # Nothing was half-done: every object is under one key or the other and reads back.
    moved = names_under(server, bucket.name, k2.name)
    left = names_under(server, bucket.name, k1.name)
    assert moved | left == set(data) and not moved & left
    if final["state"] == "SUCCEEDED":
        assert left == set()
    for n in list(data)[:: max(1, count // 12)]:
        assert_reads(bucket, n, data[n])

    # A new job finishes what is left.
    job = run_job(server, bucket.name, to_key(k2.name), source=to_key(k1.name))
    assert counters(job)["rewritten"] == len(left), job
    assert names_under(server, bucket.name, k1.name) == set()


def test_rekey_job_resumes_after_restart(server, new_gcs_client, new_kms_client):
    gcs_client, kms_client = new_gcs_client(), new_kms_client()
    k1 = make_key(kms_client)
    k2 = make_key(kms_client, ring_of(k1.name))
    bucket = make_bucket(gcs_client, "rekey")
    count = 80
    data = {f"o{i:04d}": os.urandom(32 * KiB) for i in range(count)}
    for n, d in data.items():
        upload(bucket, n, d, kms_key_name=k1.name)

    job = create_job(server, bucket.name, to_key(k2.name), source=to_key(k1.name))
    server.restart()
    gcs_client = new_gcs_client()
    bucket = gcs_client.bucket(bucket.name)

    final = wait_job(server, job["name"])
    assert final["state"] == "SUCCEEDED", final
    assert counters(final)["failed"] == 0, final
    assert names_under(server, bucket.name, k1.name) == set()
    assert names_under(server, bucket.name, k2.name) == set(data)
    for n in list(data)[::10]:
        assert_reads(bucket, n, data[n])


def test_rekey_job_bad_requests(server, gcs_client, kms_client):
    key = make_key(kms_client)
    bucket = make_bucket(gcs_client, "rekey")
    resp = requests.post(jobs_url(server), json={"bucket": bucket.name, "prefix": ""}, timeout=HTTP_TIMEOUT)
    assert resp.status_code == 400, f"no 'to' -> {resp.status_code}: {resp.text}"
    resp = requests.post(
        jobs_url(server), json=job_body(bucket.name, to_key(key.name), mode="shred"), timeout=HTTP_TIMEOUT
    )
    assert resp.status_code == 400, f"unknown mode -> {resp.status_code}: {resp.text}"
    resp = requests.get(f"{server.url}/sealstore/v1/projects/{PROJECT}/rekeyJobs/no-such-job", timeout=HTTP_TIMEOUT)
    assert resp.status_code == 404, resp.text


def test_rekey_cli(server, gcs_client, kms_client):
    k1 = make_key(kms_client)
    k2 = make_key(kms_client, ring_of(k1.name))
    bucket = make_bucket(gcs_client, "rekey")
    data = {n: os.urandom(3000) for n in ("p/1", "p/2", "q/1")}
    for n, d in data.items():
        upload(bucket, n, d, kms_key_name=k1.name)
    gen = {n: get_blob(bucket, n).generation for n in data}

    out = cli_json(
        "rekey", "--endpoint", server.url, "--project", PROJECT, "--bucket", bucket.name,
        "--to-key", k2.name, "--from-key", k1.name, "--mode", "rewrap", "--prefix", "p/", "--json",
    )
    assert out["state"] == "SUCCEEDED", out
    assert counters(out)["rewritten"] == 2 and counters(out)["failed"] == 0, out
    assert get_job(server, out["name"])["state"] == "SUCCEEDED"
    for n in ("p/1", "p/2"):
        blob = assert_reads(bucket, n, data[n])
        assert blob.kms_key_name == version_name(k2.name, 1)
        assert blob.generation == gen[n], "rewrap keeps the generation"
    assert under(get_blob(bucket, "q/1"), k1.name)

    # Default mode (rewrite), whole bucket.
    out = cli_json(
        "rekey", "--endpoint", server.url, "--project", PROJECT, "--bucket", bucket.name,
        "--to-key", k2.name, "--from-key", k1.name, "--json",
    )
    assert out["state"] == "SUCCEEDED" and counters(out)["rewritten"] == 1, out
    blob = assert_reads(bucket, "q/1", data["q/1"])
    assert blob.kms_key_name == version_name(k2.name, 1) and blob.generation != gen["q/1"]


# ======================================================================================
# G. The seed's key-replacement runbook, all four steps
# ======================================================================================


def test_key_replacement_runbook(server, gcs_client, kms_client):
    k1 = make_key(kms_client)
    k2 = make_key(kms_client, ring_of(k1.name))
    k1v1, k2v1 = version_name(k1.name, 1), version_name(k2.name, 1)
    bucket = make_bucket(gcs_client, "runbook")
    set_default_key(bucket, k1.name)
    csek = os.urandom(32)
    data = {n: os.urandom(4000 + i) for i, n in enumerate(["a", "b", "c", "d", "s", "e", "f"])}
    data["big"] = os.urandom(2 * MiB + 3)

    # Before: objects under K1, by default and by name, plus one CSEK object.
    for n in ("a", "b", "c", "big"):
        assert upload(bucket, n, data[n]).kms_key_name == k1v1
    assert upload(bucket, "d", data["d"], kms_key_name=k1.name).kms_key_name == k1v1
    assert upload(bucket, "s", data["s"], encryption_key=csek).kms_key_name is None
    old_objects = {"a", "b", "c", "d", "big"}

    # Step 1: switch the bucket default to K2.
    set_default_key(bucket, k2.name)
    assert gcs_client.get_bucket(bucket.name).default_kms_key_name == k2.name

    # Step 2: new uploads (by default or by name) use K2.
    assert upload(bucket, "e", data["e"]).kms_key_name == k2v1
    assert upload(bucket, "f", data["f"], kms_key_name=k2.name).kms_key_name == k2v1

    # Step 3: find the objects under K1, re-key them, check nothing is left.
    found = objects_by_key(server, bucket.name, kmsKeyName=k1.name)
    assert {i["name"] for i in found} == old_objects
    assert all(i["kmsKeyName"] == k1v1 for i in found)
    job = run_job(server, bucket.name, to_key(k2.name), source=to_key(k1.name), mode="rewrite")
    c = counters(job)
    assert c["rewritten"] == len(old_objects), job
    assert skipped(job).get("csek", 0) == 0, job  # the CSEK object is not under K1
    assert objects_by_key(server, bucket.name, kmsKeyName=k1.name) == []
    assert names_under(server, bucket.name, k2.name) == old_objects | {"e", "f"}

    # A job without "from" finds nothing else to do except the CSEK object it cannot read.
    job = run_job(server, bucket.name, to_key(k2.name))
    assert counters(job)["rewritten"] == 0, job
    assert skipped(job).get("csek", 0) == 1, job

    # The job disabled nothing.
    for version in kms_client.list_crypto_key_versions(request={"parent": k1.name}):
        assert version.state == State.ENABLED

    # Step 4: disable every K1 version; every object still reads, with intact hashes.
    for version in kms_client.list_crypto_key_versions(request={"parent": k1.name}):
        set_version_state(kms_client, version.name, State.DISABLED)
    for n, d in data.items():
        blob = assert_reads(bucket, n, d, csek if n == "s" else None)
        if n != "s":
            assert blob.kms_key_name == k2v1


# ======================================================================================
# H. rewrap versus rewrite
# ======================================================================================


def test_rewrap_and_rewrite_modes_compared(server, gcs_client, kms_client):
    k1 = make_key(kms_client)
    k2 = make_key(kms_client, ring_of(k1.name))
    k2v1 = version_name(k2.name, 1)
    data = {f"obj-{i}": os.urandom(size) for i, size in enumerate([10, 5000, 300 * KiB, 3 * MiB + 1])}
    buckets = {mode: make_bucket(gcs_client, mode) for mode in ("rewrap", "rewrite")}
    before = {}
    for mode, bucket in buckets.items():
        for n, d in data.items():
            blob = bucket.blob(n, kms_key_name=k1.name)
            blob.metadata = {"mode": mode}
            blob.upload_from_string(d)
        before[mode] = {n: get_blob(bucket, n) for n in data}

    jobs = {
        mode: run_job(server, bucket.name, to_key(k2.name), source=to_key(k1.name), mode=mode)
        for mode, bucket in buckets.items()
    }
    for mode, job in jobs.items():
        assert counters(job)["rewritten"] == len(data), job
        assert objects_by_key(server, buckets[mode].name, kmsKeyName=k1.name) == []

    for n, d in data.items():
        old_rewrap, old_rewrite = before["rewrap"][n], before["rewrite"][n]
        rewrapped = assert_reads(buckets["rewrap"], n, d)
        rewritten = assert_reads(buckets["rewrite"], n, d)
        for blob in (rewrapped, rewritten):
            assert blob.kms_key_name == k2v1
        assert rewrapped.generation == old_rewrap.generation, f"{n}: rewrap keeps the generation"
        assert rewritten.generation != old_rewrite.generation, f"{n}: rewrite makes a new generation"
        assert rewrapped.time_created == old_rewrap.time_created
        assert rewrapped.metadata == {"mode": "rewrap"} and rewritten.metadata == {"mode": "rewrite"}
    # The index follows the rewrap: the same generations, now under K2.
    items = objects_by_key(server, buckets["rewrap"].name, kmsKeyName=k2.name)
    assert gens(items) == {(n, str(b.generation)) for n, b in before["rewrap"].items()}
    assert all(i["kmsKeyName"] == k2v1 for i in items)

    # Neither depends on K1 any more.
    set_version_state(kms_client, version_name(k1.name, 1), State.DISABLED)
    for n, d in data.items():
        for bucket in buckets.values():
            assert_reads(bucket, n, d)

    # Running either again is a no-op.
    for mode, bucket in buckets.items():
        job = run_job(server, bucket.name, to_key(k2.name), mode=mode)
        assert counters(job)["rewritten"] == 0, job
        assert counters(job)["skipped"] == len(data), job


def test_rewrap_frees_a_version_pinned_by_locked_retention(server, gcs_client, kms_client):
    """Retained objects cannot be rewritten into new generations, but a rewrap moves their
    DEKs to another key in place: the old version then protects nothing and can be destroyed."""
    k1 = make_key(kms_client)
    k2 = make_key(kms_client, ring_of(k1.name))
    v1 = version_name(k1.name, 1)
    bucket = make_bucket(gcs_client, "guard")
    bucket.retention_period = 30 * ONE_DAY_S
    bucket.patch()
    bucket.lock_retention_policy()
    data = {n: os.urandom(3000) for n in ("kept-one", "kept-two")}
    for n, d in data.items():
        upload(bucket, n, d, kms_key_name=k1.name)
    gen = {n: get_blob(bucket, n).generation for n in data}
    assert_destroy_refused(kms_client, v1, 2, list(data), strip=(bucket.name,))

    job = run_job(server, bucket.name, to_key(k2.name), source=to_key(k1.name), mode="rewrap")
    assert counters(job)["rewritten"] == 2, job
    for n in data:
        assert get_blob(bucket, n).generation == gen[n]

    destroy(kms_client, v1)
    server.advance(ONE_DAY_S + 60)
    assert version_state(kms_client, v1) == State.DESTROYED
    for n, d in data.items():
        assert assert_reads(bucket, n, d).kms_key_name == version_name(k2.name, 1)
    assert_forbidden(lambda: bucket.delete_blob("kept-one"), "retentionPolicyNotMet")
