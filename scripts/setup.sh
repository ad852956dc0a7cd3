#!/usr/bin/env bash
# Create .venv inside the checkout (if needed) and install mgpu with its test and build extras.
# Sourced by demo.sh and test.sh; safe to run again (it only reinstalls when setup.cfg changed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

pick_python() {
    for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "mgpu needs Python >= 3.11 with the venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2
    return 1
}

if [ ! -x .venv/bin/python ]; then
    py="$(pick_python)"
    echo "setup: creating .venv with $("$py" --version)" >&2
    "$py" -m venv .venv
fi
stamp=.venv/.mgpu-installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing mgpu and its dependencies into .venv" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,build]"
    # pip's console scripts start Python with site (~3 ms per command); the hot client
    # commands get scripts that start it without (docs/performance.md, "Command start-up").
    .venv/bin/python -m mgpu_client.slurmcmds --mgpu-commands .venv/bin >/dev/null
    touch "$stamp"
fi
