#!/usr/bin/env bash
# Install everything (.venv in the checkout) and run the whole check: lint, types, tests.
# Extra arguments go to pytest, e.g. scripts/test.sh -k hostile
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
echo "== ruff" >&2
.venv/bin/ruff check src tests bench
echo "== mypy (strict) on src/" >&2
.venv/bin/mypy src
echo "== pytest" >&2
.venv/bin/python -m pytest "$@"
