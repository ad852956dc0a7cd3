#!/usr/bin/env bash
# Install everything (.venv in the checkout) and run the whole check: lint, format, types,
# tests with an in-process coverage summary.
# Extra arguments go to pytest, e.g. scripts/test.sh -k hostile
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
echo "== ruff" >&2
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "== mypy (strict) on src/, tests/ and bench/" >&2
.venv/bin/mypy src tests bench
echo "== pytest" >&2
# Coverage is of the test process only (masters and agents run as processes are not
# measured); the table lists the modules not fully covered, then the total.
.venv/bin/python -m pytest --cov=src --cov-report=term:skip-covered "$@"
