"""Shared fixtures and helpers for sealstore's end-to-end client tests.

The tests start the real ``sealstore`` binary (``SEALSTORE_BIN``, default
``<repo>/target/release/sealstore``) on a fresh data directory and drive it with
the official ``google-cloud-kms`` client over its REST transport.

Nothing here starts a server at import or collection time: the server is only
started by the ``server`` fixture.

Test modules import the plain helpers directly (``from conftest import ...``);
pytest's default ``prepend`` import mode puts this directory on ``sys.path``.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional

import google_crc32c
import pgcluster
import pytest
import requests
from google.api_core.client_options import ClientOptions
from google.api_core.exceptions import BadRequest, GoogleAPICallError
from google.auth.credentials import AnonymousCredentials
from google.cloud import kms

# --------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "release" / "sealstore"

PROJECT = "test-project"
LOCATION = "us-east1"
PROJECT_NAME = f"projects/{PROJECT}"
LOCATION_NAME = f"projects/{PROJECT}/locations/{LOCATION}"

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

# Short aliases for the enums the tests use all the time.
Purpose = kms.CryptoKey.CryptoKeyPurpose
Algorithm = kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm
State = kms.CryptoKeyVersion.CryptoKeyVersionState
ProtectionLevel = kms.ProtectionLevel

ONE_DAY_S = 86_400
THIRTY_DAYS_S = 30 * ONE_DAY_S

_LISTENING_RE = re.compile(r"listening on (https?://[^\s\"',;)]+)")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def sealstore_bin() -> Path:
    """The server binary: ``$SEALSTORE_BIN`` or ``<repo>/target/release/sealstore``."""
    env = os.environ.get("SEALSTORE_BIN")
    return Path(env) if env else DEFAULT_BIN


# --------------------------------------------------------------------------------------
# The server process
# --------------------------------------------------------------------------------------


class Server:
    """A ``sealstore serve`` child process on a given data directory.

    The child's stdout and stderr are merged into one pipe that a background thread
    drains for the whole life of the process (so the pipe never fills); every line is
    kept in ``self.log``.
    """

    def __init__(self, data_dir: Path, extra_args: Optional[List[str]] = None,
                 env: Optional[Dict[str, str]] = None):
        self.binary = sealstore_bin()
        self.data_dir = Path(data_dir)
        self.extra_args = list(extra_args or [])
        # Extra environment for the child (a blob backend's AWS_*/GOOGLE_*/AZURE_*).
        self.extra_env = dict(env or {})
        self.url: Optional[str] = None
        self.log: List[str] = []
        self.returncode: Optional[int] = None
        self._proc: Optional[subprocess.Popen] = None
        self._reader: Optional[threading.Thread] = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> "Server":
        if self._proc is not None:
            raise RuntimeError("server already started")
        if not self.binary.exists():
            pytest.fail(
                f"sealstore binary not found at {self.binary}: build it "
                "(cargo build --release) or set SEALSTORE_BIN",
                pytrace=False,
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(self.binary),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--addr",
            "127.0.0.1:0",
            "--fake-clock",
            *self.extra_args,
        ]
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env["NO_COLOR"] = "1"
        env.update(pgcluster.database_env(self.data_dir))
        env.update(self.extra_env)
        self.log.append(f"--- starting: {' '.join(cmd)}\n")
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        self._proc = proc
        found = threading.Event()
        eof = threading.Event()
        url_box: List[str] = []

        def drain() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.log.append(line)
                if not found.is_set():
                    m = _LISTENING_RE.search(_ANSI_RE.sub("", line))
                    if m:
                        url_box.append(m.group(1).rstrip("/\"',;)"))
                        found.set()
            eof.set()
            found.set()  # wake the waiter even if we never saw the line

        self._reader = threading.Thread(target=drain, name="sealstore-log", daemon=True)
        self._reader.start()

        found.wait(START_TIMEOUT_S)
        if not url_box:
            exited = proc.poll()
            if exited is None and eof.is_set():
                try:
                    exited = proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            self._kill()
            reason = (
                f"exited with code {exited}"
                if exited is not None
                else f"printed no 'listening on http://...' line within {START_TIMEOUT_S:.0f} s"
            )
            raise RuntimeError(f"sealstore {reason}; output:\n{self.log_text()}")
        self.url = url_box[0]
        return self

    def stop(self) -> None:
        """SIGTERM, wait up to 10 s, then SIGKILL. Safe to call twice."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.log.append(f"--- did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM; killing\n")
                proc.kill()
                proc.wait()
        self._finish()

    def restart(self) -> "Server":
        """Stop, then start again on the same data dir (the port, so the URL, changes)."""
        self.stop()
        return self.start()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._finish()

    def _finish(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            self.returncode = proc.returncode
            self.log.append(f"--- exited with code {proc.returncode}\n")
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        self.url = None

    # -- helpers -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def advance(self, seconds: int) -> requests.Response:
        """Move the fake clock forward; due transitions are applied before the reply."""
        assert self.url, "server is not running"
        resp = requests.post(
            f"{self.url}/sealstore/v1/clock:advance",
            json={"seconds": seconds},
            timeout=60,
        )
        assert resp.status_code == 200, f"clock:advance -> {resp.status_code}: {resp.text}"
        return resp

    def log_text(self) -> str:
        return "".join(self.log)


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------


def make_kms_client(url: str) -> kms.KeyManagementServiceClient:
    return kms.KeyManagementServiceClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=url),
    )


