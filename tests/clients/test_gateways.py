"""Two gateways on one PostgreSQL database behave as one service (PostgreSQL pass only).

Each gateway has a data dir of its own; they share ``--database``, the root key and a
``file://`` blob directory, as the README's deployment section describes.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import time
from pathlib import Path

import pgcluster
import pytest
import requests
from google.api_core.exceptions import GoogleAPICallError

from conftest import (
    PROJECT,
    Server,
    State,
    create_key_ring,
    create_symmetric_key,
    decrypt_symmetric,
    encrypt_symmetric,
    make_kms_client,
    set_version_state,
    unique_bucket_name,
    version_name,
)

pytestmark = pytest.mark.skipif(not pgcluster.enabled(), reason="needs the PostgreSQL pass (SEALSTORE_TEST_DATABASE=postgres)")

T = 30
# The documented bound on acting on a key version's old state, plus slack for this VM.
BOUND_S = 1.0
SLACK_S = 1.0


@pytest.fixture
def gateways(tmp_path: Path):
    url = pgcluster.cluster().url_for(tmp_path / "shared-db")
    blobs = tmp_path / "blobs"
    a = Server(tmp_path / "a", ["--database", url, "--blob-store", f"file://{blobs}"]).start()
    # B uses A's root key: the sealed KMS state and every wrapped DEK depend on it.
    b = Server(
        tmp_path / "b",
        ["--database", url, "--blob-store", f"file://{blobs}", "--root-key-file", str(tmp_path / "a" / "root.key")],
    ).start()
    try:
        yield a, b
    finally:
        for s in (a, b):
            s.stop()
            print(f"===== {s.data_dir} =====")
            print(s.log_text())


def eventually(check, what: str, within: float = BOUND_S + SLACK_S):
    deadline = time.monotonic() + within
    while True:
        try:
            if check():
                return
        except GoogleAPICallError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within} s")
        time.sleep(0.05)


def refused(fn) -> bool:
    try:
        fn()
    except GoogleAPICallError as e:
        return e.code in (400, 412) or "FAILED_PRECONDITION" in str(e)
    return False


def test_key_state_changes_on_one_gateway_hold_on_the_other(gateways):
    a, b = gateways
    ka, kb = make_kms_client(a.url), make_kms_client(b.url)
    ring = create_key_ring(ka)
    key = create_symmetric_key(ka, ring.name)
    ct = encrypt_symmetric(ka, key.name, b"shared secret").ciphertext
    assert decrypt_symmetric(kb, key.name, ct).plaintext == b"shared secret"
    v1 = version_name(key.name, 1)
    set_version_state(ka, v1, State.DISABLED)
    eventually(lambda: refused(lambda: decrypt_symmetric(kb, key.name, ct)), "disabled on A refused on B")
    set_version_state(kb, v1, State.ENABLED)
    eventually(lambda: decrypt_symmetric(ka, key.name, ct).plaintext == b"shared secret", "re-enabled on B works on A")


def _put(s: Server, bucket: str, name: str, data: bytes, **params) -> requests.Response:
    return requests.post(
        f"{s.url}/upload/storage/v1/b/{bucket}/o",
        params={"uploadType": "media", "name": name, **params},
        data=data,
        timeout=T,
    )


def test_cmek_objects_and_preconditions_across_gateways(gateways):
    a, b = gateways
    ka = make_kms_client(a.url)
    ring = create_key_ring(ka)
    key = create_symmetric_key(ka, ring.name)
    bucket = unique_bucket_name()
    r = requests.post(
        f"{a.url}/storage/v1/b",
        params={"project": PROJECT},
        json={"name": bucket, "location": "us-east1", "encryption": {"defaultKmsKeyName": key.name}},
        timeout=T,
    )
    assert r.status_code == 200, r.text
    assert _put(a, bucket, "doc", b"written on A").status_code == 200
    got = requests.get(f"{b.url}/storage/v1/b/{bucket}/o/doc", params={"alt": "media"}, timeout=T)
    assert got.status_code == 200 and got.content == b"written on A"
    # A disabled version stops reads through the other gateway within the bound.
    set_version_state(ka, version_name(key.name, 1), State.DISABLED)
    eventually(
        lambda: requests.get(f"{b.url}/storage/v1/b/{bucket}/o/doc", params={"alt": "media"}, timeout=T).status_code
        in (400, 403, 412),
        "CMEK read on B after disable on A",
    )
    set_version_state(ka, version_name(key.name, 1), State.ENABLED)
    eventually(
        lambda: requests.get(f"{b.url}/storage/v1/b/{bucket}/o/doc", params={"alt": "media"}, timeout=T).content
        == b"written on A",
        "CMEK read on B after re-enable",
    )
    # 20 writers over both gateways race ifGenerationMatch=0 on one name: one wins.
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        codes = list(
            pool.map(
                lambda i: _put((a, b)[i % 2], bucket, "race", f"writer {i}".encode(), ifGenerationMatch="0").status_code,
                range(20),
            )
        )
    assert sorted(codes) == [200] + [412] * 19, codes
    gens = {
        json.loads(_put(s, bucket, f"g{i}", b"x").text)["generation"] for i, s in enumerate([a, b] * 10)
    }
    assert len(gens) == 20, "generations are unique across gateways"


def test_resumable_upload_started_on_one_gateway_finishes_on_the_other(gateways):
    a, b = gateways
    bucket = unique_bucket_name()
    assert requests.post(f"{a.url}/storage/v1/b", params={"project": PROJECT}, json={"name": bucket}, timeout=T).ok
    data = bytes(range(256)) * 4096  # 1 MiB
    start = requests.post(
        f"{a.url}/upload/storage/v1/b/{bucket}/o",
        params={"uploadType": "resumable", "name": "big"},
        json={},
        timeout=T,
    )
    assert start.status_code == 200, start.text
    upload_id = start.headers["Location"].split("upload_id=")[1]
    half = 512 * 1024
    first = requests.put(
        f"{a.url}/upload/storage/v1/b/{bucket}/o",
        params={"uploadType": "resumable", "upload_id": upload_id},
        data=data[:half],
        headers={"Content-Range": f"bytes 0-{half - 1}/*"},
        timeout=T,
    )
    assert first.status_code == 308, first.text
    last = requests.put(
        f"{b.url}/upload/storage/v1/b/{bucket}/o",
        params={"uploadType": "resumable", "upload_id": upload_id},
        data=data[half:],
        headers={"Content-Range": f"bytes {half}-{len(data) - 1}/{len(data)}"},
        timeout=T,
    )
    assert last.status_code == 200, last.text
    got = requests.get(f"{a.url}/storage/v1/b/{bucket}/o/big", params={"alt": "media"}, timeout=T)
    assert got.content == data


def test_scheduled_destruction_happens_once_whichever_gateway_runs_it(gateways):
    a, b = gateways
    ka, kb = make_kms_client(a.url), make_kms_client(b.url)
    ring = create_key_ring(ka)
    key = create_symmetric_key(ka, ring.name)
    v1 = version_name(key.name, 1)
    ka.destroy_crypto_key_version(request={"name": v1})
    # Both clocks pass the destroy time; both gateways apply due transitions at once.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda s: s.advance(31 * 86_400), (a, b)))
    # The gateway whose commit lost the race sees the winner's within the bound.
    for client in (ka, kb):
        eventually(
            lambda: client.get_crypto_key_version(request={"name": v1}).state == State.DESTROYED,
            "destroyed, seen through both gateways",
        )
    done = [
        line
        for s in (a, b)
        for line in (s.data_dir / "audit.log").read_text().splitlines()
        if "DestroyCryptoKeyVersion (scheduled)" in line and '"OK"' in line and v1 in line
    ]
    assert len(done) == 1, done


def test_database_outage_answers_503_and_recovers_without_a_restart(tmp_path):
    """Stop the PostgreSQL cluster under a running gateway: requests get 503 in the API's
    format and /readyz goes red; start it again and the same process serves again."""
    cluster = pgcluster.cluster()
    s = Server(tmp_path / "g", ["--database", cluster.url_for(tmp_path / "outage-db")]).start()
    try:
        bucket = unique_bucket_name()
        assert requests.post(f"{s.url}/storage/v1/b", params={"project": PROJECT}, json={"name": bucket}, timeout=T).ok
        assert _put(s, bucket, "before", b"kept").status_code == 200
        assert cluster.pg_ctl("stop").returncode == 0
        try:
            r = _put(s, bucket, "during", b"refused")
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == 503
            r = requests.get(f"{s.url}/storage/v1/b/{bucket}/o/before", params={"alt": "media"}, timeout=T)
            assert r.status_code == 503, r.text
            eventually(lambda: requests.get(f"{s.url}/readyz", timeout=T).status_code == 503, "/readyz red", within=5)
        finally:
            assert cluster.pg_ctl("start").returncode == 0
        eventually(lambda: requests.get(f"{s.url}/readyz", timeout=T).status_code == 200, "/readyz green again", within=10)
        got = requests.get(f"{s.url}/storage/v1/b/{bucket}/o/before", params={"alt": "media"}, timeout=T)
        assert got.status_code == 200 and got.content == b"kept"
        assert _put(s, bucket, "after", b"ok").status_code == 200
        names = [o["name"] for o in requests.get(f"{s.url}/storage/v1/b/{bucket}/o", timeout=T).json()["items"]]
        assert names == ["after", "before"], "nothing of the refused write is visible"
        assert "panicked" not in s.log_text()
    finally:
        s.stop()


def test_bucket_changes_on_one_gateway_hold_on_the_other_within_the_bound(gateways):
    a, b = gateways
    bucket = unique_bucket_name()
    assert requests.post(f"{a.url}/storage/v1/b", params={"project": PROJECT}, json={"name": bucket}, timeout=T).ok
    assert requests.get(f"{b.url}/storage/v1/b/{bucket}", timeout=T).ok  # B caches it now
    r = requests.patch(f"{a.url}/storage/v1/b/{bucket}", json={"labels": {"env": "prod"}}, timeout=T)
    assert r.status_code == 200, r.text
    eventually(
        lambda: requests.get(f"{b.url}/storage/v1/b/{bucket}", timeout=T).json().get("labels") == {"env": "prod"},
        "a label set on A, seen on B",
    )
    r = requests.patch(f"{a.url}/storage/v1/b/{bucket}", json={"retentionPolicy": {"retentionPeriod": "3600"}}, timeout=T)
    assert r.status_code == 200, r.text

    def retained_on_b() -> bool:
        name = f"r-{time.monotonic_ns()}"
        assert _put(b, bucket, name, b"kept").status_code == 200
        return requests.delete(f"{b.url}/storage/v1/b/{bucket}/o/{name}", timeout=T).status_code == 403

    eventually(retained_on_b, "a retention policy set on A, enforced by B")
