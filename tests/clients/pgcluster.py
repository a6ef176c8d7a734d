"""A throwaway PostgreSQL cluster for the client suite's second pass.

With ``SEALSTORE_TEST_DATABASE=postgres`` every server and CLI command the tests start
gets ``SEALSTORE_DATABASE`` pointing at a database of its own on one cluster this
process starts (``initdb`` + ``pg_ctl`` from Debian's ``postgresql`` package, in a temp
dir, on a free loopback port, fsync on) and stops at exit. The database is chosen by
the data dir, so a restart on the same data dir finds its state again, as with SQLite.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Dict, Optional

_lock = threading.Lock()
_cluster: Optional["Cluster"] = None


def enabled() -> bool:
    return os.environ.get("SEALSTORE_TEST_DATABASE") == "postgres"


def _bin_dir() -> Path:
    env = os.environ.get("SEALSTORE_PG_BIN")
    if env:
        return Path(env)
    found = sorted(p / "bin" for p in Path("/usr/lib/postgresql").iterdir() if (p / "bin" / "initdb").exists())
    if not found:
        raise RuntimeError("no /usr/lib/postgresql/*/bin/initdb: install Debian's postgresql package")
    return found[-1]


def _as_postgres(*cmd: str) -> list:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="sealstore-pytest-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.data = self.dir / "data"
        self.port = 0
        self.databases: Dict[str, str] = {}
        subprocess.run(
            _as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                         "--auth=trust", "-E", "UTF8", "--no-instructions"),
            check=True, capture_output=True,
        )
        last = ""
        for _ in range(5):
            self.port = _free_port()
            r = self.pg_ctl("start")
            if r.returncode == 0:
                atexit.register(self.destroy)
                return
            last = r.stderr
        raise RuntimeError(f"pg_ctl start: {last}")

    def pg_ctl(self, action: str, mode: str = "fast") -> subprocess.CompletedProcess:
        cmd = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", mode]
        if action == "start":
            opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=500"
            cmd += ["-o", opts, "-l", str(self.dir / "server.log")]
        return subprocess.run(_as_postgres(*cmd, action), capture_output=True, text=True)

    def psql(self, sql: str) -> None:
        subprocess.run(
            _as_postgres(str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                         "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql),
            check=True, capture_output=True,
        )

    def url_for(self, data_dir: Path) -> str:
        """The database of ``data_dir``, created on first use."""
        key = str(Path(data_dir).resolve())
        with _lock:
            name = self.databases.get(key)
            if name is None:
                name = "d" + hashlib.sha256(key.encode()).hexdigest()[:24]
                self.psql(f"CREATE DATABASE {name}")
                self.databases[key] = name
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def destroy(self) -> None:
        self.pg_ctl("stop", mode="immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def cluster() -> Cluster:
    global _cluster
    with _lock:
        if _cluster is None:
            _cluster = Cluster()
        return _cluster


def database_env(data_dir: Optional[Path]) -> Dict[str, str]:
    """``{"SEALSTORE_DATABASE": url}`` for ``data_dir`` in the PostgreSQL pass, else ``{}``."""
    if not enabled() or data_dir is None:
        return {}
    return {"SEALSTORE_DATABASE": cluster().url_for(data_dir)}
