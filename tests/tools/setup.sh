#!/usr/bin/env bash
# Creates (idempotently) the Python tool venv that hoard's black-box tests use:
# twine (uploads) and uv (installs), plus the venv's own pip.
#
#   tests/tools/setup.sh [VENV_DIR]
#
# VENV_DIR defaults to <workspace>/target/test-tools/venv (respects CARGO_TARGET_DIR).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workspace="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$workspace/target}"
venv="${1:-$target/test-tools/venv}"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/twine" ] && [ -x "$venv/bin/uv" ] && [ -x "$venv/bin/python3" ]; then
    exit 0
fi

echo "setting up test tools in $venv" >&2
mkdir -p "$(dirname "$venv")"
# A half-made venv from an interrupted run is rebuilt from scratch.
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python3" -m pip install --quiet --disable-pip-version-check twine uv
"$venv/bin/twine" --version >&2
"$venv/bin/uv" --version >&2
