"""gsutil 5.38 (apitools) against a TLS listener with a throwaway certificate: it only
speaks https. Uploads small and over 8 MiB (apitools' /resumable route), CMEK through
`kms encryption -k`, CSEK through the boto config, `rewrite -O -k` and `rewrite -s`.
Retries are off (num_retries = 0)."""

import base64
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import requests

from conftest import PROJECT, Server, create_token, project_number, revoke_token, unique_bucket_name
from test_client_compat import make_cert

GSUTIL = os.environ.get("GSUTIL_BIN") or str(Path(__file__).resolve().parents[2] / ".venv-gsutil" / "bin" / "gsutil")


class Gsutil:
    def __init__(self, tmp: Path, server: Server, cert: Path):
        self.tmp, self.server, self.cert = tmp, server, cert
        self.port = server.url.rsplit(":", 1)[1]
        self.home = tmp / "home"
        self.home.mkdir(exist_ok=True)
        self.token = None

    def config(self, extra_gsutil="", extra_sections=""):
        text = f"""{extra_sections}
[Credentials]
gs_json_host = 127.0.0.1
gs_json_port = {self.port}
gs_host = 127.0.0.1
gs_port = {self.port}
gs_kms_host = 127.0.0.1
gs_kms_port = {self.port}
[Boto]
https_validate_certificates = False
num_retries = 0
max_retry_delay = 1
[GSUtil]
prefer_api = json
default_project_id = {PROJECT}
parallel_composite_upload_threshold = 0
sliced_object_download_threshold = 0
software_update_check_period = 0
disable_analytics_prompt = True
check_hashes = always
{extra_gsutil}
"""
        path = self.tmp / "boto.cfg"
        path.write_text(text)
        return path

    def run(self, *args, extra_gsutil="", extra_sections="", check=True):
        env = dict(os.environ, BOTO_CONFIG=str(self.config(extra_gsutil, extra_sections)), HOME=str(self.home), CLOUDSDK_CONFIG=str(self.home / "gcloud"))
        env.pop("STORAGE_EMULATOR_HOST", None)
        cmd = [GSUTIL, "-o", "Credentials:gs_json_host=127.0.0.1"]
        if self.token:
            cmd += ["-o", f"Credentials:gs_oauth2_refresh_token={self.token}"]
        out = subprocess.run(cmd + list(args), capture_output=True, text=True, env=env, timeout=300)
        if check:
            assert out.returncode == 0, f"gsutil {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
        return out


@pytest.fixture
def tls_server(tmp_path):
    cert, key = make_cert(tmp_path)
    s = Server(tmp_path / "data", ["--tls-cert", str(cert), "--tls-key", str(key)]).start()
    yield s, cert
    s.stop()


def api(server, cert, method, path, **kw):
    return requests.request(method, f"{server.url}{path}", verify=str(cert), timeout=30, **kw)


def make_key(server, cert, key_id="k"):
    ring = unique_bucket_name("r")
    base = f"/v1/projects/{PROJECT}/locations/us/keyRings"
    assert api(server, cert, "POST", f"{base}?keyRingId={ring}", json={}).status_code == 200
    r = api(server, cert, "POST", f"{base}/{ring}/cryptoKeys?cryptoKeyId={key_id}", json={"purpose": "ENCRYPT_DECRYPT"})
    assert r.status_code == 200, r.text
    return r.json()["name"]


def obj(server, cert, bucket, name):
    r = api(server, cert, "GET", f"/storage/v1/b/{bucket}/o/{requests.utils.quote(name, safe='')}")
    assert r.status_code == 200, r.text
    return r.json()


def test_cp_small_and_large_round_trip(tmp_path, tls_server):
    server, cert = tls_server
    g = Gsutil(tmp_path, server, cert)
    bucket = unique_bucket_name()
    g.run("mb", "-l", "US", f"gs://{bucket}")
    for name, size in (("small.bin", 1024), ("large.bin", 9 * 1024 * 1024 + 17)):
        data = os.urandom(size)
        src = tmp_path / name
        src.write_bytes(data)
        g.run("cp", str(src), f"gs://{bucket}/{name}")
        dst = tmp_path / f"back-{name}"
        g.run("cp", f"gs://{bucket}/{name}", str(dst))
        assert dst.read_bytes() == data, name
        assert obj(server, cert, bucket, name)["md5Hash"] == base64.b64encode(hashlib.md5(data).digest()).decode()
    listing = g.run("ls", f"gs://{bucket}").stdout
    assert f"gs://{bucket}/large.bin" in listing and f"gs://{bucket}/small.bin" in listing


