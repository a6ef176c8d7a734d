"""End-to-end tests of IAM (issue 5): tokens, roles, policies and their inheritance, the
permission check on every method, the storage service agent and the audit log.

Every test starts its own ``sealstore serve --auth token`` (fresh data dir, ``--fake-clock``)
and makes bearer tokens with the ``sealstore iam tokens`` CLI on the server's data dir while
the server runs. The official ``google-cloud-kms`` (REST) and ``google-cloud-storage`` clients
carry the tokens through ``google.oauth2.credentials.Credentials(token=...)``; the storage
client is pointed at the server with ``client_options={"api_endpoint": url}`` and
``STORAGE_EMULATOR_HOST`` unset (the emulator variable would make it anonymous). Raw
``requests`` calls are used for the sealstore ops API (project policies) and for malformed
``Authorization`` headers.

Each test bootstraps an owner, ``user:owner@example.com`` with ``roles/owner`` on
``projects/test-project`` (``iam tokens create --project test-project --role roles/owner``),
who prepares the fixtures; the other principals get their roles from the CLI (project level)
or from ``setIamPolicy`` on a key ring, key, import job or bucket.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions
from google.cloud import kms

from conftest import (
    ENCRYPTER_DECRYPTER_ROLE,
    LOCATION_NAME,
    PROJECT,
    PROJECT_NAME,
    STORAGE_EMULATOR_ENV,
    Algorithm,
    ImportMethod,
    ProtectionLevel,
    Purpose,
    Server,
    State,
    create_import_job,
    create_key,
    create_key_ring,
    create_symmetric_key,
    create_token,
    decrypt_symmetric,
    encrypt_symmetric,
    error_body,
    error_status,
    gcs_error,
    gcs_error_reason,
    list_tokens,
    make_kms_client,
    make_token_gcs_client,
    make_token_kms_client,
    revoke_token,
    storage_service_agent,
    unique_bucket_name,
    unique_id,
    version_name,
    wait_imported,
    wait_job_active,
    wrap_rsa_aes,
)

HTTP_TIMEOUT = 60
# DESIGN.md (Identity): a running server sees a new or revoked token within a second.
TOKEN_PROPAGATION_S = 2.0

OWNER = "user:owner@example.com"
BUCKET_LOCATION = "US-EAST1"  # matches conftest.LOCATION ("us-east1") for CMEK

AGENT = f"serviceAccount:{storage_service_agent(PROJECT)}"
CMEK_DENIED_MESSAGE = (
    "Permission denied on Cloud KMS key. Please ensure that your Cloud Storage service account "
    "has been authorized to use this key."
)

USE_TO_ENCRYPT = "cloudkms.cryptoKeyVersions.useToEncrypt"
USE_TO_DECRYPT = "cloudkms.cryptoKeyVersions.useToDecrypt"


@pytest.fixture(autouse=True)
def _no_storage_emulator(monkeypatch):
    """The storage client must authenticate: no ``STORAGE_EMULATOR_HOST`` in these tests."""
    monkeypatch.delenv(STORAGE_EMULATOR_ENV, raising=False)


# ======================================================================================
# Principals, tokens and clients
# ======================================================================================


@dataclass
class Caller:
    """A principal with its own token and a KMS and a storage client carrying it."""

    member: str
    token: str
    token_id: str
    kms: kms.KeyManagementServiceClient
    gcs: object  # google.cloud.storage.Client


class TokenEnv:
    """A ``--auth token`` server plus the callers (tokens) made for it."""

    def __init__(self, server: Server):
        self.server = server
        self.tokens: List[str] = []
        self._gcs_clients: List = []

    @property
    def url(self) -> str:
        assert self.server.url, "server is not running"
        return self.server.url

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    def caller(self, member: str, project_role: Optional[str] = None) -> Caller:
        """A new token for ``member`` (with ``project_role`` bound on the project, if given)."""
        token, token_id = create_token(
            self.data_dir,
            member,
            project=PROJECT if project_role else None,
            role=project_role,
        )
        self.tokens.append(token)
        return Caller(member, token, token_id, make_token_kms_client(self.url, token), self.gcs_client(token))

    def gcs_client(self, token: Optional[str]):
        client = make_token_gcs_client(self.url, token)
        self._gcs_clients.append(client)
        return client

    def close(self) -> None:
        for client in self._gcs_clients:
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass


@pytest.fixture
def token_env(server_factory):
    """Factory: ``TokenEnv`` on a new ``serve --auth token [extra args]``."""
    envs: List[TokenEnv] = []

    def factory(*extra_args: str) -> TokenEnv:
        env = TokenEnv(server_factory("--auth", "token", *extra_args))
        envs.append(env)
        return env

    yield factory
    for env in envs:
        env.close()


@pytest.fixture
def iam(token_env) -> TokenEnv:
    return token_env()


@pytest.fixture
def owner(iam) -> Caller:
    return iam.caller(OWNER, project_role="roles/owner")


def bearer(token: str) -> Dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ======================================================================================
# Error checks
# ======================================================================================


def kms_denial_problem(exc: BaseException, permission: str, resource: Optional[str]) -> Optional[str]:
    """None if ``exc`` is the Cloud KMS denial of ``permission`` on ``resource``."""
    if not isinstance(exc, gexc.Forbidden):
        return f"expected 403 PERMISSION_DENIED, got {exc!r}"
    if error_status(exc) != "PERMISSION_DENIED":
        return f"expected status PERMISSION_DENIED, got {error_body(exc)}"
    message = error_body(exc).get("message", "")
    if resource is None:
        expected = f"Permission '{permission}' denied"
    else:
        expected = f"Permission '{permission}' denied on resource '{resource}' (or it may not exist)."
    if expected not in message:
        return f"{expected!r} not in {message!r}"
    return None


def gcs_denial_problem(exc: BaseException, permission: str) -> Optional[str]:
    """None if ``exc`` is a GCS 403 ``forbidden`` naming ``permission``."""
    if not isinstance(exc, gexc.Forbidden):
        return f"expected 403 forbidden, got {exc!r}"
    err = gcs_error(exc)
    if err.get("code") != 403:
        return f"expected error.code 403 in a GCS JSON error body, got {err or getattr(exc, 'message', exc)!r}"
    if gcs_error_reason(exc) != "forbidden":
        return f"expected reason 'forbidden', got {err}"
    if permission not in err.get("message", ""):
        return f"{permission!r} not named in {err.get('message')!r}"
    return None


@contextmanager
def kms_denied(permission: str, resource: Optional[str]) -> Iterator[None]:
    """The block must fail with 403 PERMISSION_DENIED for ``permission`` on ``resource``."""
    with pytest.raises(gexc.Forbidden) as info:
        yield
    problem = kms_denial_problem(info.value, permission, resource)
    assert problem is None, problem


@contextmanager
def gcs_denied(permission: str) -> Iterator[None]:
    """The block must fail with GCS 403 ``forbidden`` naming ``permission``."""
    with pytest.raises(gexc.Forbidden) as info:
        yield
    problem = gcs_denial_problem(info.value, permission)
    assert problem is None, problem


# How a 401 reaches a caller of the official clients. Both send their requests through
# google-auth's AuthorizedSession, which answers a 401 (and only a 401) by refreshing the
# credentials and retrying once: a bare access token (``Credentials(token=...)``, no refresh
# token) cannot be refreshed, so the call fails with ``RefreshError``; anonymous credentials
# refuse with ``InvalidOperation``. ``Unauthorized`` is accepted too in case a client lets
# the HTTP error through. The exact status and body are checked with raw requests.
CLIENT_401 = (gexc.Unauthorized, auth_exceptions.RefreshError, auth_exceptions.InvalidOperation)


def assert_kms_unauthenticated(exc_or_resp) -> None:
    """A Cloud KMS 401 (UNAUTHENTICATED): a raw response, or what the client raised."""
    if isinstance(exc_or_resp, requests.Response):
        assert exc_or_resp.status_code == 401, f"{exc_or_resp.status_code} {exc_or_resp.text[:300]}"
        assert exc_or_resp.json()["error"]["status"] == "UNAUTHENTICATED", exc_or_resp.text
        return
    assert isinstance(exc_or_resp, CLIENT_401), f"expected a 401, got {exc_or_resp!r}"
    if isinstance(exc_or_resp, gexc.Unauthorized):
        assert error_status(exc_or_resp) == "UNAUTHENTICATED", error_body(exc_or_resp)


def assert_gcs_unauthenticated(exc_or_resp) -> None:
    """A GCS 401 (``error.code`` 401): a raw response, or what the client raised."""
    if isinstance(exc_or_resp, requests.Response):
        assert exc_or_resp.status_code == 401, f"{exc_or_resp.status_code} {exc_or_resp.text[:300]}"
        assert gcs_error(exc_or_resp).get("code") == 401, exc_or_resp.text
        return
    assert isinstance(exc_or_resp, CLIENT_401), f"expected a 401, got {exc_or_resp!r}"
    if isinstance(exc_or_resp, gexc.Unauthorized):
        assert gcs_error(exc_or_resp).get("code") == 401, gcs_error(exc_or_resp)


def raw_kms_list(url: str, headers: Dict[str, str]) -> requests.Response:
    return requests.get(f"{url}/v1/{LOCATION_NAME}/keyRings", headers=headers, timeout=HTTP_TIMEOUT)


def raw_gcs_list(url: str, bucket: str, headers: Dict[str, str]) -> requests.Response:
    return requests.get(f"{url}/storage/v1/b/{bucket}/o", headers=headers, timeout=HTTP_TIMEOUT)


def eventually_unauthorized(call: Callable[[], object], what: str) -> BaseException:
    """Repeats a read-only ``call`` until it gets a 401 (for at most TOKEN_PROPAGATION_S)."""
    deadline = time.monotonic() + TOKEN_PROPAGATION_S
    while True:
        try:
            call()
        except CLIENT_401 as exc:
            return exc
        if time.monotonic() >= deadline:
            pytest.fail(f"{what} still accepted {TOKEN_PROPAGATION_S} s after the token was revoked")
        time.sleep(0.1)


# ======================================================================================
# Policy helpers
# ======================================================================================


def bindings_of(policy) -> List[Tuple[str, List[str]]]:
    """A KMS (protobuf) policy's bindings as sorted ``(role, sorted members)`` pairs."""
    return sorted((b.role, sorted(b.members)) for b in policy.bindings)


