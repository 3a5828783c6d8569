#!/usr/bin/env bash
# Headless Chromium for the tests that render a report's HTML and look at it (Debian's package).
# Idempotent: installs only when missing.
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
echo "browser: $(chromium --version 2>/dev/null || chromium-browser --version 2>/dev/null || echo '?')"
