"""sealstore's S3-compatible XML API driven by third-party S3 clients: the AWS CLI v1
(``aws s3 ...`` / ``aws s3api ...``) and minio-py.

One ``sealstore serve --fake-clock`` runs for the whole module; every request is SigV4
signed with an HMAC key made by ``sealstore iam hmac-keys create`` for a service account
holding ``roles/storage.admin`` on the project. Path-style addressing, region us-east-1.

Tests marked ``xfail(strict=True)`` describe how the server *should* behave and fail today
(each reason names the bug); remove the mark once the server is fixed.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import urlparse

import pytest
import requests

from conftest import PROJECT, Server, run_sealstore_cli

VENV_BIN = Path(sys.executable).parent
AWS = str(VENV_BIN / "aws") if (VENV_BIN / "aws").exists() else "aws"
SERVICE_ACCOUNT = f"sa@{PROJECT}.iam.gserviceaccount.com"
REGION = "us-east-1"
AWS_TIMEOUT_S = 120
HTTP_TIMEOUT_S = 30
MiB = 1024 * 1024


# --------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------


class S3Env:
    """The running server plus the HMAC credentials and the AWS CLI environment."""

    def __init__(self, server: Server, access_id: str, secret: str, tmp: Path):
        self.server = server
        self.access_id = access_id
        self.secret = secret
        self.tmp = tmp
        # The config file forces path-style addressing (sealstore runs without
        # --xml-domain). A second one also asks for SigV4 presigned URLs: the CLI v1's
        # `s3 presign` signs with SigV2 unless told otherwise.
        self.config = tmp / "aws-config"
        self.config.write_text("[default]\ns3 =\n    addressing_style = path\n")
        self.config_v4 = tmp / "aws-config-sigv4"
        self.config_v4.write_text(
            "[default]\ns3 =\n    addressing_style = path\n    signature_version = s3v4\n"
        )
        self.creds_file = tmp / "aws-no-credentials"  # keep ~/.aws out of it
        self.creds_file.write_text("")

    @property
    def url(self) -> str:
        assert self.server.url, "server is not running"
        return self.server.url

    def env(self, config: Optional[Path] = None) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ACCESS_KEY_ID=self.access_id,
            AWS_SECRET_ACCESS_KEY=self.secret,
            AWS_DEFAULT_REGION=REGION,
            AWS_MAX_ATTEMPTS="1",
            AWS_RETRY_MODE="standard",
            AWS_CONFIG_FILE=str(config or self.config),
            AWS_SHARED_CREDENTIALS_FILE=str(self.creds_file),
            AWS_PAGER="",
        )
        return env

    def aws(self, *args: str, check: bool = True, config: Optional[Path] = None, cwd=None) -> subprocess.CompletedProcess:
        """``aws --endpoint-url URL ARGS...``; with ``check``, a non-zero exit fails the test."""
        cmd = [AWS, "--endpoint-url", self.url, *args]
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=self.env(config),
            timeout=AWS_TIMEOUT_S,
            cwd=cwd,
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"{' '.join(cmd)} exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}",
                pytrace=False,
            )
        return proc

    def s3api(self, *args: str) -> Dict:
        """``aws s3api ARGS... --output json``, parsed (``{}`` for an empty answer)."""
        out = self.aws("s3api", *args, "--output", "json").stdout.strip()
        return json.loads(out) if out else {}

    def minio(self):
        from minio import Minio

        return Minio(
            urlparse(self.url).netloc,
            access_key=self.access_id,
            secret_key=self.secret,
            secure=False,
            region=REGION,
        )


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> S3Env:
    tmp = tmp_path_factory.mktemp("s3cli")
    srv = Server(tmp / "data")
    srv.start()
    try:
        proc = run_sealstore_cli(
            "iam", "hmac-keys", "create",
            "--data-dir", str(srv.data_dir),
            "--service-account", SERVICE_ACCOUNT,
            "--project", PROJECT,
            "--role", "roles/storage.admin",
        )
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected ACCESS_ID<TAB>SECRET on stdout, got {proc.stdout!r}"
        access_id, secret = lines[0].strip().split("\t")
        yield S3Env(srv, access_id, secret, tmp)
    finally:
        srv.stop()
        print(f"===== sealstore output ({srv.data_dir}) =====")
        print(srv.log_text())


def bucket_name(prefix: str = "s3") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


@pytest.fixture
def bucket(s3: S3Env) -> str:
    """A new empty bucket (made with ``aws s3 mb``)."""
    name = bucket_name()
    s3.aws("s3", "mb", f"s3://{name}")
    return name


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def multipart_etag(data: bytes, part_size: int) -> str:
    """S3's ETag of a multipart object: MD5 of the parts' binary MD5s, ``-<parts>``."""
    parts = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f"{digest}-{len(parts)}"


def ls_keys(output: str) -> List[str]:
    """Keys of ``aws s3 ls --recursive`` lines (``DATE TIME SIZE KEY``; keys may hold spaces)."""
    keys = []
    for line in output.splitlines():
        if line.strip():
            fields = line.split(None, 3)
            assert len(fields) == 4, f"unexpected `s3 ls` line: {line!r}"
            keys.append(fields[3])
    return keys


def ls_entries(output: str):
    """``(prefixes, {name: size})`` of a non-recursive ``aws s3 ls`` listing."""
    prefixes, objects = [], {}
    for line in output.splitlines():
        if not line.strip():
            continue
        fields = line.split(None, 1)
        if fields[0] == "PRE":
            prefixes.append(fields[1])
        else:
            date, time_, size, name = line.split(None, 3)
            objects[name] = int(size)
    return prefixes, objects


def listed_buckets(s3: S3Env) -> List[str]:
    out = s3.aws("s3", "ls").stdout
    return [line.split(None, 2)[2] for line in out.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------
# AWS CLI v1: aws s3 ...
# --------------------------------------------------------------------------------------


def test_cli_mb_ls_rb(s3: S3Env):
    name = bucket_name("mb")
    assert s3.aws("s3", "mb", f"s3://{name}").stdout.strip() == f"make_bucket: {name}"
    assert name in listed_buckets(s3)
    s3.s3api("head-bucket", "--bucket", name)

    # Making it again: S3's BucketAlreadyOwnedByYou.
    again = s3.aws("s3", "mb", f"s3://{name}", check=False)
    assert again.returncode != 0
    assert "BucketAlreadyOwnedByYou" in again.stderr, again.stderr

    assert s3.aws("s3", "rb", f"s3://{name}").stdout.strip() == f"remove_bucket: {name}"
    assert name not in listed_buckets(s3)


def test_cli_cp_small_file_up_and_down(s3: S3Env, bucket: str, tmp_path: Path):
    data = b"hello from the aws cli\n"
    src = tmp_path / "small.txt"
    src.write_bytes(data)
    out = s3.aws("s3", "cp", "small.txt", f"s3://{bucket}/docs/small.txt", "--no-progress", cwd=tmp_path).stdout
    assert out.strip() == f"upload: ./small.txt to s3://{bucket}/docs/small.txt", out

    head = s3.s3api("head-object", "--bucket", bucket, "--key", "docs/small.txt")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == f'"{md5_hex(data)}"'
    assert head["ContentType"] == "text/plain"  # the CLI guesses it from the name

    dst = tmp_path / "down.txt"
    s3.aws("s3", "cp", f"s3://{bucket}/docs/small.txt", str(dst), "--no-progress")
    assert dst.read_bytes() == data
    # ... and to stdout.
    assert s3.aws("s3", "cp", f"s3://{bucket}/docs/small.txt", "-").stdout == data.decode()


def test_cli_cp_20mib_file_is_multipart(s3: S3Env, bucket: str, tmp_path: Path):
    data = os.urandom(20 * MiB)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    s3.aws("s3", "cp", str(src), f"s3://{bucket}/big.bin", "--no-progress")

    head = s3.s3api("head-object", "--bucket", bucket, "--key", "big.bin")
    assert head["ContentLength"] == len(data)
    # The CLI's multipart_chunksize is 8 MiB: 3 parts, S3's multipart ETag.
    assert head["ETag"] == f'"{multipart_etag(data, 8 * MiB)}"'
    # Completing left no upload behind.
    assert not s3.s3api("list-multipart-uploads", "--bucket", bucket).get("Uploads")

    dst = tmp_path / "big.down"
    s3.aws("s3", "cp", f"s3://{bucket}/big.bin", str(dst), "--no-progress")
    assert dst.read_bytes() == data


def test_cli_ls_buckets_recursive_and_prefixes(s3: S3Env, bucket: str, tmp_path: Path):
    keys = {
        "top.txt": b"t",
        "dir/a.txt": b"aa",
        "dir/sub/b.txt": b"bbb",
        "dir/sub/c d.txt": b"cccc",  # a space
        "dir/plus+ünï.txt": b"ddddd",  # '+' and non-ASCII
        "other/e.txt": b"eeeeee",
    }
    for key, data in keys.items():
        f = tmp_path / "f"
        f.write_bytes(data)
        s3.aws("s3", "cp", str(f), f"s3://{bucket}/{key}", "--no-progress")

    assert bucket in listed_buckets(s3)

    everything = ls_keys(s3.aws("s3", "ls", f"s3://{bucket}", "--recursive").stdout)
    assert everything == sorted(keys), everything
    # Same answer when the CLI has to page (ListObjectsV2 continuation tokens).
    paged = ls_keys(s3.aws("s3", "ls", f"s3://{bucket}", "--recursive", "--page-size", "2").stdout)
    assert paged == everything

    prefixes, objects = ls_entries(s3.aws("s3", "ls", f"s3://{bucket}").stdout)
    assert prefixes == ["dir/", "other/"]
    assert objects == {"top.txt": 1}

    prefixes, objects = ls_entries(s3.aws("s3", "ls", f"s3://{bucket}/dir/").stdout)
    assert prefixes == ["sub/"]
    assert objects == {"a.txt": 2, "plus+ünï.txt": 5}

    prefixes, objects = ls_entries(s3.aws("s3", "ls", f"s3://{bucket}/dir/sub/").stdout)
    assert prefixes == [] and objects == {"b.txt": 3, "c d.txt": 4}

    # A prefix that is not a "directory": the CLI lists what starts with it.
    prefixes, objects = ls_entries(s3.aws("s3", "ls", f"s3://{bucket}/ot").stdout)
    assert prefixes == ["other/"] and objects == {}

    # Nothing under a prefix: empty output, exit code 1 (the CLI's convention).
    none = s3.aws("s3", "ls", f"s3://{bucket}/nothing-here/", check=False)
    assert none.returncode == 1 and none.stdout.strip() == "", (none.stdout, none.stderr)

    # ListObjects v1 pages (marker) as well.
    v1 = s3.s3api("list-objects", "--bucket", bucket, "--page-size", "2")
    assert [o["Key"] for o in v1["Contents"]] == sorted(keys)


def test_cli_sync_directory_up_and_back_down(s3: S3Env, bucket: str, tmp_path: Path):
    src = tmp_path / "src"
    # The empty file matters: botocore sends Expect: 100-continue for it too (see
    # test_expect_100_continue_is_answered_for_an_empty_put); a connection left half-read
    # made the CLI stall until the server's 30 s idle timeout, caught here by the check
    # on how long the uploads took.
    files = {
        "empty.txt": b"",
        "a.txt": b"alpha\n",
        "sub/b.txt": b"beta\n",
        "sub/deeper/random.bin": os.urandom(300_000),
        "with space.txt": b"spaced\n",
    }
    for rel, data in files.items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    import time
    started = time.monotonic()
    up = s3.aws("s3", "sync", str(src), f"s3://{bucket}/mirror/", "--no-progress").stdout
    assert time.monotonic() - started < 20, "the sync stalled (a half-read connection?)"
    assert up.count("upload:") == len(files), up
    listed = ls_keys(s3.aws("s3", "ls", f"s3://{bucket}/mirror/", "--recursive").stdout)
    assert listed == sorted(f"mirror/{rel}" for rel in files)

    # Nothing changed: a second sync uploads nothing.
    again = s3.aws("s3", "sync", str(src), f"s3://{bucket}/mirror/", "--no-progress").stdout
    assert "upload:" not in again, again

    dst = tmp_path / "dst"
    down = s3.aws("s3", "sync", f"s3://{bucket}/mirror/", str(dst), "--no-progress").stdout
    assert down.count("download:") == len(files), down
    got = {str(p.relative_to(dst)): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    assert got == files


def test_cli_rm_recursive_then_rb(s3: S3Env, tmp_path: Path):
    name = bucket_name("rm")
    s3.aws("s3", "mb", f"s3://{name}")
    f = tmp_path / "f"
    f.write_bytes(b"x" * 10)
    for key in ("a", "p/b", "p/q/c", "p/q/d"):
        s3.aws("s3", "cp", str(f), f"s3://{name}/{key}", "--no-progress")

    # rb of a non-empty bucket fails ...
    busy = s3.aws("s3", "rb", f"s3://{name}", check=False)
    assert busy.returncode != 0 and "BucketNotEmpty" in busy.stderr, busy.stderr

    # ... a prefix-scoped recursive rm removes only that prefix ...
    out = s3.aws("s3", "rm", f"s3://{name}/p/q/", "--recursive").stdout
    assert sorted(line.split(": ", 1)[1] for line in out.splitlines() if line.strip()) == [
        f"s3://{name}/p/q/c",
        f"s3://{name}/p/q/d",
    ]
    assert ls_keys(s3.aws("s3", "ls", f"s3://{name}", "--recursive").stdout) == ["a", "p/b"]

    # ... and a bucket-wide one empties it, after which rb works.
    s3.aws("s3", "rm", f"s3://{name}", "--recursive")
    empty = s3.aws("s3", "ls", f"s3://{name}", "--recursive", check=False)
    assert empty.stdout.strip() == "", empty.stdout
    s3.aws("s3", "rb", f"s3://{name}")
    assert name not in listed_buckets(s3)


def test_cli_presign_sigv4_url_fetched_with_requests(s3: S3Env, bucket: str, tmp_path: Path):
    data = b"presigned content \x00\x01\x02"
    f = tmp_path / "p.bin"
    f.write_bytes(data)
    s3.aws("s3", "cp", str(f), f"s3://{bucket}/dir/p.bin", "--no-progress")

    url = s3.aws(
        "s3", "presign", f"s3://{bucket}/dir/p.bin", "--expires-in", "60", config=s3.config_v4
    ).stdout.strip()
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url, url
    resp = requests.get(url, timeout=HTTP_TIMEOUT_S)
    assert resp.status_code == 200, resp.text
    assert resp.content == data
    assert resp.headers["etag"] == f'"{md5_hex(data)}"'

    # A tampered signature is refused.
    bad = requests.get(url[:-1] + ("0" if url[-1] != "0" else "1"), timeout=HTTP_TIMEOUT_S)
    assert bad.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in bad.text, bad.text

    # Once X-Amz-Expires has passed (server clock), the URL stops working.
    s3.server.advance(120)
    expired = requests.get(url, timeout=HTTP_TIMEOUT_S)
    assert expired.status_code == 403 and "<Code>AccessDenied</Code>" in expired.text, expired.text


def test_cli_presign_default_sigv2_is_refused_clearly(s3: S3Env, bucket: str, tmp_path: Path):
    """The CLI v1's `s3 presign` signs with SigV2 unless `signature_version = s3v4` is set.
    sealstore does not support SigV2 (documented: presigned URLs are SigV4) and says so,
    rather than ignoring the signature (dev mode would accept an unsigned request)."""
    f = tmp_path / "p.txt"
    f.write_bytes(b"v2")
    s3.aws("s3", "cp", str(f), f"s3://{bucket}/p.txt", "--no-progress")
    url = s3.aws("s3", "presign", f"s3://{bucket}/p.txt").stdout.strip()
    assert "AWSAccessKeyId=" in url and "Signature=" in url, url
    resp = requests.get(url, timeout=HTTP_TIMEOUT_S)
    assert resp.status_code == 400, resp.text
    assert "<Code>InvalidRequest</Code>" in resp.text and "Signature Version 4" in resp.text, resp.text


# --------------------------------------------------------------------------------------
# AWS CLI v1: aws s3api ...
# --------------------------------------------------------------------------------------

SSE_C_KEY = "0123456789abcdef0123456789abcdef"  # 32 bytes; the CLI base64-encodes it
SSE_C_KEY_MD5 = base64.b64encode(hashlib.md5(SSE_C_KEY.encode()).digest()).decode()
SSE_C_ARGS = ("--sse-customer-algorithm", "AES256", "--sse-customer-key", SSE_C_KEY)


def test_s3api_sse_c_round_trip(s3: S3Env, bucket: str, tmp_path: Path):
    data = b"customer-encrypted secret\n"
    body = tmp_path / "secret.txt"
    body.write_bytes(data)

    put = s3.s3api("put-object", "--bucket", bucket, "--key", "ssec/k", "--body", str(body), *SSE_C_ARGS)
    assert put["SSECustomerAlgorithm"] == "AES256"
    assert put["SSECustomerKeyMD5"] == SSE_C_KEY_MD5

    head = s3.s3api("head-object", "--bucket", bucket, "--key", "ssec/k", *SSE_C_ARGS)
    assert head["ContentLength"] == len(data)
    assert head["SSECustomerAlgorithm"] == "AES256"
    assert head["SSECustomerKeyMD5"] == SSE_C_KEY_MD5

    out = tmp_path / "out.txt"
    got = s3.s3api("get-object", "--bucket", bucket, "--key", "ssec/k", *SSE_C_ARGS, str(out))
    assert got["SSECustomerKeyMD5"] == SSE_C_KEY_MD5
    assert out.read_bytes() == data

    # Without the key: HEAD fails with 400 (S3 sends no body on HEAD) ...
    nokey = s3.aws("s3api", "head-object", "--bucket", bucket, "--key", "ssec/k", check=False)
    assert nokey.returncode != 0
    assert "(400)" in nokey.stderr and "HeadObject" in nokey.stderr, nokey.stderr
    # ... GET names the problem ...
    nokey = s3.aws("s3api", "get-object", "--bucket", bucket, "--key", "ssec/k", str(tmp_path / "x"), check=False)
    assert nokey.returncode != 0 and "InvalidRequest" in nokey.stderr, nokey.stderr
    # ... and a wrong key is refused too.
    wrong = s3.aws(
        "s3api", "get-object", "--bucket", bucket, "--key", "ssec/k",
        "--sse-customer-algorithm", "AES256", "--sse-customer-key", "f" * 32,
        str(tmp_path / "y"), check=False,
    )
    # (README: a wrong key -> 403 AccessDenied)
    assert wrong.returncode != 0 and "AccessDenied" in wrong.stderr, wrong.stderr
    assert not (tmp_path / "y").exists() or (tmp_path / "y").read_bytes() != data


def _versioned_bucket_with_two_puts(s3: S3Env, tmp_path: Path):
    name = bucket_name("ver")
    s3.aws("s3", "mb", f"s3://{name}")
    s3.aws("s3api", "put-bucket-versioning", "--bucket", name, "--versioning-configuration", "Status=Enabled")
    assert s3.s3api("get-bucket-versioning", "--bucket", name)["Status"] == "Enabled"
    puts = []
    for content in (b"one\n", b"second\n"):
        f = tmp_path / "v"
        f.write_bytes(content)
        put = s3.s3api("put-object", "--bucket", name, "--key", "doc.txt", "--body", str(f))
        puts.append((put["VersionId"], content))
    assert puts[0][0] != puts[1][0]
    return name, puts


def test_s3api_list_object_versions_after_two_puts(s3: S3Env, tmp_path: Path):
    name, puts = _versioned_bucket_with_two_puts(s3, tmp_path)
    (v1, d1), (v2, d2) = puts

    listing = s3.s3api("list-object-versions", "--bucket", name)
    versions = listing["Versions"]
    assert {(v["Key"], v["VersionId"], v["Size"], v["ETag"], v["IsLatest"]) for v in versions} == {
        ("doc.txt", v1, len(d1), f'"{md5_hex(d1)}"', False),
        ("doc.txt", v2, len(d2), f'"{md5_hex(d2)}"', True),
    }
    assert not listing.get("DeleteMarkers")

    # Each version stays readable by its id; the plain GET gets the latest.
    for vid, content in puts:
        out = tmp_path / f"get-{vid}"
        got = s3.s3api("get-object", "--bucket", name, "--key", "doc.txt", "--version-id", vid, str(out))
        assert got["VersionId"] == vid and out.read_bytes() == content
    out = tmp_path / "latest"
    assert s3.s3api("get-object", "--bucket", name, "--key", "doc.txt", str(out))["VersionId"] == v2
    assert out.read_bytes() == d2

    # Paging one entry at a time (KeyMarker / VersionIdMarker) yields the same versions.
    paged = s3.s3api("list-object-versions", "--bucket", name, "--page-size", "1")
    assert sorted(v["VersionId"] for v in paged["Versions"]) == sorted([v1, v2])


def test_s3api_list_object_versions_newest_first(s3: S3Env, tmp_path: Path):
    name, puts = _versioned_bucket_with_two_puts(s3, tmp_path)
    (v1, _), (v2, _) = puts
    versions = s3.s3api("list-object-versions", "--bucket", name)["Versions"]
    assert [(v["VersionId"], v["IsLatest"]) for v in versions] == [(v2, True), (v1, False)]


def test_s3api_missing_bucket_is_404_no_such_bucket(s3: S3Env, tmp_path: Path):
    missing = bucket_name("missing")
    head = s3.aws("s3api", "head-bucket", "--bucket", missing, check=False)
    assert head.returncode != 0
    assert "(404)" in head.stderr, head.stderr
    listing = s3.aws("s3api", "list-objects-v2", "--bucket", missing, check=False)
    assert "NoSuchBucket" in listing.stderr, listing.stderr
    get = s3.aws("s3api", "get-object", "--bucket", missing, "--key", "k", str(tmp_path / "o"), check=False)
    assert "NoSuchBucket" in get.stderr, get.stderr


def _signed_raw_request(s3: S3Env, method: str, path: str, headers: Dict[str, str], body: bytes) -> bytes:
    """The bytes of a SigV4-signed HTTP/1.1 request (signed as botocore signs it)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{s3.url}{path}"
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    req.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    S3SigV4Auth(Credentials(s3.access_id, s3.secret), "s3", REGION).add_auth(req)
    host = urlparse(s3.url).netloc
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in req.headers.items() if k.lower() != "host"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_available(sock, timeout: float) -> bytes:
    import socket

    sock.settimeout(timeout)
    out = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and not out.startswith(b"HTTP/1.1 100"):
                break
    except socket.timeout:
        pass
    return out


