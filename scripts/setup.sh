#!/usr/bin/env bash
# Install what maild's demo and tests need: Dovecot from Debian, and a virtualenv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v dovecot >/dev/null 2>&1 && [ ! -x /usr/sbin/dovecot ]; then
  echo "setup: installing dovecot-imapd (the throwaway IMAP server for the demo and tests)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null
fi

if ! ldconfig -p 2>/dev/null | grep -q 'libpangoft2-1.0.so.0' \
  || ! ldconfig -p 2>/dev/null | grep -q 'libharfbuzz-subset.so.0'; then
  echo "setup: installing Pango and HarfBuzz (WeasyPrint renders \`maild letters print --pdf\` with them)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,pdf]"