@pytest.fixture
def server(tmp_path: Path):
    srv = Server(tmp_path / "data")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        # Only shown by pytest when the test fails.
        print(f"===== sealstore output ({srv.data_dir}) =====")
        print(srv.log_text())


@pytest.fixture
def new_kms_client(server: Server) -> Callable[[], kms.KeyManagementServiceClient]:
    """Factory: a fresh client for the server's *current* URL (use after restart)."""

    def factory() -> kms.KeyManagementServiceClient:
        assert server.url, "server is not running"
        return make_kms_client(server.url)

    return factory


@pytest.fixture
def kms_client(new_kms_client) -> kms.KeyManagementServiceClient:
    return new_kms_client()


# --------------------------------------------------------------------------------------
# Plain helpers (import them: ``from conftest import crc32c, ...``)
# --------------------------------------------------------------------------------------


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli) as an int, like the samples' ``crcmod`` 'crc-32c'."""
    return google_crc32c.value(bytes(data))


def unique_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def version_name(key_name: str, version: int) -> str:
    return f"{key_name}/cryptoKeyVersions/{version}"


def create_key_ring(client: kms.KeyManagementServiceClient, prefix: str = "ring") -> kms.KeyRing:
    ring_id = unique_id(prefix)
    ring = client.create_key_ring(
        request={"parent": LOCATION_NAME, "key_ring_id": ring_id, "key_ring": {}}
    )
    assert ring.name == f"{LOCATION_NAME}/keyRings/{ring_id}"
    return ring


def create_key(
    client: kms.KeyManagementServiceClient,
    ring_name: str,
    purpose,
    algorithm,
    *,
    prefix: str = "key",
    protection_level=ProtectionLevel.SOFTWARE,
    skip_initial_version_creation: bool = False,
    **fields,
) -> kms.CryptoKey:
    """Create a key; extra keyword args are CryptoKey fields (labels, rotation_period...)."""
    key_id = unique_id(prefix)
    crypto_key = {
        "purpose": purpose,
        "version_template": {"protection_level": protection_level, "algorithm": algorithm},
        **fields,
    }
    request = {"parent": ring_name, "crypto_key_id": key_id, "crypto_key": crypto_key}
    if skip_initial_version_creation:
        request["skip_initial_version_creation"] = True
    key = client.create_crypto_key(request=request)
    assert key.name == f"{ring_name}/cryptoKeys/{key_id}"
    return key


def create_symmetric_key(client, ring_name: str, **fields) -> kms.CryptoKey:
    """A SOFTWARE ENCRYPT_DECRYPT key whose version 1 is ENABLED."""
    key = create_key(
        client,
        ring_name,
        Purpose.ENCRYPT_DECRYPT,
        Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        **fields,
    )
    wait_enabled(client, version_name(key.name, 1))
    return key


