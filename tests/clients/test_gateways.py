"""Three gateways on one PostgreSQL database and one S3 bucket (moto) behave as one
service (PostgreSQL pass only).

Each gateway has a data dir of its own; they share ``--database``, the root key and the
``--blob-store s3://…`` bucket, as the README's deployment section describes.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import time
from pathlib import Path

import emulators
import pgcluster
import pytest
import requests
from google.api_core.exceptions import GoogleAPICallError

from conftest import (
    PROJECT,
    Algorithm,
    Purpose,
    Server,
    State,
    create_key,
    create_key_ring,
    create_symmetric_key,
    decrypt_symmetric,
    encrypt_symmetric,
    error_status,
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


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    if not pgcluster.enabled():
        pytest.skip("needs the PostgreSQL pass")
    emu = emulators.Moto(tmp_path_factory.mktemp("moto"))
    yield emu
    emu.stop()


def start_gateways(tmp_path: Path, moto, n: int = 3, extra: tuple = ()):
    """`n` gateways on one fresh database and one S3 prefix; the first makes the root key
    and the others are given it (the sealed KMS state and every wrapped DEK depend on it)."""
    url = pgcluster.cluster().url_for(tmp_path / "shared-db")
    spec = moto.spec(tmp_path.name)
    first = Server(
        tmp_path / "g0", ["--database", url, "--blob-store", spec, "--node-id", "g0", *extra], env=moto.env()
    ).start()
    rest = [
        Server(
            tmp_path / f"g{i}",
            ["--database", url, "--blob-store", spec, "--node-id", f"g{i}",
             "--root-key-file", str(tmp_path / "g0" / "root.key"), *extra],
            env=moto.env(),
        ).start()
        for i in range(1, n)
    ]
    return [first, *rest]


@pytest.fixture
def gateways(tmp_path: Path, moto):
    servers = start_gateways(tmp_path, moto)
    try:
        yield servers
    finally:
        for s in servers:
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


def test_key_state_changes_on_one_gateway_hold_on_the_others(gateways):
    a, b, c = gateways
    ka, kb, kc = make_kms_client(a.url), make_kms_client(b.url), make_kms_client(c.url)
    ring = create_key_ring(ka)
    key = create_symmetric_key(ka, ring.name)
    ct = encrypt_symmetric(ka, key.name, b"shared secret").ciphertext
    assert decrypt_symmetric(kb, key.name, ct).plaintext == b"shared secret"
    assert decrypt_symmetric(kc, key.name, ct).plaintext == b"shared secret"
    v1 = version_name(key.name, 1)
    set_version_state(ka, v1, State.DISABLED)
    eventually(lambda: refused(lambda: decrypt_symmetric(kb, key.name, ct)), "disabled on A refused on B")
    eventually(lambda: refused(lambda: decrypt_symmetric(kc, key.name, ct)), "disabled on A refused on C")
    set_version_state(kb, v1, State.ENABLED)
    eventually(lambda: decrypt_symmetric(ka, key.name, ct).plaintext == b"shared secret", "re-enabled on B works on A")
    eventually(lambda: decrypt_symmetric(kc, key.name, ct).plaintext == b"shared secret", "re-enabled on B works on C")


QUOTA = 5


def test_kms_quota_is_one_per_project_across_gateways(tmp_path: Path, moto):
    servers = start_gateways(tmp_path, moto, extra=("--kms-ops-per-minute", str(QUOTA)))
    try:
        clients = [make_kms_client(s.url) for s in servers]
        key = create_symmetric_key(clients[0], create_key_ring(clients[0]).name)
        # Every gateway knows the key before the count starts (a NOT_FOUND would count).
        time.sleep(BOUND_S + SLACK_S)
        start = time.monotonic()
        admitted, refused_ = 0, []
        for i in range(3 * QUOTA):
            try:
                encrypt_symmetric(clients[i % 3], key.name, f"m{i}".encode())
                admitted += 1
            except GoogleAPICallError as e:
                refused_.append(e)
        # The bucket refills at QUOTA a minute; it starts full.
        allowed = QUOTA + int((time.monotonic() - start) * QUOTA / 60)
        assert QUOTA <= admitted <= allowed, (admitted, allowed)
        assert refused_, "nothing was refused"
        for e in refused_:
            assert e.code == 429 and error_status(e) == "RESOURCE_EXHAUSTED", e
    finally:
        for s in servers:
            s.stop()


def _put(s: Server, bucket: str, name: str, data: bytes, **params) -> requests.Response:
    return requests.post(
        f"{s.url}/upload/storage/v1/b/{bucket}/o",
        params={"uploadType": "media", "name": name, **params},
        data=data,
        timeout=T,
    )


def test_cmek_objects_and_preconditions_across_gateways(gateways):
    a, b, c = gateways
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
    for s, name in ((b, "B"), (c, "C")):
        eventually(
            lambda: requests.get(f"{s.url}/storage/v1/b/{bucket}/o/doc", params={"alt": "media"}, timeout=T).status_code
            in (400, 403, 412),
            f"CMEK read on {name} after disable on A",
        )
    set_version_state(ka, version_name(key.name, 1), State.ENABLED)
    for s, name in ((b, "B"), (c, "C")):
        eventually(
            lambda: requests.get(f"{s.url}/storage/v1/b/{bucket}/o/doc", params={"alt": "media"}, timeout=T).content
            == b"written on A",
            f"CMEK read on {name} after re-enable",
        )
    # 20 writers over the three gateways race ifGenerationMatch=0 on one name: one wins.
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        codes = list(
            pool.map(
                lambda i: _put((a, b, c)[i % 3], bucket, "race", f"writer {i}".encode(), ifGenerationMatch="0").status_code,
                range(20),
            )
        )
    assert sorted(codes) == [200] + [412] * 19, codes
    gens = {
        json.loads(_put(s, bucket, f"g{i}", b"x").text)["generation"] for i, s in enumerate([a, b, c] * 7)
    }
    assert len(gens) == 21, "generations are unique across gateways"


def test_resumable_upload_started_on_a_continued_on_b_finished_on_c(gateways):
    a, b, c = gateways
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
    third = 256 * 1024
    for lo in (0, third):  # two chunks through B
        mid = requests.put(
            f"{b.url}/upload/storage/v1/b/{bucket}/o",
            params={"uploadType": "resumable", "upload_id": upload_id},
            data=data[lo:lo + third],
            headers={"Content-Range": f"bytes {lo}-{lo + third - 1}/*"},
            timeout=T,
        )
        assert mid.status_code == 308, mid.text
    last = requests.put(
        f"{c.url}/upload/storage/v1/b/{bucket}/o",
        params={"uploadType": "resumable", "upload_id": upload_id},
        data=data[2 * third:],
        headers={"Content-Range": f"bytes {2 * third}-{len(data) - 1}/{len(data)}"},
        timeout=T,
    )
    assert last.status_code == 200, last.text
    got = requests.get(f"{a.url}/storage/v1/b/{bucket}/o/big", params={"alt": "media"}, timeout=T)
    assert got.content == data


def test_scheduled_destruction_happens_once_whichever_gateway_runs_it(gateways):
    a, b, c = gateways
    ka, kb = make_kms_client(a.url), make_kms_client(b.url)
    ring = create_key_ring(ka)
    key = create_symmetric_key(ka, ring.name)
    v1 = version_name(key.name, 1)
    ka.destroy_crypto_key_version(request={"name": v1})
    # And a key due for automatic rotation in 30 days (period 90 days): one rotation.
    from datetime import timedelta
    from google.protobuf import duration_pb2

    rotating = create_symmetric_key(
        ka, ring.name, rotation_period=duration_pb2.Duration(seconds=90 * 86_400),
        next_rotation_time=ring.create_time + timedelta(days=30),
    )
    # Every clock passes the destroy time; every gateway applies due transitions at once.
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda s: s.advance(31 * 86_400), (a, b, c)))
    # The gateway whose commit lost the race sees the winner's within the bound.
    for client in (ka, kb):
        eventually(
            lambda: client.get_crypto_key_version(request={"name": v1}).state == State.DESTROYED,
            "destroyed, seen through both gateways",
        )
    done = [
        line
        for s in (a, b, c)
        for line in (s.data_dir / "audit.log").read_text().splitlines()
        if "DestroyCryptoKeyVersion (scheduled)" in line and '"OK"' in line and v1 in line
    ]
    assert len(done) == 1, done
    assert json.loads(done[0])["node"] in ("g0", "g1", "g2"), "audit records name the gateway"
    # The rotation commits just after the destruction: B may list it up to the bound later.
    want = [version_name(rotating.name, 1), version_name(rotating.name, 2)]
    eventually(
        lambda: sorted(v.name for v in kb.list_crypto_key_versions(request={"parent": rotating.name})) == want,
        "the rotation's new version, listed through B",
    )
    time.sleep(BOUND_S + SLACK_S)
    versions = [v.name for v in kb.list_crypto_key_versions(request={"parent": rotating.name})]
    assert sorted(versions) == want, versions
    rotations = [
        line
        for s in (a, b, c)
        for line in (s.data_dir / "audit.log").read_text().splitlines()
        if "(automatic rotation)" in line and rotating.name in line
    ]
    assert len(rotations) == 1, rotations


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
    a, b, _ = gateways
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


def test_kill_9_of_one_gateway_during_uploads_loses_no_acknowledged_object(gateways, moto):
    """Writers upload through all three gateways while B is killed with SIGKILL: every
    object a gateway acknowledged reads back byte-exact through A, and nothing half
    written is visible (an object is either absent or whole)."""
    a, b, c = gateways
    bucket = unique_bucket_name()
    assert requests.post(f"{a.url}/storage/v1/b", params={"project": PROJECT}, json={"name": bucket}, timeout=T).ok
    urls = [s.url for s in (a, b, c)]
    acked = {}
    attempted = {}
    stop_at = time.monotonic() + 4

    def writer(w: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            name = f"w{w}-{i}"
            data = os.urandom(100_000 + 37 * i)  # beyond the inline limit: blobs on S3
            attempted[name] = data
            try:
                r = requests.post(f"{urls[(w + i) % 3]}/upload/storage/v1/b/{bucket}/o",
                                  params={"uploadType": "media", "name": name}, data=data, timeout=T)
                if r.status_code == 200:
                    acked[name] = data
            except requests.RequestException:
                pass  # B died under this request: not acknowledged
            i += 1

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(writer, w) for w in range(6)]
        time.sleep(1.5)
        b._kill()
        for f in futures:
            f.result()
    assert len(acked) > 20, len(acked)
    for name, data in attempted.items():
        got = requests.get(f"{a.url}/storage/v1/b/{bucket}/o/{name}", params={"alt": "media"}, timeout=T)
        if name in acked:
            assert got.status_code == 200 and got.content == data, name
        else:
            assert got.status_code == 404 or got.content == data, f"{name}: half-written object visible"
    # The listing agrees with the reads (every page of it: a fast machine writes more
    # than one page's 1,000 objects).
    listed, token = set(), None
    while True:
        page = requests.get(
            f"{c.url}/storage/v1/b/{bucket}/o", params={"pageToken": token} if token else {}, timeout=T
        ).json()
        listed |= {o["name"] for o in page.get("items", [])}
        token = page.get("nextPageToken")
        if not token:
            break
    assert set(acked) <= listed <= set(attempted)


def test_an_unreachable_blob_store_answers_503_on_every_gateway_and_recovers(gateways, moto):
    gws = gateways
    bucket = unique_bucket_name()
    assert requests.post(f"{gws[0].url}/storage/v1/b", params={"project": PROJECT}, json={"name": bucket}, timeout=T).ok
    data = os.urandom(200_000)
    assert _put(gws[0], bucket, "before", data).status_code == 200
    moto.proxy.block()
    try:
        for i, s in enumerate(gws):
            assert requests.get(f"{s.url}/readyz", timeout=T).status_code == 503
            r = _put(s, bucket, f"during-{i}", os.urandom(100_000))
            assert r.status_code == 503, r.text
            assert r.json()["error"]["errors"][0]["reason"] == "backendError"
            r = requests.get(f"{s.url}/storage/v1/b/{bucket}/o/before", params={"alt": "media"}, timeout=T)
            assert r.status_code == 503, r.text
    finally:
        moto.proxy.unblock()
    for s in gws:
        eventually(lambda: requests.get(f"{s.url}/readyz", timeout=T).status_code == 200, "/readyz green again",
                   within=10)
        got = requests.get(f"{s.url}/storage/v1/b/{bucket}/o/before", params={"alt": "media"}, timeout=T)
        assert got.status_code == 200 and got.content == data
    names = {o["name"] for o in requests.get(f"{gws[1].url}/storage/v1/b/{bucket}/o", timeout=T).json()["items"]}
    assert names == {"before"}, "nothing of the refused writes is visible"
    for s in gws:
        assert "panicked" not in s.log_text()


def test_kill_9_of_the_gateway_running_a_rekey_job_another_finishes_it(gateways):
    """B runs a re-key job and is killed with SIGKILL; A or C takes the job over once its
    lease (30 s) lapses and finishes it from the last checkpoint. Every object ends under
    the new key re-wrapped exactly once: metageneration 2 (one re-wrap), and the final
    counters account for each object once (re-wrapped, or skipped as already done)."""
    a, b, c = gateways
    ka = make_kms_client(a.url)
    ring = create_key_ring(ka)
    k1 = create_symmetric_key(ka, ring.name)
    k2 = create_symmetric_key(ka, ring.name)
    bucket = unique_bucket_name()
    r = requests.post(f"{a.url}/storage/v1/b", params={"project": PROJECT},
                      json={"name": bucket, "location": "us-east1", "encryption": {"defaultKmsKeyName": k1.name}},
                      timeout=T)
    assert r.status_code == 200, r.text
    n = 2000
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda i: _put((a, c)[i % 2], bucket, f"o{i:05d}", b"v%d" % i).status_code, range(n)))
    assert codes == [200] * n
    job = requests.post(f"{b.url}/sealstore/v1/projects/{PROJECT}/rekeyJobs", timeout=T, json={
        "bucket": bucket, "prefix": "", "mode": "rewrap",
        "from": {"kmsKeyName": k1.name}, "to": {"kmsKeyName": k2.name},
    })
    assert job.status_code in (200, 201), job.text
    name = job.json()["name"]
    b._kill()
    state = requests.get(f"{a.url}/sealstore/v1/{name}", timeout=T).json()
    assert state["state"] == "RUNNING", f"the job ended before the kill; make it longer: {state}"
    deadline = time.monotonic() + 90
    while True:
        state = requests.get(f"{c.url}/sealstore/v1/{name}", timeout=T).json()
        if state["state"] != "RUNNING":
            break
        assert time.monotonic() < deadline, f"no gateway took the job over: {state}"
        time.sleep(0.5)
    assert state["state"] == "SUCCEEDED", state
    counters = {k: int(v) for k, v in state.get("counters", {}).items()}
    assert counters.get("failed", 0) == 0, state
    assert counters.get("rewritten", 0) + counters.get("skipped", 0) == n, state
    items, token = [], None
    while True:
        page = requests.get(f"{a.url}/storage/v1/b/{bucket}/o",
                            params={"maxResults": 1000, **({"pageToken": token} if token else {})}, timeout=T).json()
        items += page.get("items", [])
        token = page.get("nextPageToken")
        if not token:
            break
    assert len(items) == n
    for o in items:
        assert o["kmsKeyName"].startswith(k2.name + "/"), o
        assert o["metageneration"] == "2", f"{o['name']} re-wrapped {int(o['metageneration']) - 1} times"
    assert requests.get(f"{c.url}/storage/v1/b/{bucket}/o/o01999", params={"alt": "media"}, timeout=T).content == b"v1999"


def test_kill_9_of_the_gateway_generating_keys_another_finishes_each_once(gateways):
    """B queues RSA-4096 key generation for 20 versions and is killed with SIGKILL while
    some are still PENDING_GENERATION. Whichever gateway holds the KMS transitions lease
    adopts them (after 30 s unclaimed) and generates each; every version ends ENABLED
    with one public key, the same through every gateway and unchanged later (material
    made twice would show as a second key)."""
    a, b, c = gateways
    ka, kb, kc = make_kms_client(a.url), make_kms_client(b.url), make_kms_client(c.url)
    ring = create_key_ring(kb)
    key = create_key(kb, ring.name, Purpose.ASYMMETRIC_SIGN, Algorithm.RSA_SIGN_PSS_4096_SHA256)
    names = [f"{key.name}/cryptoKeyVersions/1"]
    for _ in range(19):
        names.append(kb.create_crypto_key_version(request={"parent": key.name, "crypto_key_version": {}}).name)
    b._kill()
    pending = [n for n in names if ka.get_crypto_key_version(request={"name": n}).state == State.PENDING_GENERATION]
    assert pending, "B generated every key before the kill; make the batch larger"
    deadline = time.monotonic() + 120
    for n in names:
        while True:
            v = ka.get_crypto_key_version(request={"name": n})
            if v.state == State.ENABLED:
                break
            assert v.state == State.PENDING_GENERATION, (n, v.state, v.generation_failure_reason)
            assert time.monotonic() < deadline, f"{len(pending)} left pending by B; {n} never generated"
            time.sleep(0.5)
    first = {n: ka.get_public_key(request={"name": n}).pem for n in names}
    assert len(set(first.values())) == len(names)
    # Later (C's view may lag A's by the bound), through both: still the same keys, so
    # nothing was generated twice.
    time.sleep(BOUND_S + SLACK_S)
    for n in names:
        assert kc.get_public_key(request={"name": n}).pem == first[n], n
        assert ka.get_public_key(request={"name": n}).pem == first[n], n
    print(f"{len(pending)} of {len(names)} versions were pending when B died")
