#!/usr/bin/env bash
# Install what the tests need (Debian packages included), then lint, type-check and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MAILD_TEST_POSTGRES_URL="${MAILD_TEST_POSTGRES_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/test}"
echo "== ruff";          .venv/bin/ruff check .
echo "== mypy --strict"; .venv/bin/mypy
echo "== import-linter"; .venv/bin/lint-imports
echo "== pip-audit";     .venv/bin/python scripts/audit_deps.py
echo "== pytest";        exec .venv/bin/pytest -n "${MAILD_TEST_WORKERS:-2}" "$@"