def wait_enabled(
    client: kms.KeyManagementServiceClient,
    name: str,
    timeout: float = 30.0,
    interval: float = 0.2,
) -> kms.CryptoKeyVersion:
    """Poll a version until ENABLED (PENDING_GENERATION is the only acceptable detour)."""
    deadline = time.monotonic() + timeout
    while True:
        version = client.get_crypto_key_version(request={"name": name})
        if version.state == State.ENABLED:
            return version
        assert version.state == State.PENDING_GENERATION, (
            f"{name} went to {version.state.name} while waiting for ENABLED "
            f"(generation_failure_reason={version.generation_failure_reason!r})"
        )
        if time.monotonic() >= deadline:
            pytest.fail(f"{name} still {version.state.name} after {timeout} s")
        time.sleep(interval)


def encrypt_symmetric(
    client: kms.KeyManagementServiceClient,
    key_name: str,
    plaintext: bytes,
    aad: Optional[bytes] = None,
) -> kms.EncryptResponse:
    """Encrypt with the integrity checks of python-docs-samples ``encrypt_symmetric.py``."""
    request = {"name": key_name, "plaintext": plaintext, "plaintext_crc32c": crc32c(plaintext)}
    if aad is not None:
        request["additional_authenticated_data"] = aad
        request["additional_authenticated_data_crc32c"] = crc32c(aad)
    response = client.encrypt(request=request)
    assert response.verified_plaintext_crc32c, "request corrupted in-transit (plaintext crc32c)"
    if aad is not None:
        assert response.verified_additional_authenticated_data_crc32c, "AAD crc32c not verified"
    assert response.ciphertext_crc32c == crc32c(response.ciphertext), "response corrupted in-transit"
    return response


def decrypt_symmetric(
    client: kms.KeyManagementServiceClient,
    key_name: str,
    ciphertext: bytes,
    aad: Optional[bytes] = None,
) -> kms.DecryptResponse:
    """Decrypt with the integrity checks of python-docs-samples ``decrypt_symmetric.py``."""
    request = {"name": key_name, "ciphertext": ciphertext, "ciphertext_crc32c": crc32c(ciphertext)}
    if aad is not None:
        request["additional_authenticated_data"] = aad
        request["additional_authenticated_data_crc32c"] = crc32c(aad)
    response = client.decrypt(request=request)
    assert response.plaintext_crc32c == crc32c(response.plaintext), "response corrupted in-transit"
    return response


def set_version_state(client: kms.KeyManagementServiceClient, name: str, state) -> kms.CryptoKeyVersion:
    """ENABLED <-> DISABLED via ``PATCH ...?updateMask=state`` (as the samples do)."""
    return client.update_crypto_key_version(
        request={
            "crypto_key_version": {"name": name, "state": state},
            "update_mask": {"paths": ["state"]},
        }
    )


def get_public_key_checked(client: kms.KeyManagementServiceClient, name: str) -> kms.PublicKey:
    """get_public_key with the checks of python-docs-samples ``get_public_key.py``."""
    public_key = client.get_public_key(request={"name": name})
    assert public_key.name == name, "the response names another key version"
    assert public_key.pem_crc32c == crc32c(public_key.pem.encode("utf-8")), "PEM corrupted in-transit"
    assert public_key.pem.startswith("-----BEGIN PUBLIC KEY-----")
    return public_key


def error_body(exc: GoogleAPICallError) -> Dict:
    resp = getattr(exc, "response", None)
    try:
        return resp.json()["error"]
    except Exception:  # noqa: BLE001
        return {}


def error_status(exc: GoogleAPICallError) -> Optional[str]:
    """The ``error.status`` string (google.rpc.Code name) of a REST error body."""
    return error_body(exc).get("status")


def precondition_violations(exc: GoogleAPICallError) -> List[Dict]:
    """All ``google.rpc.PreconditionFailure`` violations in the error's details."""
    out: List[Dict] = []
    for detail in error_body(exc).get("details", []) or []:
        if detail.get("@type") == "type.googleapis.com/google.rpc.PreconditionFailure":
            out.extend(detail.get("violations", []))
    return out