def test_expect_100_continue_with_a_body(s3: S3Env, bucket: str):
    """What botocore does for every PutObject/UploadPart with a file body: send the
    headers with ``Expect: 100-continue``, wait for ``100 Continue``, then the body."""
    import socket

    body = b"x" * 1000
    raw = _signed_raw_request(
        s3, "PUT", f"/{bucket}/expect-body",
        {"Content-Length": str(len(body)), "Expect": "100-continue"}, body,
    )
    u = urlparse(s3.url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        sock.sendall(raw)
        interim = _read_available(sock, 2.0)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
        sock.sendall(body)
        final = _read_available(sock, 5.0)
        assert final.startswith(b"HTTP/1.1 200 "), final
    head = s3.s3api("head-object", "--bucket", bucket, "--key", "expect-body")
    assert head["ContentLength"] == len(body)


def test_expect_100_continue_is_answered_for_an_empty_put(s3: S3Env, bucket: str):
    """botocore adds ``Expect: 100-continue`` to every PutObject with a file body, empty
    files included, and relies on S3 answering it with ``100 Continue`` whatever the
    framing."""
    import socket

    raw = _signed_raw_request(
        s3, "PUT", f"/{bucket}/expect-empty", {"Content-Length": "0", "Expect": "100-continue"}, b""
    )
    u = urlparse(s3.url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as sock:
        sock.sendall(raw)
        got = _read_available(sock, 2.0)
        if got.startswith(b"HTTP/1.1 100"):
            got += _read_available(sock, 5.0)
    # Either a 100 Continue first (S3), or the answer with the connection closed after
    # it: hyper reads nothing of an empty body, so it sends no 100, and sealstore closes
    # the connection so botocore (boto/botocore#3755) never reuses it half-parsed.
    if got.startswith(b"HTTP/1.1 100"):
        assert b"HTTP/1.1 200 " in got, got
    else:
        assert got.startswith(b"HTTP/1.1 200 "), got
        assert b"\r\nconnection: close\r\n" in got.lower(), got


# --------------------------------------------------------------------------------------
# minio-py
# --------------------------------------------------------------------------------------


@pytest.fixture
def mc(s3: S3Env):
    return s3.minio()


@pytest.fixture
def mbucket(mc) -> str:
    name = bucket_name("minio")
    mc.make_bucket(name)
    return name


def _read(mc, bucket: str, key: str, **kw) -> bytes:
    resp = mc.get_object(bucket, key, **kw)
    try:
        return resp.read()
    finally:
        resp.close()
        resp.release_conn()


def test_minio_make_bucket_and_bucket_exists(mc):
    name = bucket_name("minio")
    mc.make_bucket(name)
    assert mc.bucket_exists(name)
    assert name in [b.name for b in mc.list_buckets()]


def test_minio_bucket_exists_false_for_missing_bucket(mc):
    assert mc.bucket_exists(bucket_name("missing")) is False


def test_minio_put_get_stat_and_list(mc, mbucket: str):
    from minio.error import S3Error

    data = b"hello minio"
    res = mc.put_object(
        mbucket, "a/b/c.txt", io.BytesIO(data), len(data),
        content_type="text/plain", metadata={"color": "red"},
    )
    assert res.etag == md5_hex(data)
    mc.put_object(mbucket, "a/x.txt", io.BytesIO(b"x"), 1)
    mc.put_object(mbucket, "top.txt", io.BytesIO(b"t"), 1)

    assert _read(mc, mbucket, "a/b/c.txt") == data
    assert _read(mc, mbucket, "a/b/c.txt", offset=6, length=5) == b"minio"

    st = mc.stat_object(mbucket, "a/b/c.txt")
    assert st.size == len(data)
    assert st.etag == md5_hex(data)
    assert st.content_type == "text/plain"
    assert st.metadata.get("x-amz-meta-color") == "red"

    with pytest.raises(S3Error) as info:
        mc.stat_object(mbucket, "no/such/key")
    assert info.value.code == "NoSuchKey"

    # (minio yields a page's objects, then its common prefixes)
    top = sorted((o.object_name, o.is_dir) for o in mc.list_objects(mbucket))
    assert top == [("a/", True), ("top.txt", False)]
    under_a = sorted((o.object_name, o.is_dir) for o in mc.list_objects(mbucket, prefix="a/"))
    assert under_a == [("a/b/", True), ("a/x.txt", False)]
    everything = ["a/b/c.txt", "a/x.txt", "top.txt"]
    assert [o.object_name for o in mc.list_objects(mbucket, recursive=True)] == everything
    assert [o.object_name for o in mc.list_objects(mbucket, recursive=True, use_api_v1=True)] == everything
    assert [o.object_name for o in mc.list_objects(mbucket, recursive=True, start_after="a/x.txt")] == ["top.txt"]
    sizes = {o.object_name: o.size for o in mc.list_objects(mbucket, recursive=True)}
    assert sizes == {"a/b/c.txt": len(data), "a/x.txt": 1, "top.txt": 1}


def test_minio_fput_12mib_multipart(mc, mbucket: str, tmp_path: Path):
    data = os.urandom(12 * MiB)
    path = tmp_path / "f12.bin"
    path.write_bytes(data)
    res = mc.fput_object(mbucket, "big/f12.bin", str(path), part_size=5 * MiB)
    expected = multipart_etag(data, 5 * MiB)  # 5 + 5 + 2 MiB
    assert res.etag == expected
    st = mc.stat_object(mbucket, "big/f12.bin")
    assert st.size == len(data) and st.etag == expected
    assert _read(mc, mbucket, "big/f12.bin") == data
    assert _read(mc, mbucket, "big/f12.bin", offset=5 * MiB - 10, length=20) == data[5 * MiB - 10 : 5 * MiB + 10]
    out = tmp_path / "back.bin"
    mc.fget_object(mbucket, "big/f12.bin", str(out))
    assert out.read_bytes() == data


def test_minio_copy_and_remove(mc, mbucket: str):
    from minio.commonconfig import REPLACE, CopySource
    from minio.deleteobjects import DeleteObject

    data = b"copy me"
    mc.put_object(mbucket, "src.txt", io.BytesIO(data), len(data), content_type="text/plain", metadata={"k": "v"})

    res = mc.copy_object(mbucket, "copy.txt", CopySource(mbucket, "src.txt"))
    assert res.etag == md5_hex(data)
    st = mc.stat_object(mbucket, "copy.txt")
    assert st.size == len(data) and st.content_type == "text/plain"
    assert st.metadata.get("x-amz-meta-k") == "v"  # COPY directive keeps metadata
    assert _read(mc, mbucket, "copy.txt") == data

    mc.copy_object(
        mbucket, "replaced.txt", CopySource(mbucket, "src.txt"),
        metadata={"Content-Type": "application/x-new", "x-amz-meta-n": "1"}, metadata_directive=REPLACE,
    )
    st = mc.stat_object(mbucket, "replaced.txt")
    assert st.content_type == "application/x-new"
    assert st.metadata.get("x-amz-meta-n") == "1" and "x-amz-meta-k" not in st.metadata

    mc.remove_object(mbucket, "copy.txt")
    errors = list(
        mc.remove_objects(
            mbucket, [DeleteObject("src.txt"), DeleteObject("replaced.txt"), DeleteObject("never-existed")]
        )
    )
    assert errors == []
    assert list(mc.list_objects(mbucket, recursive=True)) == []
    mc.remove_bucket(mbucket)
    assert mbucket not in [b.name for b in mc.list_buckets()]


def test_minio_presigned_get_and_put(mc, mbucket: str):
    data = b"presigned by minio"
    mc.put_object(mbucket, "dir/p.txt", io.BytesIO(data), len(data))
    url = mc.presigned_get_object(mbucket, "dir/p.txt")
    resp = requests.get(url, timeout=HTTP_TIMEOUT_S)
    assert resp.status_code == 200, resp.text
    assert resp.content == data

    put_url = mc.presigned_put_object(mbucket, "dir/up.txt")
    resp = requests.put(put_url, data=b"uploaded via presigned PUT", timeout=HTTP_TIMEOUT_S)
    assert resp.status_code == 200, resp.text
    assert _read(mc, mbucket, "dir/up.txt") == b"uploaded via presigned PUT"
