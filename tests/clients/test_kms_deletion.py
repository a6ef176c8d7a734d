"""Cloud KMS key and version deletion through google-cloud-kms (long-running operations
as the client expects them), retired names, and the interaction with storage: deleting
a key never makes data silently vanish, and a key protecting retained data cannot go."""

from __future__ import annotations

import pytest
import requests
from google.api_core import exceptions as gexc
from google.cloud import kms

from conftest import LOCATION, PROJECT, create_key_ring, create_symmetric_key, error_status, unique_bucket_name

T = 30
State = kms.CryptoKeyVersion.CryptoKeyVersionState


def destroy_all(server, kms_client, key_name):
    for v in kms_client.list_crypto_key_versions(request={"parent": key_name}):
        if v.state in (State.ENABLED, State.DISABLED):
            kms_client.destroy_crypto_key_version(request={"name": v.name})
    server.advance(31 * 86_400)


def test_delete_version_and_key_through_the_client(server, kms_client):
    ring = create_key_ring(kms_client)
    key = create_symmetric_key(kms_client, ring.name)
    v2 = kms_client.create_crypto_key_version(request={"parent": key.name, "crypto_key_version": {}})
    # Live versions block both deletions, naming the version (FAILED_PRECONDITION, 400).
    with pytest.raises(gexc.BadRequest, match="cryptoKeyVersions/1") as e:
        kms_client.delete_crypto_key_version(request={"name": f"{key.name}/cryptoKeyVersions/1"}).result()
    assert error_status(e.value) == "FAILED_PRECONDITION"
    with pytest.raises(gexc.BadRequest, match="cryptoKeyVersions/1 is ENABLED"):
        kms_client.delete_crypto_key(request={"name": key.name}).result()
    kms_client.destroy_crypto_key_version(request={"name": v2.name})
    with pytest.raises(gexc.BadRequest, match="DESTROY_SCHEDULED"):
        kms_client.delete_crypto_key_version(request={"name": v2.name}).result()
    server.advance(31 * 86_400)
    op = kms_client.delete_crypto_key_version(request={"name": v2.name})
    op.result(timeout=10)
    assert op.done()
    assert isinstance(op.metadata, kms.DeleteCryptoKeyVersionMetadata)
    with pytest.raises(gexc.NotFound):
        kms_client.get_crypto_key_version(request={"name": v2.name})
    # The operation stays readable.
    r = requests.get(f"{server.url}/v1/{op.operation.name}", timeout=T)
    assert r.status_code == 200 and r.json()["done"] is True, r.text
    destroy_all(server, kms_client, key.name)
    op = kms_client.delete_crypto_key(request={"name": key.name})
    op.result(timeout=10)
    retired_name = op.metadata.retired_resource
    assert retired_name.startswith(f"projects/{PROJECT}/locations/{LOCATION}/retiredResources/")
    with pytest.raises(gexc.NotFound):
        kms_client.get_crypto_key(request={"name": key.name})
    retired = kms_client.get_retired_resource(request={"name": retired_name})
    assert retired.original_resource == key.name
    assert retired.resource_type == "cloudkms.googleapis.com/CryptoKey"
    assert retired.delete_time
    listed = list(kms_client.list_retired_resources(request={"parent": f"projects/{PROJECT}/locations/{LOCATION}"}))
    assert [r.name for r in listed] == [retired_name]
    # The name is retired: it cannot be reused.
    key_id = key.name.rsplit("/", 1)[1]
    with pytest.raises(gexc.Conflict, match="retired"):
        kms_client.create_crypto_key(
            request={"parent": ring.name, "crypto_key_id": key_id, "crypto_key": {"purpose": kms.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT}}
        )
    # Deleted and retired survive a restart.
    server.restart()
    from conftest import make_kms_client

    c = make_kms_client(server.url)
    assert c.get_retired_resource(request={"name": retired_name}).original_resource == key.name
    with pytest.raises(gexc.NotFound):
        c.get_crypto_key(request={"name": key.name})


