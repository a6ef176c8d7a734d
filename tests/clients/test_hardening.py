"""Hardening regressions (issue 12): races, limits, timeouts, Host handling, file modes,
log redaction, request ids, metrics, readiness, shutdown. Each test failed before its fix."""

from __future__ import annotations

import concurrent.futures
import signal
import os
import socket
import stat
import time

import pgcluster
import pytest
import requests

from conftest import PROJECT, Server, create_token, run_sealstore_cli, unique_bucket_name

T = 30


def new_bucket(server, **fields):
    name = unique_bucket_name()
    r = requests.post(f"{server.url}/storage/v1/b?project={PROJECT}", json={"name": name, **fields}, timeout=T)
    assert r.status_code == 200, r.text
    return name


def put_object(server, bucket, name, data=b"x"):
    r = requests.post(
        f"{server.url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}", data=data, timeout=T
    )
    assert r.status_code == 200, r.text
    return r.json()


# ---- 3: unconditional metadata updates never lose a race ---------------------------------


def test_concurrent_unconditional_patches_all_succeed(server):
    bucket = new_bucket(server)
    put_object(server, bucket, "o")
    url = f"{server.url}/storage/v1/b/{bucket}/o/o"

    def patch(i):
        with requests.Session() as s:
            return [s.patch(url, json={"metadata": {f"k{i}": str(j)}}, timeout=T).status_code for j in range(30)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = [c for cs in pool.map(patch, range(8)) for c in cs]
    assert codes.count(200) == 240, {c: codes.count(c) for c in set(codes)}
    meta = requests.get(url, timeout=T).json()
    assert meta["metageneration"] == "241"
    assert meta["metadata"] == {f"k{i}": "29" for i in range(8)}
    # A precondition the caller did set still fails when it no longer holds.
    r = requests.patch(url, params={"ifMetagenerationMatch": "1"}, json={"metadata": {"x": "y"}}, timeout=T)
    assert r.status_code == 412


def test_concurrent_unconditional_bucket_patches_all_succeed(server):
    bucket = new_bucket(server)
    url = f"{server.url}/storage/v1/b/{bucket}"

    def patch(i):
        with requests.Session() as s:
            return [s.patch(url, json={"labels": {f"k{i}": str(j)}}, timeout=T).status_code for j in range(15)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = [c for cs in pool.map(patch, range(8)) for c in cs]
    assert codes.count(200) == 120, {c: codes.count(c) for c in set(codes)}
    assert requests.get(url, timeout=T).json()["metageneration"] == "121"


# ---- helpers for raw sockets ----------------------------------------------------------


def hostport(server):
    host, port = server.url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


def raw_connect(server):
    return socket.create_connection(hostport(server), timeout=T)


def read_until_closed(sock, limit_s):
    """Reads until the peer closes (returns the bytes) or `limit_s` passes (None)."""
    sock.settimeout(0.5)
    data = b""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return None


@pytest.fixture
def tight_server(tmp_path):
    s = Server(
        tmp_path / "data",
        [
            "--header-read-timeout-secs", "2",
            "--body-idle-timeout-secs", "2",
            "--max-request-body-bytes", "4096",
            "--shutdown-grace-secs", "20",
        ],
    ).start()
    yield s
    s.stop()


# ---- 5: slow clients are timed out -------------------------------------------------------


def test_partial_header_is_cut_off(tight_server):
    sock = raw_connect(tight_server)
    sock.sendall(b"GET /storage/v1/b?project=p HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    started = time.monotonic()
    assert read_until_closed(sock, 10) is not None, "a trickled header kept its connection open"
    assert time.monotonic() - started < 8


def test_idle_keep_alive_connection_is_closed(tight_server):
    sock = raw_connect(tight_server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first
    assert read_until_closed(sock, 10) is not None, "an idle kept-alive connection stayed open"


@pytest.mark.parametrize("path", ["/v1/projects/p/locations/us/keyRings?keyRingId=r", "/storage/v1/b?project=p"])
def test_stalled_body_times_out_with_408(tight_server, path):
    sock = raw_connect(tight_server)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{".encode()
    )
    data = read_until_closed(sock, 10)
    assert data is not None and data.startswith(b"HTTP/1.1 408"), data


def test_stalled_upload_times_out_and_stores_nothing(tight_server):
    bucket = new_bucket(tight_server)
    sock = raw_connect(tight_server)
    sock.sendall(
        f"POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name=slow HTTP/1.1\r\nHost: x\r\n"
        "Content-Length: 100000\r\n\r\n".encode()
        + b"a" * 1000
    )
    data = read_until_closed(sock, 10)
    assert data is not None and not data.startswith(b"HTTP/1.1 200"), data
    r = requests.get(f"{tight_server.url}/storage/v1/b/{bucket}/o/slow", timeout=T)
    assert r.status_code == 404


def test_connection_limit(tmp_path):
    s = Server(tmp_path / "data", ["--max-connections", "3"]).start()
    try:
        idle = [raw_connect(s) for _ in range(3)]
        time.sleep(0.3)
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.get(f"{s.url}/healthz", timeout=1.5)
        idle.pop().close()
        assert requests.get(f"{s.url}/healthz", timeout=T).status_code == 200
        for sock in idle:
            sock.close()
    finally:
        s.stop()


def test_requests_in_flight_limit_answers_503_in_each_format(tmp_path):
    s = Server(tmp_path / "data", ["--max-requests-in-flight", "1"]).start()
    try:
        bucket = new_bucket(s)
        # One upload in flight, its body trickling.
        sock = raw_connect(s)
        sock.sendall(
            f"POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name=held HTTP/1.1\r\nHost: x\r\n"
            "Content-Length: 10\r\n\r\n12345".encode()
        )
        time.sleep(0.5)
        r = requests.get(f"{s.url}/storage/v1/b/{bucket}", timeout=T)
        assert r.status_code == 503 and r.json()["error"]["errors"][0]["reason"] == "backendError", r.text
        r = requests.get(f"{s.url}/v1/projects/p/locations/us/keyRings", timeout=T)
        assert r.status_code == 503 and r.json()["error"]["status"] == "UNAVAILABLE", r.text
        assert r.headers["x-request-id"]
        sock.sendall(b"67890")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.close()
        assert requests.get(f"{s.url}/storage/v1/b/{bucket}/o/held", timeout=T).json()["size"] == "10"
    finally:
        s.stop()


# ---- 6: buffered routes have body limits ----------------------------------------------


def test_buffered_bodies_are_limited_in_each_api_format(tight_server):
    big = "x" * 5000
    r = requests.post(
        f"{tight_server.url}/v1/projects/p/locations/us/keyRings?keyRingId=r", json={"labels": {"a": big}}, timeout=T
    )
    assert r.status_code == 413 and r.json()["error"]["status"] == "INVALID_ARGUMENT", r.text
    r = requests.post(f"{tight_server.url}/storage/v1/b?project={PROJECT}", json={"name": "b", "labels": {"a": big}}, timeout=T)
    assert r.status_code == 413 and r.json()["error"]["errors"][0]["reason"] == "uploadTooLarge", r.text
    r = requests.post(f"{tight_server.url}/sealstore/v1/clock:advance", json={"seconds": 1, "x": big}, timeout=T)
    assert r.status_code == 413 and r.json()["error"]["code"] == 413, r.text
    r = requests.post(f"{tight_server.url}/oauth2/v4/token", data={"grant_type": "refresh_token", "refresh_token": big}, timeout=T)
    assert r.status_code == 413 and r.json()["error"] == "invalid_request", r.text
    # Nothing was created, and media uploads stream past the limit.
    assert requests.get(f"{tight_server.url}/v1/projects/p/locations/us/keyRings/r", timeout=T).status_code == 404
    bucket = new_bucket(tight_server)
    data = os.urandom(1024 * 1024)
    assert put_object(tight_server, bucket, "big", data)["size"] == str(len(data))


def test_default_body_limit_refuses_a_huge_kms_body(server):
    r = requests.post(
        f"{server.url}/v1/projects/p/locations/us/keyRings?keyRingId=r",
        data=b"{" + b" " * (3 * 1024 * 1024) + b"}",
        headers={"content-type": "application/json"},
        timeout=T,
    )
    assert r.status_code == 413, r.text


# ---- 7: links never follow a forged Host -------------------------------------------------


def start_resumable(server, bucket, host=None):
    headers = {"Host": host} if host else {}
    r = requests.post(
        f"{server.url}/upload/storage/v1/b/{bucket}/o?uploadType=resumable&name=o", json={}, headers=headers, timeout=T
    )
    assert r.status_code == 200, r.text
    return r.headers["Location"]


def test_forged_host_is_not_written_into_links(server):
    bucket = new_bucket(server)
    _, port = hostport(server)
    loc = start_resumable(server, bucket, host="evil.example.com")
    assert loc.startswith(f"http://127.0.0.1:{port}/"), loc
    assert start_resumable(server, bucket, host=f"localhost:{port}").startswith(f"http://localhost:{port}/")
    assert start_resumable(server, bucket, host=f"127.0.0.1:{port + 1}").startswith(f"http://127.0.0.1:{port}/")
    put_object(server, bucket, "x")
    meta = requests.get(f"{server.url}/storage/v1/b/{bucket}/o/x", headers={"Host": "evil.example.com"}, timeout=T).json()
    assert "evil" not in meta["selfLink"] and "evil" not in meta["mediaLink"], meta


def test_public_url_names_the_links(tmp_path):
    s = Server(tmp_path / "data", ["--public-url", "https://storage.example.com/"]).start()
    try:
        bucket = new_bucket(s)
        assert start_resumable(s, bucket, host="evil.example.com").startswith("https://storage.example.com/upload/")
        assert start_resumable(s, bucket, host="storage.example.com").startswith("https://storage.example.com/upload/")
        meta = requests.get(f"{s.url}/storage/v1/b/{bucket}", headers={"Host": "evil"}, timeout=T).json()
        assert meta["selfLink"].startswith("https://storage.example.com/storage/v1/b/"), meta
    finally:
        s.stop()
    bad = Server(tmp_path / "data2", ["--public-url", "ftp://x"])
    with pytest.raises(RuntimeError, match="public-url"):
        bad.start()


# ---- 8: state files are private ------------------------------------------------------------


@pytest.mark.skipif(pgcluster.enabled(), reason="checks the modes of the SQLite database files")
def test_state_files_are_private_and_loose_modes_are_reported(tmp_path):
    data = tmp_path / "data"
    s = Server(data).start()
    try:
        bucket = new_bucket(s)
        put_object(s, bucket, "big", os.urandom(200_000))
        requests.post(f"{s.url}/v1/projects/p/locations/us/keyRings?keyRingId=r", json={}, timeout=T)
        modes = {p: stat.S_IMODE(os.stat(data / p).st_mode) for p in ("blobs", "sealstore.db", "sealstore.db-wal", "sealstore.db-shm", "audit.log", "root.key")}
        assert modes == {"blobs": 0o700, "sealstore.db": 0o600, "sealstore.db-wal": 0o600, "sealstore.db-shm": 0o600, "audit.log": 0o600, "root.key": 0o600}, {k: oct(v) for k, v in modes.items()}
        # The harness made the data dir itself, 0755: reported, not changed behind its back.
        assert f"chmod 700 {data}" in s.log_text()
    finally:
        s.stop()
    # A data dir sealstore creates itself is 0700, its database 0600.
    fresh = tmp_path / "fresh"
    run_sealstore_cli("iam", "tokens", "list", "--data-dir", str(fresh))
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(fresh / "sealstore.db").st_mode) == 0o600
    os.chmod(data / "sealstore.db", 0o644)
    os.chmod(data / "blobs", 0o755)
    s.start()
    try:
        log = s.log_text()
        assert f"chmod 600 {data / 'sealstore.db'}" in log and f"chmod 700 {data / 'blobs'}" in log, log
    finally:
        s.stop()


# ---- 9 and 13: logs redact secrets and name the request -------------------------------


def test_debug_logs_redact_secrets_and_carry_request_ids(tmp_path, monkeypatch):
    monkeypatch.setenv("RUST_LOG", "debug")
    s = Server(tmp_path / "data").start()
    try:
        bucket = new_bucket(s)
        loc = start_resumable(s, bucket)
        upload_id = loc.split("upload_id=")[1]
        requests.put(loc, data=b"abc", timeout=T)
        key = os.urandom(32)
        from conftest import csek_headers

        h = csek_headers(key)
        h["Authorization"] = "Bearer sst_SECRETTOKEN"
        h["x-request-id"] = "trace-me-123"
        r = requests.post(
            f"{s.url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name=c&access_token=SECRETQUERY",
            data=b"x",
            headers=h,
            timeout=T,
        )
        assert r.headers["x-request-id"] == "trace-me-123"
        requests.get(f"{s.url}/storage/v1/b/{bucket}/o?encryptionKey=SECRETKEYPARAM", timeout=T)
        log = s.log_text()
        for secret in (upload_id, "SECRETTOKEN", "SECRETQUERY", "SECRETKEYPARAM", h["x-goog-encryption-key"]):
            assert secret not in log, f"{secret} leaked into the log"
        assert "upload_id=REDACTED" in log and "access_token=REDACTED" in log
        assert "trace-me-123" in log
        # A generated id comes back too, and the audit record names it.
        r = requests.post(f"{s.url}/v1/projects/p/locations/us/keyRings?keyRingId=r2", json={}, timeout=T)
        rid = r.headers["x-request-id"]
        assert len(rid) == 24
        audit = (s.data_dir / "audit.log").read_text()
        assert f'"requestId":"{rid}"' in audit, audit[-2000:]
    finally:
        s.stop()


def test_json_log_format(tmp_path):
    import json

    s = Server(tmp_path / "data", ["--log-format", "json"]).start()
    try:
        requests.get(f"{s.url}/healthz", timeout=T)
    finally:
        s.stop()
    lines = [l for l in s.log if l.startswith("{")]
    assert lines, s.log_text()
    for l in lines:
        doc = json.loads(l)
        assert {"timestamp", "level"} <= doc.keys(), doc
    assert any("listening on" in json.loads(l).get("message", "") for l in lines)


# ---- 10: the Bearer scheme is case-insensitive --------------------------------------------


def test_bearer_scheme_is_case_insensitive(tmp_path):
    data = tmp_path / "data"
    s = Server(data, ["--auth", "token"]).start()
    try:
        token, _ = create_token(data, "user:a@example.com", project=PROJECT, role="roles/owner")
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            r = requests.get(f"{s.url}/storage/v1/b?project={PROJECT}", headers={"Authorization": f"{scheme} {token}"}, timeout=T)
            assert r.status_code == 200, (scheme, r.text)
        r = requests.get(f"{s.url}/storage/v1/b?project={PROJECT}", headers={"Authorization": f"Basic {token}"}, timeout=T)
        assert r.status_code == 401
        # /metrics needs sealstore.metrics.get on the server's project.
        assert requests.get(f"{s.url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=T).status_code == 403
        assert requests.get(f"{s.url}/metrics", timeout=T).status_code == 401
        ops, _ = create_token(data, "user:ops@example.com", project="_sealstore", role="roles/viewer")
        r = requests.get(f"{s.url}/metrics", headers={"Authorization": f"Bearer {ops}"}, timeout=T)
        assert r.status_code == 200 and "sealstore_http_requests_total" in r.text
    finally:
        s.stop()


# ---- 11: readiness -----------------------------------------------------------------------


def test_readyz_checks_the_blob_store(tmp_path):
    blobs = tmp_path / "blobs"
    s = Server(tmp_path / "data", ["--blob-store", f"file://{blobs}"]).start()
    try:
        r = requests.get(f"{s.url}/readyz", timeout=T)
        assert r.status_code == 200 and r.text == "ready"
        # The blob directory replaced by a file: the backend no longer answers.
        os.rename(blobs, tmp_path / "moved")
        blobs.write_text("not a directory")
        r = requests.get(f"{s.url}/readyz", timeout=T)
        assert r.status_code == 503 and "blob store" in r.json()["error"]["message"], r.text
        blobs.unlink()
        os.rename(tmp_path / "moved", blobs)
        assert requests.get(f"{s.url}/readyz", timeout=T).status_code == 200
    finally:
        s.stop()


# ---- 12: metrics -----------------------------------------------------------------------


def test_metrics_series_without_unbounded_labels(server, kms_client):
    from conftest import create_key_ring, create_symmetric_key, encrypt_symmetric

    bucket = new_bucket(server)
    secret_name = "object-name-that-must-not-be-a-label"
    put_object(server, bucket, secret_name, os.urandom(5000))
    requests.get(f"{server.url}/download/storage/v1/b/{bucket}/o/{secret_name}?alt=media", timeout=T)
    requests.post(f"{server.url}/upload/storage/v1/b/{bucket}/o?uploadType=resumable&name=s", json={}, timeout=T)
    ring = create_key_ring(kms_client)
    key = create_symmetric_key(kms_client, ring.name)
    encrypt_symmetric(kms_client, key.name, b"hello")
    text = requests.get(f"{server.url}/metrics", timeout=T).text
    for series in (
        'sealstore_http_requests_total{api="gcs_upload",method="POST",status="200"}',
        "sealstore_http_request_duration_seconds_bucket",
        'sealstore_http_request_bytes_total{api="gcs_upload"}',
        'sealstore_http_response_bytes_total{api="gcs_download"}',
        'sealstore_kms_operations_total{caller="api",operation="encrypt",purpose="ENCRYPT_DECRYPT",outcome="OK"}',
        'sealstore_kms_operations_total{caller="storage",operation="wrap"',
        "sealstore_upload_sessions_open 1",
        "sealstore_connections_open",
        # SQLite's group commit; PostgreSQL commits each transaction itself.
        *([] if pgcluster.enabled() else ["sealstore_metadata_commit_batch_size_bucket", "sealstore_metadata_commit_seconds_bucket"]),
    ):
        assert series in text, f"{series} missing from:\n{text}"
    assert secret_name not in text and bucket not in text and "keyRings" not in text


# ---- 15: graceful shutdown ------------------------------------------------------------------


def test_shutdown_finishes_requests_in_flight(tmp_path):
    s = Server(tmp_path / "data", ["--shutdown-grace-secs", "20"]).start()
    bucket = new_bucket(s)
    url = s.url
    sock = raw_connect(s)
    sock.sendall(
        f"POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name=inflight HTTP/1.1\r\nHost: x\r\n"
        "Content-Length: 10\r\n\r\n12345".encode()
    )
    time.sleep(0.3)
    s._proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert s.running, "the server exited with a request in flight"
    # The listener is closed: new connections are refused.
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{url}/healthz", timeout=2)
    sock.sendall(b"67890")
    assert read_until_closed(sock, 10).startswith(b"HTTP/1.1 200")
    s._proc.wait(timeout=10)
    s._finish()
    s.start()
    try:
        r = requests.get(f"{s.url}/download/storage/v1/b/{bucket}/o/inflight?alt=media", timeout=T)
        assert r.content == b"1234567890"
    finally:
        s.stop()


def test_shutdown_grace_is_bounded(tmp_path):
    s = Server(tmp_path / "data", ["--shutdown-grace-secs", "1"]).start()
    bucket = new_bucket(s)
    sock = raw_connect(s)
    sock.sendall(
        f"POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name=never HTTP/1.1\r\nHost: x\r\n"
        "Content-Length: 10\r\n\r\n12345".encode()
    )
    time.sleep(0.3)
    started = time.monotonic()
    s.stop()
    assert time.monotonic() - started < 8
    assert "still in flight at the end of the shutdown grace period" in s.log_text()
    s.start()
    try:
        assert requests.get(f"{s.url}/storage/v1/b/{bucket}/o/never", timeout=T).status_code == 404
    finally:
        s.stop()


def test_shutdown_pauses_rekey_jobs_at_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    s = Server(tmp_path / "data").start()
    try:
        bucket = new_bucket(s)

        def upload(i):
            with requests.Session() as sess:
                for j in range(i, 1500, 8):
                    r = sess.post(f"{s.url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name=o{j:05d}", data=b"x", timeout=T)
                    assert r.status_code == 200

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(upload, range(8)))
        r = requests.post(
            f"{s.url}/sealstore/v1/projects/{PROJECT}/rekeyJobs",
            json={"bucket": bucket, "prefix": "", "to": {"googleManaged": True}},
            timeout=T,
        )
        assert r.status_code in (200, 201), r.text
        name = r.json()["name"]
        s.stop()
        assert "re-key job paused at a checkpoint for shutdown" in s.log_text(), s.log_text()[-3000:]
        s.start()
        deadline = time.monotonic() + 60
        while True:
            job = requests.get(f"{s.url}/sealstore/v1/{name}", timeout=T).json()
            if job["state"] != "RUNNING" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert job["state"] == "SUCCEEDED", job
        assert int(job["counters"]["scanned"]) >= 1500, job
    finally:
        s.stop()


# ---- 2: client numbers never overflow into a 500 ---------------------------------------


def test_huge_client_numbers_get_4xx_never_5xx(server):
    u = server.url
    bucket = new_bucket(server)
    put_object(server, bucket, "o", b"0123456789")
    big, huge, neg = "18446744073709551615", "99999999999999999999999", "-9223372036854775808"
    calls = [
        ("GET", f"/download/storage/v1/b/{bucket}/o/o?alt=media", {"headers": {"Range": f"bytes=3-{big}"}}),
        ("GET", f"/download/storage/v1/b/{bucket}/o/o?alt=media", {"headers": {"Range": f"bytes={big}-"}}),
        ("GET", f"/download/storage/v1/b/{bucket}/o/o?alt=media", {"headers": {"Range": f"bytes=-{big}"}}),
        ("GET", f"/storage/v1/b/{bucket}/o?maxResults={big}", {}),
        ("GET", f"/storage/v1/b/{bucket}/o?maxResults={neg}", {}),
        ("GET", f"/storage/v1/b/{bucket}/o/o?generation={huge}", {}),
        ("GET", f"/storage/v1/b/{bucket}/o/o?ifGenerationMatch={neg}", {}),
        ("POST", f"/storage/v1/b/{bucket}/o/o/rewriteTo/b/{bucket}/o/p?maxBytesRewrittenPerCall={big}", {"json": {}}),
        ("PATCH", f"/storage/v1/b/{bucket}", {"json": {"retentionPolicy": {"retentionPeriod": big}}}),
        ("PATCH", f"/storage/v1/b/{bucket}", {"json": {"retentionPolicy": {"retentionPeriod": 1e300}}}),
        ("GET", f"/v1/projects/p/locations/us/keyRings?pageSize={big}", {}),
        ("POST", "/sealstore/v1/clock:advance", {"json": {"seconds": big}}),
    ]
    loc = start_resumable(server, bucket)
    calls += [
        ("PUT", loc[len(u):], {"headers": {"Content-Range": f"bytes 0-{big}/*"}, "data": b"x"}),
        ("PUT", loc[len(u):], {"headers": {"Content-Range": f"bytes {big}-*/*"}, "data": b"x"}),
        ("PUT", loc[len(u):], {"headers": {"Content-Range": f"bytes 0-0/{huge}"}, "data": b"x"}),
    ]
    ring = requests.post(f"{u}/v1/projects/p/locations/us/keyRings?keyRingId=r", json={}, timeout=T).json()["name"]
    for field in ("rotationPeriod", "destroyScheduledDuration"):
        for value in (f"{big}s", f"{huge}s", "9223372036854775807s", "-1s"):
            body = {"purpose": "ENCRYPT_DECRYPT", field: value}
            if field == "rotationPeriod":
                body["nextRotationTime"] = "2030-01-01T00:00:00Z"
            calls.append(("POST", f"/v1/{ring}/cryptoKeys?cryptoKeyId=k{abs(hash((field, value)))}", {"json": body}))
    for method, path, kw in calls:
        r = requests.request(method, f"{u}{path}", timeout=T, **kw)
        assert r.status_code < 500, (method, path, kw, r.status_code, r.text)
    assert requests.get(f"{u}/storage/v1/b/{bucket}/o/o", timeout=T).status_code == 200


def test_responses_keep_their_content_length(server):
    """The metrics layer counts bytes without re-framing bodies as chunked."""
    bucket = new_bucket(server)
    put_object(server, bucket, "o", b"0123456789")
    for path in (f"/storage/v1/b/{bucket}/o/o", f"/download/storage/v1/b/{bucket}/o/o?alt=media", "/healthz"):
        r = requests.get(f"{server.url}{path}", timeout=T)
        assert r.headers.get("content-length") == str(len(r.content)), (path, r.headers)
        assert "transfer-encoding" not in r.headers


def test_an_early_refusal_closes_the_connection_it_cannot_reuse(server):
    """A request refused before its body was read says `Connection: close`, so a
    keep-alive client does not send its next request into a closing socket."""
    bucket = new_bucket(server)
    loc = start_resumable(server, bucket)
    with requests.Session() as sess:
        for i in range(30):
            r = sess.put(loc, data=os.urandom(5000), headers={"Content-Range": "bytes nonsense"}, timeout=T)
            assert r.status_code == 400
            assert r.headers.get("connection", "").lower() == "close", r.headers
            assert sess.get(f"{server.url}/healthz", timeout=T).status_code == 200
        # A request whose body was read keeps its connection.
        r = sess.post(f"{server.url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name=k", data=b"x", timeout=T)
        assert r.status_code == 200 and r.headers.get("connection", "").lower() != "close"
