#!/usr/bin/env bash
# Creates (idempotently) a venv with devpi-server 6 from PyPI, for the
# test that imports what a real `devpi-export` writes.
#
#   tests/tools/setup-devpi.sh [VENV_DIR]
#
# VENV_DIR defaults to <workspace>/target/test-tools/devpi (respects CARGO_TARGET_DIR).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$workspace/target}"
venv="${1:-$target/test-tools/devpi}"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/devpi-server" ] && [ -x "$venv/bin/devpi-export" ] && [ -x "$venv/bin/devpi-init" ]; then
    exit 0
fi

echo "setting up devpi-server in $venv" >&2
mkdir -p "$(dirname "$venv")"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python3" -m pip install --quiet --disable-pip-version-check "devpi-server>=6,<7"
"$venv/bin/devpi-server" --version >&2
