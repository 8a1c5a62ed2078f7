#!/usr/bin/env bash
# Creates (idempotently) a venv with moto's server from PyPI: the
# S3-compatible service that the S3 blob backend's tests start.
#
#   tests/tools/setup-moto.sh [VENV_DIR]
#
# VENV_DIR defaults to <workspace>/target/test-tools/moto (respects CARGO_TARGET_DIR).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$workspace/target}"
venv="${1:-$target/test-tools/moto}"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/moto_server" ]; then
    exit 0
fi

echo "setting up moto's S3 server in $venv" >&2
mkdir -p "$(dirname "$venv")"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python3" -m pip install --quiet --disable-pip-version-check "moto[server,s3]>=5.1,<6"
"$venv/bin/python3" -c 'import moto; print("moto", moto.__version__)' >&2
