"""HTTP-level fuzzing (issue 12): random JSON bodies for every method, random KMS
ciphertexts, wrapped-key import blobs, CSEK headers, multipart framings, page tokens
and Content-Range headers. Every answer must be a 4xx in the API's format (or a 2xx),
never a 5xx or a dropped connection, and the server must stay healthy.

Bounded and seeded for the test command (SEALSTORE_FUZZ_CASES, default 40 per target;
SEALSTORE_FUZZ_SEED picks the seed). A longer run: SEALSTORE_FUZZ_CASES=5000."""

from __future__ import annotations

import base64
import json
import os
import random

import pytest
import requests

from conftest import PROJECT, unique_bucket_name

T = 30
CASES = int(os.environ.get("SEALSTORE_FUZZ_CASES", "40"))
SEED = int(os.environ.get("SEALSTORE_FUZZ_SEED", "1202"))

FIELDS = [
    "name", "purpose", "labels", "versionTemplate", "algorithm", "protectionLevel", "rotationPeriod",
    "nextRotationTime", "destroyScheduledDuration", "importOnly", "plaintext", "ciphertext",
    "additionalAuthenticatedData", "plaintextCrc32c", "ciphertextCrc32c", "importJob", "wrappedKey",
    "rsaAesWrappedKey", "importMethod", "cryptoKeyVersion", "state", "policy", "bindings", "role", "members",
    "etag", "version", "updateMask", "location", "storageClass", "versioning", "enabled", "retentionPolicy",
    "retentionPeriod", "encryption", "defaultKmsKeyName", "iamConfiguration", "publicAccessPrevention",
    "uniformBucketLevelAccess", "rpo", "metadata", "contentType", "sourceObjects", "destination",
    "kmsKeyName", "temporaryHold", "eventBasedHold", "retention", "mode", "retainUntilTime", "seconds",
    "bucket", "prefix", "to", "from", "googleManaged", "kmsKeyVersions", "digest", "sha256", "data", "mac",
    "lengthBytes", "customerManagedEncryptionEnforcementConfig", "restrictionMode", "acl", "lifecycle",
]


def rand_scalar(rng):
    return rng.choice([
        None, True, False, 0, -1, 1, 2**63 - 1, -(2**63), 2**64, 1e308, -1e-308, 0.5, "", "x",
        "ENCRYPT_DECRYPT", "AES256", "GOOGLE_SYMMETRIC_ENCRYPTION", "ENABLED", "DESTROYED", "HSM",
        "86400s", "-1s", "99999999999999999999s", "2030-01-01T00:00:00Z", "not a time", "roles/owner",
        "user:a@b", "allUsers", "projects/p/locations/us/keyRings/r/cryptoKeys/k",
        base64.b64encode(os.urandom(rng.randint(0, 64))).decode(), "\u0000", "\ud7ff" * 3, "a" * 2000,
        "{}", "[]", "%00", "../../etc/passwd",
    ])


def rand_value(rng, depth=0):
    r = rng.random()
    if depth > 3 or r < 0.5:
        return rand_scalar(rng)
    if r < 0.75:
        return [rand_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(FIELDS + ["zz" + str(rng.randint(0, 9))]): rand_value(rng, depth + 1) for _ in range(rng.randint(0, 6))}


def rand_body(rng):
    r = rng.random()
    if r < 0.75:
        return json.dumps(rand_value(rng) if r < 0.15 else {rng.choice(FIELDS): rand_value(rng) for _ in range(rng.randint(0, 6))}).encode()
    if r < 0.9:
        return os.urandom(rng.randint(0, 200))
    return rng.choice([b"", b'""', b"{", b"[1,", b'{"a":' * 200, b"null", b"\xff\xfe"])


def assert_sane(r, what):
    # 501 names a feature that is not built: a clear answer, not a failure.
    assert r.status_code < 500 or r.status_code == 501, (what, r.status_code, r.text[:500])
    if r.status_code >= 400 and r.content:
        ctype = r.headers.get("content-type", "")
        if "json" in ctype:
            r.json()  # a parseable error document


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory):
    from conftest import Server

    s = Server(tmp_path_factory.mktemp("fuzz") / "data").start()
    u = s.url
    ring = requests.post(f"{u}/v1/projects/{PROJECT}/locations/us/keyRings?keyRingId=fz", json={}, timeout=T).json()["name"]
    key = requests.post(f"{u}/v1/{ring}/cryptoKeys?cryptoKeyId=k", json={"purpose": "ENCRYPT_DECRYPT"}, timeout=T).json()["name"]
    requests.post(f"{u}/v1/{ring}/cryptoKeys?cryptoKeyId=ak", json={"purpose": "ASYMMETRIC_SIGN", "versionTemplate": {"algorithm": "EC_SIGN_P256_SHA256"}}, timeout=T)
    job = requests.post(
        f"{u}/v1/{ring}/importJobs?importJobId=j",
        json={"importMethod": "RSA_OAEP_3072_SHA256_AES_256", "protectionLevel": "SOFTWARE"},
        timeout=T,
    ).json()["name"]
    bucket = unique_bucket_name()
    requests.post(f"{u}/storage/v1/b?project={PROJECT}", json={"name": bucket}, timeout=T)
    requests.post(f"{u}/upload/storage/v1/b/{bucket}/o?uploadType=media&name=o", data=b"hello", timeout=T)
    yield s, ring, key, job, bucket
    s.stop()