def has_member(policy, role: str, member: str) -> bool:
    return any(b.role == role and member in b.members for b in policy.bindings)


def grant(kms_client, resource: str, member: str, role: str) -> None:
    """Read-modify-write of a KMS resource's policy (with its etag), adding ``member``."""
    policy = kms_client.get_iam_policy(request={"resource": resource})
    bindings = [{"role": b.role, "members": list(b.members)} for b in policy.bindings]
    for b in bindings:
        if b["role"] == role:
            if member not in b["members"]:
                b["members"].append(member)
            break
    else:
        bindings.append({"role": role, "members": [member]})
    kms_client.set_iam_policy(request={"resource": resource, "policy": {"bindings": bindings, "etag": policy.etag}})
    assert has_member(kms_client.get_iam_policy(request={"resource": resource}), role, member)


def grant_on_bucket(bucket, member: str, role: str) -> None:
    """Read-modify-write of a bucket's IAM policy through the storage client."""
    policy = bucket.get_iam_policy(requested_policy_version=1)
    policy.bindings.append({"role": role, "members": {member}})
    bucket.set_iam_policy(policy)
    stored = bucket.get_iam_policy(requested_policy_version=1)
    assert any(b["role"] == role and member in b["members"] for b in stored.bindings), stored.bindings


def project_policy_url(base: str, verb: str, project: str = PROJECT) -> str:
    return f"{base}/sealstore/v1/projects/{project}:{verb}"


# ======================================================================================
# 1. Authentication: 401 without a valid token
# ======================================================================================


