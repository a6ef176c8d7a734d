"""sealstore in front of a cloud object store: S3 (moto), GCS (the GCS XML API of a
second sealstore; see emulators.SealstoreGcs) and Azure Blob (Azurite), each started by
the test on loopback.

For each backend one gateway serves with ``--blob-store KIND://BUCKET/PREFIX`` and
``--inline-max-bytes 0`` (so every object's ciphertext goes to the backend), configured
only through the backend's standard environment variables. The end-to-end flows run
through the Google clients; then the backend's own API (and Azurite's disk) is read raw
to check it holds no plaintext, and the backend is made unreachable to check the
gateway answers 503 and recovers by itself.
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import time
from pathlib import Path
from typing import Dict, List

import emulators
import pgcluster
import pytest
import requests
from google.api_core.exceptions import GoogleAPICallError

from conftest import PROJECT, Server, gcs_crc32c_b64, make_gcs_client, make_kms_client, STORAGE_EMULATOR_ENV
from test_retention_rekey import assert_reads, make_bucket, make_key, run_job, counters, to_key, upload

T = 30
MiB = 1 << 20
# Plaintexts written in this module, per backend: none may appear in the backend.
WRITTEN: Dict[str, List[bytes]] = {}


@pytest.fixture(scope="module", params=sorted(emulators.KINDS))
def backend(request, tmp_path_factory):
    kind = request.param
    work = tmp_path_factory.mktemp(f"backend-{kind}")
    emu = emulators.KINDS[kind](work / "emulator")
    server = Server(work / "gw", ["--blob-store", emu.spec("gw1"), "--inline-max-bytes", "0"], env=emu.env()).start()
    WRITTEN[kind] = []
    try:
        yield kind, emu, server
    finally:
        server.stop()
        emu.stop()
        print(server.log_text())


@pytest.fixture
def clients(backend, monkeypatch):
    kind, emu, server = backend
    monkeypatch.setenv(STORAGE_EMULATOR_ENV, server.url)
    gcs = make_gcs_client(server.url)
    yield kind, emu, server, gcs, make_kms_client(server.url)
    gcs.close()


def payload(kind: str, size: int) -> bytes:
    data = os.urandom(size)
    WRITTEN[kind].append(data)
    return data


def test_upload_kinds_and_ranges(clients):
    kind, _, _, gcs, _ = clients
    bucket = make_bucket(gcs, "be")
    small = payload(kind, 1000)
    upload(bucket, "media", small)
    # Beyond one 8 MiB blob part: three parts on the backend.
    big = payload(kind, 20 * MiB + 123)
    blob = bucket.blob("resumable", chunk_size=4 * MiB)
    blob.upload_from_string(big)
    blob = bucket.blob("multipart")
    blob.metadata = {"k": "v"}
    mid = payload(kind, 300_000)
    blob.upload_from_string(mid)
    assert_reads(bucket, "media", small)
    assert_reads(bucket, "resumable", big)
    assert_reads(bucket, "multipart", mid)
    b = bucket.blob("resumable")
    # Ranges inside a part, across the part boundary at 8 MiB, and the tail.
    for start, end in [(5, 70_000), (8 * MiB - 100, 8 * MiB + 100_000), (20 * MiB, 20 * MiB + 122)]:
        assert b.download_as_bytes(start=start, end=end) == big[start:end + 1], (start, end)


def test_cmek_csek_compose_rewrite_and_rekey(clients):
    kind, _, server, gcs, kms_client = clients
    k1 = make_key(kms_client)
    k2 = make_key(kms_client)
    bucket = make_bucket(gcs, "be")
    bucket.default_kms_key_name = k1.name
    bucket.patch()
    one, two = payload(kind, 2 * MiB), payload(kind, 70_000)
    upload(bucket, "one", one)
    upload(bucket, "two", two)
    assert bucket.get_blob("one").kms_key_name.startswith(k1.name + "/")
    csek = secrets.token_bytes(32)
    secret = payload(kind, 100_000)
    upload(bucket, "csek", secret, encryption_key=csek)
    assert_reads(bucket, "csek", secret, csek)
    with pytest.raises(GoogleAPICallError) as e:
        bucket.blob("csek", encryption_key=secrets.token_bytes(32)).download_as_bytes()
    assert e.value.code in (400, 403), e.value
    composed = bucket.blob("composed")
    composed.compose([bucket.blob("one"), bucket.blob("two")])
    assert_composed(bucket, one + two)
    # Rewrite to another key, then a re-key job moves everything else under k1 to k2.
    dst = bucket.blob("rewritten", kms_key_name=k2.name)
    token, _, _ = dst.rewrite(bucket.blob("one"))
    while token:
        token, _, _ = dst.rewrite(bucket.blob("one"), token=token)
    assert bucket.get_blob("rewritten").kms_key_name.startswith(k2.name + "/")
    assert_reads(bucket, "rewritten", one)
    job = run_job(server, bucket.name, to_key(k2.name), source=to_key(k1.name))
    # one, two and composed; then, in the soft-deleted phase, the three generations the
    # job's own rewrites replaced (soft delete keeps them, and the key protects them too).
    assert counters(job)["rewritten"] == 6, job
    for name, data in [("one", one), ("two", two)]:
        blob = assert_reads(bucket, name, data)
        assert blob.kms_key_name.startswith(k2.name + "/"), name
    assert assert_composed(bucket, one + two).kms_key_name.startswith(k2.name + "/")


def assert_composed(bucket, data: bytes):
    """A composite object carries a CRC32C but, as in GCS, no MD5."""
    blob = bucket.get_blob("composed")
    assert blob.crc32c == gcs_crc32c_b64(data) and blob.md5_hash is None
    assert blob.download_as_bytes() == data
    return blob


def test_xml_multipart_upload(clients):
    """The S3 API's multipart upload, whose parts are blobs of their own until completed."""
    from test_s3_boto import hmac_key, s3_client

    kind, _, server, gcs, _ = clients
    bucket = make_bucket(gcs, "be")
    s3 = s3_client(server.url, *hmac_key(server.data_dir))
    parts = [payload(kind, 5 * MiB), payload(kind, 1234)]
    up = s3.create_multipart_upload(Bucket=bucket.name, Key="mp")
    done = []
    for i, data in enumerate(parts, 1):
        r = s3.upload_part(Bucket=bucket.name, Key="mp", UploadId=up["UploadId"], PartNumber=i, Body=data)
        done.append({"PartNumber": i, "ETag": r["ETag"]})
    s3.complete_multipart_upload(Bucket=bucket.name, Key="mp", UploadId=up["UploadId"],
                                 MultipartUpload={"Parts": done})
    assert s3.get_object(Bucket=bucket.name, Key="mp")["Body"].read() == b"".join(parts)


