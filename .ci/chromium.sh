#!/usr/bin/env bash
# Debian's chromium for the browser test (tests/test_browser.py drives it headless over the
# DevTools protocol; Playwright's own browser download is not used). Idempotent; root or sudo.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if command -v chromium >/dev/null; then
  echo "chromium is installed: $(chromium --version 2>/dev/null || true)"
else
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
  echo "chromium installed: $(chromium --version 2>/dev/null || true)"
fi
