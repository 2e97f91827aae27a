#!/usr/bin/env bash
# Install everything the tests need, then run the whole test suite. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test
exec python3 -m pytest -q "$@"