def test_the_backend_holds_no_plaintext(clients):
    """Read every object back raw through the backend's API: ciphertext only, named by
    random blob ids under the prefix, never by bucket or object names."""
    kind, emu, _, gcs, _ = clients
    bucket = make_bucket(gcs, "be")
    marker = payload(kind, 64 * 1024)
    upload(bucket, "named-object-" + kind, marker)
    raw = emu.raw_objects()
    assert len(raw) >= 5, sorted(raw)
    blobs = list(raw.values())
    if isinstance(emu, emulators.Azurite):
        blobs += emu.disk_bytes()
    for name in raw:
        assert name.startswith("gw1/"), name
        assert "named-object" not in name and bucket.name not in name, name
    samples = [data[off:off + 32] for data in WRITTEN[kind] for off in (0, len(data) // 2, len(data) - 32)]
    for blob in blobs:
        for sample in samples:
            assert sample not in blob, "plaintext found in the backend"


def test_an_unreachable_backend_answers_503_and_recovers(clients):
    kind, emu, server, gcs, _ = clients
    bucket = make_bucket(gcs, "be")
    before = payload(kind, 10_000)
    upload(bucket, "before", before)
    emu.proxy.block()
    try:
        r = requests.get(f"{server.url}/readyz", timeout=T)
        assert r.status_code == 503, r.text
        put = requests.post(f"{server.url}/upload/storage/v1/b/{bucket.name}/o",
                            params={"uploadType": "media", "name": "during"}, data=b"x" * 5000, timeout=T)
        assert put.status_code == 503, put.text
        assert put.json()["error"]["errors"][0]["reason"] == "backendError", put.text
        get = requests.get(f"{server.url}/storage/v1/b/{bucket.name}/o/before", params={"alt": "media"}, timeout=T)
        assert get.status_code == 503, get.text
        # Metadata alone still answers; the refused write left nothing behind.
        meta = requests.get(f"{server.url}/storage/v1/b/{bucket.name}/o/during", timeout=T)
        assert meta.status_code == 404, meta.text
    finally:
        emu.proxy.unblock()
    deadline = time.monotonic() + 10
    while requests.get(f"{server.url}/readyz", timeout=T).status_code != 200:
        assert time.monotonic() < deadline, "readyz stayed red after the backend came back"
        time.sleep(0.1)
    assert_reads(bucket, "before", before)
    after = payload(kind, 10_000)
    upload(bucket, "after", after)
    assert_reads(bucket, "after", after)
    assert "during" not in {b.name for b in bucket.list_blobs()}


def test_restart_sweeps_only_unreferenced_blobs(clients, backend):
    """Stray blobs on the backend (a crashed write's parts) go at the start-up sweep;
    every referenced blob stays. On S3 there are more strays than one listing page."""
    kind, emu, server, gcs, _ = clients
    bucket = make_bucket(gcs, "be")
    kept = payload(kind, 9 * MiB)  # two parts
    upload(bucket, "kept", kept)
    strays = 1100 if kind == "s3" else 5
    names = [f"gw1/ff/ff/ffff{i:028x}.0" for i in range(strays)]
    put_raw(emu, names)
    assert len(emu.raw_objects()) >= strays
    server.restart()
    gcs2 = make_gcs_client_for(server)
    left = set(emu.raw_objects())
    if pgcluster.enabled():
        # A shared database keeps the one-hour grace: other gateways may be writing.
        assert set(names) <= left
    else:
        assert not set(names) & left, "stray blobs survived the start-up sweep"
    assert_reads(gcs2.bucket(bucket.name), "kept", kept)
    for name in left:
        assert name.startswith("gw1/")


def make_gcs_client_for(server: Server):
    os.environ[STORAGE_EMULATOR_ENV] = server.url
    return make_gcs_client(server.url)


def put_raw(emu: emulators.Emulator, names: List[str]) -> None:
    body = b"stray ciphertext"
    if isinstance(emu, emulators.Moto):
        c = emu.client()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda n: c.put_object(Bucket=emu.bucket, Key=n, Body=body), names))
    elif isinstance(emu, emulators.SealstoreGcs):
        for n in names:
            r = requests.post(f"{emu.base}/upload/storage/v1/b/{emu.bucket}/o",
                              params={"uploadType": "media", "name": n}, data=body, timeout=T)
            assert r.status_code == 200, r.text
    else:
        c = emu.service().get_container_client(emu.bucket)
        for n in names:
            c.upload_blob(n, body)


