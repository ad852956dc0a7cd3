#!/usr/bin/env bash
# Install mgpu with the benchmark extras (.venv in the checkout) and run the benchmark suite on
# a local cluster it starts itself: prints each figure beside its target, writes results.json
# and the plots to bench-results/ (or --out DIR). `--quick` is the tiny smoke run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/python -m bench "$@"
