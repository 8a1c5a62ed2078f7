#!/usr/bin/env bash
# Installs promtool (Debian's prometheus package) where it is missing: the
# metrics test lints /+metrics with `promtool check metrics`. Idempotent.
set -euo pipefail
command -v promtool >/dev/null && exit 0
echo "installing promtool (Debian's prometheus package)" >&2
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
# The package may start a Prometheus server of its own; only promtool is wanted.
$sudo pkill -x prometheus 2>/dev/null || true
promtool --version >&2