def test_a_missing_backend_bucket_is_refused_at_start_and_answers_503_later(backend, tmp_path):
    """A gateway pointed at a bucket the backend does not have does not start (the start-up
    sweep lists it), naming the blob store; a bucket that disappears under a running
    gateway makes writes a 503 the operator can fix, never a 500, and stores nothing."""
    kind, emu, _ = backend
    with pytest.raises(RuntimeError) as e:
        Server(tmp_path / "gw0", ["--blob-store", f"{emu.scheme}://no-such-bucket-{kind}/p"], env=emu.env()).start()
    assert "blob store" in str(e.value)
    late = f"late-bucket-{kind}"
    emu.create_bucket(late)
    s = Server(tmp_path / "gw", ["--blob-store", f"{emu.scheme}://{late}/p", "--inline-max-bytes", "0"],
               env=emu.env()).start()
    try:
        emu.delete_bucket(late)
        name = f"b-{secrets.token_hex(6)}"
        assert requests.post(f"{s.url}/storage/v1/b", params={"project": PROJECT}, json={"name": name}, timeout=T).ok
        r = requests.post(f"{s.url}/upload/storage/v1/b/{name}/o", params={"uploadType": "media", "name": "x"},
                          data=os.urandom(100_000), timeout=T)
        assert r.status_code == 503, r.text
        assert requests.get(f"{s.url}/storage/v1/b/{name}/o/x", timeout=T).status_code == 404
    finally:
        s.stop()
