"""End-to-end tests of key import (cloud-kms-api.md 5, MISSION.md B).

Every test starts its own sealstore (fresh data dir, ``--fake-clock``) and drives it
with the official ``google-cloud-kms`` client over REST. Key material is wrapped on the
client side with Python ``cryptography`` (OpenSSL), independently of sealstore's own
wrapping code, for the public key of a real sealstore import job.

Import jobs may come back PENDING_GENERATION (the RSA wrapping key is made in the
background), so every test polls them until ACTIVE before wrapping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat import backends
from cryptography.hazmat.primitives import hashes, keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from google.api_core import exceptions as gexc
from google.cloud import kms
from google.protobuf import duration_pb2

from conftest import (
    IMPORT_METHODS,
    ONE_DAY_S,
    Algorithm,
    ImportJobState,
    ImportMethod,
    ProtectionLevel,
    Purpose,
    State,
    assert_not_enabled_error,
    crc32c,
    create_import_job,
    create_key,
    create_key_ring,
    decrypt_symmetric,
    encrypt_symmetric,
    error_body,
    error_status,
    get_public_key_checked,
    pkcs8_der,
    unique_id,
    version_name,
    wait_enabled,
    wait_imported,
    wait_job_active,
    wrap_direct,
    wrap_for_job,
    wrap_rsa_aes,
)

THREE_DAYS_S = 3 * ONE_DAY_S

# Cloud KMS importFailureReason texts (cloud-kms-api.md 5.4).
TOO_SHORT = "Wrapped key is too short"
NOT_BLOCKS = "Wrapped key does not consist of 64-bit blocks"
INVALID_LENGTH = "Wrapped key has invalid length"
UNWRAP_OR_FORMAT = "The key material in the import request couldn't be unwrapped or wasn't formatted correctly"


def one_day() -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ONE_DAY_S)


def spki_der(public_key) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def kms_public_key(client, name: str):
    return serialization.load_pem_public_key(get_public_key_checked(client, name).pem.encode("utf-8"))


def new_job(client, ring_name: str, method, level=ProtectionLevel.SOFTWARE) -> kms.ImportJob:
    """Creates an import job and waits until it is ACTIVE."""
    job = create_import_job(client, ring_name, method, level)
    assert job.import_method == method
    assert job.protection_level == level
    assert job.state in (ImportJobState.PENDING_GENERATION, ImportJobState.ACTIVE)
    active = wait_job_active(client, job.name)
    bits, _, _ = IMPORT_METHODS[method]
    public = serialization.load_pem_public_key(active.public_key.pem.encode("utf-8"))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == bits
    assert public.public_numbers().e == 65537
    return active


def import_version(client, key_name: str, job: kms.ImportJob, algorithm, wrapped: bytes, **extra):
    """ImportCryptoKeyVersion with the preferred ``wrapped_key`` field."""
    return client.import_crypto_key_version(
        request={
            "parent": key_name,
            "import_job": job.name,
            "algorithm": algorithm,
            "wrapped_key": wrapped,
            **extra,
        }
    )


def sign_digest_and_verify(client, name: str, public_key, hash_name: str = "sha256") -> tuple:
    digest = hashlib.new(hash_name, b"imported key signs " + secrets.token_bytes(8)).digest()
    response = client.asymmetric_sign(
        request={"name": name, "digest": {hash_name: digest}, "digest_crc32c": crc32c(digest)}
    )
    assert response.verified_digest_crc32c
    assert response.name == name
    assert response.signature_crc32c == crc32c(response.signature)
    hash_cls = {"sha256": hashes.SHA256, "sha384": hashes.SHA384}[hash_name]
    public_key.verify(response.signature, digest, ec.ECDSA(utils.Prehashed(hash_cls())))
    return digest, response.signature


def assert_imported(version: kms.CryptoKeyVersion, job: kms.ImportJob, algorithm, level) -> None:
    assert version.state == State.ENABLED, (version.state.name, version.import_failure_reason)
    assert version.algorithm == algorithm
    assert version.protection_level == level
    assert version.import_job == job.name
    assert version.import_time is not None and version.import_time.timestamp() > 0
    assert version.reimport_eligible is True
    assert not version.import_failure_reason


# ======================================================================================
# a. The python-docs-samples flow
# ======================================================================================


def test_import_manually_wrapped_key_sample_flow(kms_client):
    """create_key_for_import.py + create_import_job.py + check_state_import_job.py +
    import_manually_wrapped_key.py + check_state_imported_key.py, then sign."""
    client = kms_client
    ring = create_key_ring(client)

    # create_key_for_import.py
    key = create_key(
        client,
        ring.name,
        Purpose.ASYMMETRIC_SIGN,
        Algorithm.EC_SIGN_P256_SHA256,
        protection_level=ProtectionLevel.HSM,
        skip_initial_version_creation=True,
    )
    assert list(client.list_crypto_key_versions(request={"parent": key.name})) == []

    # create_import_job.py
    job_id = unique_id("import-job")
    created = client.create_import_job(
        {
            "parent": ring.name,
            "import_job_id": job_id,
            "import_job": {
                "import_method": kms.ImportJob.ImportMethod.RSA_OAEP_3072_SHA1_AES_256,
                "protection_level": kms.ProtectionLevel.HSM,
            },
        }
    )
    import_job_name = client.import_job_path("test-project", "us-east1", ring.name.rsplit("/", 1)[1], job_id)
    assert created.name == import_job_name
    assert created.state in (ImportJobState.PENDING_GENERATION, ImportJobState.ACTIVE)
    assert created.expire_time - created.create_time == timedelta(days=3)

    # check_state_import_job.py (polled)
    import_job = wait_job_active(client, import_job_name)
    assert import_job.generate_time is not None
    assert import_job.expire_time - import_job.create_time == timedelta(days=3)

    # import_manually_wrapped_key.py
    key_material = ec.generate_private_key(ec.SECP256R1(), backends.default_backend())
    formatted_key = key_material.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    kwp_key = os.urandom(32)
    wrapped_target_key = keywrap.aes_key_wrap_with_padding(kwp_key, formatted_key, backends.default_backend())
    import_job = client.get_import_job(name=import_job_name)
    import_job_pub = serialization.load_pem_public_key(
        bytes(import_job.public_key.pem, "UTF-8"), backends.default_backend()
    )
    wrapped_kwp_key = import_job_pub.encrypt(
        kwp_key,
        padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
    )
    assert len(formatted_key) == 138 and len(wrapped_kwp_key + wrapped_target_key) == 536
    imported = client.import_crypto_key_version(
        {
            "parent": key.name,
            "import_job": import_job_name,
            "algorithm": kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm.EC_SIGN_P256_SHA256,
            "rsa_aes_wrapped_key": wrapped_kwp_key + wrapped_target_key,
        }
    )
    v1 = version_name(key.name, 1)
    assert imported.name == v1
    assert imported.state in (State.PENDING_IMPORT, State.ENABLED)

    # check_state_imported_key.py (polled)
    version = wait_imported(client, v1)
    assert_imported(version, import_job, Algorithm.EC_SIGN_P256_SHA256, ProtectionLevel.HSM)
    assert [v.name for v in client.list_crypto_key_versions(request={"parent": key.name})] == [v1]
    assert "primary" not in client.get_crypto_key(request={"name": key.name})

    # The server holds exactly the imported key.
    public = get_public_key_checked(client, v1)
    assert public.algorithm == Algorithm.EC_SIGN_P256_SHA256
    assert public.protection_level == ProtectionLevel.HSM
    served = serialization.load_pem_public_key(public.pem.encode())
    assert spki_der(served) == spki_der(key_material.public_key())

    digest = hashlib.sha256(b"signed by an imported HSM key").digest()
    response = client.asymmetric_sign(
        request={"name": v1, "digest": {"sha256": digest}, "digest_crc32c": crc32c(digest)}
    )
    assert response.verified_digest_crc32c
    assert response.protection_level == ProtectionLevel.HSM
    assert response.signature_crc32c == crc32c(response.signature)
    key_material.public_key().verify(response.signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    with pytest.raises(InvalidSignature):
        key_material.public_key().verify(
            response.signature, hashlib.sha256(b"other").digest(), ec.ECDSA(utils.Prehashed(hashes.SHA256()))
        )


# ======================================================================================
# b. Symmetric keys, and proof that the imported material is the one used
# ======================================================================================


def test_import_symmetric_keys_not_primary_until_set(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_key(
        client,
        ring.name,
        Purpose.ENCRYPT_DECRYPT,
        Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        skip_initial_version_creation=True,
    )
    direct_job = new_job(client, ring.name, ImportMethod.RSA_OAEP_3072_SHA256)
    kwp_job = new_job(client, ring.name, ImportMethod.RSA_OAEP_4096_SHA256_AES_256)

    # Version 1: direct RSA-OAEP-SHA256 through the preferred wrapped_key field.
    material_1 = secrets.token_bytes(32)
    wrapped_1 = wrap_direct(direct_job.public_key.pem, material_1)
    assert len(wrapped_1) == 384
    v1 = version_name(key.name, 1)
    imported = import_version(client, key.name, direct_job, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION, wrapped_1)
    assert imported.name == v1
    assert_imported(wait_imported(client, v1), direct_job, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION, ProtectionLevel.SOFTWARE)
    assert "primary" not in client.get_crypto_key(request={"name": key.name})

    updated = client.update_crypto_key_primary_version(request={"name": key.name, "crypto_key_version_id": "1"})
    assert updated.primary.name == v1
    assert updated.primary.import_job == direct_job.name
    encrypted_1 = encrypt_symmetric(client, key.name, b"secret under imported key 1")
    assert encrypted_1.name == v1
    decrypted = decrypt_symmetric(client, key.name, encrypted_1.ciphertext)
    assert decrypted.plaintext == b"secret under imported key 1"
    assert decrypted.used_primary is True

    # Version 2: RSA-OAEP-4096-SHA256 + AES-KWP. It must not take over as primary.
    material_2 = secrets.token_bytes(32)
    wrapped_2 = wrap_rsa_aes(kwp_job.public_key.pem, material_2, "sha256")
    assert len(wrapped_2) == 512 + 40
    v2 = version_name(key.name, 2)
    imported = import_version(client, key.name, kwp_job, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION, wrapped_2)
    assert imported.name == v2
    version_2 = wait_imported(client, v2)
    assert_imported(version_2, kwp_job, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION, ProtectionLevel.SOFTWARE)
    assert client.get_crypto_key(request={"name": key.name}).primary.name == v1
    assert encrypt_symmetric(client, key.name, b"x").name == v1

    updated = client.update_crypto_key_primary_version(request={"name": key.name, "crypto_key_version_id": "2"})
    assert updated.primary.name == v2
    encrypted_2 = encrypt_symmetric(client, key.name, b"secret under imported key 2", aad=b"ctx")
    assert encrypted_2.name == v2
    assert decrypt_symmetric(client, key.name, encrypted_2.ciphertext, aad=b"ctx").plaintext == (
        b"secret under imported key 2"
    )
    old = decrypt_symmetric(client, key.name, encrypted_1.ciphertext)
    assert old.plaintext == b"secret under imported key 1"
    assert old.used_primary is False


def test_imported_version_does_not_replace_generated_primary(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_key(client, ring.name, Purpose.ENCRYPT_DECRYPT, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION)
    v1 = version_name(key.name, 1)
    wait_enabled(client, v1)
    assert client.get_crypto_key_version(request={"name": v1}).reimport_eligible is False

    job = new_job(client, ring.name, ImportMethod.RSA_OAEP_3072_SHA1_AES_256)
    imported = import_version(
        client, key.name, job, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION, wrap_for_job(job, secrets.token_bytes(32))
    )
    assert imported.name == version_name(key.name, 2)
    assert wait_imported(client, imported.name).state == State.ENABLED
    assert client.get_crypto_key(request={"name": key.name}).primary.name == v1
    assert encrypt_symmetric(client, key.name, b"still version 1").name == v1


def _rsa2048():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(
    "purpose, template, algorithm, method, make_key",
    [
        pytest.param(
            Purpose.MAC, Algorithm.HMAC_SHA256, Algorithm.HMAC_SHA256,
            ImportMethod.RSA_OAEP_3072_SHA256, lambda: secrets.token_bytes(32), id="hmac-sha256-direct",
        ),
        pytest.param(
            # "algorithm does not need to match the version_template" (same purpose).
            Purpose.ASYMMETRIC_SIGN, Algorithm.EC_SIGN_P256_SHA256, Algorithm.EC_SIGN_P384_SHA384,
            ImportMethod.RSA_OAEP_3072_SHA256, lambda: ec.generate_private_key(ec.SECP384R1()), id="ec-p384-direct",
        ),
        pytest.param(
            Purpose.ASYMMETRIC_SIGN, Algorithm.RSA_SIGN_PKCS1_2048_SHA256, Algorithm.RSA_SIGN_PKCS1_2048_SHA256,
            ImportMethod.RSA_OAEP_3072_SHA1_AES_256, _rsa2048, id="rsa-pkcs1-2048-sha1-kwp",
        ),
        pytest.param(
            Purpose.ASYMMETRIC_SIGN, Algorithm.RSA_SIGN_PSS_2048_SHA256, Algorithm.RSA_SIGN_PSS_2048_SHA256,
            ImportMethod.RSA_OAEP_3072_SHA256_AES_256, _rsa2048, id="rsa-pss-2048-sha256-kwp",
        ),
        pytest.param(
            Purpose.ASYMMETRIC_DECRYPT, Algorithm.RSA_DECRYPT_OAEP_2048_SHA256, Algorithm.RSA_DECRYPT_OAEP_2048_SHA256,
            ImportMethod.RSA_OAEP_3072_SHA256_AES_256, _rsa2048, id="rsa-oaep-2048-decrypt-kwp",
        ),
    ],
)
def test_imported_material_is_the_material_used(kms_client, purpose, template, algorithm, method, make_key):
    """Each operation's result is checked against the original key held by the test."""
    client = kms_client
    ring = create_key_ring(client)
    key = create_key(client, ring.name, purpose, template, skip_initial_version_creation=True)
    job = new_job(client, ring.name, method)
    original = make_key()
    target = original if isinstance(original, bytes) else pkcs8_der(original)
    imported = import_version(client, key.name, job, algorithm, wrap_for_job(job, target))
    v1 = version_name(key.name, 1)
    assert imported.name == v1
    assert_imported(wait_imported(client, v1), job, algorithm, ProtectionLevel.SOFTWARE)

    if purpose == Purpose.MAC:
        data = b"mac me " + secrets.token_bytes(8)
        signed = client.mac_sign(request={"name": v1, "data": data, "data_crc32c": crc32c(data)})
        assert signed.mac == hmac.new(original, data, hashlib.sha256).digest()
        assert client.mac_verify(request={"name": v1, "data": data, "mac": signed.mac}).success is True
        return

    public = get_public_key_checked(client, v1)
    assert public.algorithm == algorithm
    assert spki_der(serialization.load_pem_public_key(public.pem.encode())) == spki_der(original.public_key())

    if purpose == Purpose.ASYMMETRIC_DECRYPT:
        message = b"to the imported key " + secrets.token_bytes(8)
        oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        ciphertext = original.public_key().encrypt(message, oaep)
        response = client.asymmetric_decrypt(
            request={"name": v1, "ciphertext": ciphertext, "ciphertext_crc32c": crc32c(ciphertext)}
        )
        assert response.plaintext == message
        return

    hash_name = "sha384" if algorithm == Algorithm.EC_SIGN_P384_SHA384 else "sha256"
    hash_cls = hashes.SHA384 if hash_name == "sha384" else hashes.SHA256
    digest = hashlib.new(hash_name, b"sign with imported key " + secrets.token_bytes(8)).digest()
    signature = client.asymmetric_sign(request={"name": v1, "digest": {hash_name: digest}}).signature
    public_key = original.public_key()
    if algorithm == Algorithm.EC_SIGN_P384_SHA384:
        public_key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hash_cls())))
    elif algorithm == Algorithm.RSA_SIGN_PKCS1_2048_SHA256:
        public_key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hash_cls()))
    else:
        public_key.verify(
            signature,
            digest,
            padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=hash_cls().digest_size),
            utils.Prehashed(hash_cls()),
        )