def targets(ring, key, job, bucket):
    return [
        ("POST", f"/v1/projects/{PROJECT}/locations/us/keyRings?keyRingId=r{{n}}"),
        ("POST", f"/v1/{ring}/cryptoKeys?cryptoKeyId=c{{n}}"),
        ("PATCH", f"/v1/{key}?updateMask=labels,rotationPeriod,nextRotationTime,versionTemplate"),
        ("POST", f"/v1/{key}:encrypt"),
        ("POST", f"/v1/{key}:decrypt"),
        ("POST", f"/v1/{key}/cryptoKeyVersions"),
        ("POST", f"/v1/{key}/cryptoKeyVersions:import"),
        ("POST", f"/v1/{key}:updatePrimaryVersion"),
        ("POST", f"/v1/{ring}/cryptoKeys/ak/cryptoKeyVersions/1:asymmetricSign"),
        ("POST", f"/v1/{ring}/importJobs?importJobId=j{{n}}"),
        ("POST", f"/v1/{key}:setIamPolicy"),
        ("POST", f"/v1/projects/{PROJECT}/locations/us:generateRandomBytes"),
        ("POST", f"/storage/v1/b?project={PROJECT}"),
        ("PATCH", f"/storage/v1/b/{bucket}"),
        ("PUT", f"/storage/v1/b/{bucket}/iam"),
        ("PATCH", f"/storage/v1/b/{bucket}/o/o"),
        ("POST", f"/storage/v1/b/{bucket}/o/c{{n}}/compose"),
        ("POST", f"/storage/v1/b/{bucket}/o/o/rewriteTo/b/{bucket}/o/w{{n}}"),
        ("POST", f"/storage/v1/b/{bucket}/o/o/copyTo/b/{bucket}/o/y{{n}}"),
        ("POST", f"/upload/storage/v1/b/{bucket}/o?uploadType=resumable&name=u{{n}}"),
        ("POST", f"/sealstore/v1/projects/{PROJECT}/rekeyJobs"),
        ("POST", f"/sealstore/v1/projects/{PROJECT}:setIamPolicy"),
        ("POST", "/sealstore/v1/clock:advance"),
    ]


def test_random_json_bodies_for_every_method(fuzz_env):
    s, ring, key, job, bucket = fuzz_env
    rng = random.Random(SEED)
    with requests.Session() as sess:
        for method, path in targets(ring, key, job, bucket):  # noqa: B007
            for n in range(CASES):
                body = rand_body(rng)
                r = sess.request(method, s.url + path.replace("{n}", str(n)), data=body,
                                 headers={"content-type": "application/json"}, timeout=T)
                assert_sane(r, (method, path, body[:300]))
    assert requests.get(f"{s.url}/readyz", timeout=T).status_code == 200