def assert_not_enabled_error(exc: GoogleAPICallError, version: str, state: str) -> None:
    """The Cloud KMS error for using a version that is not ENABLED (cloud-kms-api.md 6.4)."""
    assert isinstance(exc, BadRequest), f"expected 400, got {exc!r}"
    assert error_status(exc) == "FAILED_PRECONDITION", error_body(exc)
    expected = f"{version} is not enabled, current state is: {state}."
    assert expected in exc.message, f"{expected!r} not in {exc.message!r}"
    violations = precondition_violations(exc)
    assert any(
        v.get("type") == f"KEY_{state}" and v.get("subject") == version for v in violations
    ), f"no PreconditionFailure violation KEY_{state} for {version}: {error_body(exc)}"


def whole_second_after(ts: datetime) -> datetime:
    """The first whole second at or after ``ts``, as a plain UTC datetime."""
    return datetime.fromtimestamp(math.ceil(ts.timestamp()), tz=timezone.utc)


# --------------------------------------------------------------------------------------
# Key import helpers (cloud-kms-api.md 5)
# --------------------------------------------------------------------------------------

ImportJobState = kms.ImportJob.ImportJobState
ImportMethod = kms.ImportJob.ImportMethod

# ImportMethod -> (RSA bits, OAEP hash name, uses AES-KWP)
IMPORT_METHODS = {
    ImportMethod.RSA_OAEP_3072_SHA1_AES_256: (3072, "sha1", True),
    ImportMethod.RSA_OAEP_4096_SHA1_AES_256: (4096, "sha1", True),
    ImportMethod.RSA_OAEP_3072_SHA256_AES_256: (3072, "sha256", True),
    ImportMethod.RSA_OAEP_4096_SHA256_AES_256: (4096, "sha256", True),
    ImportMethod.RSA_OAEP_3072_SHA256: (3072, "sha256", False),
    ImportMethod.RSA_OAEP_4096_SHA256: (4096, "sha256", False),
}

IMPORT_JOB_ACTIVE_TIMEOUT_S = 90.0


def create_import_job(
    client: kms.KeyManagementServiceClient,
    ring_name: str,
    method,
    protection_level=ProtectionLevel.SOFTWARE,
    *,
    prefix: str = "job",
) -> kms.ImportJob:
    """CreateImportJob as python-docs-samples ``create_import_job.py`` does it."""
    job_id = unique_id(prefix)
    job = client.create_import_job(
        request={
            "parent": ring_name,
            "import_job_id": job_id,
            "import_job": {"import_method": method, "protection_level": protection_level},
        }
    )
    assert job.name == f"{ring_name}/importJobs/{job_id}"
    return job


