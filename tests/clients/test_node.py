"""The official Node clients (@google-cloud/storage 8.4, @google-cloud/kms 6.3, pinned in
tests/node/package-lock.json) against a real server: tests/node/clients.test.js under
node's built-in test runner."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def test_node_clients(server):
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules").is_dir():
        pytest.fail("node and tests/node/node_modules are needed (tests/run.sh runs npm ci)", pytrace=False)
    # With STORAGE_EMULATOR_HOST the Node client needs no credentials; it takes the
    # variable as its JSON API base URL, so it names /storage/v1.
    env = dict(os.environ, SEALSTORE_URL=server.url, STORAGE_EMULATOR_HOST=f"{server.url}/storage/v1")
    out = subprocess.run(
        [node, "--test", "--test-reporter=spec", "clients.test.js"],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, f"node tests failed:\n{out.stdout[-8000:]}\n{out.stderr[-4000:]}"
    assert "ℹ pass 6" in out.stdout and "ℹ fail 0" in out.stdout, out.stdout
