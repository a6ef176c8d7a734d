"""End-to-end tests of sealstore's Cloud KMS REST v1 face.

Every test starts its own sealstore (fresh data dir, ``--fake-clock``) and drives it
with the official ``google-cloud-kms`` client over the REST transport, the way the
python-docs-samples ``kms/snippets`` do.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import timedelta

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from google.api_core import exceptions as gexc
from google.protobuf import duration_pb2

from conftest import (
    storage_service_agent,
    LOCATION,
    LOCATION_NAME,
    ONE_DAY_S,
    PROJECT_NAME,
    THIRTY_DAYS_S,
    Algorithm,
    ProtectionLevel,
    Purpose,
    State,
    assert_not_enabled_error,
    crc32c,
    create_key,
    create_key_ring,
    create_symmetric_key,
    decrypt_symmetric,
    encrypt_symmetric,
    error_status,
    get_public_key_checked,
    set_version_state,
    unique_id,
    version_name,
    wait_enabled,
    whole_second_after,
)

DESTROYED_OR_SCHEDULED_FILTER = "state != DESTROYED AND state != DESTROY_SCHEDULED"
ENCRYPTER_DECRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"


def one_day() -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ONE_DAY_S)


def version_names(client, key_name: str, **request) -> list:
    pager = client.list_crypto_key_versions(request={"parent": key_name, **request})
    return sorted((v.name for v in pager), key=lambda n: int(n.rsplit("/", 1)[1]))


# ======================================================================================
# Symmetric encryption
# ======================================================================================


def test_symmetric_encrypt_decrypt(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    assert ring.create_time is not None
    assert client.get_key_ring(request={"name": ring.name}) == ring
    listed = client.list_key_rings(request={"parent": LOCATION_NAME})
    assert ring.name in [r.name for r in listed]

    key = create_symmetric_key(client, ring.name)
    assert key.purpose == Purpose.ENCRYPT_DECRYPT
    assert key.version_template.algorithm == Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION
    assert key.version_template.protection_level == ProtectionLevel.SOFTWARE
    assert key.primary.name == version_name(key.name, 1)
    assert key.primary.algorithm == Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION
    assert key.destroy_scheduled_duration == timedelta(days=30)  # the documented default
    assert key.create_time is not None

    plaintext = b"attack at dawn"
    encrypted = encrypt_symmetric(client, key.name, plaintext)
    assert encrypted.name == version_name(key.name, 1)
    assert encrypted.protection_level == ProtectionLevel.SOFTWARE
    assert plaintext not in encrypted.ciphertext
    again = encrypt_symmetric(client, key.name, plaintext)
    assert again.ciphertext != encrypted.ciphertext, "same nonce used twice"

    decrypted = decrypt_symmetric(client, key.name, encrypted.ciphertext)
    assert decrypted.plaintext == plaintext
    assert decrypted.used_primary is True
    assert decrypted.protection_level == ProtectionLevel.SOFTWARE


def test_symmetric_additional_authenticated_data(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_symmetric_key(client, ring.name)
    other_key = create_symmetric_key(client, ring.name)

    plaintext = b"object data key"
    aad = b"projects/_/buckets/b/objects/o"
    encrypted = encrypt_symmetric(client, key.name, plaintext, aad=aad)
    assert decrypt_symmetric(client, key.name, encrypted.ciphertext, aad=aad).plaintext == plaintext

    bad_requests = {
        "wrong AAD": {"additional_authenticated_data": b"some other context"},
        "missing AAD": {},
    }
    for what, extra in bad_requests.items():
        with pytest.raises(gexc.BadRequest) as excinfo:
            client.decrypt(request={"name": key.name, "ciphertext": encrypted.ciphertext, **extra})
        assert error_status(excinfo.value) == "INVALID_ARGUMENT", what

    tampered = bytearray(encrypted.ciphertext)
    tampered[-1] ^= 0x01
    with pytest.raises(gexc.BadRequest) as excinfo:
        client.decrypt(
            request={"name": key.name, "ciphertext": bytes(tampered), "additional_authenticated_data": aad}
        )
    assert error_status(excinfo.value) == "INVALID_ARGUMENT"

    with pytest.raises(gexc.BadRequest) as excinfo:
        client.decrypt(
            request={"name": other_key.name, "ciphertext": encrypted.ciphertext, "additional_authenticated_data": aad}
        )
    assert error_status(excinfo.value) == "INVALID_ARGUMENT"


def test_symmetric_crc32c_mismatch_is_rejected(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_symmetric_key(client, ring.name)
    plaintext = b"integrity matters"
    wrong = (crc32c(plaintext) + 1) % 2**32

    with pytest.raises(gexc.BadRequest) as excinfo:
        client.encrypt(request={"name": key.name, "plaintext": plaintext, "plaintext_crc32c": wrong})
    assert error_status(excinfo.value) == "INVALID_ARGUMENT"

    aad = b"context"
    with pytest.raises(gexc.BadRequest) as excinfo:
        client.encrypt(
            request={
                "name": key.name,
                "plaintext": plaintext,
                "additional_authenticated_data": aad,
                "additional_authenticated_data_crc32c": (crc32c(aad) + 1) % 2**32,
            }
        )
    assert error_status(excinfo.value) == "INVALID_ARGUMENT"

    ciphertext = encrypt_symmetric(client, key.name, plaintext).ciphertext
    with pytest.raises(gexc.BadRequest) as excinfo:
        client.decrypt(
            request={
                "name": key.name,
                "ciphertext": ciphertext,
                "ciphertext_crc32c": (crc32c(ciphertext) + 1) % 2**32,
            }
        )
    assert error_status(excinfo.value) == "INVALID_ARGUMENT"

    # Without checksums the verified flags are simply false.
    plain = client.encrypt(request={"name": key.name, "plaintext": plaintext})
    assert plain.verified_plaintext_crc32c is False
    assert plain.ciphertext_crc32c == crc32c(plain.ciphertext)


# ======================================================================================
# Versions: rotation, disable, destroy, restore
# ======================================================================================


def test_manual_rotation(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_symmetric_key(client, ring.name)
    v1, v2 = version_name(key.name, 1), version_name(key.name, 2)

    old = encrypt_symmetric(client, key.name, b"written before rotation")
    assert old.name == v1

    created = client.create_crypto_key_version(request={"parent": key.name, "crypto_key_version": {}})
    assert created.name == v2
    assert created.algorithm == Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION
    wait_enabled(client, v2)
    # Creating a version does not make it primary.
    assert client.get_crypto_key(request={"name": key.name}).primary.name == v1

    updated = client.update_crypto_key_primary_version(
        request={"name": key.name, "crypto_key_version_id": "2"}
    )
    assert updated.primary.name == v2
    assert updated.primary.state == State.ENABLED
    assert client.get_crypto_key(request={"name": key.name}).primary.name == v2

    new = encrypt_symmetric(client, key.name, b"written after rotation")
    assert new.name == v2

    from_old = decrypt_symmetric(client, key.name, old.ciphertext)
    assert from_old.plaintext == b"written before rotation"
    assert from_old.used_primary is False
    from_new = decrypt_symmetric(client, key.name, new.ciphertext)
    assert from_new.plaintext == b"written after rotation"
    assert from_new.used_primary is True

    # Encrypt also accepts a version name (`name=.../cryptoKeys/**`).
    pinned = encrypt_symmetric(client, v1, b"pinned to v1")
    assert pinned.name == v1
    assert decrypt_symmetric(client, key.name, pinned.ciphertext).used_primary is False

    # Older versions stay ENABLED.
    assert client.get_crypto_key_version(request={"name": v1}).state == State.ENABLED


def test_disable_and_enable_version(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_symmetric_key(client, ring.name)
    v1 = version_name(key.name, 1)
    ciphertext = encrypt_symmetric(client, key.name, b"secret").ciphertext

    disabled = set_version_state(client, v1, State.DISABLED)
    assert disabled.name == v1
    assert disabled.state == State.DISABLED
    assert client.get_crypto_key_version(request={"name": v1}).state == State.DISABLED

    with pytest.raises(gexc.BadRequest) as excinfo:
        client.decrypt(request={"name": key.name, "ciphertext": ciphertext})
    assert "is not enabled, current state is: DISABLED." in excinfo.value.message
    assert_not_enabled_error(excinfo.value, v1, "DISABLED")

    # A disabled primary cannot encrypt either.
    with pytest.raises(gexc.BadRequest) as excinfo:
        client.encrypt(request={"name": key.name, "plaintext": b"more"})
    assert_not_enabled_error(excinfo.value, v1, "DISABLED")

    enabled = set_version_state(client, v1, State.ENABLED)
    assert enabled.state == State.ENABLED
    assert decrypt_symmetric(client, key.name, ciphertext).plaintext == b"secret"


def test_destroy_and_restore_version(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_symmetric_key(client, ring.name)
    v1 = version_name(key.name, 1)
    ciphertext = encrypt_symmetric(client, key.name, b"keep me").ciphertext
    created = client.get_crypto_key_version(request={"name": v1})

    scheduled = client.destroy_crypto_key_version(request={"name": v1})
    assert scheduled.name == v1
    assert scheduled.state == State.DESTROY_SCHEDULED
    assert scheduled.destroy_time is not None
    delay = scheduled.destroy_time - created.create_time
    assert timedelta(days=30) <= delay <= timedelta(days=30, minutes=10), delay
    assert client.get_crypto_key_version(request={"name": v1}).state == State.DESTROY_SCHEDULED

    with pytest.raises(gexc.BadRequest) as excinfo:
        client.decrypt(request={"name": key.name, "ciphertext": ciphertext})
    assert_not_enabled_error(excinfo.value, v1, "DESTROY_SCHEDULED")

    restored = client.restore_crypto_key_version(request={"name": v1})
    assert restored.state == State.DISABLED
    assert restored.destroy_time is None

    enabled = set_version_state(client, v1, State.ENABLED)
    assert enabled.state == State.ENABLED
    assert decrypt_symmetric(client, key.name, ciphertext).plaintext == b"keep me"


def test_scheduled_destruction_happens_on_the_clock(server, kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_symmetric_key(client, ring.name, destroy_scheduled_duration=one_day())
    assert key.destroy_scheduled_duration == timedelta(days=1)
    v1 = version_name(key.name, 1)
    ciphertext = encrypt_symmetric(client, key.name, b"short-lived").ciphertext
    created = client.get_crypto_key_version(request={"name": v1})

    scheduled = client.destroy_crypto_key_version(request={"name": v1})
    assert scheduled.state == State.DESTROY_SCHEDULED
    delay = scheduled.destroy_time - created.create_time
    assert timedelta(days=1) <= delay <= timedelta(days=1, minutes=10), delay

    server.advance(ONE_DAY_S + 60)

    destroyed = client.get_crypto_key_version(request={"name": v1})
    assert destroyed.state == State.DESTROYED
    assert destroyed.destroy_event_time is not None
    assert destroyed.destroy_event_time >= scheduled.destroy_time

    with pytest.raises(gexc.BadRequest) as excinfo:
        client.decrypt(request={"name": key.name, "ciphertext": ciphertext})
    assert "current state is: DESTROYED" in excinfo.value.message
    assert_not_enabled_error(excinfo.value, v1, "DESTROYED")

    with pytest.raises(gexc.BadRequest) as excinfo:
        client.restore_crypto_key_version(request={"name": v1})
    assert error_status(excinfo.value) == "FAILED_PRECONDITION"


def test_automatic_rotation_on_the_clock(server, kms_client):
    client = kms_client
    ring = create_key_ring(client)
    # "now" according to the server's clock, rounded up to a whole second.
    first_rotation = whole_second_after(ring.create_time) + timedelta(days=1)
    key = create_symmetric_key(
        client, ring.name, rotation_period=one_day(), next_rotation_time=first_rotation
    )
    assert key.rotation_period == timedelta(days=1)
    assert key.next_rotation_time.timestamp() == first_rotation.timestamp()
    v1, v2 = version_name(key.name, 1), version_name(key.name, 2)
    old = encrypt_symmetric(client, key.name, b"before auto-rotation")
    assert old.name == v1

    server.advance(ONE_DAY_S + 60)

    rotated = client.get_crypto_key(request={"name": key.name})
    assert rotated.primary.name == v2
    assert version_names(client, key.name) == [v1, v2]
    assert rotated.rotation_period == timedelta(days=1)
    assert rotated.next_rotation_time.timestamp() == (first_rotation + timedelta(days=1)).timestamp()
    assert client.get_crypto_key_version(request={"name": v1}).state == State.ENABLED

    from_old = decrypt_symmetric(client, key.name, old.ciphertext)
    assert from_old.plaintext == b"before auto-rotation"
    assert from_old.used_primary is False

    wait_enabled(client, v2)
    new = encrypt_symmetric(client, key.name, b"after auto-rotation")
    assert new.name == v2


def test_update_key_rotation_schedule_and_labels(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_symmetric_key(client, ring.name)
    assert "rotation_period" not in key
    assert "next_rotation_time" not in key
    next_rotation_s = int(whole_second_after(ring.create_time).timestamp()) + ONE_DAY_S

    # update_key_add_rotation.py
    with_rotation = client.update_crypto_key(
        request={
            "crypto_key": {
                "name": key.name,
                "rotation_period": {"seconds": THIRTY_DAYS_S},
                "next_rotation_time": {"seconds": next_rotation_s},
            },
            "update_mask": {"paths": ["rotation_period", "next_rotation_time"]},
        }
    )
    assert with_rotation.rotation_period == timedelta(days=30)
    assert int(with_rotation.next_rotation_time.timestamp()) == next_rotation_s

    # update_key_remove_rotation.py: the mask names both fields, the body only the name.
    cleared = client.update_crypto_key(
        request={
            "crypto_key": {"name": key.name},
            "update_mask": {"paths": ["rotation_period", "next_rotation_time"]},
        }
    )
    fetched = client.get_crypto_key(request={"name": key.name})
    for k in (cleared, fetched):
        assert "rotation_period" not in k
        assert "next_rotation_time" not in k
        assert k.primary.name == version_name(key.name, 1)
        assert k.purpose == Purpose.ENCRYPT_DECRYPT

    # update_key_update_labels.py; the "labels" path replaces the whole map.
    labeled = client.update_crypto_key(
        request={
            "crypto_key": {"name": key.name, "labels": {"team": "storage", "env": "test"}},
            "update_mask": {"paths": ["labels"]},
        }
    )
    assert dict(labeled.labels) == {"team": "storage", "env": "test"}
    relabeled = client.update_crypto_key(
        request={
            "crypto_key": {"name": key.name, "labels": {"env": "prod"}},
            "update_mask": {"paths": ["labels"]},
        }
    )
    assert dict(relabeled.labels) == {"env": "prod"}
    fetched = client.get_crypto_key(request={"name": key.name})
    assert dict(fetched.labels) == {"env": "prod"}
    assert fetched.primary.name == version_name(key.name, 1)
    assert "rotation_period" not in fetched


def test_list_versions_filter_excludes_destroyed(server, kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_symmetric_key(client, ring.name, destroy_scheduled_duration=one_day())
    v1, v2, v3, v4 = (version_name(key.name, n) for n in range(1, 5))
    for expected in (v2, v3, v4):
        created = client.create_crypto_key_version(request={"parent": key.name, "crypto_key_version": {}})
        assert created.name == expected
        wait_enabled(client, expected)

    client.destroy_crypto_key_version(request={"name": v2})
    server.advance(ONE_DAY_S + 60)
    assert client.get_crypto_key_version(request={"name": v2}).state == State.DESTROYED
    client.destroy_crypto_key_version(request={"name": v3})
    assert client.get_crypto_key_version(request={"name": v3}).state == State.DESTROY_SCHEDULED

    assert version_names(client, key.name) == [v1, v2, v3, v4]
    filtered = list(
        client.list_crypto_key_versions(
            request={"parent": key.name, "filter": DESTROYED_OR_SCHEDULED_FILTER}
        )
    )
    assert sorted(v.name for v in filtered) == [v1, v4]
    assert all(v.state == State.ENABLED for v in filtered)


def test_list_versions_paging(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_symmetric_key(client, ring.name)
    expected = [version_name(key.name, n) for n in (1, 2, 3)]
    for name in expected[1:]:
        assert client.create_crypto_key_version(
            request={"parent": key.name, "crypto_key_version": {}}
        ).name == name

    pages = list(client.list_crypto_key_versions(request={"parent": key.name, "page_size": 1}).pages)
    assert all(len(page.crypto_key_versions) <= 1 for page in pages)
    assert len(pages) >= 3
    paged = [v.name for page in pages for v in page.crypto_key_versions]
    assert sorted(paged) == expected  # all three, no duplicates

    assert version_names(client, key.name, page_size=1) == expected


# ======================================================================================
# Asymmetric keys and MAC
# ======================================================================================

# algorithm -> (digest field / hash name, hash class)
SIGN_HASHES = {
    Algorithm.EC_SIGN_P256_SHA256: ("sha256", hashes.SHA256),
    Algorithm.EC_SIGN_P384_SHA384: ("sha384", hashes.SHA384),
    Algorithm.RSA_SIGN_PSS_2048_SHA256: ("sha256", hashes.SHA256),
    Algorithm.RSA_SIGN_PKCS1_2048_SHA256: ("sha256", hashes.SHA256),
}


def check_public_key_type(public_key, algorithm) -> None:
    if algorithm == Algorithm.EC_SIGN_P256_SHA256:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert public_key.curve.name == "secp256r1"
    elif algorithm == Algorithm.EC_SIGN_P384_SHA384:
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert public_key.curve.name == "secp384r1"
    else:
        assert isinstance(public_key, rsa.RSAPublicKey)
        assert public_key.key_size == 2048


def verify_digest_signature(public_key, algorithm, signature: bytes, digest: bytes) -> None:
    """Raise InvalidSignature unless ``signature`` is valid over the pre-hashed ``digest``."""
    hash_cls = SIGN_HASHES[algorithm][1]
    prehashed = utils.Prehashed(hash_cls())
    if algorithm in (Algorithm.EC_SIGN_P256_SHA256, Algorithm.EC_SIGN_P384_SHA384):
        public_key.verify(signature, digest, ec.ECDSA(prehashed))
    elif algorithm == Algorithm.RSA_SIGN_PSS_2048_SHA256:
        pss = padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=hash_cls.digest_size)
        public_key.verify(signature, digest, pss, prehashed)
    else:
        public_key.verify(signature, digest, padding.PKCS1v15(), prehashed)


def create_enabled_key(client, ring_name, purpose, algorithm):
    key = create_key(client, ring_name, purpose, algorithm)
    assert key.purpose == purpose
    assert key.version_template.algorithm == algorithm
    assert "primary" not in key  # only ENCRYPT_DECRYPT keys have a primary
    v1 = version_name(key.name, 1)
    first = client.get_crypto_key_version(request={"name": v1})
    assert first.state in (State.PENDING_GENERATION, State.ENABLED)
    assert first.algorithm == algorithm
    version = wait_enabled(client, v1)
    assert version.algorithm == algorithm
    assert version.protection_level == ProtectionLevel.SOFTWARE
    return key, v1


@pytest.mark.parametrize(
    "algorithm",
    [
        pytest.param(Algorithm.EC_SIGN_P256_SHA256, id="ec-p256"),
        pytest.param(Algorithm.EC_SIGN_P384_SHA384, id="ec-p384"),
        pytest.param(Algorithm.RSA_SIGN_PSS_2048_SHA256, id="rsa-pss-2048"),
        pytest.param(Algorithm.RSA_SIGN_PKCS1_2048_SHA256, id="rsa-pkcs1-2048"),
    ],
)
def test_asymmetric_sign_digest(kms_client, algorithm):
    client = kms_client
    ring = create_key_ring(client)
    _, v1 = create_enabled_key(client, ring.name, Purpose.ASYMMETRIC_SIGN, algorithm)

    public = get_public_key_checked(client, v1)
    assert public.algorithm == algorithm
    public_key = serialization.load_pem_public_key(public.pem.encode("utf-8"))
    check_public_key_type(public_key, algorithm)

    hash_name, _ = SIGN_HASHES[algorithm]
    message = b"sign me, " + secrets.token_bytes(16)
    digest = hashlib.new(hash_name, message).digest()

    # sign_asymmetric.py
    response = client.asymmetric_sign(
        request={"name": v1, "digest": {hash_name: digest}, "digest_crc32c": crc32c(digest)}
    )
    assert response.verified_digest_crc32c
    assert response.name == v1
    assert response.signature_crc32c == crc32c(response.signature)
    assert response.protection_level == ProtectionLevel.SOFTWARE

    verify_digest_signature(public_key, algorithm, response.signature, digest)
    other_digest = hashlib.new(hash_name, message + b"!").digest()
    with pytest.raises(InvalidSignature):
        verify_digest_signature(public_key, algorithm, response.signature, other_digest)


def test_asymmetric_sign_data_p256(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    _, v1 = create_enabled_key(
        client, ring.name, Purpose.ASYMMETRIC_SIGN, Algorithm.EC_SIGN_P256_SHA256
    )
    public_key = serialization.load_pem_public_key(get_public_key_checked(client, v1).pem.encode())

    data = b"raw data, hashed by the server"
    response = client.asymmetric_sign(request={"name": v1, "data": data, "data_crc32c": crc32c(data)})
    assert response.verified_data_crc32c
    assert not response.verified_digest_crc32c
    assert response.name == v1
    assert response.signature_crc32c == crc32c(response.signature)
    public_key.verify(response.signature, data, ec.ECDSA(hashes.SHA256()))


def test_asymmetric_sign_rejects_bad_input(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    _, v1 = create_enabled_key(
        client, ring.name, Purpose.ASYMMETRIC_SIGN, Algorithm.EC_SIGN_P256_SHA256
    )
    digest = hashlib.sha256(b"x").digest()

    with pytest.raises(gexc.BadRequest) as excinfo:
        client.asymmetric_sign(
            request={"name": v1, "digest": {"sha256": digest}, "digest_crc32c": (crc32c(digest) + 1) % 2**32}
        )
    assert error_status(excinfo.value) == "INVALID_ARGUMENT"

    with pytest.raises(gexc.BadRequest) as excinfo:  # SHA-384 digest for a P-256/SHA-256 key
        client.asymmetric_sign(request={"name": v1, "digest": {"sha384": hashlib.sha384(b"x").digest()}})
    assert error_status(excinfo.value) == "INVALID_ARGUMENT"

    symmetric = create_symmetric_key(client, ring.name)
    with pytest.raises(gexc.BadRequest):
        client.asymmetric_sign(
            request={"name": version_name(symmetric.name, 1), "digest": {"sha256": digest}}
        )


@pytest.mark.parametrize(
    "algorithm, hash_cls",
    [
        pytest.param(Algorithm.RSA_DECRYPT_OAEP_2048_SHA256, hashes.SHA256, id="oaep-2048-sha256"),
        pytest.param(Algorithm.RSA_DECRYPT_OAEP_2048_SHA1, hashes.SHA1, id="oaep-2048-sha1"),
    ],
)
def test_asymmetric_decrypt(kms_client, algorithm, hash_cls):
    client = kms_client
    ring = create_key_ring(client)
    _, v1 = create_enabled_key(client, ring.name, Purpose.ASYMMETRIC_DECRYPT, algorithm)

    public = get_public_key_checked(client, v1)
    assert public.algorithm == algorithm
    public_key = serialization.load_pem_public_key(public.pem.encode("utf-8"))
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 2048

    message = b"for your eyes only " + secrets.token_bytes(8)
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hash_cls()), algorithm=hash_cls(), label=None)
    ciphertext = public_key.encrypt(message, oaep)

    # decrypt_asymmetric.py
    response = client.asymmetric_decrypt(
        request={"name": v1, "ciphertext": ciphertext, "ciphertext_crc32c": crc32c(ciphertext)}
    )
    assert response.verified_ciphertext_crc32c
    assert response.plaintext == message
    assert response.plaintext_crc32c == crc32c(response.plaintext)

    tampered = bytearray(ciphertext)
    tampered[10] ^= 0x01
    with pytest.raises(gexc.BadRequest) as excinfo:
        client.asymmetric_decrypt(request={"name": v1, "ciphertext": bytes(tampered)})
    assert error_status(excinfo.value) == "INVALID_ARGUMENT"


def test_mac_sign_and_verify(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    _, v1 = create_enabled_key(client, ring.name, Purpose.MAC, Algorithm.HMAC_SHA256)

    data = b"authenticate me"
    signed = client.mac_sign(request={"name": v1, "data": data, "data_crc32c": crc32c(data)})
    assert signed.name == v1
    assert signed.verified_data_crc32c
    assert signed.mac_crc32c == crc32c(signed.mac)
    assert len(signed.mac) == 32

    ok = client.mac_verify(
        request={
            "name": v1,
            "data": data,
            "mac": signed.mac,
            "data_crc32c": crc32c(data),
            "mac_crc32c": crc32c(signed.mac),
        }
    )
    assert ok.success is True
    assert ok.verified_data_crc32c and ok.verified_mac_crc32c
    assert ok.verified_success_integrity == ok.success

    bad = client.mac_verify(request={"name": v1, "data": data + b"!", "mac": signed.mac})
    assert bad.success is False
    assert bad.verified_success_integrity == bad.success


# ======================================================================================
# Durability and key-material hygiene
# ======================================================================================


def test_generate_random_bytes(kms_client):
    request = {"location": LOCATION_NAME, "length_bytes": 256, "protection_level": ProtectionLevel.HSM}
    first = kms_client.generate_random_bytes(request=request)
    second = kms_client.generate_random_bytes(request=request)
    assert len(first.data) == 256 and len(second.data) == 256
    assert first.data != second.data
    assert first.data_crc32c == crc32c(first.data)
    assert len(set(first.data)) > 100  # 256 random bytes take many distinct values
    for bad in (
        {**request, "length_bytes": 7},
        {**request, "length_bytes": 1025},
        {**request, "protection_level": ProtectionLevel.SOFTWARE},
    ):
        with pytest.raises(gexc.BadRequest, match="length_bytes|HSM"):
            kms_client.generate_random_bytes(request=bad)


def test_restart_keeps_everything(server, new_kms_client):
    client = new_kms_client()
    ring = create_key_ring(client)
    sym = create_symmetric_key(client, ring.name)
    ec_key, ec_v1 = create_enabled_key(
        client, ring.name, Purpose.ASYMMETRIC_SIGN, Algorithm.EC_SIGN_P256_SHA256
    )
    encrypted = encrypt_symmetric(client, sym.name, b"survives restarts")

    def snapshot(c):
        return {
            "ring": c.get_key_ring(request={"name": ring.name}),
            "sym": c.get_crypto_key(request={"name": sym.name}),
            "ec": c.get_crypto_key(request={"name": ec_key.name}),
            "sym_versions": list(c.list_crypto_key_versions(request={"parent": sym.name})),
            "ec_versions": list(c.list_crypto_key_versions(request={"parent": ec_key.name})),
            "pem": c.get_public_key(request={"name": ec_v1}).pem,
        }

    before = snapshot(client)

    server.restart()
    client = new_kms_client()

    after = snapshot(client)
    for what in before:
        assert after[what] == before[what], what

    decrypted = decrypt_symmetric(client, sym.name, encrypted.ciphertext)
    assert decrypted.plaintext == b"survives restarts"
    assert decrypted.used_primary is True

    # The private half survived too: a new signature verifies against the old public key.
    digest = hashlib.sha256(b"after restart").digest()
    signature = client.asymmetric_sign(request={"name": ec_v1, "digest": {"sha256": digest}}).signature
    public_key = serialization.load_pem_public_key(before["pem"].encode())
    public_key.verify(signature, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


def _scan_for(root, needles) -> None:
    for path in sorted(root.rglob("*")):
        try:
            if not path.is_file():
                continue
            content = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            continue  # e.g. a -shm/-journal file that went away while we looked
        for needle in needles:
            assert needle not in content, f"{needle!r} found in {path}"


def test_plaintext_never_reaches_disk(server, kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_symmetric_key(client, ring.name)

    random_part = secrets.token_hex(24)[:47].encode()
    canary = b"SEALSTORE-CANARY-" + random_part
    assert len(canary) == 64
    encrypted = encrypt_symmetric(client, key.name, canary)
    assert decrypt_symmetric(client, key.name, encrypted.ciphertext).plaintext == canary

    needles = [
        canary,
        random_part,
        canary.hex().encode(),
        canary.hex().upper().encode(),
        base64.b64encode(canary),
        base64.b64encode(canary)[:40],
    ]
    _scan_for(server.data_dir, needles)  # while running (WAL, temp files)
    server.stop()
    _scan_for(server.data_dir, needles)  # after shutdown (checkpointed)
    log = server.log_text().encode()
    for needle in needles:
        assert needle not in log, f"{needle!r} appears in the server log"


def test_destroyed_version_is_gone_forever(server, new_kms_client):
    client = new_kms_client()
    ring = create_key_ring(client)
    key = create_symmetric_key(client, ring.name, destroy_scheduled_duration=one_day())
    v1 = version_name(key.name, 1)
    ciphertext = encrypt_symmetric(client, key.name, b"soon unreadable").ciphertext

    client.destroy_crypto_key_version(request={"name": v1})
    server.advance(ONE_DAY_S + 60)
    assert client.get_crypto_key_version(request={"name": v1}).state == State.DESTROYED

    def assert_unusable(c):
        with pytest.raises(gexc.BadRequest) as excinfo:
            c.decrypt(request={"name": key.name, "ciphertext": ciphertext})
        assert_not_enabled_error(excinfo.value, v1, "DESTROYED")
        with pytest.raises(gexc.BadRequest) as excinfo:
            c.encrypt(request={"name": key.name, "plaintext": b"new data"})
        assert_not_enabled_error(excinfo.value, v1, "DESTROYED")

    assert_unusable(client)
    for attempt in (
        lambda: client.restore_crypto_key_version(request={"name": v1}),
        lambda: set_version_state(client, v1, State.ENABLED),
        lambda: client.destroy_crypto_key_version(request={"name": v1}),
    ):
        with pytest.raises(gexc.BadRequest) as excinfo:
            attempt()
        assert error_status(excinfo.value) == "FAILED_PRECONDITION"

    server.advance(30 * ONE_DAY_S)
    assert_unusable(client)

    server.restart()
    client = new_kms_client()
    assert client.get_crypto_key_version(request={"name": v1}).state == State.DESTROYED
    assert_unusable(client)


# ======================================================================================
# Bad input
# ======================================================================================


def test_invalid_key_ring_id(kms_client):
    with pytest.raises(gexc.BadRequest) as excinfo:
        kms_client.create_key_ring(
            request={"parent": LOCATION_NAME, "key_ring_id": "bad!id", "key_ring": {}}
        )
    assert error_status(excinfo.value) == "INVALID_ARGUMENT"


def test_duplicate_key_ring(kms_client):
    ring_id = unique_id("dup")
    request = {"parent": LOCATION_NAME, "key_ring_id": ring_id, "key_ring": {}}
    kms_client.create_key_ring(request=request)
    with pytest.raises(gexc.Conflict) as excinfo:
        kms_client.create_key_ring(request=request)
    assert error_status(excinfo.value) == "ALREADY_EXISTS"


def test_missing_resources_are_not_found(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    missing_key = f"{ring.name}/cryptoKeys/{unique_id('nope')}"
    with pytest.raises(gexc.NotFound) as excinfo:
        client.get_crypto_key(request={"name": missing_key})
    assert missing_key in excinfo.value.message
    assert error_status(excinfo.value) == "NOT_FOUND"

    missing_ring = f"{LOCATION_NAME}/keyRings/{unique_id('nope')}"
    with pytest.raises(gexc.NotFound) as excinfo:
        client.get_key_ring(request={"name": missing_ring})
    assert missing_ring in excinfo.value.message

    key = create_symmetric_key(client, ring.name)
    missing_version = version_name(key.name, 99)
    with pytest.raises(gexc.NotFound) as excinfo:
        client.get_crypto_key_version(request={"name": missing_version})
    assert missing_version in excinfo.value.message


def test_plaintext_size_limit(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_symmetric_key(client, ring.name)
    at_limit = secrets.token_bytes(65536)
    assert decrypt_symmetric(
        client, key.name, encrypt_symmetric(client, key.name, at_limit).ciphertext
    ).plaintext == at_limit

    with pytest.raises(gexc.BadRequest) as excinfo:
        client.encrypt(request={"name": key.name, "plaintext": secrets.token_bytes(65537)})
    assert error_status(excinfo.value) == "INVALID_ARGUMENT"


def test_external_protection_level_is_refused(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    with pytest.raises(gexc.GoogleAPICallError) as excinfo:
        create_key(
            client,
            ring.name,
            Purpose.ENCRYPT_DECRYPT,
            Algorithm.EXTERNAL_SYMMETRIC_ENCRYPTION,
            protection_level=ProtectionLevel.EXTERNAL,
        )
    assert excinfo.value.code in (400, 501)


def test_destroy_scheduled_duration_too_short(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    with pytest.raises(gexc.BadRequest) as excinfo:
        create_symmetric_key(
            client, ring.name, destroy_scheduled_duration=duration_pb2.Duration(seconds=3600)
        )
    assert error_status(excinfo.value) == "INVALID_ARGUMENT"


def test_rotation_schedule_rules(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    next_rotation = whole_second_after(ring.create_time) + timedelta(days=1)

    with pytest.raises(gexc.BadRequest) as excinfo:  # only ENCRYPT_DECRYPT keys rotate
        create_key(
            client,
            ring.name,
            Purpose.ASYMMETRIC_SIGN,
            Algorithm.EC_SIGN_P256_SHA256,
            rotation_period=one_day(),
            next_rotation_time=next_rotation,
        )
    assert error_status(excinfo.value) == "INVALID_ARGUMENT"

    with pytest.raises(gexc.BadRequest) as excinfo:  # shorter than 24 hours
        create_key(
            client,
            ring.name,
            Purpose.ENCRYPT_DECRYPT,
            Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
            rotation_period=duration_pb2.Duration(seconds=3600),
            next_rotation_time=next_rotation,
        )
    assert error_status(excinfo.value) == "INVALID_ARGUMENT"


def test_algorithm_must_match_purpose(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    with pytest.raises(gexc.BadRequest) as excinfo:
        create_key(client, ring.name, Purpose.ENCRYPT_DECRYPT, Algorithm.EC_SIGN_P256_SHA256)
    assert error_status(excinfo.value) == "INVALID_ARGUMENT"


def test_restore_of_enabled_version_fails(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_symmetric_key(client, ring.name)
    with pytest.raises(gexc.BadRequest) as excinfo:
        client.restore_crypto_key_version(request={"name": version_name(key.name, 1)})
    assert error_status(excinfo.value) == "FAILED_PRECONDITION"
    assert client.get_crypto_key_version(request={"name": version_name(key.name, 1)}).state == State.ENABLED


# ======================================================================================
# IAM and locations (mixins: strictly parsed responses)
# ======================================================================================


def test_iam_policy_roundtrip(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_symmetric_key(client, ring.name)

    # In dev mode (--auto-grant-service-agent) a new key's own policy grants the
    # project's storage service agent use of the key; the key ring's policy is empty.
    agent = f"serviceAccount:{storage_service_agent('test-project')}"
    initial = client.get_iam_policy(request={"resource": key.name})
    assert [(b.role, list(b.members)) for b in initial.bindings] == [(ENCRYPTER_DECRYPTER, [agent])]
    assert list(client.get_iam_policy(request={"resource": ring.name}).bindings) == []

    member = "user:a@example.com"
    written = client.set_iam_policy(
        request={
            "resource": key.name,
            "policy": {"bindings": [{"role": ENCRYPTER_DECRYPTER, "members": [member]}]},
        }
    )
    assert [(b.role, list(b.members)) for b in written.bindings] == [(ENCRYPTER_DECRYPTER, [member])]
    assert written.etag

    read = client.get_iam_policy(request={"resource": key.name})
    assert [(b.role, list(b.members)) for b in read.bindings] == [(ENCRYPTER_DECRYPTER, [member])]
    assert read.etag == written.etag
    # The key ring's policy is separate.
    assert list(client.get_iam_policy(request={"resource": ring.name}).bindings) == []

    asked = ["cloudkms.cryptoKeyVersions.useToEncrypt", "cloudkms.cryptoKeys.get"]
    tested = client.test_iam_permissions(request={"resource": key.name, "permissions": asked})
    granted = list(tested.permissions)
    assert all(isinstance(p, str) for p in granted)
    assert set(granted) <= set(asked)


def test_set_iam_policy_with_stale_etag_is_rejected(kms_client):
    client = kms_client
    ring = create_key_ring(client)
    key = create_symmetric_key(client, ring.name)

    def binding(member):
        return {"bindings": [{"role": ENCRYPTER_DECRYPTER, "members": [member]}]}

    first = client.set_iam_policy(request={"resource": key.name, "policy": binding("user:a@example.com")})
    second = client.set_iam_policy(
        request={"resource": key.name, "policy": {**binding("user:b@example.com"), "etag": first.etag}}
    )
    assert second.etag and second.etag != first.etag

    with pytest.raises(gexc.Conflict) as excinfo:  # ABORTED (409)
        client.set_iam_policy(
            request={"resource": key.name, "policy": {**binding("user:c@example.com"), "etag": first.etag}}
        )
    assert error_status(excinfo.value) == "ABORTED"
    current = client.get_iam_policy(request={"resource": key.name})
    assert [list(b.members) for b in current.bindings] == [["user:b@example.com"]]


def test_locations(kms_client):
    response = kms_client.list_locations(request={"name": PROJECT_NAME})
    ids = {loc.location_id for loc in response.locations}
    assert {LOCATION, "global"} <= ids
    for loc in response.locations:
        assert loc.name == f"{PROJECT_NAME}/locations/{loc.location_id}"

    location = kms_client.get_location(request={"name": LOCATION_NAME})
    assert location.name == LOCATION_NAME
    assert location.location_id == LOCATION
