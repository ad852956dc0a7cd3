#!/usr/bin/env bash
# Install everything (.venv in the checkout) and run the whole check: lint, format, types,
# tests with an in-process coverage summary.
# Extra arguments go to pytest, e.g. scripts/test.sh -k hostile
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
# The dashboard's test drives a real headless browser: Debian's chromium and its driver.
# Best effort (root with apt only); without them that one test is skipped and says why.
if ! command -v chromedriver >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing chromium and chromium-driver for the dashboard's browser test" >&2
    { timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 \
        apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 ||
        echo "test: could not install chromium: the dashboard's browser test will be skipped" >&2
fi
# The containers' test runs a job in a real Podman container made from a static busybox
# (tests/integration/test_containers.py). Best effort as above; without them it is skipped.
if ! command -v podman >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing podman and busybox-static for the containers' test" >&2
    { timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 \
        apt-get install -y -qq podman busybox-static; } >/dev/null 2>&1 ||
        echo "test: could not install podman: the real container test will be skipped" >&2
fi
echo "== ruff" >&2
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "== mypy (strict) on src/, tests/ and bench/" >&2
.venv/bin/mypy src tests bench
echo "== pytest" >&2
# Coverage is of the test process only (masters and agents run as processes are not
# measured); the table lists the modules not fully covered, then the total.
.venv/bin/python -m pytest --cov=src --cov-report=term:skip-covered "$@"
