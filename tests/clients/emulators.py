"""The blob backends' emulators, started and stopped by the tests on loopback.

- S3: moto's server (``.venv-emulators``, pip ``moto[server]``);
- GCS: the GCS XML API of a second sealstore (see ``SealstoreGcs`` for why not
  fake-gcs-server);
- Azure Blob: Azurite (npm ``azurite``, in tests/node).

Each sits behind a small TCP proxy the tests own, so "the blob store is unreachable"
is one call (the proxy stops listening and drops its connections) and coming back does
not lose the emulator's contents.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import requests

ROOT = Path(__file__).resolve().parents[2]
EMULATORS_VENV = Path(os.environ.get("SEALSTORE_EMULATORS_VENV", ROOT / ".venv-emulators"))
AZURITE = ROOT / "tests" / "node" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, in Microsoft's documentation).
AZURE_ACCOUNT = "devstoreaccount1"
AZURE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


class Proxy:
    """Forwards a loopback port to the emulator's; `block()` makes it refuse connections."""

    def __init__(self, upstream: int, port: int):
        self.upstream = upstream
        self.port = port
        self._lock = threading.Lock()
        self._conns: List[socket.socket] = []
        self._listener: Optional[socket.socket] = None
        self.unblock()

    def unblock(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(128)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def block(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            listener.close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    up.close()
                    return
                self._conns += [client, up]
            for a, b in ((client, up), (up, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class Emulator:
    scheme = ""
    name = ""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # Chosen first: fake-gcs-server must know the host its XML API is reached as.
        self.proxy_port = free_port()
        self.bucket = "sealstore-blobs"
        self.log = open(self.workdir / f"{self.name}.log", "w")
        self.workdir.chmod(0o700)
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT, cwd=self.workdir)
        wait_port(self.port, self.proc, self.name)
        self.proxy = Proxy(self.port, self.proxy_port)
        self.create_bucket()

    def command(self) -> List[str]:
        raise NotImplementedError

    def create_bucket(self, name: Optional[str] = None) -> None:
        raise NotImplementedError

    def delete_bucket(self, name: str) -> None:
        """Deletes an empty bucket (or container)."""
        raise NotImplementedError

    def spec(self, prefix: str) -> str:
        return f"{self.scheme}://{self.bucket}/{prefix}"

    def env(self) -> Dict[str, str]:
        """What a gateway needs to reach the emulator, the standard object_store way."""
        raise NotImplementedError

    def raw_objects(self) -> Dict[str, bytes]:
        """Every object the backend holds, read through its own API: name -> bytes."""
        raise NotImplementedError

    def stop(self) -> None:
        self.proxy.block()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Moto(Emulator):
    scheme = "s3"
    name = "moto"

    def command(self) -> List[str]:
        return [str(EMULATORS_VENV / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.port}",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}),
        )

    def create_bucket(self, name: Optional[str] = None) -> None:
        self.client().create_bucket(Bucket=name or self.bucket)

    def delete_bucket(self, name: str) -> None:
        self.client().delete_bucket(Bucket=name)

    def env(self) -> Dict[str, str]:
        return {
            "AWS_ENDPOINT": f"http://127.0.0.1:{self.proxy.port}",
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
        }

    def raw_objects(self) -> Dict[str, bytes]:
        c = self.client()
        out = {}
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for o in page.get("Contents", []):
                out[o["Key"]] = c.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read()
        return out


class SealstoreGcs(Emulator):
    """GCS through its XML API, served by a second sealstore (dev mode, SQLite).

    fake-gcs-server is not usable here: the 1.54 binary its pip wrapper ships takes an
    XML-API PUT only as a signed-URL upload (anything else: 400 "invalid uploadType"),
    and object_store's GCS client writes with plain XML-API PUTs; even a PUT dressed as
    a signed URL gets an answer without the `ETag` header object_store requires
    (object_store's own CI uses a patched fork of the emulator). sealstore's XML API is the GCS one, so the
    gs:// backend is exercised against it, reached as object_store reaches any emulator.
    """

    scheme = "gs"
    name = "sealstore-as-gcs"

    def command(self) -> List[str]:
        from conftest import sealstore_bin

        return [str(sealstore_bin()), "serve", "--data-dir", str(self.workdir / "data"), "--addr",
                f"127.0.0.1:{self.port}"]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_bucket(self, name: Optional[str] = None) -> None:
        r = requests.post(f"{self.base}/storage/v1/b?project=backend", json={"name": name or self.bucket}, timeout=10)
        assert r.status_code == 200, r.text

    def delete_bucket(self, name: str) -> None:
        r = requests.delete(f"{self.base}/storage/v1/b/{name}", timeout=10)
        assert r.status_code == 204, r.text

    def env(self) -> Dict[str, str]:
        # object_store's documented way to reach an emulator: a service account file
        # with a base URL and OAuth off.
        sa = self.workdir / "service-account.json"
        sa.write_text(json.dumps({
            "gcs_base_url": f"http://127.0.0.1:{self.proxy.port}",
            "disable_oauth": True,
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        }))
        return {"GOOGLE_SERVICE_ACCOUNT": str(sa)}

    def raw_objects(self) -> Dict[str, bytes]:
        out = {}
        token = None
        while True:
            params = {"maxResults": 1000, **({"pageToken": token} if token else {})}
            r = requests.get(f"{self.base}/storage/v1/b/{self.bucket}/o", params=params, timeout=10)
            r.raise_for_status()
            body = r.json()
            for item in body.get("items", []):
                name = item["name"]
                d = requests.get(f"{self.base}/storage/v1/b/{self.bucket}/o/{requests.utils.quote(name, safe='')}",
                                 params={"alt": "media"}, timeout=30)
                d.raise_for_status()
                out[name] = d.content
            token = body.get("nextPageToken")
            if not token:
                return out


class Azurite(Emulator):
    scheme = "az"
    name = "azurite"

    def command(self) -> List[str]:
        return [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location",
                str(self.workdir / "data"), "--silent", "--skipApiVersionCheck", "--disableTelemetry"]

    def service(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(
            f"DefaultEndpointsProtocol=http;AccountName={AZURE_ACCOUNT};AccountKey={AZURE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZURE_ACCOUNT};",
            retry_total=0,
        )

    def create_bucket(self, name: Optional[str] = None) -> None:
        self.service().create_container(name or self.bucket)

    def delete_bucket(self, name: str) -> None:
        self.service().delete_container(name)

    def env(self) -> Dict[str, str]:
        return {
            "AZURE_STORAGE_USE_EMULATOR": "true",
            "AZURITE_BLOB_STORAGE_URL": f"http://127.0.0.1:{self.proxy.port}",
        }

    def raw_objects(self) -> Dict[str, bytes]:
        c = self.service().get_container_client(self.bucket)
        return {b.name: c.download_blob(b.name).readall() for b in c.list_blobs()}

    def disk_bytes(self) -> List[bytes]:
        """Every file Azurite keeps on disk (its extents hold the blob contents)."""
        return [p.read_bytes() for p in (self.workdir / "data").rglob("*") if p.is_file()]


KINDS = {"s3": Moto, "gs": SealstoreGcs, "az": Azurite}
