#!/usr/bin/env bash
# The whole test suite: Rust unit + integration tests, then the official Google
# Python clients against the release binary that `cargo test --release` just built.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
# gsutil has dependency pins of its own: a venv of its own.
gsutil_venv=.venv-gsutil
if [ ! -x "$gsutil_venv/bin/python" ]; then
  python3 -m venv "$gsutil_venv"
fi
"$gsutil_venv/bin/pip" install --quiet --disable-pip-version-check -r tests/clients/requirements-gsutil.txt
# moto's S3 server, for test_backends.py (Azurite comes with the Node packages).
emulators_venv=.venv-emulators
if [ ! -x "$emulators_venv/bin/python" ]; then
  python3 -m venv "$emulators_venv"
fi
"$emulators_venv/bin/pip" install --quiet --disable-pip-version-check -r tests/clients/requirements-emulators.txt
# The Node clients and Azurite, exactly as package-lock.json pins them.
(cd tests/node && npm ci --no-audit --no-fund --loglevel=error)

# PostgreSQL server binaries: the store tests start a throwaway cluster of their own
# with initdb/pg_ctl (never a system service).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql
fi

cargo fmt --all -- --check
# Every crate of the workspace; builds target/release/sealstore once, and the Python
# tests below reuse it.
cargo test --release --workspace
SEALSTORE_BIN="$PWD/target/release/sealstore" GSUTIL_BIN="$PWD/$gsutil_venv/bin/gsutil" "$venv/bin/pytest" -q tests/clients "$@"
# The same client suite again with every store in PostgreSQL (`SEALSTORE_DATABASE`, one
# database per data dir on a throwaway cluster the suite starts itself).
SEALSTORE_TEST_DATABASE=postgres SEALSTORE_BIN="$PWD/target/release/sealstore" GSUTIL_BIN="$PWD/$gsutil_venv/bin/gsutil" "$venv/bin/pytest" -q tests/clients "$@"
