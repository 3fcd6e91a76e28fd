#!/usr/bin/env bash
# Sets up (idempotent) and runs the whole test suite, browser test included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install-system-deps.sh
# the type check first (files and flags: [tool.mypy] in pyproject.toml): a typing regression fails in
# under a minute instead of after the suite
.venv/bin/python -m mypy
exec .venv/bin/python -m pytest "$@"