def wait_job_active(
    client: kms.KeyManagementServiceClient,
    name: str,
    timeout: float = IMPORT_JOB_ACTIVE_TIMEOUT_S,
    interval: float = 0.2,
) -> kms.ImportJob:
    """Poll an import job until ACTIVE (PENDING_GENERATION is the only acceptable detour)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get_import_job(request={"name": name})
        if job.state == ImportJobState.ACTIVE:
            assert job.public_key.pem.startswith("-----BEGIN PUBLIC KEY-----"), job
            return job
        assert job.state == ImportJobState.PENDING_GENERATION, (
            f"{name} went to {job.state.name} while waiting for ACTIVE"
        )
        assert not job.public_key.pem, f"{name} has a public key while {job.state.name}"
        if time.monotonic() >= deadline:
            pytest.fail(f"import job {name} still {job.state.name} after {timeout} s")
        time.sleep(interval)


def wait_imported(
    client: kms.KeyManagementServiceClient,
    name: str,
    timeout: float = 30.0,
    interval: float = 0.2,
) -> kms.CryptoKeyVersion:
    """Poll a version while it is PENDING_IMPORT; returns it in its final state."""
    deadline = time.monotonic() + timeout
    while True:
        version = client.get_crypto_key_version(request={"name": name})
        if version.state != State.PENDING_IMPORT:
            return version
        if time.monotonic() >= deadline:
            pytest.fail(f"{name} still PENDING_IMPORT after {timeout} s")
        time.sleep(interval)


def _hash_cls(name: str):
    from cryptography.hazmat.primitives import hashes

    return {"sha1": hashes.SHA1, "sha256": hashes.SHA256}[name]


def _oaep(hash_name: str):
    from cryptography.hazmat.primitives.asymmetric import padding

    h = _hash_cls(hash_name)
    return padding.OAEP(mgf=padding.MGF1(algorithm=h()), algorithm=h(), label=None)


def _public_key(pem):
    from cryptography.hazmat.primitives import serialization

    if isinstance(pem, str):
        pem = pem.encode("utf-8")
    return serialization.load_pem_public_key(pem)


def wrap_rsa_aes(pem, target: bytes, hash_name: str = "sha256", ephemeral: Optional[bytes] = None) -> bytes:
    """RSA-AES wrapping (CKM_RSA_AES_KEY_WRAP): OAEP(MGF1(H), H, no label) of a random
    32-byte key, followed by AES-KWP (RFC 5649) of ``target`` under that key."""
    from cryptography.hazmat.primitives import keywrap

    ephemeral = os.urandom(32) if ephemeral is None else ephemeral
    return _public_key(pem).encrypt(ephemeral, _oaep(hash_name)) + keywrap.aes_key_wrap_with_padding(
        ephemeral, target
    )


def wrap_direct(pem, target: bytes) -> bytes:
    """Direct wrapping (RSA_OAEP_*_SHA256): OAEP-SHA256 (MGF1-SHA256, no label) of ``target``."""
    return _public_key(pem).encrypt(target, _oaep("sha256"))


def wrap_for_job(job: kms.ImportJob, target: bytes) -> bytes:
    """Wraps ``target`` for an ACTIVE import job according to its import method."""
    _, hash_name, kwp = IMPORT_METHODS[job.import_method]
    pem = job.public_key.pem
    assert pem, f"{job.name} has no public key (state {job.state.name})"
    return wrap_rsa_aes(pem, target, hash_name) if kwp else wrap_direct(pem, target)


def pkcs8_der(private_key) -> bytes:
    """A ``cryptography`` private key as unencrypted PKCS#8 DER (Cloud KMS's import format)."""
    from cryptography.hazmat.primitives import serialization

    return private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --------------------------------------------------------------------------------------
# GCS JSON API (google-cloud-storage) fixtures and helpers
# --------------------------------------------------------------------------------------

STORAGE_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


def make_gcs_client(url: str):
    """A ``google.cloud.storage.Client`` pointed at ``url`` the way an emulator user does it.

    ``STORAGE_EMULATOR_HOST`` must already hold ``url`` (the client reads it at construction):
    the client then uses ``AnonymousCredentials`` and sends no ``Authorization`` header.
    """
    from google.cloud import storage  # imported lazily: the KMS-only tests do not need it

    assert os.environ.get(STORAGE_EMULATOR_ENV) == url, "set STORAGE_EMULATOR_HOST first"
    return storage.Client(project=PROJECT)


@pytest.fixture
def new_gcs_client(server: Server, monkeypatch):
    """Factory: a fresh storage client for the server's *current* URL (use after restart).

    Sets ``STORAGE_EMULATOR_HOST`` to ``server.url`` (restored after the test) and leaves
    ``DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA`` alone, so the client's background
    ``GET /storage/v1/b/{bucket}?projection=noAcl`` calls reach the server.
    """
    clients: List = []

    def factory():
        assert server.url, "server is not running"
        monkeypatch.setenv(STORAGE_EMULATOR_ENV, server.url)
        client = make_gcs_client(server.url)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        try:
            client.close()
        except Exception:  # noqa: BLE001
            pass


@pytest.fixture
def gcs_client(new_gcs_client):
    return new_gcs_client()


