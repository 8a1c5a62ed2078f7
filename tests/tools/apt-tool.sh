#!/usr/bin/env bash
# Installs a command from a Debian package where it is missing, for the
# tests that drive it: promtool (prometheus) lints /+metrics, chromium
# loads the web UI. Idempotent.
#
#   tests/tools/apt-tool.sh COMMAND PACKAGE
set -euo pipefail
command=$1 package=$2
command -v "$command" >/dev/null && exit 0
echo "installing $command (Debian's $package package)" >&2
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q --no-install-recommends "$package" >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends "$package" >/dev/null; }
# A package may start a server of its own (prometheus does); only the
# command is wanted.
[ "$package" = prometheus ] && { $sudo pkill -x prometheus 2>/dev/null || true; }
command -v "$command" >/dev/null