def test_import_failed_and_skipped_versions_delete_without_destroy(server, kms_client):
    ring = create_key_ring(kms_client)
    key = kms_client.create_crypto_key(
        request={
            "parent": ring.name,
            "crypto_key_id": "empty",
            "crypto_key": {"purpose": kms.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT, "import_only": True},
            "skip_initial_version_creation": True,
        }
    )
    # A version whose import failed never had material: it deletes without a destroy.
    from conftest import create_import_job, wait_job_active

    job = wait_job_active(
        kms_client,
        create_import_job(kms_client, ring.name, kms.ImportJob.ImportMethod.RSA_OAEP_3072_SHA256_AES_256).name,
    )
    v = kms_client.import_crypto_key_version(
        request={
            "parent": key.name,
            "import_job": job.name,
            "algorithm": kms.CryptoKeyVersion.CryptoKeyVersionAlgorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
            "wrapped_key": b"\x01" * 424,
        }
    )
    assert v.state == State.IMPORT_FAILED
    kms_client.delete_crypto_key_version(request={"name": v.name}).result(timeout=10)
    assert list(kms_client.list_crypto_key_versions(request={"parent": key.name})) == []
    # A key without versions deletes at once.
    kms_client.delete_crypto_key(request={"name": key.name}).result(timeout=10)
    with pytest.raises(gexc.NotFound):
        kms_client.get_crypto_key(request={"name": key.name})


def test_bad_deletions(server, kms_client):
    ring = create_key_ring(kms_client)
    with pytest.raises(gexc.NotFound):
        kms_client.delete_crypto_key(request={"name": f"{ring.name}/cryptoKeys/nope"}).result()
    with pytest.raises(gexc.NotFound):
        kms_client.get_retired_resource(request={"name": f"projects/{PROJECT}/locations/{LOCATION}/retiredResources/nope"})
    r = requests.get(f"{server.url}/v1/projects/{PROJECT}/locations/{LOCATION}/operations/nope", timeout=T)
    assert r.status_code == 404


def test_deleted_key_data_stays_listed_and_unreadable(server, kms_client, gcs_client):
    ring = kms_client.create_key_ring(
        request={"parent": f"projects/{PROJECT}/locations/us", "key_ring_id": unique_bucket_name("r"), "key_ring": {}}
    )
    key = create_symmetric_key(kms_client, ring.name)
    b = gcs_client.create_bucket(unique_bucket_name(), location="US")
    blob = b.blob("o", kms_key_name=key.name)
    blob.upload_from_string(b"secret")
    destroy_all(server, kms_client, key.name)
    kms_client.delete_crypto_key(request={"name": key.name}).result(timeout=10)
    meta = b.get_blob("o")
    assert meta is not None and meta.kms_key_name.startswith(key.name + "/cryptoKeyVersions/")
    with pytest.raises(gexc.GoogleAPICallError):
        meta.download_as_bytes()
    assert [x.name for x in gcs_client.list_blobs(b)] == ["o"]
    meta.delete()


def test_a_key_protecting_retained_data_cannot_be_deleted(server, kms_client, gcs_client):
    ring = kms_client.create_key_ring(
        request={"parent": f"projects/{PROJECT}/locations/us", "key_ring_id": unique_bucket_name("r"), "key_ring": {}}
    )
    key = create_symmetric_key(kms_client, ring.name)
    b = gcs_client.create_bucket(unique_bucket_name(), location="US")
    blob = b.blob("held", kms_key_name=key.name)
    blob.upload_from_string(b"x")
    blob.temporary_hold = True
    blob.patch()
    # The guard refuses destruction, so the version never reaches DESTROYED ...
    with pytest.raises(gexc.BadRequest):
        kms_client.destroy_crypto_key_version(request={"name": f"{key.name}/cryptoKeyVersions/1"})
    # ... and the key cannot be deleted.
    with pytest.raises(gexc.BadRequest, match="cryptoKeyVersions/1 is ENABLED"):
        kms_client.delete_crypto_key(request={"name": key.name}).result()
    assert b.get_blob("held").download_as_bytes() == b"x"