def unique_bucket_name(prefix: str = "b") -> str:
    """A valid, unique GCS bucket name: ``<prefix>-<16 hex>``."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def gcs_md5_b64(data: bytes) -> str:
    """``md5Hash`` as GCS spells it: base64 of the 16-byte MD5."""
    import base64
    import hashlib

    return base64.b64encode(hashlib.md5(bytes(data)).digest()).decode("ascii")


def gcs_crc32c_b64(data: bytes) -> str:
    """``crc32c`` as GCS spells it: base64 of the big-endian 4-byte CRC32C."""
    import base64

    return base64.b64encode(crc32c(data).to_bytes(4, "big")).decode("ascii")


def gcs_error(exc_or_response) -> Dict:
    """The ``error`` object of a GCS JSON error body, from an exception or a response."""
    resp = exc_or_response if isinstance(exc_or_response, requests.Response) else getattr(
        exc_or_response, "response", None
    )
    if resp is not None and resp.headers.get("content-type", "").startswith("text/plain"):
        # Media endpoints (downloads, resumable chunks) answer in plain text, as GCS does;
        # sealstore names the reason in X-Sealstore-Error-Reason. Seen as the JSON shape.
        reason = resp.headers.get("x-sealstore-error-reason")
        return {"code": resp.status_code, "message": resp.text, "errors": [{"reason": reason, "message": resp.text}]}
    try:
        body = resp.json()
    except Exception:  # noqa: BLE001
        return {}
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, dict) else {}


def gcs_error_reason(exc_or_response) -> Optional[str]:
    """``error.errors[0].reason`` of a GCS JSON error body (None if absent). Media
    endpoints (downloads, resumable chunks) answer in plain text, as GCS does; sealstore
    then names the reason in ``X-Sealstore-Error-Reason``."""
    errors = gcs_error(exc_or_response).get("errors") or []
    if errors and isinstance(errors[0], dict):
        return errors[0].get("reason")
    resp = exc_or_response if isinstance(exc_or_response, requests.Response) else getattr(
        exc_or_response, "response", None
    )
    if resp is not None and resp.headers.get("content-type", "").startswith("text/plain"):
        return resp.headers.get("x-sealstore-error-reason")
    return None


# --------------------------------------------------------------------------------------
# CMEK / CSEK helpers (issue 6)
# --------------------------------------------------------------------------------------

ENCRYPTER_DECRYPTER_ROLE = "roles/cloudkms.cryptoKeyEncrypterDecrypter"


def project_number(project: str = PROJECT) -> str:
    """A project's number as sealstore derives it: 12 digits from SHA-256 of the id
    (computed here independently of the server; a numeric id is its own number)."""
    if project.isdigit():
        return project
    import hashlib

    d = hashlib.sha256(b"sealstore-project-number\0" + project.encode()).digest()
    return str(100_000_000_000 + int.from_bytes(d[:8], "big") % 900_000_000_000)


def storage_service_agent(project: str = PROJECT) -> str:
    """The email of a project's Cloud Storage service agent: from its number, as GCS forms it."""
    return f"service-{project_number(project)}@gs-project-accounts.iam.gserviceaccount.com"


def create_key_ring_at(
    client: kms.KeyManagementServiceClient,
    location: str,
    *,
    project: str = PROJECT,
    prefix: str = "ring",
) -> kms.KeyRing:
    """A new key ring in ``projects/{project}/locations/{location}``."""
    ring_id = unique_id(prefix)
    parent = f"projects/{project}/locations/{location}"
    ring = client.create_key_ring(request={"parent": parent, "key_ring_id": ring_id, "key_ring": {}})
    assert ring.name == f"{parent}/keyRings/{ring_id}"
    return ring


def csek_headers(key: bytes, *, copy_source: bool = False, algorithm: str = "AES256") -> Dict[str, str]:
    """The three CSEK headers for a raw 32-byte ``key`` (``x-goog-encryption-*``, or
    ``x-goog-copy-source-encryption-*`` with ``copy_source=True``)."""
    import base64
    import hashlib

    prefix = "x-goog-copy-source-encryption-" if copy_source else "x-goog-encryption-"
    return {
        f"{prefix}algorithm": algorithm,
        f"{prefix}key": base64.b64encode(bytes(key)).decode("ascii"),
        f"{prefix}key-sha256": base64.b64encode(hashlib.sha256(bytes(key)).digest()).decode("ascii"),
    }


def csek_key_sha256(key: bytes) -> str:
    """``customerEncryption.keySha256``: base64 of SHA-256 of the raw key."""
    import base64
    import hashlib

    return base64.b64encode(hashlib.sha256(bytes(key)).digest()).decode("ascii")