def test_csek_and_cmek_writes_reads_and_rewrite(tmp_path, tls_server):
    server, cert = tls_server
    g = Gsutil(tmp_path, server, cert)
    bucket = unique_bucket_name()
    g.run("mb", "-l", "US", f"gs://{bucket}")
    k1, k2 = make_key(server, cert, "k1"), make_key(server, cert, "k2")
    csek = base64.b64encode(os.urandom(32)).decode()
    data = os.urandom(9 * 1024 * 1024 + 5)
    src = tmp_path / "d.bin"
    src.write_bytes(data)
    # CSEK: encryption_key in the boto config.
    g.run("cp", str(src), f"gs://{bucket}/csek.bin", extra_gsutil=f"encryption_key = {csek}")
    meta = obj(server, cert, bucket, "csek.bin")
    assert meta["customerEncryption"]["keySha256"]
    back = tmp_path / "csek-back.bin"
    g.run("cp", f"gs://{bucket}/csek.bin", str(back), extra_gsutil=f"encryption_key = {csek}")
    assert back.read_bytes() == data
    # CMEK per object: a KMS key name as encryption_key.
    g.run("cp", str(src), f"gs://{bucket}/cmek.bin", extra_gsutil=f"encryption_key = {k1}")
    assert obj(server, cert, bucket, "cmek.bin")["kmsKeyName"].startswith(k1 + "/cryptoKeyVersions/")
    # rewrite -O -k: CMEK -> CMEK, and CSEK -> CMEK.
    g.run("rewrite", "-O", "-k", f"gs://{bucket}/cmek.bin", extra_gsutil=f"encryption_key = {k2}")
    assert obj(server, cert, bucket, "cmek.bin")["kmsKeyName"].startswith(k2 + "/cryptoKeyVersions/")
    g.run(
        "rewrite", "-O", "-k", f"gs://{bucket}/csek.bin",
        extra_gsutil=f"encryption_key = {k2}\ndecryption_key1 = {csek}",
    )
    meta = obj(server, cert, bucket, "csek.bin")
    assert meta["kmsKeyName"].startswith(k2 + "/cryptoKeyVersions/") and "customerEncryption" not in meta
    for name in ("cmek.bin", "csek.bin"):
        back = tmp_path / f"r-{name}"
        g.run("cp", f"gs://{bucket}/{name}", str(back))
        assert back.read_bytes() == data, name
    # rewrite -s changes the storage class.
    # rewrite -s changes the storage class (-O: there are no ACLs to keep). gsutil
    # compares the versioned kmsKeyName objects report (as on GCS) with the unversioned
    # boto key, so it wants -k as well to keep a CMEK object under its key.
    g.run("rewrite", "-O", "-k", "-s", "nearline", f"gs://{bucket}/cmek.bin", extra_gsutil=f"encryption_key = {k2}")
    meta = obj(server, cert, bucket, "cmek.bin")
    assert meta["storageClass"] == "NEARLINE" and meta["kmsKeyName"].startswith(k2 + "/")


def test_kms_encryption_grants_the_numbered_agent_without_auto_grant(tmp_path):
    """`gsutil kms encryption -k` reads the bucket's projectNumber, asks for that project's
    service agent and grants it on the key. With auto-grant off nothing hides a wrong
    agent email: the CMEK upload afterwards works only if the grant named the agent
    storage really uses. (The token-mode run is the next test.)"""
    cert, key = make_cert(tmp_path)
    s = Server(tmp_path / "data", ["--tls-cert", str(cert), "--tls-key", str(key), "--auto-grant-service-agent=false"]).start()
    try:
        g = Gsutil(tmp_path, s, cert)
        bucket = unique_bucket_name()
        g.run("mb", "-l", "US", f"gs://{bucket}")
        key_name = make_key(s, cert)
        src = tmp_path / "x.bin"
        src.write_bytes(b"cmek by default")
        # Before the grant, the agent cannot use the key.
        out = g.run("cp", str(src), f"gs://{bucket}/x.bin", extra_gsutil=f"encryption_key = {key_name}", check=False)
        assert out.returncode != 0
        g.run("kms", "encryption", "-k", key_name, f"gs://{bucket}")
        policy = api(s, cert, "GET", f"/v1/{key_name}:getIamPolicy").json()
        members = [m for b in policy.get("bindings", []) for m in b["members"]]
        assert members == [f"serviceAccount:service-{project_number(PROJECT)}@gs-project-accounts.iam.gserviceaccount.com"], policy
        assert api(s, cert, "GET", f"/storage/v1/b/{bucket}").json()["encryption"]["defaultKmsKeyName"] == key_name
        g.run("cp", str(src), f"gs://{bucket}/x.bin")
        meta = api(s, cert, "GET", f"/storage/v1/b/{bucket}/o/x.bin").json()
        assert meta["kmsKeyName"].startswith(key_name + "/cryptoKeyVersions/")
        back = tmp_path / "back.bin"
        g.run("cp", f"gs://{bucket}/x.bin", str(back))
        assert back.read_bytes() == b"cmek by default"
    finally:
        s.stop()