def test_requests_without_a_valid_token_get_401(iam, owner):
    url = iam.url
    # /healthz needs no token.
    health = requests.get(f"{url}/healthz", timeout=HTTP_TIMEOUT)
    assert health.status_code == 200, health.text

    ring = create_key_ring(owner.kms)
    bucket = owner.gcs.create_bucket(unique_bucket_name("auth"))
    bucket.blob("doc.txt").upload_from_string(b"owner's document")
    # The owner's token is really sent: the same calls work with it...
    assert [r.name for r in owner.kms.list_key_rings(request={"parent": LOCATION_NAME})] == [ring.name]
    assert bucket.name in [b.name for b in owner.gcs.list_buckets()]
    assert owner.gcs.bucket(bucket.name).blob("doc.txt").download_as_bytes() == b"owner's document"

    # ...and get 401 without it, or with a token the server never issued.
    garbage = "sst_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    for label, kms_client, gcs_client in (
        ("no token", make_kms_client(url), iam.gcs_client(None)),
        ("unknown token", make_token_kms_client(url, garbage), iam.gcs_client(garbage)),
    ):
        with pytest.raises(CLIENT_401) as info:
            list(kms_client.list_key_rings(request={"parent": LOCATION_NAME}))
        assert_kms_unauthenticated(info.value)
        with pytest.raises(CLIENT_401) as info:
            kms_client.get_key_ring(request={"name": ring.name})
        assert_kms_unauthenticated(info.value)
        with pytest.raises(CLIENT_401) as info:
            create_key_ring(kms_client, prefix="anon")
        assert_kms_unauthenticated(info.value)

        with pytest.raises(CLIENT_401) as info:
            list(gcs_client.list_buckets())
        assert_gcs_unauthenticated(info.value)
        with pytest.raises(CLIENT_401) as info:
            gcs_client.bucket(bucket.name).blob("doc.txt").download_as_bytes()
        assert_gcs_unauthenticated(info.value)
        with pytest.raises(CLIENT_401) as info:
            gcs_client.bucket(bucket.name).blob(f"{label}.txt").upload_from_string(b"not allowed")
        assert_gcs_unauthenticated(info.value)
        with pytest.raises(CLIENT_401) as info:
            gcs_client.create_bucket(unique_bucket_name("anon"))
        assert_gcs_unauthenticated(info.value)

    # Raw requests with missing or malformed credentials, on every face.
    kms_path = f"{url}/v1/{LOCATION_NAME}/keyRings"
    gcs_requests = [
        ("GET", f"{url}/storage/v1/b", {"params": {"project": PROJECT}}),
        ("GET", f"{url}/storage/v1/b/{bucket.name}/o/doc.txt", {"params": {"alt": "media"}}),
        ("GET", f"{url}/download/storage/v1/b/{bucket.name}/o/doc.txt", {"params": {"alt": "media"}}),
        (
            "POST",
            f"{url}/upload/storage/v1/b/{bucket.name}/o",
            {"params": {"uploadType": "media", "name": "raw.txt"}, "data": b"raw"},
        ),
    ]
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {garbage}"},
        {"Authorization": f"Bearer {owner.token}x"},
        {"Authorization": f"Basic {base64.b64encode(b'owner:' + owner.token.encode()).decode()}"},
        {"Authorization": owner.token},
    ):
        assert_kms_unauthenticated(requests.get(kms_path, headers=headers, timeout=HTTP_TIMEOUT))
        for method, target, kwargs in gcs_requests:
            resp = requests.request(method, target, headers=headers, timeout=HTTP_TIMEOUT, **kwargs)
            assert_gcs_unauthenticated(resp)
        resp = requests.get(project_policy_url(url, "getIamPolicy"), headers=headers, timeout=HTTP_TIMEOUT)
        assert resp.status_code == 401, f"{headers}: {resp.status_code} {resp.text[:300]}"

    # The same raw requests with the owner's token are accepted.
    resp = requests.get(kms_path, headers=bearer(owner.token), timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200, resp.text
    assert [r["name"] for r in resp.json()["keyRings"]] == [ring.name]
    resp = requests.get(
        f"{url}/download/storage/v1/b/{bucket.name}/o/doc.txt",
        params={"alt": "media"},
        headers=bearer(owner.token),
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 200 and resp.content == b"owner's document", resp.status_code

    # Nothing was created by the rejected requests.
    assert [r.name for r in owner.kms.list_key_rings(request={"parent": LOCATION_NAME})] == [ring.name]
    assert [b.name for b in owner.gcs.list_blobs(bucket.name)] == ["doc.txt"]
    assert [b.name for b in owner.gcs.list_buckets()] == [bucket.name]


def test_revoked_token_gets_401_while_the_server_runs(iam, owner):
    ring = create_key_ring(owner.kms)
    bucket = owner.gcs.create_bucket(unique_bucket_name("revoke"))
    alice = iam.caller("user:alice@example.com", project_role="roles/editor")

    # A token made while the server runs is accepted at once, on both APIs.
    assert alice.kms.get_key_ring(request={"name": ring.name}).name == ring.name
    assert raw_kms_list(iam.url, bearer(alice.token)).status_code == 200
    alice.gcs.bucket(bucket.name).blob("by-alice.txt").upload_from_string(b"from alice")
    assert [b.name for b in alice.gcs.list_blobs(bucket.name)] == ["by-alice.txt"]

    listed = {t["id"]: t for t in list_tokens(iam.data_dir)}
    assert set(listed) == {owner.token_id, alice.token_id}, listed
    assert listed[alice.token_id]["principal"] == alice.member
    assert listed[owner.token_id]["principal"] == OWNER
    assert {t["state"] for t in listed.values()} == {"active"}
    for t in listed.values():
        datetime.fromisoformat(t["created"].replace("Z", "+00:00"))  # an RFC 3339 time

    # Revoke alice's token with the CLI while the server runs.
    revoke_token(iam.data_dir, alice.token_id)
    exc = eventually_unauthorized(lambda: alice.kms.get_key_ring(request={"name": ring.name}), "KMS")
    assert_kms_unauthenticated(exc)
    exc = eventually_unauthorized(lambda: list(alice.gcs.list_blobs(bucket.name)), "GCS")
    assert_gcs_unauthenticated(exc)
    with pytest.raises(CLIENT_401) as info:
        alice.gcs.bucket(bucket.name).blob("after-revoke.txt").upload_from_string(b"too late")
    assert_gcs_unauthenticated(info.value)
    with pytest.raises(CLIENT_401) as info:
        encrypt_symmetric(alice.kms, f"{ring.name}/cryptoKeys/none", b"too late")
    assert_kms_unauthenticated(info.value)

    # The server's answers, as sent.
    assert_kms_unauthenticated(raw_kms_list(iam.url, bearer(alice.token)))
    assert_gcs_unauthenticated(raw_gcs_list(iam.url, bucket.name, bearer(alice.token)))

    listed = {t["id"]: t for t in list_tokens(iam.data_dir)}
    assert listed[alice.token_id]["state"] == "revoked"
    assert listed[owner.token_id]["state"] == "active"

    # Other tokens are unaffected.
    assert owner.kms.get_key_ring(request={"name": ring.name}).name == ring.name
    assert [b.name for b in owner.gcs.list_blobs(bucket.name)] == ["by-alice.txt"]

    # Roles belong to the principal, not the token: a new token for alice (without
    # --project/--role) works at once with her project role, while the old one stays revoked.
    again = iam.caller(alice.member)
    assert again.kms.get_key_ring(request={"name": ring.name}).name == ring.name
    assert [b.name for b in again.gcs.list_blobs(bucket.name)] == ["by-alice.txt"]
    with pytest.raises(CLIENT_401) as info:
        alice.kms.get_key_ring(request={"name": ring.name})
    assert_kms_unauthenticated(info.value)

    # Revoking a token that does not exist is an error.
    proc = revoke_token(iam.data_dir, "0123456789abcdef", check=False)
    assert proc.returncode != 0, (proc.stdout, proc.stderr)


# ======================================================================================
# 2. The role matrix
# ======================================================================================


@dataclass
class Fixtures:
    """What the owner prepares before a role's operations run."""

    ring: str
    key: str
    plaintext: bytes
    ciphertext: bytes
    bucket: str
    obj: str
    obj_data: bytes


BYSTANDER = "user:bystander@example.com"


def _op_create_key_ring(c: Caller, fx: Fixtures) -> None:
    create_key_ring(c.kms, prefix="matrix")


def _op_get_key_ring(c: Caller, fx: Fixtures) -> None:
    assert c.kms.get_key_ring(request={"name": fx.ring}).name == fx.ring


def _op_create_key(c: Caller, fx: Fixtures) -> None:
    create_key(c.kms, fx.ring, Purpose.ENCRYPT_DECRYPT, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION, prefix="matrix")


def _op_encrypt(c: Caller, fx: Fixtures) -> None:
    assert encrypt_symmetric(c.kms, fx.key, b"matrix plaintext").name == version_name(fx.key, 1)


def _op_decrypt(c: Caller, fx: Fixtures) -> None:
    assert decrypt_symmetric(c.kms, fx.key, fx.ciphertext).plaintext == fx.plaintext


def _op_create_import_job(c: Caller, fx: Fixtures) -> None:
    create_import_job(c.kms, fx.ring, ImportMethod.RSA_OAEP_3072_SHA256_AES_256, prefix="matrix")


def _op_list_keys(c: Caller, fx: Fixtures) -> None:
    assert fx.key in [k.name for k in c.kms.list_crypto_keys(request={"parent": fx.ring})]


def _op_create_bucket(c: Caller, fx: Fixtures) -> None:
    name = unique_bucket_name("matrix")
    assert c.gcs.create_bucket(name).name == name


def _op_upload_object(c: Caller, fx: Fixtures) -> None:
    name = unique_id("upload")
    blob = c.gcs.bucket(fx.bucket).blob(name)
    blob.upload_from_string(b"uploaded by the role under test")
    assert blob.size == len(b"uploaded by the role under test")


def _op_download_object(c: Caller, fx: Fixtures) -> None:
    assert c.gcs.bucket(fx.bucket).blob(fx.obj).download_as_bytes() == fx.obj_data


def _op_list_objects(c: Caller, fx: Fixtures) -> None:
    assert fx.obj in [b.name for b in c.gcs.list_blobs(fx.bucket)]


def _op_set_key_iam_policy(c: Caller, fx: Fixtures) -> None:
    written = c.kms.set_iam_policy(
        request={
            "resource": fx.key,
            "policy": {"bindings": [{"role": "roles/cloudkms.viewer", "members": [BYSTANDER]}]},
        }
    )
    assert bindings_of(written) == [("roles/cloudkms.viewer", [BYSTANDER])]


# name -> (operation, permission, resource named in a KMS denial (None: a GCS operation))
OPERATIONS: Dict[str, Tuple[Callable[[Caller, Fixtures], None], str, Optional[Callable[[Fixtures], str]]]] = {
    "create_key_ring": (_op_create_key_ring, "cloudkms.keyRings.create", lambda fx: PROJECT_NAME),
    "get_key_ring": (_op_get_key_ring, "cloudkms.keyRings.get", lambda fx: fx.ring),
    "create_key": (_op_create_key, "cloudkms.cryptoKeys.create", lambda fx: fx.ring),
    "encrypt": (_op_encrypt, USE_TO_ENCRYPT, lambda fx: fx.key),
    "decrypt": (_op_decrypt, USE_TO_DECRYPT, lambda fx: fx.key),
    "create_import_job": (_op_create_import_job, "cloudkms.importJobs.create", lambda fx: fx.ring),
    "list_keys": (_op_list_keys, "cloudkms.cryptoKeys.list", lambda fx: fx.ring),
    "create_bucket": (_op_create_bucket, "storage.buckets.create", None),
    "upload_object": (_op_upload_object, "storage.objects.create", None),
    "download_object": (_op_download_object, "storage.objects.get", None),
    "list_objects": (_op_list_objects, "storage.objects.list", None),
    "set_key_iam_policy": (_op_set_key_iam_policy, "cloudkms.cryptoKeys.setIamPolicy", lambda fx: fx.key),
}
ALL_OPERATIONS = frozenset(OPERATIONS)

# What each role, bound on the project, may do among OPERATIONS (the role table).
ROLE_MATRIX: Dict[str, frozenset] = {
    "roles/owner": ALL_OPERATIONS,
    "roles/editor": ALL_OPERATIONS - {"set_key_iam_policy"},
    "roles/viewer": frozenset({"get_key_ring", "list_keys", "download_object", "list_objects"}),
    "roles/cloudkms.admin": frozenset(
        {"create_key_ring", "get_key_ring", "create_key", "create_import_job", "list_keys", "set_key_iam_policy"}
    ),
    "roles/cloudkms.importer": frozenset({"create_import_job"}),
    "roles/cloudkms.cryptoKeyEncrypterDecrypter": frozenset({"encrypt", "decrypt"}),
    "roles/cloudkms.viewer": frozenset({"get_key_ring", "list_keys"}),
    "roles/storage.objectViewer": frozenset({"download_object", "list_objects"}),
    "roles/storage.objectCreator": frozenset({"upload_object"}),
    "roles/storage.admin": frozenset({"create_bucket", "upload_object", "download_object", "list_objects"}),
}


@pytest.mark.parametrize("role", sorted(ROLE_MATRIX), ids=lambda r: r.split("/", 1)[1])
def test_role_matrix(iam, owner, role):
    allowed = ROLE_MATRIX[role]
    # The owner prepares a key ring, an enabled key, a ciphertext, a bucket and an object.
    ring = create_key_ring(owner.kms, prefix="matrix")
    key = create_symmetric_key(owner.kms, ring.name)
    plaintext = b"encrypted by the owner " + secrets.token_hex(8).encode()
    ciphertext = encrypt_symmetric(owner.kms, key.name, plaintext).ciphertext
    bucket = owner.gcs.create_bucket(unique_bucket_name("matrix"))
    obj_data = b"the owner's object " + secrets.token_hex(8).encode()
    bucket.blob("fixture.txt").upload_from_string(obj_data)
    fx = Fixtures(ring.name, key.name, plaintext, ciphertext, bucket.name, "fixture.txt", obj_data)

    caller = iam.caller(f"user:{unique_id('member')}@example.com", project_role=role)

    problems: List[str] = []
    for name, (operation, permission, resource_of) in OPERATIONS.items():
        expect_ok = name in allowed
        try:
            operation(caller, fx)
        except Exception as exc:  # noqa: BLE001 - every outcome is collected and reported
            if expect_ok:
                problems.append(f"{name}: expected success, got {exc!r}")
            else:
                problem = (
                    kms_denial_problem(exc, permission, resource_of(fx))
                    if resource_of is not None
                    else gcs_denial_problem(exc, permission)
                )
                if problem:
                    problems.append(f"{name}: {problem}")
            continue
        if not expect_ok:
            problems.append(f"{name}: expected 403 ({permission}), but it succeeded")
    assert not problems, f"{role}:\n  " + "\n  ".join(problems)

    # Denied operations left nothing behind; allowed ones did exactly their one thing.
    def n(op: str) -> int:
        return 1 if op in allowed else 0

    rings = list(owner.kms.list_key_rings(request={"parent": LOCATION_NAME}))
    assert len(rings) == 1 + n("create_key_ring"), [r.name for r in rings]
    keys = list(owner.kms.list_crypto_keys(request={"parent": ring.name}))
    assert len(keys) == 1 + n("create_key"), [k.name for k in keys]
    jobs = list(owner.kms.list_import_jobs(request={"parent": ring.name}))
    assert len(jobs) == n("create_import_job"), [j.name for j in jobs]
    buckets = list(owner.gcs.list_buckets())
    assert len(buckets) == 1 + n("create_bucket"), [b.name for b in buckets]
    blobs = list(owner.gcs.list_blobs(bucket.name))
    assert len(blobs) == 1 + n("upload_object"), [b.name for b in blobs]
    expected_policy = [("roles/cloudkms.viewer", [BYSTANDER])] if "set_key_iam_policy" in allowed else []
    assert bindings_of(owner.kms.get_iam_policy(request={"resource": key.name})) == expected_policy


# ======================================================================================
# 3. The seed's separation of duties: importers import, admins create jobs
# ======================================================================================


def test_importer_imports_with_a_granted_job_but_cannot_create_or_administer_jobs(iam, owner):
    admin = iam.caller("user:kms-admin@example.com", project_role="roles/cloudkms.admin")
    importer = iam.caller("user:importer@example.com")  # no project role at all

    # 1. The admin creates the key (no initial version) and the import jobs.
    ring = create_key_ring(admin.kms, prefix="sod")
    key = create_key(
        admin.kms,
        ring.name,
        Purpose.ENCRYPT_DECRYPT,
        Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        protection_level=ProtectionLevel.HSM,
        skip_initial_version_creation=True,
        prefix="imported",
    )
    job = create_import_job(admin.kms, ring.name, ImportMethod.RSA_OAEP_3072_SHA256_AES_256, ProtectionLevel.HSM)
    other_job = create_import_job(admin.kms, ring.name, ImportMethod.RSA_OAEP_3072_SHA256_AES_256, ProtectionLevel.HSM)
    job = wait_job_active(admin.kms, job.name)
    other_job = wait_job_active(admin.kms, other_job.name)
    # An admin administers keys but cannot use them.
    with kms_denied(USE_TO_ENCRYPT, key.name):
        admin.kms.encrypt(request={"name": key.name, "plaintext": b"admins do not encrypt"})

    material = secrets.token_bytes(32)
    wrapped = wrap_rsa_aes(job.public_key.pem, material, "sha256")
    request = {
        "parent": key.name,
        "import_job": job.name,
        "algorithm": Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        "wrapped_key": wrapped,
    }

    # Without any grant the importer can neither see nor use the job.
    with kms_denied("cloudkms.importJobs.get", job.name):
        importer.kms.get_import_job(request={"name": job.name})
    with kms_denied("cloudkms.importJobs.useToImport", job.name):
        importer.kms.import_crypto_key_version(request=request)

    # 2. The admin grants roles/cloudkms.importer on that one job.
    grant(admin.kms, job.name, importer.member, "roles/cloudkms.importer")
    seen = importer.kms.get_import_job(request={"name": job.name})
    assert seen.state == kms.ImportJob.ImportJobState.ACTIVE
    assert seen.public_key.pem == job.public_key.pem
    # useToImport on the job is not enough for a new version: that needs
    # cryptoKeyVersions.create on the key.
    with kms_denied("cloudkms.cryptoKeyVersions.create", key.name):
        importer.kms.import_crypto_key_version(request=request)
    assert list(admin.kms.list_crypto_key_versions(request={"parent": key.name})) == []

    grant(admin.kms, key.name, importer.member, "roles/editor")

    # 3. The importer's import succeeds...
    imported = importer.kms.import_crypto_key_version(request=request)
    v1 = version_name(key.name, 1)
    assert imported.name == v1
    version = wait_imported(importer.kms, v1)
    assert version.state == State.ENABLED, (version.state.name, version.import_failure_reason)
    assert version.import_job == job.name
    assert version.protection_level == ProtectionLevel.HSM
    assert version.algorithm == Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION

    # ...but only through the job it was granted.
    other_request = {**request, "wrapped_key": wrap_rsa_aes(other_job.public_key.pem, material, "sha256")}
    other_request["import_job"] = other_job.name
    with kms_denied("cloudkms.importJobs.useToImport", other_job.name):
        importer.kms.import_crypto_key_version(request=other_request)
    with kms_denied("cloudkms.importJobs.get", other_job.name):
        importer.kms.get_import_job(request={"name": other_job.name})

    # The importer cannot create jobs...
    with kms_denied("cloudkms.importJobs.create", ring.name):
        create_import_job(importer.kms, ring.name, ImportMethod.RSA_OAEP_3072_SHA256_AES_256, ProtectionLevel.HSM)
    with kms_denied("cloudkms.importJobs.list", ring.name):
        list(importer.kms.list_import_jobs(request={"parent": ring.name}))
    # ...nor read or change the job's policy (or the key's).
    with kms_denied("cloudkms.importJobs.getIamPolicy", job.name):
        importer.kms.get_iam_policy(request={"resource": job.name})
    with kms_denied("cloudkms.importJobs.setIamPolicy", job.name):
        importer.kms.set_iam_policy(
            request={
                "resource": job.name,
                "policy": {"bindings": [{"role": "roles/owner", "members": [importer.member]}]},
            }
        )
    with kms_denied("cloudkms.cryptoKeys.setIamPolicy", key.name):
        importer.kms.set_iam_policy(
            request={
                "resource": key.name,
                "policy": {"bindings": [{"role": "roles/owner", "members": [importer.member]}]},
            }
        )
    assert bindings_of(admin.kms.get_iam_policy(request={"resource": job.name})) == [
        ("roles/cloudkms.importer", [importer.member])
    ]
    assert bindings_of(admin.kms.get_iam_policy(request={"resource": key.name})) == [
        ("roles/editor", [importer.member])
    ]
    jobs = [j.name for j in admin.kms.list_import_jobs(request={"parent": ring.name})]
    assert sorted(jobs) == sorted([job.name, other_job.name]), jobs

    # The imported material is usable once the admin makes it primary.
    updated = admin.kms.update_crypto_key_primary_version(request={"name": key.name, "crypto_key_version_id": "1"})
    assert updated.primary.name == v1
    secret = b"under the imported key"
    ciphertext = encrypt_symmetric(owner.kms, key.name, secret).ciphertext
    assert decrypt_symmetric(owner.kms, key.name, ciphertext).plaintext == secret


# ======================================================================================
# 4. Inheritance: project -> key ring -> key; project -> bucket -> objects
# ======================================================================================


def test_key_ring_binding_grants_its_keys_and_key_binding_only_that_key(iam, owner):
    ring_a = create_key_ring(owner.kms, prefix="ring-a")
    ring_b = create_key_ring(owner.kms, prefix="ring-b")
    a1 = create_symmetric_key(owner.kms, ring_a.name)
    b1 = create_symmetric_key(owner.kms, ring_b.name)
    ring_user = iam.caller("user:ring-user@example.com")
    key_user = iam.caller("user:key-user@example.com")

    grant(owner.kms, ring_a.name, ring_user.member, ENCRYPTER_DECRYPTER_ROLE)
    grant(owner.kms, a1.name, key_user.member, ENCRYPTER_DECRYPTER_ROLE)
    a2 = create_symmetric_key(owner.kms, ring_a.name)  # made after the ring grant: inherits it too

    # The key ring binding covers every key in the ring...
    for key in (a1, a2):
        data = f"ring user on {key.name}".encode()
        ciphertext = encrypt_symmetric(ring_user.kms, key.name, data).ciphertext
        assert decrypt_symmetric(ring_user.kms, key.name, ciphertext).plaintext == data
    # ...but not keys of another ring, nor more than its role.
    with kms_denied(USE_TO_ENCRYPT, b1.name):
        encrypt_symmetric(ring_user.kms, b1.name, b"other ring")
    with kms_denied("cloudkms.keyRings.get", ring_a.name):
        ring_user.kms.get_key_ring(request={"name": ring_a.name})
    with kms_denied("cloudkms.cryptoKeys.create", ring_a.name):
        create_symmetric_key(ring_user.kms, ring_a.name)

    # A key binding covers that key only.
    ciphertext = encrypt_symmetric(key_user.kms, a1.name, b"key user").ciphertext
    assert decrypt_symmetric(key_user.kms, a1.name, ciphertext).plaintext == b"key user"
    with kms_denied(USE_TO_ENCRYPT, a2.name):
        encrypt_symmetric(key_user.kms, a2.name, b"sibling key")
    a2_ciphertext = encrypt_symmetric(owner.kms, a2.name, b"for a2").ciphertext
    with kms_denied(USE_TO_DECRYPT, a2.name):
        decrypt_symmetric(key_user.kms, a2.name, a2_ciphertext)
    with kms_denied(USE_TO_ENCRYPT, b1.name):
        encrypt_symmetric(key_user.kms, b1.name, b"other ring")

    # Inherited grants are not copied into the children's own policies.
    assert bindings_of(owner.kms.get_iam_policy(request={"resource": a2.name})) == []
    assert bindings_of(owner.kms.get_iam_policy(request={"resource": a1.name})) == [
        (ENCRYPTER_DECRYPTER_ROLE, [key_user.member])
    ]

    # Taking the ring binding away takes the access away.
    owner.kms.set_iam_policy(request={"resource": ring_a.name, "policy": {"bindings": []}})
    with kms_denied(USE_TO_ENCRYPT, a2.name):
        encrypt_symmetric(ring_user.kms, a2.name, b"no longer")


def test_bucket_binding_grants_that_buckets_objects_only(iam, owner):
    bucket_1 = owner.gcs.create_bucket(unique_bucket_name("one"))
    bucket_2 = owner.gcs.create_bucket(unique_bucket_name("two"))
    bucket_1.blob("doc.txt").upload_from_string(b"in bucket one")
    bucket_2.blob("doc.txt").upload_from_string(b"in bucket two")
    reader = iam.caller("user:bucket-reader@example.com")

    # No role yet: nothing.
    with gcs_denied("storage.objects.get"):
        reader.gcs.bucket(bucket_1.name).blob("doc.txt").download_as_bytes()

    grant_on_bucket(bucket_1, reader.member, "roles/storage.objectViewer")

    # The bucket binding covers that bucket's objects...
    assert reader.gcs.bucket(bucket_1.name).blob("doc.txt").download_as_bytes() == b"in bucket one"
    assert [b.name for b in reader.gcs.list_blobs(bucket_1.name)] == ["doc.txt"]
    # ...only what the role grants...
    with gcs_denied("storage.objects.create"):
        reader.gcs.bucket(bucket_1.name).blob("new.txt").upload_from_string(b"viewer writes")
    with gcs_denied("storage.buckets.getIamPolicy"):
        reader.gcs.bucket(bucket_1.name).get_iam_policy()
    policy = owner.gcs.bucket(bucket_1.name).get_iam_policy()
    policy.bindings.append({"role": "roles/storage.admin", "members": {reader.member}})
    with gcs_denied("storage.buckets.setIamPolicy"):
        reader.gcs.bucket(bucket_1.name).set_iam_policy(policy)
    # ...and nothing in another bucket.
    with gcs_denied("storage.objects.get"):
        reader.gcs.bucket(bucket_2.name).blob("doc.txt").download_as_bytes()
    with gcs_denied("storage.objects.list"):
        list(reader.gcs.list_blobs(bucket_2.name))

    assert [b.name for b in owner.gcs.list_blobs(bucket_1.name)] == ["doc.txt"]
    stored = owner.gcs.bucket(bucket_2.name).get_iam_policy()
    assert not any(reader.member in b["members"] for b in stored.bindings), stored.bindings
    stored = owner.gcs.bucket(bucket_1.name).get_iam_policy()
    assert not any(b["role"] == "roles/storage.admin" for b in stored.bindings), stored.bindings


def test_project_policy_over_the_ops_api(iam, owner):
    url = iam.url
    ring = create_key_ring(owner.kms)
    bob = iam.caller("user:bob@example.com")
    carol = iam.caller("user:carol@example.com", project_role="roles/editor")
    with kms_denied("cloudkms.keyRings.get", ring.name):
        bob.kms.get_key_ring(request={"name": ring.name})

    # The CLI's --project/--role binding is in the project's policy.
    resp = requests.get(project_policy_url(url, "getIamPolicy"), headers=bearer(owner.token), timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200, resp.text
    policy = resp.json()
    assert set(policy) <= {"version", "bindings", "etag"}, policy
    assert policy["etag"]
    assert {"role": "roles/owner", "members": [OWNER]} in policy["bindings"], policy
    assert {"role": "roles/editor", "members": [carol.member]} in policy["bindings"], policy

    # Adding a binding with setIamPolicy (read-modify-write with the etag) grants it at once.
    new_policy = {**policy, "bindings": policy["bindings"] + [{"role": "roles/cloudkms.viewer", "members": [bob.member]}]}
    resp = requests.post(
        project_policy_url(url, "setIamPolicy"),
        json={"policy": new_policy},
        headers=bearer(owner.token),
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 200, resp.text
    written = resp.json()
    assert written["etag"] and written["etag"] != policy["etag"]
    assert {"role": "roles/cloudkms.viewer", "members": [bob.member]} in written["bindings"]
    assert bob.kms.get_key_ring(request={"name": ring.name}).name == ring.name
    with kms_denied("cloudkms.keyRings.create", PROJECT_NAME):
        create_key_ring(bob.kms)

    # A stale etag is a conflict.
    resp = requests.post(
        project_policy_url(url, "setIamPolicy"),
        json={"policy": {**policy, "bindings": []}},
        headers=bearer(owner.token),
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 409, resp.text

    # An editor cannot change the project's policy (no self-promotion).
    resp = requests.post(
        project_policy_url(url, "setIamPolicy"),
        json={"policy": {"bindings": [{"role": "roles/owner", "members": [carol.member]}]}},
        headers=bearer(carol.token),
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 403, resp.text
    assert "setIamPolicy" in resp.json()["error"]["message"], resp.text

    resp = requests.get(project_policy_url(url, "getIamPolicy"), headers=bearer(owner.token), timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200, resp.text
    assert resp.json()["etag"] == written["etag"]
    assert sorted(map(json.dumps, resp.json()["bindings"])) == sorted(map(json.dumps, written["bindings"]))


def test_rekey_job_reads_are_checked_audited_and_do_not_reveal_existence(iam, owner):
    url = f"{iam.url}/sealstore/v1/projects/{PROJECT}/rekeyJobs"
    bucket = owner.gcs.create_bucket(unique_bucket_name("rk-iam"))
    bucket.blob("a").upload_from_string(b"a")
    resp = requests.post(
        url,
        json={"bucket": bucket.name, "to": {"googleManaged": True}, "mode": "rewrap"},
        headers=bearer(owner.token),
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code in (200, 201), resp.text
    name = resp.json()["name"]
    assert requests.get(f"{iam.url}/sealstore/v1/{name}", headers=bearer(owner.token), timeout=HTTP_TIMEOUT).ok
    missing = f"projects/{PROJECT}/rekeyJobs/no-such-job"
    resp = requests.get(f"{iam.url}/sealstore/v1/{missing}", headers=bearer(owner.token), timeout=HTTP_TIMEOUT)
    assert resp.status_code == 404, resp.text

    # Someone without the permission gets the same 403 for a job that exists and one
    # that does not, for reads and for cancels; every denial is audited.
    mallory = iam.caller("user:mallory@example.com")
    statuses = []
    for job, verb in ((name, ""), (missing, ""), (name, ":cancel"), (missing, ":cancel")):
        method = requests.post if verb else requests.get
        resp = method(f"{iam.url}/sealstore/v1/{job}{verb}", headers=bearer(mallory.token), timeout=HTTP_TIMEOUT)
        statuses.append(resp.status_code)
        assert "storage.objects.update" in resp.text, resp.text
    assert statuses == [403, 403, 403, 403]
    records = read_audit(iam.data_dir)
    denied = find_records(records, outcome="DENIED", principal=mallory.member, permission="storage.objects.update")
    assert {r["resource"] for r in denied} == {name, missing}, denied
    assert {r["method"] for r in denied} == {"GET rekeyJobs", "POST rekeyJobs:cancel"}, denied


# ======================================================================================
# 5. testIamPermissions returns exactly what the caller holds
# ======================================================================================


def test_test_iam_permissions_returns_exactly_the_held_subset(iam, owner):
    ring = create_key_ring(owner.kms)
    key = create_symmetric_key(owner.kms, ring.name)
    other_key = create_symmetric_key(owner.kms, ring.name)
    encrypter = iam.caller("user:encrypter@example.com")
    grant(owner.kms, key.name, encrypter.member, "roles/cloudkms.cryptoKeyEncrypter")

    asked = [
        USE_TO_ENCRYPT,
        USE_TO_DECRYPT,
        "cloudkms.cryptoKeyVersions.useToSign",
        "cloudkms.cryptoKeyVersions.viewPublicKey",
        "cloudkms.cryptoKeyVersions.destroy",
        "cloudkms.cryptoKeys.get",
        "cloudkms.cryptoKeys.getIamPolicy",
        "cloudkms.cryptoKeys.setIamPolicy",
        "cloudkms.importJobs.useToImport",
    ]

    def tested(client, resource: str, permissions: List[str]) -> List[str]:
        response = client.test_iam_permissions(request={"resource": resource, "permissions": permissions})
        return list(response.permissions)

    got = tested(encrypter.kms, key.name, asked)
    assert got == [USE_TO_ENCRYPT], got
    assert tested(encrypter.kms, other_key.name, asked) == []
    assert tested(encrypter.kms, ring.name, ["cloudkms.keyRings.get", "cloudkms.cryptoKeys.list", USE_TO_ENCRYPT]) == []
    owner_got = tested(owner.kms, key.name, asked)
    assert sorted(owner_got) == sorted(asked) and len(owner_got) == len(set(owner_got)), owner_got

    # The answer matches what the caller can really do.
    assert encrypt_symmetric(encrypter.kms, key.name, b"encrypt only").name == version_name(key.name, 1)
    ciphertext = encrypt_symmetric(owner.kms, key.name, b"owner's").ciphertext
    with kms_denied(USE_TO_DECRYPT, key.name):
        decrypt_symmetric(encrypter.kms, key.name, ciphertext)
    with kms_denied("cloudkms.cryptoKeys.get", key.name):
        encrypter.kms.get_crypto_key(request={"name": key.name})

    # Buckets: GET /storage/v1/b/{b}/iam/testPermissions.
    bucket = owner.gcs.create_bucket(unique_bucket_name("tip"))
    uploader = iam.caller("user:uploader@example.com")
    grant_on_bucket(bucket, uploader.member, "roles/storage.objectCreator")
    asked_storage = [
        "storage.objects.create",
        "storage.objects.get",
        "storage.objects.list",
        "storage.objects.delete",
        "storage.buckets.get",
        "storage.buckets.delete",
        "storage.buckets.setIamPolicy",
    ]
    assert uploader.gcs.bucket(bucket.name).test_iam_permissions(asked_storage) == ["storage.objects.create"]
    assert encrypter.gcs.bucket(bucket.name).test_iam_permissions(asked_storage) == []
    owner_storage = owner.gcs.bucket(bucket.name).test_iam_permissions(asked_storage)
    assert sorted(owner_storage) == sorted(asked_storage), owner_storage


# ======================================================================================
# 6. Malformed policies
# ======================================================================================

BAD_BINDINGS = [
    pytest.param({"role": "roles/cloudkms.superUser", "members": ["user:alice@example.com"]}, id="unknown-role"),
    pytest.param({"role": "cloudkms.viewer", "members": ["user:alice@example.com"]}, id="role-without-prefix"),
    pytest.param({"role": "roles/cloudkms.viewer", "members": ["alice"]}, id="member-without-type"),
    pytest.param({"role": "roles/cloudkms.viewer", "members": ["user:"]}, id="member-without-id"),
]


@pytest.mark.parametrize("bad", BAD_BINDINGS)
def test_malformed_policies_are_rejected_with_400(iam, owner, bad):
    url = iam.url
    ring = create_key_ring(owner.kms)
    key = create_symmetric_key(owner.kms, ring.name)
    job = create_import_job(owner.kms, ring.name, ImportMethod.RSA_OAEP_3072_SHA256_AES_256)
    good = {"role": "roles/cloudkms.viewer", "members": ["user:good@example.com"]}

    # Cloud KMS: key ring, key and import job policies.
    for resource in (ring.name, key.name, job.name):
        owner.kms.set_iam_policy(request={"resource": resource, "policy": {"bindings": [good]}})
        before = owner.kms.get_iam_policy(request={"resource": resource})
        for bindings in ([bad], [good, bad]):
            with pytest.raises(gexc.BadRequest) as info:
                owner.kms.set_iam_policy(request={"resource": resource, "policy": {"bindings": bindings}})
            assert error_status(info.value) == "INVALID_ARGUMENT", error_body(info.value)
        after = owner.kms.get_iam_policy(request={"resource": resource})
        assert bindings_of(after) == bindings_of(before) and after.etag == before.etag

    # Buckets: PUT /storage/v1/b/{b}/iam through the storage client.
    bucket = owner.gcs.create_bucket(unique_bucket_name("badpolicy"))
    before = bucket.get_iam_policy(requested_policy_version=1)
    policy = bucket.get_iam_policy(requested_policy_version=1)
    policy.bindings.append({"role": bad["role"], "members": set(bad["members"])})
    with pytest.raises(gexc.BadRequest) as info:
        bucket.set_iam_policy(policy)
    assert gcs_error(info.value).get("code") == 400, gcs_error(info.value)
    after = bucket.get_iam_policy(requested_policy_version=1)
    assert after.etag == before.etag
    assert after.to_api_repr().get("bindings") == before.to_api_repr().get("bindings")

    # The project policy (sealstore ops API).
    resp = requests.get(project_policy_url(url, "getIamPolicy"), headers=bearer(owner.token), timeout=HTTP_TIMEOUT)
    assert resp.status_code == 200, resp.text
    project_before = resp.json()
    resp = requests.post(
        project_policy_url(url, "setIamPolicy"),
        json={"policy": {**project_before, "bindings": project_before["bindings"] + [bad]}},
        headers=bearer(owner.token),
        timeout=HTTP_TIMEOUT,
    )
    assert resp.status_code == 400, resp.text
    resp = requests.get(project_policy_url(url, "getIamPolicy"), headers=bearer(owner.token), timeout=HTTP_TIMEOUT)
    assert resp.json() == project_before

    # Nothing was clobbered: the owner still owns the project.
    assert owner.kms.get_key_ring(request={"name": ring.name}).name == ring.name


# ======================================================================================
# 7. The audit log
# ======================================================================================

AUDIT_KEYS = {"time", "principal", "method", "resource", "permission", "outcome"}


def read_audit(data_dir: Path) -> List[Dict]:
    path = data_dir / "audit.log"
    assert path.exists(), f"no audit log at {path}"
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        assert isinstance(record, dict), f"audit.log line {number} is not a JSON object: {line!r}"
        missing = AUDIT_KEYS - set(record)
        assert not missing, f"audit.log line {number} lacks {sorted(missing)}: {line!r}"
        datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
        records.append(record)
    return records


def find_records(records: List[Dict], **fields) -> List[Dict]:
    return [r for r in records if all(r.get(k) == v for k, v in fields.items())]


def secret_forms(secret: bytes) -> List[str]:
    """The ways a secret could show up in text: raw, base64 (both alphabets), hex."""
    forms = [
        base64.b64encode(secret).decode("ascii"),
        base64.urlsafe_b64encode(secret).decode("ascii").rstrip("="),
        secret.hex(),
    ]
    try:
        forms.append(secret.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    return forms


def test_audit_log_records_denials_and_never_secrets(token_env):
    iam = token_env("--audit-stdout")
    owner = iam.caller(OWNER, project_role="roles/owner")
    viewer = iam.caller("user:audit-viewer@example.com", project_role="roles/viewer")

    ring = create_key_ring(owner.kms)
    key = create_symmetric_key(owner.kms, ring.name)
    plaintext = b"audit-plaintext-" + secrets.token_hex(16).encode()
    aad = b"audit-aad-" + secrets.token_hex(16).encode()
    encrypted = encrypt_symmetric(owner.kms, key.name, plaintext, aad=aad)
    assert decrypt_symmetric(owner.kms, key.name, encrypted.ciphertext, aad=aad).plaintext == plaintext
    bucket = owner.gcs.create_bucket(unique_bucket_name("audit"))
    object_data = b"audit-object-" + secrets.token_hex(16).encode()
    bucket.blob("doc.txt").upload_from_string(object_data)

    # Denied requests: a viewer tries to use the key and to write an object.
    viewer_plaintext = b"viewer-plaintext-" + secrets.token_hex(16).encode()
    with kms_denied(USE_TO_ENCRYPT, key.name):
        encrypt_symmetric(viewer.kms, key.name, viewer_plaintext)
    with gcs_denied("storage.objects.create"):
        viewer.gcs.bucket(bucket.name).blob("viewer.txt").upload_from_string(object_data)
    # An IAM change.
    grant(owner.kms, key.name, "user:someone@example.com", ENCRYPTER_DECRYPTER_ROLE)
    # Unauthenticated attempts with tokens the server never issued.
    garbage = "sst_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    resp = requests.get(f"{iam.url}/v1/{LOCATION_NAME}/keyRings", headers=bearer(garbage), timeout=HTTP_TIMEOUT)
    assert resp.status_code == 401, resp.text
    with pytest.raises(CLIENT_401):
        encrypt_symmetric(make_token_kms_client(iam.url, garbage), key.name, plaintext)

    records = read_audit(iam.data_dir)
    # The denial, with the principal, the permission and the resource.
    denied = find_records(records, outcome="DENIED", principal=viewer.member, permission=USE_TO_ENCRYPT)
    assert denied, f"no DENIED record for {viewer.member}: {records}"
    assert any(key.name in r["resource"] for r in denied), denied
    denied_gcs = find_records(records, outcome="DENIED", principal=viewer.member, permission="storage.objects.create")
    assert denied_gcs, f"no DENIED record of the storage denial: {records}"
    assert any(bucket.name in r["resource"] for r in denied_gcs), denied_gcs
    # Key use and IAM changes are audited as well.
    for permission in (USE_TO_ENCRYPT, USE_TO_DECRYPT, "cloudkms.cryptoKeys.setIamPolicy"):
        ok = find_records(records, outcome="OK", principal=OWNER, permission=permission)
        assert any(key.name in r["resource"] for r in ok), f"no OK record of {permission} on {key.name}: {records}"

    # --audit-stdout: the denial shows up in the server's output too.
    def denial_on_stdout() -> bool:
        return any(
            '"DENIED"' in line and viewer.member in line and USE_TO_ENCRYPT in line
            for line in iam.server.log_text().splitlines()
        )

    deadline = time.monotonic() + 5.0
    while not denial_on_stdout() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert denial_on_stdout(), "the DENIED record is not on stdout (--audit-stdout)"
    output = iam.server.log_text()

    # No token (issued or not) and no plaintext anywhere in the audit log or the output.
    audit_text = (iam.data_dir / "audit.log").read_text(encoding="utf-8")
    tokens = iam.tokens + [garbage]
    assert len(tokens) == 3
    for label, text in (("audit.log", audit_text), ("server output", output)):
        for token in tokens:
            assert token not in text, f"a token appears in the {label}"
            assert token[len("sst_"):] not in text, f"a token's secret part appears in the {label}"
        for secret in (plaintext, aad, viewer_plaintext, object_data):
            for form in secret_forms(secret):
                assert form not in text, f"{secret!r} appears in the {label} as {form!r}"

    # Only a keyed hash of each token is stored: no file in the data dir holds a token
    # or the KMS plaintexts.
    for path in iam.data_dir.rglob("*"):
        if not path.is_file():
            continue
        content = path.read_bytes()
        for token in tokens:
            assert token.encode() not in content, f"a token is stored in {path}"
            assert token[len("sst_"):].encode() not in content, f"a token's secret part is stored in {path}"
        for secret in (plaintext, viewer_plaintext):
            assert secret not in content, f"{secret!r} is stored in {path}"


# ======================================================================================
# 8. The storage service agent in token mode
# ======================================================================================


def test_cmek_upload_needs_the_service_agent_granted_on_the_key(iam, owner):
    assert owner.gcs.get_service_account_email() == storage_service_agent(PROJECT)
    ring = create_key_ring(owner.kms)  # conftest.LOCATION, us-east1
    key = create_symmetric_key(owner.kms, ring.name)
    # --auto-grant-service-agent is off in token mode: the new key's policy is empty.
    assert bindings_of(owner.kms.get_iam_policy(request={"resource": key.name})) == []

    bucket = owner.gcs.create_bucket(unique_bucket_name("cmek"), location=BUCKET_LOCATION)
    data = os.urandom(8 * 1024)

    # The owner may use the key, but storage wraps the object's key as the service agent.
    encrypt_symmetric(owner.kms, key.name, b"the owner can use the key")
    with pytest.raises(gexc.Forbidden) as info:
        bucket.blob("denied.bin", kms_key_name=key.name).upload_from_string(data)
    err = gcs_error(info.value)
    assert err.get("code") == 403 and gcs_error_reason(info.value) == "forbidden", err
    assert CMEK_DENIED_MESSAGE in err.get("message", ""), err
    assert [b.name for b in owner.gcs.list_blobs(bucket.name)] == []

    # An admin grants the agent roles/cloudkms.cryptoKeyEncrypterDecrypter on the key.
    grant(owner.kms, key.name, AGENT, ENCRYPTER_DECRYPTER_ROLE)
    blob = bucket.blob("allowed.bin", kms_key_name=key.name)
    blob.upload_from_string(data)
    assert blob.kms_key_name == version_name(key.name, 1)
    assert bucket.blob("allowed.bin").download_as_bytes() == data

    # Taking the grant away again: the object cannot be read (its key cannot be unwrapped).
    owner.kms.set_iam_policy(request={"resource": key.name, "policy": {"bindings": []}})
    with pytest.raises(gexc.Forbidden) as info:
        bucket.blob("allowed.bin").download_as_bytes()
    err = gcs_error(info.value)
    assert err.get("code") == 403 and gcs_error_reason(info.value) == "forbidden", err


def test_auto_grant_service_agent_can_be_turned_on_in_token_mode(token_env):
    iam = token_env("--auto-grant-service-agent")
    owner = iam.caller(OWNER, project_role="roles/owner")
    ring = create_key_ring(owner.kms)
    key = create_symmetric_key(owner.kms, ring.name)
    # The binding is on the key's own policy, visible through getIamPolicy.
    assert bindings_of(owner.kms.get_iam_policy(request={"resource": key.name})) == [
        (ENCRYPTER_DECRYPTER_ROLE, [AGENT])
    ]
    bucket = owner.gcs.create_bucket(unique_bucket_name("cmek"), location=BUCKET_LOCATION)
    blob = bucket.blob("at-once.bin", kms_key_name=key.name)
    blob.upload_from_string(b"no manual grant needed")
    assert blob.kms_key_name == version_name(key.name, 1)
    assert bucket.blob("at-once.bin").download_as_bytes() == b"no manual grant needed"