@pytest.fixture
def server_factory(tmp_path: Path):
    """Factory: start an extra ``sealstore serve --fake-clock`` with extra arguments, e.g.
    ``server_factory("--kms-ops-per-minute", "5")``. Each call gets its own data dir; all
    are stopped at teardown. Do not combine with the ``server`` fixture in one test unless
    two servers are really wanted."""
    started: List[Server] = []

    def factory(*extra_args: str) -> Server:
        srv = Server(tmp_path / f"data-{len(started)}", extra_args=list(extra_args))
        started.append(srv)
        srv.start()
        return srv

    yield factory
    for srv in started:
        srv.stop()
        print(f"===== sealstore output ({srv.data_dir}) =====")
        print(srv.log_text())


# --------------------------------------------------------------------------------------
# IAM (issue 5): the tokens CLI and token-authenticated clients
# --------------------------------------------------------------------------------------

CLI_TIMEOUT_S = 60.0
_CREATED_TOKEN_RE = re.compile(r"created token (\S+) for (\S+)")


def run_sealstore_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs ``sealstore ARGS...`` (the binary under test) and returns the finished process.
    With ``check``, a non-zero exit fails the test with the command's output."""
    cmd = [str(sealstore_bin()), *args]
    env = dict(os.environ)
    env["NO_COLOR"] = "1"
    if "--data-dir" in args:
        env.update(pgcluster.database_env(Path(args[args.index("--data-dir") + 1])))
    proc = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        timeout=CLI_TIMEOUT_S,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}",
            pytrace=False,
        )
    return proc


def create_token(
    data_dir: Path,
    principal: str,
    *,
    project: Optional[str] = None,
    role: Optional[str] = None,
):
    """``sealstore iam tokens create``: returns ``(token, token_id)``. With ``project`` and
    ``role``, the CLI also binds the role to the principal on the project."""
    args = ["iam", "tokens", "create", "--data-dir", str(data_dir), "--principal", principal]
    if project is not None:
        args += ["--project", project]
    if role is not None:
        args += ["--role", role]
    proc = run_sealstore_cli(*args)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected the token alone on stdout, got {proc.stdout!r}"
    token = lines[0].strip()
    assert token and not any(c.isspace() for c in token), repr(token)
    m = _CREATED_TOKEN_RE.search(proc.stderr)
    assert m, f"no 'created token <id> for <principal>' note on stderr: {proc.stderr!r}"
    assert m.group(2) == principal, proc.stderr
    assert token not in proc.stderr, "the token must be printed once, on stdout only"
    return token, m.group(1)


def list_tokens(data_dir: Path) -> List[Dict[str, str]]:
    """``sealstore iam tokens list``: ``[{"id", "principal", "created", "state"}]``."""
    proc = run_sealstore_cli("iam", "tokens", "list", "--data-dir", str(data_dir))
    out = []
    for line in proc.stdout.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        assert len(fields) == 4, f"token list line is not id<TAB>principal<TAB>created<TAB>state: {line!r}"
        out.append(dict(zip(("id", "principal", "created", "state"), fields)))
    return out


def revoke_token(data_dir: Path, token_id: str, check: bool = True) -> subprocess.CompletedProcess:
    """``sealstore iam tokens revoke --id ID``."""
    return run_sealstore_cli("iam", "tokens", "revoke", "--data-dir", str(data_dir), "--id", token_id, check=check)


def make_token_kms_client(url: str, token: str) -> kms.KeyManagementServiceClient:
    """A KMS REST client that sends ``Authorization: Bearer <token>``."""
    from google.oauth2.credentials import Credentials

    return kms.KeyManagementServiceClient(
        transport="rest",
        credentials=Credentials(token=token),
        client_options=ClientOptions(api_endpoint=url),
    )


def make_token_gcs_client(url: str, token: Optional[str]):
    """A storage client on ``url`` that sends ``Authorization: Bearer <token>`` (or no
    Authorization header at all with ``token=None``).

    ``STORAGE_EMULATOR_HOST`` must be unset: with it, the client switches to emulator
    behaviour (anonymous credentials when none are given, no project on some calls)."""
    from google.cloud import storage
    from google.oauth2.credentials import Credentials

    assert not os.environ.get(STORAGE_EMULATOR_ENV), "unset STORAGE_EMULATOR_HOST first"
    credentials = AnonymousCredentials() if token is None else Credentials(token=token)
    return storage.Client(project=PROJECT, credentials=credentials, client_options={"api_endpoint": url})