# ======================================================================================
# c. Re-import
# ======================================================================================


def test_reimport_restores_destroyed_version_only_with_same_material(server, kms_client):
    client = kms_client
    ring = create_key_ring(client)
    # Version 1 is generated by the server, version 2 is imported.
    key = create_key(
        client,
        ring.name,
        Purpose.ASYMMETRIC_SIGN,
        Algorithm.EC_SIGN_P256_SHA256,
        destroy_scheduled_duration=one_day(),
    )
    v1 = version_name(key.name, 1)
    generated = wait_enabled(client, v1)
    assert generated.reimport_eligible is False
    assert not generated.import_job

    job = new_job(client, ring.name, ImportMethod.RSA_OAEP_3072_SHA256_AES_256)
    original = ec.generate_private_key(ec.SECP256R1())
    material = pkcs8_der(original)
    imported = import_version(client, key.name, job, Algorithm.EC_SIGN_P256_SHA256, wrap_for_job(job, material))
    v2 = version_name(key.name, 2)
    assert imported.name == v2
    first = wait_imported(client, v2)
    assert_imported(first, job, Algorithm.EC_SIGN_P256_SHA256, ProtectionLevel.SOFTWARE)
    old_digest, old_signature = sign_digest_and_verify(client, v2, original.public_key())

    # Re-import into an ENABLED version is refused.
    with pytest.raises(gexc.BadRequest) as excinfo:
        import_version(
            client, key.name, job, Algorithm.EC_SIGN_P256_SHA256, wrap_for_job(job, material), crypto_key_version=v2
        )
    assert error_status(excinfo.value) == "FAILED_PRECONDITION", error_body(excinfo.value)

    for name in (v1, v2):
        scheduled = client.destroy_crypto_key_version(request={"name": name})
        assert scheduled.state == State.DESTROY_SCHEDULED
    server.advance(ONE_DAY_S + 60)
    for name in (v1, v2):
        assert client.get_crypto_key_version(request={"name": name}).state == State.DESTROYED
    destroyed = client.get_crypto_key_version(request={"name": v2})
    assert destroyed.reimport_eligible is True
    assert destroyed.destroy_event_time is not None

    # A generated version can never be re-imported, even with valid material.
    with pytest.raises(gexc.BadRequest) as excinfo:
        import_version(
            client, key.name, job, Algorithm.EC_SIGN_P256_SHA256, wrap_for_job(job, material), crypto_key_version=v1
        )
    assert error_status(excinfo.value) == "FAILED_PRECONDITION", error_body(excinfo.value)
    after = client.get_crypto_key_version(request={"name": v1})
    assert after.state == State.DESTROYED
    assert after.reimport_eligible is False

    # Same material but another algorithm: refused, nothing changes.
    with pytest.raises(gexc.BadRequest):
        import_version(
            client, key.name, job, Algorithm.EC_SIGN_P384_SHA384, wrap_for_job(job, material), crypto_key_version=v2
        )
    assert client.get_crypto_key_version(request={"name": v2}).state == State.DESTROYED

    # Same material, fresh wrapping: back to ENABLED under the same name.
    restored = import_version(
        client, key.name, job, Algorithm.EC_SIGN_P256_SHA256, wrap_for_job(job, material), crypto_key_version=v2
    )
    assert restored.name == v2
    restored = wait_imported(client, v2)
    assert_imported(restored, job, Algorithm.EC_SIGN_P256_SHA256, ProtectionLevel.SOFTWARE)
    assert restored.import_time >= first.import_time
    assert not restored.destroy_event_time and not restored.destroy_time
    assert sorted(v.name for v in client.list_crypto_key_versions(request={"parent": key.name})) == [v1, v2]

    served = kms_public_key(client, v2)
    assert spki_der(served) == spki_der(original.public_key())
    served.verify(old_signature, old_digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    sign_digest_and_verify(client, v2, original.public_key())

    # Destroy again, then try different material, through a second job: refused.
    client.destroy_crypto_key_version(request={"name": v2})
    server.advance(ONE_DAY_S + 60)
    assert client.get_crypto_key_version(request={"name": v2}).state == State.DESTROYED
    other_job = new_job(client, ring.name, ImportMethod.RSA_OAEP_3072_SHA1_AES_256)
    impostor = pkcs8_der(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(gexc.BadRequest) as excinfo:
        import_version(
            client,
            key.name,
            other_job,
            Algorithm.EC_SIGN_P256_SHA256,
            wrap_for_job(other_job, impostor),
            crypto_key_version=v2,
        )
    assert error_status(excinfo.value) == "FAILED_PRECONDITION", error_body(excinfo.value)
    still = client.get_crypto_key_version(request={"name": v2})
    assert still.state == State.DESTROYED
    assert still.import_job == job.name  # the failed attempt left no trace

    # The original material through the second job works (any job of the same level).
    again = import_version(
        client,
        key.name,
        other_job,
        Algorithm.EC_SIGN_P256_SHA256,
        wrap_for_job(other_job, material),
        crypto_key_version=v2,
    )
    assert again.name == v2
    again = wait_imported(client, v2)
    assert again.state == State.ENABLED
    assert again.import_job == other_job.name
    sign_digest_and_verify(client, v2, original.public_key())


def test_reimport_into_import_failed_version(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_key(
        client,
        ring.name,
        Purpose.ENCRYPT_DECRYPT,
        Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        skip_initial_version_creation=True,
    )
    job = new_job(client, ring.name, ImportMethod.RSA_OAEP_3072_SHA256_AES_256)
    v1 = version_name(key.name, 1)
    failed = import_version(
        client, key.name, job, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION, wrap_for_job(job, secrets.token_bytes(31))
    )
    assert failed.name == v1
    failed = wait_imported(client, v1)
    assert failed.state == State.IMPORT_FAILED
    failure_reason = failed.import_failure_reason  # checked last, after the re-import
    assert failed.reimport_eligible is True

    # It never held material, so any well-formed key of the same algorithm restores it.
    material = secrets.token_bytes(32)
    restored = import_version(
        client,
        key.name,
        job,
        Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        wrap_for_job(job, material),
        crypto_key_version=v1,
    )
    assert restored.name == v1
    restored = wait_imported(client, v1)
    assert_imported(restored, job, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION, ProtectionLevel.SOFTWARE)
    assert [v.name for v in client.list_crypto_key_versions(request={"parent": key.name})] == [v1]
    client.update_crypto_key_primary_version(request={"name": key.name, "crypto_key_version_id": "1"})
    ciphertext = encrypt_symmetric(client, key.name, b"after re-import").ciphertext
    assert decrypt_symmetric(client, key.name, ciphertext).plaintext == b"after re-import"

    assert UNWRAP_OR_FORMAT in failure_reason, failure_reason


# ======================================================================================
# d. Import job expiry
# ======================================================================================


def test_import_job_expires_after_three_days(server, kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_key(
        client,
        ring.name,
        Purpose.ENCRYPT_DECRYPT,
        Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        skip_initial_version_creation=True,
    )
    job = new_job(client, ring.name, ImportMethod.RSA_OAEP_3072_SHA256_AES_256)
    assert job.expire_time - job.create_time == timedelta(days=3)
    assert not job.expire_event_time
    prepared = wrap_for_job(job, secrets.token_bytes(32))  # wrapped while the job is ACTIVE

    server.advance(THREE_DAYS_S - 120)
    assert client.get_import_job(request={"name": job.name}).state == ImportJobState.ACTIVE

    server.advance(180)
    expired = client.get_import_job(request={"name": job.name})
    assert expired.state == ImportJobState.EXPIRED
    assert not expired.public_key.pem
    assert expired.expire_event_time is not None
    assert expired.expire_event_time >= expired.expire_time
    assert expired.expire_time == job.expire_time

    with pytest.raises(gexc.BadRequest) as excinfo:
        import_version(client, key.name, job, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION, prepared)
    assert error_status(excinfo.value) == "FAILED_PRECONDITION", error_body(excinfo.value)
    assert list(client.list_crypto_key_versions(request={"parent": key.name})) == []

    # EXPIRED is final.
    server.advance(ONE_DAY_S)
    assert client.get_import_job(request={"name": job.name}).state == ImportJobState.EXPIRED

    # A new job works.
    fresh = new_job(client, ring.name, ImportMethod.RSA_OAEP_3072_SHA256_AES_256)
    imported = import_version(
        client, key.name, fresh, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION, wrap_for_job(fresh, secrets.token_bytes(32))
    )
    assert wait_imported(client, imported.name).state == State.ENABLED


# ======================================================================================
# e. Bad key material and malformed requests
# ======================================================================================


def _import_failed_problem(client, key_name, job, algorithm, wrapped, reason_part, what):
    """None if the import gave HTTP 200 and an IMPORT_FAILED version whose reason contains
    ``reason_part``; otherwise a description of what happened instead."""
    try:
        version = import_version(client, key_name, job, algorithm, wrapped)
    except gexc.GoogleAPICallError as exc:
        return f"{what}: expected HTTP 200 with an IMPORT_FAILED version, got {exc.code} {error_body(exc)}"
    version = wait_imported(client, version.name)
    if version.state != State.IMPORT_FAILED:
        return f"{what}: {version.name} is {version.state.name}, expected IMPORT_FAILED"
    if reason_part not in version.import_failure_reason:
        return f"{what}: importFailureReason {version.import_failure_reason!r} lacks {reason_part!r}"
    if version.import_job != job.name or version.algorithm != algorithm or version.reimport_eligible is not True:
        return f"{what}: unexpected fields {version}"
    return None


def test_bad_wrapped_material_gives_import_failed(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    sym = create_key(
        client, ring.name, Purpose.ENCRYPT_DECRYPT, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        skip_initial_version_creation=True,
    )
    ec_key = create_key(
        client, ring.name, Purpose.ASYMMETRIC_SIGN, Algorithm.EC_SIGN_P256_SHA256,
        skip_initial_version_creation=True,
    )
    kwp_job = new_job(client, ring.name, ImportMethod.RSA_OAEP_3072_SHA256_AES_256)
    direct_job = new_job(client, ring.name, ImportMethod.RSA_OAEP_3072_SHA256)
    pem = kwp_job.public_key.pem
    good = wrap_rsa_aes(pem, secrets.token_bytes(32), "sha256")
    assert len(good) == 384 + 40
    GSE = Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION

    # The bad_* fixtures of fixtures/import, rebuilt for the job's real public key.
    ephemeral = os.urandom(32)
    rsa_part = serialization.load_pem_public_key(pem.encode()).encrypt(
        ephemeral, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )
    kwp_part = keywrap.aes_key_wrap_with_padding(ephemeral, secrets.token_bytes(32))
    tampered = bytearray(good)
    tampered[-1] ^= 0x01
    cases = [
        # (what, key, job, algorithm, blob, expected reason)
        ("bad_truncated", sym, kwp_job, GSE, good[:100], TOO_SHORT),
        ("bad_kwp_not_multiple_of_8", sym, kwp_job, GSE, good + os.urandom(3), NOT_BLOCKS),
        ("bad_rsa_block_length", sym, kwp_job, GSE, rsa_part[:383] + kwp_part, NOT_BLOCKS),
        ("RSA part only", sym, kwp_job, GSE, good[:384], TOO_SHORT),
        ("KWP part of 8 bytes", sym, kwp_job, GSE, good[:392], TOO_SHORT),
        ("tampered KWP", sym, kwp_job, GSE, bytes(tampered), UNWRAP_OR_FORMAT),
        ("SHA-1 OAEP for a SHA-256 job", sym, kwp_job, GSE, wrap_rsa_aes(pem, secrets.token_bytes(32), "sha1"), UNWRAP_OR_FORMAT),
        ("bad_sym31", sym, kwp_job, GSE, wrap_rsa_aes(pem, secrets.token_bytes(31), "sha256"), UNWRAP_OR_FORMAT),
        ("33-byte symmetric key", sym, kwp_job, GSE, wrap_rsa_aes(pem, secrets.token_bytes(33), "sha256"), UNWRAP_OR_FORMAT),
        (
            "bad_ec_wrong_curve (P-384 as EC_SIGN_P256_SHA256)",
            ec_key, kwp_job, Algorithm.EC_SIGN_P256_SHA256,
            wrap_rsa_aes(pem, pkcs8_der(ec.generate_private_key(ec.SECP384R1())), "sha256"),
            UNWRAP_OR_FORMAT,
        ),
        (
            "32 raw bytes as an EC key", ec_key, kwp_job, Algorithm.EC_SIGN_P256_SHA256,
            wrap_rsa_aes(pem, secrets.token_bytes(32), "sha256"), UNWRAP_OR_FORMAT,
        ),
        (
            "SEC1 instead of PKCS#8", ec_key, kwp_job, Algorithm.EC_SIGN_P256_SHA256,
            wrap_rsa_aes(
                pem,
                ec.generate_private_key(ec.SECP256R1()).private_bytes(
                    serialization.Encoding.DER,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                ),
                "sha256",
            ),
            UNWRAP_OR_FORMAT,
        ),
        # Direct method.
        ("direct: 383 bytes", sym, direct_job, GSE, wrap_direct(direct_job.public_key.pem, secrets.token_bytes(32))[:383], TOO_SHORT),
        ("direct: 385 bytes", sym, direct_job, GSE, wrap_direct(direct_job.public_key.pem, secrets.token_bytes(32)) + b"\0", INVALID_LENGTH),
        ("direct: wrapped for the other job", sym, direct_job, GSE, wrap_direct(pem, secrets.token_bytes(32)), UNWRAP_OR_FORMAT),
        ("direct: 31 bytes", sym, direct_job, GSE, wrap_direct(direct_job.public_key.pem, secrets.token_bytes(31)), UNWRAP_OR_FORMAT),
    ]
    # Garbage of several lengths.
    for n, reason in [(1, TOO_SHORT), (16, TOO_SHORT), (383, TOO_SHORT), (399, TOO_SHORT),
                      (400, UNWRAP_OR_FORMAT), (401, NOT_BLOCKS), (424, UNWRAP_OR_FORMAT),
                      (1000, UNWRAP_OR_FORMAT), (65536, UNWRAP_OR_FORMAT)]:
        cases.append((f"{n} random bytes (RSA-AES)", sym, kwp_job, GSE, os.urandom(n), reason))
    for n, reason in [(5, TOO_SHORT), (384, UNWRAP_OR_FORMAT), (512, INVALID_LENGTH)]:
        cases.append((f"{n} random bytes (direct)", sym, direct_job, GSE, os.urandom(n), reason))

    problems = []
    for what, key, job, algorithm, blob, reason in cases:
        problem = _import_failed_problem(client, key.name, job, algorithm, blob, reason, what)
        if problem:
            problems.append(problem)

    # Failed versions are listed, numbered like any other, and unusable.
    names = {v.name: v.state for v in client.list_crypto_key_versions(request={"parent": sym.name})}
    assert len(names) == sum(1 for c in cases if c[1] is sym)
    assert set(names.values()) == {State.IMPORT_FAILED}
    ec_v1 = version_name(ec_key.name, 1)
    digest = hashlib.sha256(b"x").digest()
    with pytest.raises(gexc.BadRequest) as excinfo:
        client.asymmetric_sign(request={"name": ec_v1, "digest": {"sha256": digest}})
    assert error_status(excinfo.value) == "FAILED_PRECONDITION", error_body(excinfo.value)
    with pytest.raises(gexc.BadRequest) as excinfo:
        client.get_public_key(request={"name": ec_v1})
    assert error_status(excinfo.value) == "FAILED_PRECONDITION", error_body(excinfo.value)

    # The failures did not make the key usable.
    assert "primary" not in client.get_crypto_key(request={"name": sym.name})
    with pytest.raises(gexc.BadRequest) as excinfo:
        client.encrypt(request={"name": sym.name, "plaintext": b"no version"})
    assert error_status(excinfo.value) == "FAILED_PRECONDITION"
    # A non-enabled version may be made primary (cloud-kms-api.md 6.4); Encrypt then
    # fails with the not-enabled error.
    sym_v1 = version_name(sym.name, 1)
    try:
        client.update_crypto_key_primary_version(request={"name": sym.name, "crypto_key_version_id": "1"})
    except gexc.BadRequest:
        pass
    else:
        with pytest.raises(gexc.BadRequest) as excinfo:
            client.encrypt(request={"name": sym.name, "plaintext": b"no material"})
        assert_not_enabled_error(excinfo.value, sym_v1, "IMPORT_FAILED")

    assert not problems, "\n".join(problems)


def test_malformed_import_requests_are_rejected(server, kms_client):
    client = kms_client
    ring = create_key_ring(client)
    other_ring = create_key_ring(client)
    sym = create_key(
        client, ring.name, Purpose.ENCRYPT_DECRYPT, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        skip_initial_version_creation=True,
    )
    rsa_key = create_key(
        client, ring.name, Purpose.ASYMMETRIC_SIGN, Algorithm.RSA_SIGN_PKCS1_2048_SHA256,
        skip_initial_version_creation=True,
    )
    kwp_job = new_job(client, ring.name, ImportMethod.RSA_OAEP_3072_SHA256_AES_256)
    direct_job = new_job(client, ring.name, ImportMethod.RSA_OAEP_3072_SHA256)
    hsm_job = new_job(client, ring.name, ImportMethod.RSA_OAEP_3072_SHA1_AES_256, ProtectionLevel.HSM)
    foreign_job = new_job(client, other_ring.name, ImportMethod.RSA_OAEP_3072_SHA256_AES_256)
    material = secrets.token_bytes(32)
    GSE = Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION

    def rejected(request, status="INVALID_ARGUMENT", exc_type=gexc.BadRequest, what=""):
        with pytest.raises(exc_type) as excinfo:
            client.import_crypto_key_version(request=request)
        if status:
            assert error_status(excinfo.value) == status, (what, error_body(excinfo.value))

    base = {"parent": sym.name, "import_job": kwp_job.name, "algorithm": GSE, "wrapped_key": wrap_for_job(kwp_job, material)}
    rejected({k: v for k, v in base.items() if k != "import_job"}, what="no importJob")
    rejected({k: v for k, v in base.items() if k != "algorithm"}, what="no algorithm")
    rejected({k: v for k, v in base.items() if k != "wrapped_key"}, what="no wrapped key")
    rejected({**base, "algorithm": Algorithm.EC_SIGN_P256_SHA256}, what="algorithm of another purpose")
    rejected({**base, "import_job": hsm_job.name, "wrapped_key": wrap_for_job(hsm_job, material)},
             status=None, what="HSM job, SOFTWARE key")
    rejected({**base, "import_job": foreign_job.name, "wrapped_key": wrap_for_job(foreign_job, material)},
             status=None, what="job of another key ring")
    rejected({**base, "wrapped_key": os.urandom(65537)}, what="wrapped key over 64 KiB")
    rejected({**base, "import_job": f"{ring.name}/importJobs/missing"}, status="NOT_FOUND", exc_type=gexc.NotFound)
    rejected({**base, "parent": f"{ring.name}/cryptoKeys/missing"}, status="NOT_FOUND", exc_type=gexc.NotFound)
    rejected({**base, "crypto_key_version": version_name(sym.name, 7)}, status="NOT_FOUND", exc_type=gexc.NotFound)

    # RSA keys cannot be imported through a direct RSA_OAEP_*_SHA256 job: request error.
    rejected(
        {
            "parent": rsa_key.name,
            "import_job": direct_job.name,
            "algorithm": Algorithm.RSA_SIGN_PKCS1_2048_SHA256,
            "wrapped_key": os.urandom(384),
        },
        what="RSA-2048 via a direct method",
    )

    # Both wrappedKey and rsaAesWrappedKey (a oneof: only raw JSON can send both).
    wrapped = base64.b64encode(wrap_for_job(kwp_job, material)).decode()
    resp = requests.post(
        f"{server.url}/v1/{sym.name}/cryptoKeyVersions:import",
        json={
            "importJob": kwp_job.name,
            "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION",
            "wrappedKey": wrapped,
            "rsaAesWrappedKey": wrapped,
        },
        timeout=30,
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["status"] == "INVALID_ARGUMENT"

    # None of the rejected requests created a version; the legacy field alone works.
    assert list(client.list_crypto_key_versions(request={"parent": sym.name})) == []
    assert list(client.list_crypto_key_versions(request={"parent": rsa_key.name})) == []
    resp = requests.post(
        f"{server.url}/v1/{sym.name}/cryptoKeyVersions:import",
        json={"importJob": kwp_job.name, "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "rsaAesWrappedKey": wrapped},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == version_name(sym.name, 1)
    assert wait_imported(client, version_name(sym.name, 1)).state == State.ENABLED


# ======================================================================================
# f. importOnly and skipInitialVersionCreation
# ======================================================================================


def test_import_only_keys(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_key(
        client,
        ring.name,
        Purpose.ASYMMETRIC_SIGN,
        Algorithm.EC_SIGN_P256_SHA256,
        skip_initial_version_creation=True,
        import_only=True,
    )
    assert key.import_only is True
    assert client.get_crypto_key(request={"name": key.name}).import_only is True

    with pytest.raises(gexc.BadRequest) as excinfo:
        client.create_crypto_key_version(request={"parent": key.name, "crypto_key_version": {}})
    assert error_status(excinfo.value) == "FAILED_PRECONDITION", error_body(excinfo.value)
    assert list(client.list_crypto_key_versions(request={"parent": key.name})) == []

    job = new_job(client, ring.name, ImportMethod.RSA_OAEP_4096_SHA1_AES_256)
    original = ec.generate_private_key(ec.SECP256R1())
    imported = import_version(
        client, key.name, job, Algorithm.EC_SIGN_P256_SHA256, wrap_for_job(job, pkcs8_der(original))
    )
    assert wait_imported(client, imported.name).state == State.ENABLED
    sign_digest_and_verify(client, imported.name, original.public_key())

    # Still import-only after an import.
    with pytest.raises(gexc.BadRequest) as excinfo:
        client.create_crypto_key_version(request={"parent": key.name, "crypto_key_version": {}})
    assert error_status(excinfo.value) == "FAILED_PRECONDITION", error_body(excinfo.value)

    # importOnly needs skipInitialVersionCreation.
    with pytest.raises(gexc.BadRequest) as excinfo:
        create_key(client, ring.name, Purpose.ASYMMETRIC_SIGN, Algorithm.EC_SIGN_P256_SHA256, import_only=True)


def test_import_only_symmetric_key_rejects_rotation(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    rotation = {"rotation_period": duration_pb2.Duration(seconds=30 * ONE_DAY_S)}
    with pytest.raises(gexc.BadRequest):
        create_key(
            client,
            ring.name,
            Purpose.ENCRYPT_DECRYPT,
            Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
            skip_initial_version_creation=True,
            import_only=True,
            **rotation,
        )
    key = create_key(
        client,
        ring.name,
        Purpose.ENCRYPT_DECRYPT,
        Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        skip_initial_version_creation=True,
        import_only=True,
    )
    assert not key.rotation_period and not key.next_rotation_time
    with pytest.raises(gexc.BadRequest):
        client.update_crypto_key(
            request={
                "crypto_key": {"name": key.name, **rotation, "next_rotation_time": {"seconds": 2_000_000_000}},
                "update_mask": {"paths": ["rotation_period", "next_rotation_time"]},
            }
        )
    assert not client.get_crypto_key(request={"name": key.name}).rotation_period


def test_empty_symmetric_key_is_unusable_until_import_and_primary(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_key(
        client,
        ring.name,
        Purpose.ENCRYPT_DECRYPT,
        Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        skip_initial_version_creation=True,
    )
    assert "primary" not in key

    def encrypt_fails():
        with pytest.raises(gexc.BadRequest) as excinfo:
            client.encrypt(request={"name": key.name, "plaintext": b"too early"})
        assert error_status(excinfo.value) == "FAILED_PRECONDITION", error_body(excinfo.value)

    encrypt_fails()
    job = new_job(client, ring.name, ImportMethod.RSA_OAEP_3072_SHA256)
    imported = import_version(
        client, key.name, job, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION, wrap_for_job(job, secrets.token_bytes(32))
    )
    assert wait_imported(client, imported.name).state == State.ENABLED
    encrypt_fails()  # imported, but not primary yet
    client.update_crypto_key_primary_version(request={"name": key.name, "crypto_key_version_id": "1"})
    ciphertext = encrypt_symmetric(client, key.name, b"now it works").ciphertext
    assert decrypt_symmetric(client, key.name, ciphertext).plaintext == b"now it works"


# ======================================================================================
# g. Imported key material never reaches disk in the clear
# ======================================================================================


def _needles(secret: bytes) -> list:
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret),
        base64.b64encode(secret).rstrip(b"="),
    ]


def _scan(root, needles) -> None:
    for path in sorted(root.rglob("*")):
        try:
            if not path.is_file():
                continue
            content = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            continue
        for needle in needles:
            assert needle not in content, f"{needle[:16]!r}... found in {path}"


def test_imported_key_never_reaches_disk(server, new_kms_client):
    client = new_kms_client()
    ring = create_key_ring(client)
    sym = create_key(
        client, ring.name, Purpose.ENCRYPT_DECRYPT, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        skip_initial_version_creation=True, destroy_scheduled_duration=one_day(),
    )
    ec_key = create_key(
        client, ring.name, Purpose.ASYMMETRIC_SIGN, Algorithm.EC_SIGN_P256_SHA256,
        skip_initial_version_creation=True, destroy_scheduled_duration=one_day(),
    )
    job = new_job(client, ring.name, ImportMethod.RSA_OAEP_3072_SHA256_AES_256)

    sym_material = secrets.token_bytes(32)
    ec_private = ec.generate_private_key(ec.SECP256R1())
    ec_material = pkcs8_der(ec_private)
    ec_scalar = ec_private.private_numbers().private_value.to_bytes(32, "big")
    sym_v1 = import_version(client, sym.name, job, Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION, wrap_for_job(job, sym_material)).name
    ec_v1 = import_version(client, ec_key.name, job, Algorithm.EC_SIGN_P256_SHA256, wrap_for_job(job, ec_material)).name
    assert wait_imported(client, sym_v1).state == State.ENABLED
    assert wait_imported(client, ec_v1).state == State.ENABLED
    client.update_crypto_key_primary_version(request={"name": sym.name, "crypto_key_version_id": "1"})
    ciphertext = encrypt_symmetric(client, sym.name, b"imported key in use").ciphertext
    assert decrypt_symmetric(client, sym.name, ciphertext).plaintext == b"imported key in use"
    sign_digest_and_verify(client, ec_v1, ec_private.public_key())

    needles = _needles(sym_material) + _needles(ec_scalar) + [ec_material, base64.b64encode(ec_material)]
    _scan(server.data_dir, needles)  # while running
    server.stop()
    _scan(server.data_dir, needles)  # after shutdown
    log = server.log_text().encode()
    for needle in needles:
        assert needle not in log, "imported key material appears in the server log"

    # The sealed material survives a restart.
    server.start()
    client = new_kms_client()
    assert decrypt_symmetric(client, sym.name, ciphertext).plaintext == b"imported key in use"
    sign_digest_and_verify(client, ec_v1, ec_private.public_key())

    for name in (sym_v1, ec_v1):
        client.destroy_crypto_key_version(request={"name": name})
    server.advance(ONE_DAY_S + 60)
    for name in (sym_v1, ec_v1):
        assert client.get_crypto_key_version(request={"name": name}).state == State.DESTROYED
    server.stop()
    _scan(server.data_dir, needles)
    log = server.log_text().encode()
    for needle in needles:
        assert needle not in log, "imported key material appears in the server log"


# ======================================================================================
# h. Import job resources
# ======================================================================================


def test_list_and_get_import_jobs(server, kms_client):
    client = kms_client
    ring = create_key_ring(client)
    other_ring = create_key_ring(client)
    methods = [
        ImportMethod.RSA_OAEP_3072_SHA1_AES_256,
        ImportMethod.RSA_OAEP_3072_SHA256,
        ImportMethod.RSA_OAEP_4096_SHA256,
    ]
    created = [create_import_job(client, ring.name, m, ProtectionLevel.HSM) for m in methods]
    other = create_import_job(client, other_ring.name, ImportMethod.RSA_OAEP_3072_SHA256_AES_256)
    for job in created + [other]:
        wait_job_active(client, job.name)

    listed = list(client.list_import_jobs(request={"parent": ring.name}))
    assert sorted(j.name for j in listed) == sorted(j.name for j in created)
    by_name = {j.name: j for j in listed}
    for job, method in zip(created, methods):
        got = by_name[job.name]
        assert got.import_method == method
        assert got.protection_level == ProtectionLevel.HSM
        assert got.state == ImportJobState.ACTIVE
        assert got.public_key.pem == client.get_import_job(request={"name": job.name}).public_key.pem
    pems = {by_name[j.name].public_key.pem for j in created}
    assert len(pems) == len(created), "two import jobs share a wrapping key"

    pager = client.list_import_jobs(request={"parent": ring.name, "page_size": 2})
    pages = list(pager.pages)
    assert [len(p.import_jobs) for p in pages] == [2, 1]
    assert pages[0].total_size == 3

    active = list(client.list_import_jobs(request={"parent": ring.name, "filter": "state = ACTIVE"}))
    assert len(active) == 3
    server.advance(THREE_DAYS_S + 60)
    expired = list(client.list_import_jobs(request={"parent": ring.name, "filter": "state = EXPIRED"}))
    assert sorted(j.name for j in expired) == sorted(j.name for j in created)
    assert list(client.list_import_jobs(request={"parent": ring.name, "filter": "state = ACTIVE"})) == []


def test_import_job_creation_errors(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    job = create_import_job(client, ring.name, ImportMethod.RSA_OAEP_3072_SHA256_AES_256)
    job_id = job.name.rsplit("/", 1)[1]

    with pytest.raises(gexc.Conflict) as excinfo:
        client.create_import_job(
            request={
                "parent": ring.name,
                "import_job_id": job_id,
                "import_job": {
                    "import_method": ImportMethod.RSA_OAEP_4096_SHA256,
                    "protection_level": ProtectionLevel.HSM,
                },
            }
        )
    assert error_status(excinfo.value) == "ALREADY_EXISTS"
    unchanged = client.get_import_job(request={"name": job.name})
    assert unchanged.import_method == ImportMethod.RSA_OAEP_3072_SHA256_AES_256
    assert unchanged.protection_level == ProtectionLevel.SOFTWARE

    def bad(import_job, job_id=None, parent=ring.name, exc_type=gexc.BadRequest):
        with pytest.raises(exc_type) as excinfo:
            client.create_import_job(
                request={"parent": parent, "import_job_id": job_id or unique_id("job"), "import_job": import_job}
            )
        return excinfo.value

    exc = bad({"protection_level": ProtectionLevel.SOFTWARE})
    assert error_status(exc) == "INVALID_ARGUMENT", error_body(exc)
    exc = bad({"import_method": ImportMethod.RSA_OAEP_3072_SHA256})
    assert error_status(exc) == "INVALID_ARGUMENT", error_body(exc)
    exc = bad(
        {"import_method": ImportMethod.RSA_OAEP_3072_SHA256, "protection_level": ProtectionLevel.SOFTWARE},
        job_id="bad!id",
    )
    assert error_status(exc) == "INVALID_ARGUMENT", error_body(exc)
    bad(
        {"import_method": ImportMethod.RSA_OAEP_3072_SHA256, "protection_level": ProtectionLevel.SOFTWARE},
        parent=f"{ring.name}-missing",
        exc_type=gexc.NotFound,
    )
    with pytest.raises(gexc.NotFound):
        client.get_import_job(request={"name": f"{ring.name}/importJobs/missing"})


@pytest.mark.parametrize("level", [ProtectionLevel.EXTERNAL, ProtectionLevel.EXTERNAL_VPC], ids=["external", "external-vpc"])
def test_import_job_with_external_protection_level_is_refused(kms_client, level):
    """External keys cannot be imported (cloud-kms-api.md 5.4): a client error (4xx)."""
    client = kms_client
    ring = create_key_ring(client)
    with pytest.raises(gexc.ClientError) as excinfo:
        create_import_job(client, ring.name, ImportMethod.RSA_OAEP_3072_SHA256_AES_256, level)
    assert error_status(excinfo.value) in ("INVALID_ARGUMENT", "FAILED_PRECONDITION"), error_body(excinfo.value)
    assert list(client.list_import_jobs(request={"parent": ring.name})) == []


# ======================================================================================
# The committed fixtures (fixtures/import) are self-consistent
# ======================================================================================

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "import"


def test_import_fixtures_unwrap_with_their_wrapping_keys():
    """No server: every ``<METHOD>__<target>.bin`` unwraps to its target under the fixture
    wrapping key, so the fixtures can serve as known answers for other implementations."""
    load = lambda name: (FIXTURES / name).read_bytes()  # noqa: E731
    private = {
        bits: serialization.load_der_private_key(load(f"wrap{bits}.pk8.der"), password=None) for bits in (3072, 4096)
    }
    targets = {
        "sym32": load("sym32.bin"),
        "ec_p256": load("ec_p256.pk8.der"),
        "ec_p384": load("ec_p384.pk8.der"),
        "rsa2048": load("rsa2048.pk8.der"),
    }
    assert len(targets["sym32"]) == 32
    assert serialization.load_der_private_key(targets["ec_p256"], None).curve.name == "secp256r1"
    assert serialization.load_der_private_key(targets["ec_p384"], None).curve.name == "secp384r1"
    assert serialization.load_der_private_key(targets["rsa2048"], None).key_size == 2048

    def unwrap(method_name: str, blob: bytes) -> bytes:
        bits, hash_name, kwp = IMPORT_METHODS[ImportMethod[method_name]]
        h = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}[hash_name]
        oaep = padding.OAEP(mgf=padding.MGF1(h()), algorithm=h(), label=None)
        k = bits // 8
        if not kwp:
            assert len(blob) == k
            return private[bits].decrypt(blob, oaep)
        ephemeral = private[bits].decrypt(blob[:k], oaep)
        assert len(ephemeral) == 32
        return keywrap.aes_key_unwrap_with_padding(ephemeral, blob[k:])

    seen = 0
    for method in IMPORT_METHODS:
        _, _, kwp = IMPORT_METHODS[method]
        for target in ["sym32", "ec_p256", "ec_p384"] + (["rsa2048"] if kwp else []):
            assert unwrap(method.name, load(f"{method.name}__{target}.bin")) == targets[target], (method, target)
            seen += 1
    assert seen == 4 * 4 + 2 * 3

    good = load("RSA_OAEP_3072_SHA256_AES_256__sym32.bin")
    assert load("bad_truncated.bin") == good[:100]
    assert load("bad_kwp_not_multiple_of_8.bin")[:-3] == good and (len(good) + 3 - 384) % 8 == 3
    assert len(load("bad_rsa_block_length.bin")) == 383 + 40
    p384 = unwrap("RSA_OAEP_3072_SHA256_AES_256", load("bad_ec_wrong_curve.bin"))
    assert p384 == targets["ec_p384"]
    assert len(unwrap("RSA_OAEP_3072_SHA256_AES_256", load("bad_sym31.bin"))) == 31
    readme = (FIXTURES / "README.md").read_text()
    for path in FIXTURES.iterdir():
        if path.name != "README.md":
            assert f"`{path.name}`" in readme, f"{path.name} is not described in README.md"
    assert sum(p.stat().st_size for p in FIXTURES.iterdir()) < 200_000
