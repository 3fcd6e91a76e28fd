#!/usr/bin/env bash
# The quality gates CI runs before the tests: ruff (lint and format check) over the tree, and mypy over
# the packages configured in pyproject.toml ([tool.mypy] files). Fix formatting with
# `.venv/bin/ruff format .` and lint findings with `.venv/bin/ruff check --fix .`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff check";  .venv/bin/ruff check .
echo "== ruff format"; .venv/bin/ruff format --check .
echo "== mypy";        .venv/bin/mypy
