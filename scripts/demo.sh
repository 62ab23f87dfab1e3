#!/usr/bin/env bash
# Run maild's main job for real: a throwaway Dovecot, sample letters, maild on SQLite, a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/maild --log-level WARNING demo "$@"
