"""gcsfs (fsspec, as pandas and dask use it) against a real server: small writes go as
multipart/related with LF line endings, large ones as resumable sessions whose chunks
are POSTed; `mv` is objects.move. Retries are off so a server bug fails at once."""

import hashlib
import os

import pytest

from conftest import unique_bucket_name

# Read when gcsfs is imported: otherwise it first probes each bucket's type over gRPC
# and waits for that to time out.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
gcsfs = pytest.importorskip("gcsfs")


@pytest.fixture
def fs(server):
    return gcsfs.GCSFileSystem(
        endpoint_url=server.url,
        token="anon",
        project="test-project",
        skip_instance_cache=True,
        cache_timeout=0,
        retries=1,
    )


def test_small_and_large_writes_round_trip(fs, gcs_client):
    bucket = gcs_client.create_bucket(unique_bucket_name(), location="US")
    small = os.urandom(1024) + b"\n--\r\n"
    fs.pipe(f"{bucket.name}/small.bin", small)
    assert fs.cat(f"{bucket.name}/small.bin") == small
    large = os.urandom(9 * 1024 * 1024 + 17)
    fs.pipe(f"{bucket.name}/large.bin", large)
    assert hashlib.md5(fs.cat(f"{bucket.name}/large.bin")).digest() == hashlib.md5(large).digest()
    assert fs.info(f"{bucket.name}/large.bin")["size"] == len(large)


def test_streaming_write_of_20_mib(fs, gcs_client):
    bucket = gcs_client.create_bucket(unique_bucket_name(), location="US")
    data = os.urandom(20 * 1024 * 1024)
    with fs.open(f"{bucket.name}/stream.bin", "wb", block_size=5 * 1024 * 1024) as f:
        for i in range(0, len(data), 3 * 1024 * 1024 + 7):
            f.write(data[i : i + 3 * 1024 * 1024 + 7])
    got = bucket.get_blob("stream.bin")
    assert got.size == len(data)
    assert got.download_as_bytes() == data
    with fs.open(f"{bucket.name}/stream.bin", "rb") as f:
        f.seek(10 * 1024 * 1024)
        assert f.read(1000) == data[10 * 1024 * 1024 : 10 * 1024 * 1024 + 1000]


def test_writes_into_a_cmek_default_bucket(fs, gcs_client, kms_client):
    ring = kms_client.create_key_ring(
        request={"parent": "projects/test-project/locations/us", "key_ring_id": unique_bucket_name("r"), "key_ring": {}}
    )
    key = kms_client.create_crypto_key(
        request={"parent": ring.name, "crypto_key_id": "k", "crypto_key": {"purpose": 1}}
    )
    bucket = gcs_client.create_bucket(unique_bucket_name(), location="US")
    bucket.default_kms_key_name = key.name
    bucket.patch()
    data = os.urandom(6 * 1024 * 1024 + 3)
    fs.pipe(f"{bucket.name}/cmek.bin", data)
    blob = bucket.get_blob("cmek.bin")
    assert blob.kms_key_name.startswith(key.name + "/cryptoKeyVersions/")
    assert fs.cat(f"{bucket.name}/cmek.bin") == data


def test_mv_uses_objects_move(fs, gcs_client):
    bucket = gcs_client.create_bucket(unique_bucket_name(), location="US")
    data = os.urandom(200_000)
    fs.pipe(f"{bucket.name}/from.bin", data)
    # gcsfs falls back to copy + delete when moveTo fails: record what it called.
    paths = []
    real_call = fs._call

    async def spy(method, path, *args, **kwargs):
        paths.append(path)
        return await real_call(method, path, *args, **kwargs)

    fs._call = spy
    fs.mv(f"{bucket.name}/from.bin", f"{bucket.name}/dir/to.bin")
    fs._call = real_call
    assert any("moveTo" in p for p in paths), paths
    assert not any("rewriteTo" in p or "copyTo" in p for p in paths), paths
    assert fs.cat(f"{bucket.name}/dir/to.bin") == data
    assert not fs.exists(f"{bucket.name}/from.bin")
    assert bucket.get_blob("from.bin") is None
