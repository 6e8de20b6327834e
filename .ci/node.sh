#!/usr/bin/env bash
# Node and the JavaScript clients the gateway is tested with (tests/test_js_sdk.py drives
# @langchain/langgraph-sdk, pinned in tests/js/package-lock.json). Idempotent; root or sudo
# only when node is missing (Debian's nodejs and npm).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
echo "node $(node --version), npm $(npm --version)"
make js
