#!/usr/bin/env bash
# Sets up (idempotent) and runs the whole test suite, browser test included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install-system-deps.sh
exec .venv/bin/python -m pytest "$@"