def test_random_kms_ciphertexts_and_import_blobs(fuzz_env):
    s, ring, key, job, bucket = fuzz_env
    rng = random.Random(SEED + 1)
    good = requests.post(f"{s.url}/v1/{key}:encrypt", json={"plaintext": base64.b64encode(b"secret").decode()}, timeout=T).json()["ciphertext"]
    raw = bytearray(base64.b64decode(good))
    with requests.Session() as sess:
        for _ in range(CASES * 3):
            if rng.random() < 0.5:
                ct = os.urandom(rng.randint(0, 400))
            else:
                ct = bytearray(raw)
                for _ in range(rng.randint(1, 4)):
                    ct[rng.randrange(len(ct))] ^= 1 << rng.randrange(8)
                ct = bytes(ct[: rng.randint(0, len(ct) - 1)] if rng.random() < 0.3 else ct)
                if ct == bytes(raw):
                    continue  # the flips cancelled out
            r = sess.post(f"{s.url}/v1/{key}:decrypt", json={"ciphertext": base64.b64encode(ct).decode()}, timeout=T)
            # INVALID_ARGUMENT, or FAILED_PRECONDITION when the bytes happen to name a
            # version of the key that is not enabled (the import loop makes such versions).
            assert r.status_code == 400 and r.json()["error"]["status"] in ("INVALID_ARGUMENT", "FAILED_PRECONDITION"), r.text
            blob = os.urandom(rng.choice([0, 1, 16, 255, 384, 384 + 40, 384 + 1300, 5000]))
            r = sess.post(
                f"{s.url}/v1/{key}/cryptoKeyVersions:import",
                json={"importJob": job, "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "wrappedKey": base64.b64encode(blob).decode()},
                timeout=T,
            )
            # As Cloud KMS: refused outright, or a version that failed to import.
            assert 400 <= r.status_code < 500 or r.json()["state"] == "IMPORT_FAILED", r.text
    # The real ciphertext still decrypts: nothing was disturbed.
    r = requests.post(f"{s.url}/v1/{key}:decrypt", json={"ciphertext": good}, timeout=T)
    assert base64.b64decode(r.json()["plaintext"]) == b"secret"


def test_random_csek_headers_multipart_framings_ranges_and_tokens(fuzz_env):
    s, ring, key, job, bucket = fuzz_env
    rng = random.Random(SEED + 2)
    pieces = ["--b", "\r\n", "\n", "Content-Type: application/json", "Content-Type: text/plain", "{}", '{"name":"m"}', "data", "--b--", "--", " ", ";"]
    with requests.Session() as sess:
        for n in range(CASES * 2):
            hdr = {
                "x-goog-encryption-algorithm": rng.choice(["AES256", "AES128", "", "aes256"]),
                "x-goog-encryption-key": rng.choice([base64.b64encode(os.urandom(rng.choice([0, 16, 31, 32, 33]))).decode(), "!!", ""]),
                "x-goog-encryption-key-sha256": rng.choice([base64.b64encode(os.urandom(32)).decode(), "", "x"]),
            }
            for k in list(hdr):
                if rng.random() < 0.3:
                    del hdr[k]
            r = sess.post(f"{s.url}/upload/storage/v1/b/{bucket}/o?uploadType=media&name=c{n}", data=b"x", headers=hdr, timeout=T)
            assert_sane(r, hdr)
            body = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14))).encode()
            ctype = rng.choice(["multipart/related; boundary=b", "multipart/related; boundary='b'", "multipart/related", "multipart/related; boundary="])
            r = sess.post(f"{s.url}/upload/storage/v1/b/{bucket}/o?uploadType=multipart", data=body, headers={"content-type": ctype}, timeout=T)
            assert_sane(r, body)
            rng_hdr = "bytes=" + "".join(rng.choice("0123456789-,* ") for _ in range(rng.randint(0, 12)))
            r = sess.get(f"{s.url}/download/storage/v1/b/{bucket}/o/o?alt=media", headers={"Range": rng_hdr}, timeout=T)
            assert r.status_code in (200, 206, 416), (rng_hdr, r.status_code)
            token = "".join(rng.choice("abcXYZ019-_.=%") for _ in range(rng.randint(0, 60)))
            r = sess.get(f"{s.url}/storage/v1/b/{bucket}/o?pageToken={token}", timeout=T)
            assert_sane(r, token)
            r = sess.get(f"{s.url}/v1/{ring}/cryptoKeys?pageToken={token}", timeout=T)
            assert_sane(r, token)
            r = sess.post(f"{s.url}/storage/v1/b/{bucket}/o/o/rewriteTo/b/{bucket}/o/rw?rewriteToken={token}", json={}, timeout=T)
            assert_sane(r, token)
            glob = "".join(rng.choice("ab*?[]{},\\/!") for _ in range(rng.randint(0, 20)))
            r = sess.get(f"{s.url}/storage/v1/b/{bucket}/o", params={"matchGlob": glob}, timeout=T)
            assert_sane(r, glob)
        loc = sess.post(f"{s.url}/upload/storage/v1/b/{bucket}/o?uploadType=resumable&name=rs", json={}, timeout=T).headers["location"]
        for _ in range(CASES * 2):
            cr = "bytes " + "".join(rng.choice("0123456789-*/ ") for _ in range(rng.randint(0, 16)))
            r = sess.put(loc, data=os.urandom(rng.choice([0, 1, 10])), headers={"Content-Range": cr}, timeout=T)
            assert r.status_code < 500, (cr, r.status_code, r.text)
    assert requests.get(f"{s.url}/readyz", timeout=T).status_code == 200


def test_every_single_bit_flip_of_a_ciphertext_fails(fuzz_env):
    s, ring, key, job, bucket = fuzz_env
    good = requests.post(f"{s.url}/v1/{key}:encrypt", json={"plaintext": base64.b64encode(b"secret").decode()}, timeout=T).json()["ciphertext"]
    raw = base64.b64decode(good)
    with requests.Session() as sess:
        for i in range(len(raw) * 8):
            ct = bytearray(raw)
            ct[i // 8] ^= 1 << (i % 8)
            r = sess.post(f"{s.url}/v1/{key}:decrypt", json={"ciphertext": base64.b64encode(bytes(ct)).decode()}, timeout=T)
            assert r.status_code == 400, (i, r.text)