def test_kms_encryption_in_token_mode_through_the_oauth2_token_endpoint(tmp_path):
    """`--auth token`: gsutil carries a sealstore token as its OAuth2 refresh token
    (`gs_oauth2_refresh_token`), exchanges it at sealstore's token endpoint
    (`provider_token_uri`) and sends the access token to storage and to the KMS API alike.
    No auto-grant runs in token mode, so the CMEK upload after `kms encryption -k` works
    only if gsutil granted the agent storage really uses."""
    cert, key = make_cert(tmp_path)
    data = tmp_path / "data"
    s = Server(data, ["--auth", "token", "--tls-cert", str(cert), "--tls-key", str(key)]).start()
    try:
        token, token_id = create_token(data, "user:ops@example.com", project=PROJECT, role="roles/owner")
        auth = {"Authorization": f"Bearer {token}"}
        g = Gsutil(tmp_path, s, cert)
        creds = (
            f"[OAuth2]\nprovider_token_uri = {s.url}/oauth2/v4/token\nclient_id = gsutil\nclient_secret = unused\n"
        )
        # gsutil reads the refresh token from [Credentials]; -o sets it there.
        g.token = token
        bucket = unique_bucket_name()
        g.run("mb", "-l", "US", f"gs://{bucket}", extra_sections=creds)
        ring = unique_bucket_name("r")
        base = f"/v1/projects/{PROJECT}/locations/us/keyRings"
        assert api(s, cert, "POST", f"{base}?keyRingId={ring}", json={}, headers=auth).status_code == 200
        r = api(s, cert, "POST", f"{base}/{ring}/cryptoKeys?cryptoKeyId=k", json={"purpose": "ENCRYPT_DECRYPT"}, headers=auth)
        assert r.status_code == 200, r.text
        key_name = r.json()["name"]
        src = tmp_path / "x.bin"
        src.write_bytes(b"cmek in token mode")
        g.run("kms", "encryption", "-k", key_name, f"gs://{bucket}", extra_sections=creds)
        policy = api(s, cert, "GET", f"/v1/{key_name}:getIamPolicy", headers=auth).json()
        members = [m for b in policy.get("bindings", []) for m in b["members"]]
        assert members == [f"serviceAccount:service-{project_number(PROJECT)}@gs-project-accounts.iam.gserviceaccount.com"], policy
        g.run("cp", str(src), f"gs://{bucket}/x.bin", extra_sections=creds)
        meta = api(s, cert, "GET", f"/storage/v1/b/{bucket}/o/x.bin", headers=auth).json()
        assert meta["kmsKeyName"].startswith(key_name + "/cryptoKeyVersions/")
        back = tmp_path / "back.bin"
        g.run("cp", f"gs://{bucket}/x.bin", str(back), extra_sections=creds)
        assert back.read_bytes() == b"cmek in token mode"
        # Without credentials gsutil gets 401; a revoked token no longer exchanges.
        g.token = None
        out = g.run("ls", f"gs://{bucket}", extra_sections=creds, check=False)
        assert out.returncode != 0 and "401" in out.stderr, out.stderr
        revoke_token(data, token_id)
        r = api(s, cert, "POST", "/oauth2/v4/token", data={"grant_type": "refresh_token", "refresh_token": token})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    finally:
        s.stop()


def test_oauth2_token_endpoint_errors(tmp_path, tls_server):
    server, cert = tls_server
    post = lambda form: api(server, cert, "POST", "/oauth2/v4/token", data=form)  # noqa: E731
    r = post({"grant_type": "refresh_token", "refresh_token": "not-a-token"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert "not-a-token" not in r.text
    r = post({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "x"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = post({"refresh_token": "x"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = post({"grant_type": "refresh_token"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert r.headers["Cache-Control"] == "no-store"
